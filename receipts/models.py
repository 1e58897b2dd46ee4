"""Catalogue, warehouses and their storage readings, lots and signed attestations, receipts and their
signed, hash-chained event history, stock statements, and the platform's own signing keys."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, TypedDict

import pgtrigger
from django.db import models
from django.db.models import F, Q
from django_countries.fields import CountryField

from members.models import Member, SigningKey


class DecimalPrecision(TypedDict):
    """`**MASS` into a DecimalField: typed, so the checker knows what the two keywords are."""

    max_digits: int
    decimal_places: int


# One place for the precision of metal mass in the database: kilograms to the gram.
MASS: DecimalPrecision = {"max_digits": 18, "decimal_places": 3}
PERCENT: DecimalPrecision = {"max_digits": 12, "decimal_places": 7}


class Metal(models.Model):
    symbol = models.CharField(max_length=3, unique=True)
    name = models.CharField(max_length=40)
    hs_code = models.CharField(max_length=12)
    export_controlled = models.BooleanField(default=False)
    controlled_since = models.PositiveSmallIntegerField(null=True, blank=True)
    control_reference = models.CharField(max_length=200, blank=True)
    package_kg = models.DecimalField(**MASS)
    min_temp_c = models.DecimalField(max_digits=6, decimal_places=2, null=True, blank=True)
    max_temp_c = models.DecimalField(max_digits=6, decimal_places=2, null=True, blank=True)
    max_humidity_pct = models.DecimalField(max_digits=5, decimal_places=2, null=True, blank=True)
    forms = models.JSONField(default=list)
    catalogue_version = models.CharField(max_length=40)

    class Meta:
        ordering = ["symbol"]

    def __str__(self) -> str:
        return f"{self.symbol} {self.name}"


class Grade(models.Model):
    code = models.CharField(max_length=20, unique=True)
    metal = models.ForeignKey(Metal, on_delete=models.PROTECT, related_name="grades")
    name = models.CharField(max_length=100)
    purity_min = models.DecimalField(**PERCENT)
    rank = models.PositiveSmallIntegerField()
    forms = models.JSONField(default=list)
    spec = models.JSONField(help_text="The grade as in the catalogue file; embedded in bundles.")
    catalogue_version = models.CharField(max_length=40)

    class Meta:
        ordering = ["metal__symbol", "rank"]

    def __str__(self) -> str:
        return self.code


class Warehouse(models.Model):
    operator = models.ForeignKey(Member, on_delete=models.PROTECT, related_name="warehouses")
    code = models.CharField(max_length=20, unique=True)
    name = models.CharField(max_length=200)
    country = CountryField()
    region = models.CharField(max_length=20, help_text="Delivery region an instrument names, e.g. CN, EU.")
    approved = models.BooleanField(default=False)

    class Meta:
        ordering = ["code"]

    def __str__(self) -> str:
        return self.code


class StorageReading(models.Model):
    warehouse = models.ForeignKey(Warehouse, on_delete=models.PROTECT, related_name="readings")
    location = models.CharField(max_length=50, help_text="Vault / bay the sensor watches.")
    observed_at = models.DateTimeField()
    temperature_c = models.DecimalField(max_digits=6, decimal_places=2)
    humidity_pct = models.DecimalField(max_digits=5, decimal_places=2)
    seal_intact = models.BooleanField()
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-observed_at"]
        indexes = [models.Index(fields=["warehouse", "location", "-observed_at"])]
        constraints = [
            models.CheckConstraint(condition=Q(humidity_pct__gte=0, humidity_pct__lte=100),
                                   name="reading_humidity_range"),
        ]

    def __str__(self) -> str:
        return f"{self.warehouse_id}/{self.location} @ {self.observed_at:%Y-%m-%d %H:%M}"


class StorageIncident(models.Model):
    """A breach of a metal's storage limits or of a seal; flags every receipt stored at that location."""

    warehouse = models.ForeignKey(Warehouse, on_delete=models.PROTECT, related_name="incidents")
    location = models.CharField(max_length=50)
    reading = models.ForeignKey(StorageReading, on_delete=models.PROTECT, related_name="incidents")
    breaches = models.JSONField(help_text="Each limit broken: metal, quantity, measured, limit.")
    receipts: models.ManyToManyField[Receipt, Any] = models.ManyToManyField(
        "Receipt", related_name="storage_incidents", blank=True)
    opened_at = models.DateTimeField(auto_now_add=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    closed_reason = models.TextField(blank=True)

    class Meta:
        ordering = ["-opened_at"]

    def __str__(self) -> str:
        return f"Incident {self.pk} at {self.warehouse_id}/{self.location}"


class Lot(models.Model):
    warehouse = models.ForeignKey(Warehouse, on_delete=models.PROTECT, related_name="lots")
    metal = models.ForeignKey(Metal, on_delete=models.PROTECT, related_name="lots")
    form = models.CharField(max_length=30)
    net_mass_kg = models.DecimalField(**MASS)
    package_count = models.PositiveIntegerField()
    producer = models.ForeignKey(Member, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    brand = models.CharField(max_length=100)
    batch_number = models.CharField(max_length=64)
    seal_numbers = models.JSONField(default=list)
    production_date = models.DateField()
    location = models.CharField(max_length=50)
    depositor = models.ForeignKey(Member, on_delete=models.PROTECT, related_name="deposited_lots")
    grade = models.ForeignKey(Grade, null=True, blank=True, on_delete=models.PROTECT, related_name="lots")
    grading = models.JSONField(null=True, blank=True, help_text="Last grading result: grade met or failures.")
    graded_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["warehouse", "batch_number"], name="lot_batch_unique_per_warehouse"),
            models.CheckConstraint(condition=Q(net_mass_kg__gt=0), name="lot_mass_positive"),
            models.CheckConstraint(condition=Q(package_count__gt=0), name="lot_packages_positive"),
        ]

    def __str__(self) -> str:
        return f"LOT-{self.pk} {self.metal_id} {self.batch_number}"

    @property
    def reference(self) -> str:
        return f"{self.warehouse.code}/{self.batch_number}"


class AttestationKind(models.TextChoices):
    ASSAY = "assay", "Assay (certificate of analysis)"
    CARBON_FOOTPRINT = "carbon_footprint", "Carbon footprint (PACT)"
    RECYCLED_CONTENT = "recycled_content", "Recycled content"
    ORIGIN = "origin", "Origin"


class Attestation(models.Model):
    """A signed statement about a lot. `canonical` is exactly the bytes that were signed."""

    lot = models.ForeignKey(Lot, on_delete=models.PROTECT, related_name="attestations")
    kind = models.CharField(max_length=20, choices=AttestationKind.choices)
    document = models.JSONField()
    canonical = models.TextField(help_text="RFC 8785 canonical JSON of the document, as signed.")
    digest = models.CharField(max_length=64, help_text="SHA-256 hex of the canonical bytes.")
    binding_hash = models.CharField(max_length=64, db_index=True,
                                    help_text="Hash that binds it into a receipt's issued event.")
    signature = models.JSONField(help_text='{"alg": "EdDSA", "kid": ..., "sig": base64url}')
    signing_key = models.ForeignKey(SigningKey, on_delete=models.PROTECT, related_name="attestations")
    signer = models.ForeignKey(Member, on_delete=models.PROTECT, related_name="attestations_signed")
    submitted_by = models.ForeignKey(Member, on_delete=models.PROTECT, related_name="attestations_submitted")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["lot_id", "kind", "created_at"]
        constraints = [models.UniqueConstraint(fields=["lot", "digest"], name="attestation_unique_per_lot")]

    def __str__(self) -> str:
        return f"{self.kind} for lot {self.lot_id}"


class LotNomination(models.Model):
    """A member the lot's warehouse operator appointed to attest the lot, for one kind of attestation.

    Besides the operator and the lot's producer, only a nominated member's signature is accepted on the
    lot's attestations of that kind. Rows are history: a withdrawal marks the row, and a later nomination
    of the same member for the same kind is a new row (at most one live row per lot, member and kind)."""

    lot = models.ForeignKey(Lot, on_delete=models.PROTECT, related_name="nominations")
    member = models.ForeignKey(Member, on_delete=models.PROTECT, related_name="lot_nominations")
    kind = models.CharField(max_length=20, choices=AttestationKind.choices)
    nominated_by = models.ForeignKey(Member, on_delete=models.PROTECT, related_name="+")
    nominated_at = models.DateTimeField()
    withdrawn_by = models.ForeignKey(Member, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    withdrawn_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["lot_id", "kind", "nominated_at", "pk"]
        constraints = [
            models.UniqueConstraint(fields=["lot", "member", "kind"], condition=Q(withdrawn_at__isnull=True),
                                    name="lot_nomination_live_unique"),
            models.CheckConstraint(condition=Q(withdrawn_at__isnull=True, withdrawn_by__isnull=True)
                                   | Q(withdrawn_at__isnull=False, withdrawn_by__isnull=False),
                                   name="lot_nomination_withdrawal_complete"),
            models.CheckConstraint(condition=Q(withdrawn_at__isnull=True) | Q(withdrawn_at__gte=F("nominated_at")),
                                   name="lot_nomination_withdrawn_after_nominated"),
        ]

    def __str__(self) -> str:
        state = " (withdrawn)" if self.withdrawn_at else ""
        return f"{self.member_id} may attest {self.kind} for lot {self.lot_id}{state}"

    @property
    def is_live(self) -> bool:
        return self.withdrawn_at is None


class ReceiptStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    ENCUMBERED = "encumbered", "Encumbered by a sell order"
    PLEDGED = "pledged", "Pledged"
    FROZEN = "frozen", "Frozen"
    WITHDRAWAL_REQUESTED = "withdrawal_requested", "Withdrawal requested"
    SPLIT = "split", "Split (closed; see its parts)"
    WITHDRAWN = "withdrawn", "Withdrawn (closed)"


OPEN_STATUSES = frozenset({ReceiptStatus.ACTIVE, ReceiptStatus.ENCUMBERED, ReceiptStatus.PLEDGED,
                           ReceiptStatus.FROZEN, ReceiptStatus.WITHDRAWAL_REQUESTED})

# The lifecycle's transition map is receipts.chain.TRANSITIONS (event kind -> statuses it may follow):
# the same map the offline verifier replays, so the database and the proof cannot disagree.


class Receipt(models.Model):
    # Unique through Meta.constraints, not unique=True, which on PostgreSQL adds a second, varchar_pattern_ops
    # index for LIKE 'prefix%' that no query runs (the admins' searches are case-insensitive contains, which
    # no index serves); each split's insert would pay for it.
    number = models.CharField(max_length=32)
    # lot and holder: no index of their own; the (lot, status) and (holder, status) indexes serve them.
    lot = models.ForeignKey(Lot, on_delete=models.PROTECT, related_name="receipts", db_index=False)
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="parts")
    grade = models.ForeignKey(Grade, null=True, blank=True, on_delete=models.PROTECT, related_name="receipts",
                              help_text="Empty for a non-standard receipt; it can never back a book order.")
    quantity_kg = models.DecimalField(**MASS)
    holder = models.ForeignKey(Member, on_delete=models.PROTECT, related_name="receipts_held", db_index=False)
    status = models.CharField(max_length=24, choices=ReceiptStatus.choices, default=ReceiptStatus.ACTIVE)
    frozen_from = models.CharField(max_length=24, blank=True)
    encumbrance_ref = models.CharField(max_length=64, blank=True, help_text="Order or pledge holding it.")
    last_event_seq = models.PositiveIntegerField(default=0)
    last_event_hash = models.CharField(max_length=64, blank=True)
    issued_at = models.DateTimeField()
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["number"]
        indexes = [models.Index(fields=["holder", "status"]), models.Index(fields=["lot", "status"]),
                   # The receipts an order holds (delivery, release): found by its reference, not by scanning
                   # every encumbered receipt of the seller, however many orders it has resting.
                   models.Index(fields=["encumbrance_ref"], condition=Q(status="encumbered"),
                                name="receipt_encumbered_by")]
        constraints = [
            models.UniqueConstraint(fields=["number"], name="receipt_number_unique"),
            models.CheckConstraint(condition=Q(quantity_kg__gt=0), name="receipt_quantity_positive"),
            models.CheckConstraint(condition=Q(closed_at__isnull=True) | Q(status__in=["split", "withdrawn"]),
                                   name="receipt_closed_only_when_terminal"),
        ]

    def __str__(self) -> str:
        return self.number

    @property
    def is_standard(self) -> bool:
        return self.grade_id is not None

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES


class ReceiptEvent(models.Model):
    """One link of a receipt's chain. Append-only: never updated, never deleted (a trigger refuses both, as for
    the cash journal: a link rewritten in place would be caught only by the next verification of the bundle)."""

    # No index of its own: (receipt, seq)'s unique index serves it.
    receipt = models.ForeignKey(Receipt, on_delete=models.PROTECT, related_name="events", db_index=False)
    seq = models.PositiveIntegerField()
    kind = models.CharField(max_length=24)
    event = models.JSONField(help_text="The canonical event document (includes prev hash).")
    hash = models.CharField(max_length=64)  # unique through Meta.constraints: no LIKE index (see Receipt.number)
    signature = models.JSONField()
    recorded_at = models.DateTimeField()

    class Meta:
        ordering = ["receipt_id", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["receipt", "seq"], name="receipt_event_seq_unique"),
            models.UniqueConstraint(fields=["hash"], name="receipt_event_hash_unique"),
            models.CheckConstraint(condition=Q(seq__gte=1), name="receipt_event_seq_positive"),
        ]
        triggers = [pgtrigger.Protect(name="receipt_event_append_only", operation=pgtrigger.Update | pgtrigger.Delete)]

    def __str__(self) -> str:
        return f"{self.receipt_id}#{self.seq} {self.kind}"


class ReceiptNumberCounter(models.Model):
    """Last number issued per metal and year, locked while a number is taken: receipt numbers on SQLite (the
    embedded mode). PostgreSQL takes serials from a sequence instead (receipts/numbering.py)."""

    metal = models.ForeignKey(Metal, on_delete=models.PROTECT)
    year = models.PositiveSmallIntegerField()
    last = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["metal", "year"], name="receipt_counter_unique")]

    def __str__(self) -> str:
        return f"{self.metal_id}-{self.year}: {self.last}"


class PlatformKey(models.Model):
    """The platform's Ed25519 key that signs receipt events; private part encrypted at rest."""

    signing_key = models.OneToOneField(SigningKey, on_delete=models.PROTECT, related_name="platform_key")
    encrypted_private_key = models.TextField()
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["active"], condition=Q(active=True),
                                               name="one_active_platform_key")]

    def __str__(self) -> str:
        return f"platform key {self.signing_key_id}"


class StockStatement(models.Model):
    """A warehouse's signed statement of what it holds, reconciled against open receipts."""

    warehouse = models.ForeignKey(Warehouse, on_delete=models.PROTECT, related_name="stock_statements")
    as_of = models.DateTimeField()
    document = models.JSONField()
    canonical = models.TextField()
    signature = models.JSONField()
    signing_key = models.ForeignKey(SigningKey, on_delete=models.PROTECT, related_name="+")
    received_at = models.DateTimeField(auto_now_add=True)
    reconciled_at = models.DateTimeField(null=True, blank=True)
    gaps = models.JSONField(null=True, blank=True, help_text="Lots where receipts exceed stated stock.")

    class Meta:
        ordering = ["-as_of"]
        constraints = [models.UniqueConstraint(fields=["warehouse", "as_of"], name="stock_statement_unique")]

    def __str__(self) -> str:
        return f"{self.warehouse_id} stock @ {self.as_of:%Y-%m-%d}"


class StockGap(models.Model):
    """Receipts for a lot exceed what the warehouse says it holds (or the lot is missing)."""

    statement = models.ForeignKey(StockStatement, on_delete=models.PROTECT, related_name="gap_rows")
    lot = models.ForeignKey(Lot, on_delete=models.PROTECT, related_name="stock_gaps")
    stated_kg = models.DecimalField(**MASS)
    receipted_kg = models.DecimalField(**MASS)
    opened_at = models.DateTimeField(auto_now_add=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["statement", "lot"], name="stock_gap_unique"),
                       models.CheckConstraint(condition=Q(receipted_kg__gt=F("stated_kg")),
                                              name="stock_gap_is_a_gap")]

    def __str__(self) -> str:
        return f"gap lot {self.lot_id}: {self.receipted_kg} > {self.stated_kg}"


ZERO = Decimal("0.000")
