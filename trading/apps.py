from django.apps import AppConfig


class TradingConfig(AppConfig):
    name = "trading"
    verbose_name = "Trading"

    def ready(self) -> None:
        from receipts.signals import receipt_freezing
        from trading import receivers

        receipt_freezing.connect(receivers.pull_order_behind_frozen_receipt,
                                 dispatch_uid="trading.pull_order_behind_frozen_receipt")
