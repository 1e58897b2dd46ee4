from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _sync_catalogue(sender: AppConfig, **kwargs: Any) -> None:
    from receipts.services import catalogue_sync

    catalogue_sync()


class ReceiptsConfig(AppConfig):
    name = "receipts"
    verbose_name = "Receipts"

    def ready(self) -> None:
        # The catalogue is data in the repo (receipts/catalogue.json); every migrate brings the tables in line.
        post_migrate.connect(_sync_catalogue, sender=self, dispatch_uid="receipts.catalogue_sync")
