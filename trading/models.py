"""Instruments, orders, the persisted order-book command log, trades, and the double-entry cash ledger."""

from __future__ import annotations

import pgtrigger
from django.db import models
from django.db.models import Q

from compliance.audit import audited
from members.models import Member
from receipts.models import MASS, DecimalPrecision, Grade

# Money precision, in one place: amounts to the cent (of the instrument currency), prices to 1e-4.
MONEY: DecimalPrecision = {"max_digits": 20, "decimal_places": 2}
PRICE: DecimalPrecision = {"max_digits": 18, "decimal_places": 4}


class InstrumentStatus(models.TextChoices):
    OPEN = "open", "Open"
    HALTED = "halted", "Halted"


class Instrument(models.Model):
    """What one order book trades: grade x delivery region x ESG class, e.g. GA-6N-CN or GA-6N-CN-LC."""

    code = models.CharField(max_length=32, unique=True)
    grade = models.ForeignKey(Grade, on_delete=models.PROTECT, related_name="instruments")
    region = models.CharField(max_length=20)
    esg_class = models.CharField(max_length=8, blank=True, help_text='"" = standard; "LC" = low-carbon.')
    currency = models.CharField(max_length=3, default="USD")
    tick_size = models.DecimalField(**PRICE, help_text="Price step, currency per kg.")
    lot_size_kg = models.DecimalField(**MASS, help_text="Quantity step in kg.")
    band_pct = models.DecimalField(max_digits=6, decimal_places=2, default=10,
                                   help_text="Orders must be priced within ± this % of the reference.")
    reference_price = models.DecimalField(**PRICE, null=True, blank=True)
    band_low = models.DecimalField(**PRICE, null=True, blank=True)
    band_high = models.DecimalField(**PRICE, null=True, blank=True)
    maker_fee_bps = models.PositiveSmallIntegerField(default=5)
    taker_fee_bps = models.PositiveSmallIntegerField(default=10)
    status = models.CharField(max_length=8, choices=InstrumentStatus.choices, default=InstrumentStatus.OPEN)
    # Sequence of the last command applied to this instrument's book (see BookCommand).
    book_seq = models.PositiveBigIntegerField(default=0)
    # That command as [seq, kind, order_id, owner, side, quantity, price, tif], written with `book_seq`: a process
    # one command behind (two web workers taking turns) catches its book up from the instrument's locking read
    # instead of reading the command log (trading.book_cache).
    last_command = models.JSONField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["code"]
        constraints = [
            models.CheckConstraint(condition=Q(tick_size__gt=0), name="instrument_tick_positive"),
            models.CheckConstraint(condition=Q(lot_size_kg__gt=0), name="instrument_lot_positive"),
        ]

    def __str__(self) -> str:
        return self.code


class Side(models.TextChoices):
    BUY = "buy", "Buy"
    SELL = "sell", "Sell"


class OrderType(models.TextChoices):
    LIMIT = "limit", "Limit"
    MARKET = "market", "Market"


class TimeInForce(models.TextChoices):
    GTC = "GTC", "Good till cancelled"
    IOC = "IOC", "Immediate or cancel"
    FOK = "FOK", "Fill or kill"


class OrderStatus(models.TextChoices):
    OPEN = "open", "Open"
    PARTIALLY_FILLED = "partially_filled", "Partially filled"
    FILLED = "filled", "Filled"
    CANCELLED = "cancelled", "Cancelled"
    EXPIRED = "expired", "Expired (IOC/FOK/market remainder)"


LIVE_ORDER_STATUSES = (OrderStatus.OPEN, OrderStatus.PARTIALLY_FILLED)


class Order(models.Model):
    # member and instrument: no index of their own; (member, status) and (instrument, status, book_seq) serve them.
    member = models.ForeignKey(Member, on_delete=models.PROTECT, related_name="orders", db_index=False)
    instrument = models.ForeignKey(Instrument, on_delete=models.PROTECT, related_name="orders", db_index=False)
    client_order_id = models.CharField(max_length=64)
    side = models.CharField(max_length=4, choices=Side.choices)
    order_type = models.CharField(max_length=6, choices=OrderType.choices)
    tif = models.CharField(max_length=3, choices=TimeInForce.choices)
    price = models.DecimalField(**PRICE, null=True, blank=True)
    quantity_kg = models.DecimalField(**MASS)
    filled_kg = models.DecimalField(**MASS, default=0)
    status = models.CharField(max_length=16, choices=OrderStatus.choices, default=OrderStatus.OPEN)
    held_amount = models.DecimalField(**MONEY, default=0, help_text="Cash still held for this buy.")
    book_seq = models.PositiveBigIntegerField(help_text="Position in the instrument's command log (time priority).")
    created_at = models.DateTimeField(auto_now_add=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    cancel_reason = models.CharField(max_length=200, blank=True,
                                     help_text="Why the venue cancelled it (self-trade prevention, a compliance "
                                               "hold on a receipt behind it); empty when the member did.")

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["instrument", "status", "book_seq"]),
                   models.Index(fields=["member", "status"])]
        constraints = [
            models.UniqueConstraint(fields=["member", "client_order_id"], name="client_order_id_unique"),
            models.CheckConstraint(condition=Q(quantity_kg__gt=0), name="order_quantity_positive"),
            models.CheckConstraint(condition=Q(filled_kg__gte=0) & Q(filled_kg__lte=models.F("quantity_kg")),
                                   name="order_filled_within_quantity"),
            models.CheckConstraint(condition=Q(held_amount__gte=0), name="order_hold_non_negative"),
        ]

    def __str__(self) -> str:
        return f"O{self.pk} {self.side} {self.quantity_kg} {self.instrument_id}"

    @property
    def remaining_kg(self):  # type: ignore[no-untyped-def]
        return self.quantity_kg - self.filled_kg


class BookCommand(models.Model):
    """Every command applied to an instrument's book, in order. Replaying them rebuilds the book exactly,
    so each web process catches its cached book up from here instead of reloading the whole book."""

    # No index of its own: (instrument, seq)'s unique index serves it.
    instrument = models.ForeignKey(Instrument, on_delete=models.PROTECT, related_name="book_commands",
                                   db_index=False)
    seq = models.PositiveBigIntegerField()
    kind = models.CharField(max_length=8)  # submit | cancel
    order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="+")
    owner = models.BigIntegerField()
    side = models.CharField(max_length=4)
    quantity = models.BigIntegerField(default=0)
    price = models.BigIntegerField(null=True)
    tif = models.CharField(max_length=3, default="GTC")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["instrument", "seq"], name="book_command_seq_unique")]

    def __str__(self) -> str:
        return f"{self.instrument_id}#{self.seq} {self.kind} {self.order_id}"


class Trade(models.Model):
    # No index of its own: the (instrument, -executed_at) index serves it.
    instrument = models.ForeignKey(Instrument, on_delete=models.PROTECT, related_name="trades", db_index=False)
    buy_order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="buy_trades")
    sell_order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="sell_trades")
    buyer = models.ForeignKey(Member, on_delete=models.PROTECT, related_name="buys")
    seller = models.ForeignKey(Member, on_delete=models.PROTECT, related_name="sells")
    aggressor = models.CharField(max_length=4, choices=Side.choices)
    price = models.DecimalField(**PRICE)
    quantity_kg = models.DecimalField(**MASS)
    notional = models.DecimalField(**MONEY)
    buyer_fee = models.DecimalField(**MONEY)
    seller_fee = models.DecimalField(**MONEY)
    executed_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-executed_at", "-pk"]
        indexes = [models.Index(fields=["instrument", "-executed_at"])]
        constraints = [models.CheckConstraint(condition=Q(quantity_kg__gt=0) & Q(price__gt=0),
                                              name="trade_positive")]

    def __str__(self) -> str:
        return f"T{self.pk} {self.quantity_kg} @ {self.price}"


class AccountKind(models.TextChoices):
    MEMBER = "member", "Member cash"
    FEES = "fees", "Platform fee income"
    EXTERNAL = "external", "Outside world (bank transfers in and out)"


@audited(fields=["member", "kind", "currency", "available", "held"], statement_level=True)
class Account(models.Model):
    """Cash of one owner in one currency: available and held. Only the outside-world account may go negative
    (it is the other side of every deposit), so cash per currency sums to zero across all accounts."""

    member = models.ForeignKey(Member, null=True, blank=True, on_delete=models.PROTECT, related_name="accounts")
    kind = models.CharField(max_length=8, choices=AccountKind.choices, default=AccountKind.MEMBER)
    currency = models.CharField(max_length=3)
    available = models.DecimalField(**MONEY, default=0)
    held = models.DecimalField(**MONEY, default=0)

    class Meta:
        ordering = ["currency", "pk"]
        constraints = [
            models.UniqueConstraint(fields=["member", "currency"], condition=Q(kind="member"),
                                    name="one_cash_account_per_member_currency"),
            models.UniqueConstraint(fields=["kind", "currency"], condition=~Q(kind="member"),
                                    name="one_system_account_per_currency"),
            models.CheckConstraint(condition=Q(kind="external") | (Q(available__gte=0) & Q(held__gte=0)),
                                   name="balance_never_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.kind}:{self.member_id or '-'}:{self.currency}"


class JournalEntry(models.Model):
    """One business movement of cash; its postings sum to zero. Never updated or deleted."""

    kind = models.CharField(max_length=16)  # deposit, withdrawal, hold, release, trade
    reference = models.CharField(max_length=64, blank=True)
    memo = models.TextField(blank=True)
    created_by = models.ForeignKey("members.User", null=True, blank=True, on_delete=models.PROTECT)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-pk"]
        verbose_name_plural = "journal entries"
        # The journal is the audit trail of cash: the database refuses to rewrite it.
        triggers = [pgtrigger.Protect(name="journal_entry_append_only",
                                      operation=pgtrigger.Update | pgtrigger.Delete)]

    def __str__(self) -> str:
        return f"J{self.pk} {self.kind} {self.reference}"


class Posting(models.Model):
    BUCKETS = (("available", "available"), ("held", "held"))

    entry = models.ForeignKey(JournalEntry, on_delete=models.PROTECT, related_name="postings")
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="postings")
    bucket = models.CharField(max_length=9, choices=BUCKETS)
    amount = models.DecimalField(**MONEY)
    currency = models.CharField(max_length=3)

    class Meta:
        ordering = ["entry_id", "pk"]
        constraints = [models.CheckConstraint(condition=~Q(amount=0), name="posting_non_zero")]
        triggers = [pgtrigger.Protect(name="posting_append_only", operation=pgtrigger.Update | pgtrigger.Delete)]

    def __str__(self) -> str:
        return f"{self.entry_id}: {self.account_id}/{self.bucket} {self.amount}"


from trading.pricing_models import *  # noqa: E402,F401,F403
