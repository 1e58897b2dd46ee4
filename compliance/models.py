"""Compliance state: sanctions screening lists, the review queue of flags, end-use declarations,
export licences and their drawdown ledger, and the audit trail of members, receipts and all of these."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

import pgtrigger
from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django_countries.fields import CountryField

from compliance.audit import audited
from members.models import Member
from receipts.models import MASS, Lot, Metal, Receipt, ReceiptEvent

# --- sanctions / denied-party screening -------------------------------------------------


@audited(fields=["source_name", "content_hash", "entry_count", "active"])
class ScreeningList(models.Model):
    """One loaded version of a screening list file. Exactly one is active; the others are history."""

    source_name = models.CharField(max_length=255, help_text="File name the list was loaded from.")
    content_hash = models.CharField(max_length=64, help_text="SHA-256 of the file's bytes.")
    entry_count = models.PositiveIntegerField()
    active = models.BooleanField(default=False)
    loaded_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                  related_name="+")
    loaded_at = models.DateTimeField(auto_now_add=True)
    rescreen_due = models.BooleanField(
        default=False, help_text="Members still need screening against this version. Cleared by "
                                 "members_screen_all once every member is screened; until then "
                                 "pending_work_sweep re-publishes the rescreen (a lost queue cannot drop it).")

    class Meta:
        ordering = ["-loaded_at", "-pk"]
        constraints = [
            models.UniqueConstraint(fields=["active"], condition=Q(active=True), name="one_active_screening_list"),
        ]

    def __str__(self) -> str:
        return f"{self.source_name} ({self.entry_count} entries, {self.loaded_at:%Y-%m-%d %H:%M})"


class ScreeningEntry(models.Model):
    """A listed party as it stood in one list version. Never changed after the load."""

    screening_list = models.ForeignKey(ScreeningList, on_delete=models.PROTECT, related_name="entries")
    name = models.CharField(max_length=500)
    aliases = models.JSONField(default=list)
    country = models.CharField(max_length=2, blank=True)
    source = models.CharField(max_length=100, help_text='The list it comes from: "OFAC SDN", "DEMO", ...')
    row = models.PositiveIntegerField(help_text="Data row in the file (1 = first row after the header).")
    # Identity of the listed party across list versions (name, aliases, country, source): a reload of
    # an unchanged entry must not re-raise a hit an officer already decided.
    entry_key = models.CharField(max_length=64, db_index=True)

    class Meta:
        ordering = ["screening_list_id", "row"]
        verbose_name_plural = "screening entries"
        constraints = [models.UniqueConstraint(fields=["screening_list", "row"], name="screening_entry_row_unique")]

    def __str__(self) -> str:
        return f"{self.name} [{self.source}]"


# --- flags: the review queue -------------------------------------------------------------


class FlagKind(models.TextChoices):
    SANCTIONS_HIT = "sanctions_hit", "Sanctions / denied-party hit"
    ESG_FAILURE = "esg_failure", "ESG rule failure"
    STORAGE_INCIDENT = "storage_incident", "Storage incident"
    STOCK_GAP = "stock_gap", "Stock gap"
    LICENCE_REQUEST = "licence_request", "Licence or declaration to review"
    OTHER = "other", "Other"


class FlagStatus(models.TextChoices):
    OPEN = "open", "Open"
    CONFIRMED = "confirmed", "Confirmed"
    DISMISSED = "dismissed", "Dismissed"


# compliance.services.flag_set_status is the only way a flag's status moves. A dismissed flag may be
# reopened on new evidence; a confirmed one may be dismissed later (delisting, an error found).
FLAG_TRANSITIONS: dict[str, frozenset[str]] = {
    FlagStatus.OPEN: frozenset({FlagStatus.CONFIRMED, FlagStatus.DISMISSED}),
    FlagStatus.CONFIRMED: frozenset({FlagStatus.DISMISSED}),
    FlagStatus.DISMISSED: frozenset({FlagStatus.OPEN}),
}


# indexed=["receipt"]: a receipt's flags and ESG results are read from the trail by receipt
# (tests/compliance/test_esg_store_paths.py, test_esg_worker.py).
@audited(fields=["kind", "status", "member", "receipt", "reference", "subject_key", "resolved_by",
                 "resolved_at", "resolution_reason"], statement_level=True, indexed=["receipt"])
class Flag(models.Model):
    """Something an officer must look at: a sanctions hit, an ESG failure, a storage breach..."""

    kind = models.CharField(max_length=20, choices=FlagKind.choices)
    status = models.CharField(max_length=10, choices=FlagStatus.choices, default=FlagStatus.OPEN)
    member = models.ForeignKey(Member, null=True, blank=True, on_delete=models.PROTECT, related_name="flags")
    receipt = models.ForeignKey(Receipt, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    reference = models.CharField(max_length=200, blank=True, help_text="Free reference: lot, order, incident...")
    screening_entry = models.ForeignKey(ScreeningEntry, null=True, blank=True, on_delete=models.PROTECT,
                                        related_name="flags")
    # What exactly is flagged, stable across re-runs (for a sanctions hit: the listed party's entry_key).
    # With the member it makes the raising of a flag idempotent.
    subject_key = models.CharField(max_length=200, blank=True)
    details = models.JSONField(default=dict, blank=True)
    opened_at = models.DateTimeField(auto_now_add=True, db_index=True)
    resolved_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                    related_name="+")
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolution_reason = models.TextField(blank=True)

    class Meta:
        ordering = ["-opened_at", "-pk"]
        indexes = [models.Index(fields=["status", "kind"]), models.Index(fields=["member", "kind", "status"])]
        constraints = [
            # Screening the same member against the same listed party twice raises one flag, not two,
            # even when two screenings race (the second insert hits this index and is ignored).
            models.UniqueConstraint(fields=["kind", "member", "subject_key"],
                                    condition=Q(status="open") & Q(member__isnull=False) & ~Q(subject_key=""),
                                    name="flag_one_open_per_member_subject"),
        ]

    def __str__(self) -> str:
        subject = self.member or self.receipt or self.reference or "-"
        return f"#{self.pk} {self.get_kind_display()}: {subject}"


class FlagTransition(models.Model):
    """Who moved a flag, from what to what, when and why. Append-only."""

    flag = models.ForeignKey(Flag, on_delete=models.PROTECT, related_name="transitions")
    from_status = models.CharField(max_length=10, choices=FlagStatus.choices)
    to_status = models.CharField(max_length=10, choices=FlagStatus.choices)
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                   related_name="+")
    reason = models.TextField()
    decided_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["flag_id", "decided_at", "pk"]
        constraints = [models.CheckConstraint(condition=~Q(reason=""), name="flag_transition_reason_required")]
        triggers = [pgtrigger.Protect(name="flag_transition_append_only",
                                      operation=pgtrigger.Update | pgtrigger.Delete)]

    def __str__(self) -> str:
        return f"flag {self.flag_id}: {self.from_status} -> {self.to_status}"


# --- export control: end-use declarations and export licences ------------------------------


class DeclarationStatus(models.TextChoices):
    PENDING = "pending", "Pending review"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"


DECLARATION_TRANSITIONS: dict[str, frozenset[str]] = {
    DeclarationStatus.PENDING: frozenset({DeclarationStatus.APPROVED, DeclarationStatus.REJECTED}),
    DeclarationStatus.APPROVED: frozenset(),
    DeclarationStatus.REJECTED: frozenset(),
}


@audited()
class EndUseDeclaration(models.Model):
    """A buyer's statement of who will use a controlled metal, for what, and where; approved by an officer."""

    member = models.ForeignKey(Member, on_delete=models.PROTECT, related_name="end_use_declarations")
    metal = models.ForeignKey(Metal, on_delete=models.PROTECT, related_name="+")
    end_user = models.CharField(max_length=200)
    end_use = models.TextField()
    destination_country = CountryField()
    valid_from = models.DateField()
    valid_to = models.DateField(help_text="Last day of validity (inclusive).")
    status = models.CharField(max_length=10, choices=DeclarationStatus.choices, default=DeclarationStatus.PENDING)
    submitted_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                     related_name="+")
    submitted_at = models.DateTimeField(auto_now_add=True)
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                   related_name="+")
    decided_at = models.DateTimeField(null=True, blank=True)
    reason = models.TextField(blank=True, help_text="The officer's reason for the decision.")

    class Meta:
        ordering = ["-submitted_at", "-pk"]
        indexes = [models.Index(fields=["member", "metal", "status"])]
        constraints = [
            models.CheckConstraint(condition=Q(valid_to__gt=F("valid_from")), name="declaration_validity_order"),
        ]

    def __str__(self) -> str:
        return f"EUD-{self.pk} {self.metal_id} {self.end_user}"


class LicenceStatus(models.TextChoices):
    PENDING = "pending", "Pending review"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"
    REVOKED = "revoked", "Revoked"


LICENCE_TRANSITIONS: dict[str, frozenset[str]] = {
    LicenceStatus.PENDING: frozenset({LicenceStatus.APPROVED, LicenceStatus.REJECTED}),
    LicenceStatus.APPROVED: frozenset({LicenceStatus.REVOKED}),
    LicenceStatus.REJECTED: frozenset(),
    LicenceStatus.REVOKED: frozenset(),
}


@audited()
class ExportLicence(models.Model):
    """A state-issued licence to export a quantity of a controlled metal to a named end user.

    `drawn_kg` is the running total of the LicenceDrawdown ledger, kept on the row so the row lock
    and the CHECK below hold the cap; the ledger is the history.
    """

    licence_number = models.CharField(max_length=64, unique=True)
    exporter = models.ForeignKey(Member, on_delete=models.PROTECT, related_name="export_licences")
    metal = models.ForeignKey(Metal, on_delete=models.PROTECT, related_name="+")
    quantity_cap_kg = models.DecimalField(**MASS)
    consignee = models.CharField(max_length=200)
    end_user = models.CharField(max_length=200)
    end_use = models.TextField()
    destination_country = CountryField()
    valid_from = models.DateField()
    valid_to = models.DateField(help_text="Last day of validity (inclusive).")
    status = models.CharField(max_length=10, choices=LicenceStatus.choices, default=LicenceStatus.PENDING)
    drawn_kg = models.DecimalField(**MASS, default=Decimal("0.000"))
    submitted_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                     related_name="+")
    submitted_at = models.DateTimeField(auto_now_add=True)
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                   related_name="+")
    decided_at = models.DateTimeField(null=True, blank=True)
    reason = models.TextField(blank=True, help_text="The officer's reason for the last decision.")

    class Meta:
        ordering = ["-submitted_at", "-pk"]
        indexes = [models.Index(fields=["exporter", "metal", "status"])]
        constraints = [
            models.CheckConstraint(condition=Q(quantity_cap_kg__gt=0), name="licence_cap_positive"),
            models.CheckConstraint(condition=Q(valid_to__gt=F("valid_from")), name="licence_validity_order"),
            models.CheckConstraint(condition=Q(drawn_kg__gte=0), name="licence_drawn_not_negative"),
            models.CheckConstraint(condition=Q(drawn_kg__lte=F("quantity_cap_kg")), name="licence_drawn_within_cap"),
        ]

    def __str__(self) -> str:
        return self.licence_number

    @property
    def remaining_kg(self) -> Decimal:
        return self.quantity_cap_kg - self.drawn_kg


@audited()
class LicenceDrawdown(models.Model):
    """One use of an export licence. A ledger row: never updated, never deleted (a trigger refuses both)."""

    licence = models.ForeignKey(ExportLicence, on_delete=models.PROTECT, related_name="drawdowns")
    quantity_kg = models.DecimalField(**MASS)
    drawn_total_kg = models.DecimalField(**MASS, help_text="The licence's drawn total after this row.")
    receipt = models.ForeignKey(Receipt, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    reference = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["licence_id", "pk"]
        constraints = [
            models.CheckConstraint(condition=Q(quantity_kg__gt=0), name="drawdown_quantity_positive"),
            models.CheckConstraint(condition=Q(drawn_total_kg__gte=F("quantity_kg")), name="drawdown_total_covers_row"),
        ]
        triggers = [pgtrigger.Protect(name="drawdown_append_only", operation=pgtrigger.Update | pgtrigger.Delete)]

    def __str__(self) -> str:
        return f"{self.licence_id}: {self.quantity_kg} kg ({self.reference})"


# --- ESG rule packs and their results per receipt ------------------------------------------------


@audited(fields=["pack_id", "version", "content_hash", "active"])
class EsgRulePack(models.Model):
    """One version of a rule pack file (compliance/rulepacks/*.yaml) as loaded; one active version per pack."""

    pack_id = models.CharField(max_length=64)
    version = models.CharField(max_length=32)
    content_hash = models.CharField(max_length=64, help_text="SHA-256 of the pack's canonical JSON.")
    title = models.CharField(max_length=200)
    market = models.CharField(max_length=20)
    label = models.CharField(max_length=40, blank=True, help_text="What a receipt earns when every rule passes.")
    canonical = models.JSONField(help_text="The pack's meaning as evaluated (compliance.esg.pack_canonical).")
    active = models.BooleanField(default=False)
    loaded_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["pack_id", "-loaded_at"]
        verbose_name = "ESG rule pack"
        constraints = [
            models.UniqueConstraint(fields=["pack_id", "version"], name="esg_rule_pack_version_unique"),
            models.UniqueConstraint(fields=["pack_id"], condition=Q(active=True), name="esg_one_active_version_per_pack"),
        ]

    def __str__(self) -> str:
        return f"{self.pack_id} v{self.version}"


class EsgOutcome(models.TextChoices):
    PASS = "pass", "Pass"
    WARN = "warn", "Warn (a warning rule failed)"
    FAIL = "fail", "Fail (a blocking rule failed)"


@audited(fields=["receipt", "rule_pack", "outcome", "label", "evaluated_at"], statement_level=True,
         indexed=["receipt"])
class EsgEvaluation(models.Model):
    """A receipt's current result under one version of one pack (compliance.services.esg_evaluate).

    Re-evaluation that reaches the same result (same outcomes from the same facts) leaves the row
    untouched; a different result replaces it, and the audit trail keeps the earlier ones. `rules` holds
    each rule's outcome in the pack's order; `facts` holds what was measured, so that with the pack
    version every rule's measured and required values can be shown exactly as judged
    (compliance.selectors.receipt_esg_report)."""

    # No index of their own: the unique (receipt, rule_pack) index serves lookups by receipt, the
    # (rule_pack, label, receipt) index those by pack version; two more would only slow down the bulk
    # writes of esg_evaluate (five indexes per row instead of three).
    receipt = models.ForeignKey(Receipt, on_delete=models.PROTECT, related_name="esg_evaluations", db_index=False)
    rule_pack = models.ForeignKey(EsgRulePack, on_delete=models.PROTECT, related_name="evaluations", db_index=False)
    outcome = models.CharField(max_length=4, choices=EsgOutcome.choices)
    label = models.CharField(max_length=40, blank=True, help_text="The pack's label, when earned.")
    rules = models.JSONField(help_text="Each rule's outcome, in the order of the pack version's rules.")
    cbam = models.JSONField(null=True, blank=True, help_text="EU CBAM estimate, when the pack has a policy.")
    facts = models.JSONField(default=dict, blank=True,
                             help_text="The receipt facts judged, and the attestation ids they were read from.")
    result_hash = models.CharField(max_length=32, blank=True,
                                   help_text="Digest of outcome, label, rule outcomes, CBAM and facts: an "
                                             "evaluation reaching the same digest writes nothing.")
    evaluated_at = models.DateTimeField(help_text="When this result was reached.")

    class Meta:
        ordering = ["receipt_id", "rule_pack_id"]
        verbose_name = "ESG evaluation"
        constraints = [
            models.UniqueConstraint(fields=["receipt", "rule_pack"], name="esg_evaluation_unique_per_pack_version"),
        ]
        indexes = [
            # receipts_with_label: the receipts holding a label under one (active) pack version.
            models.Index(fields=["rule_pack", "label", "receipt"], name="esg_eval_pack_label_receipt"),
        ]

    def __str__(self) -> str:
        return f"{self.receipt_id} / {self.rule_pack_id}: {self.outcome}"

    def rule_outcomes(self, rule_ids: Sequence[str]) -> dict[str, str]:
        """rule id -> outcome. `rules` holds the outcomes alone, in the order of the pack version's rules
        (`rule_ids`, e.g. compliance.services.esg_compiled_pack(version).rule_ids): the ids are the version's,
        so repeating them in every row only made a sweep write a third more."""
        return {rule_id: outcome for rule_id, outcome in zip(rule_ids, self.rules or [], strict=False)}


class EsgLotFacts(models.Model):
    """What the ESG rules read from a lot's attestations, one narrow row per lot: for each kind, the id of
    the attestation that counts (the latest; a Deprecated PACT footprint skipped) and the few document
    members the rules use, as the JSON text they hold (compliance.facts turns them into facts).

    A projection of receipts_attestation kept by the database, in the transaction that writes it: triggers
    on that table (migration 0005, `compliance_esg_lot_facts_refresh`) recompute the rows of the lots a
    statement touched, whatever wrote it (attestation_submit, an import, a repair), so an ESG sweep reads
    this small table instead of every document (compliance.facts._facts_sql). PostgreSQL only: elsewhere
    the facts are read from the attestations themselves (compliance.facts._fact_rows_orm)."""

    # NULL is "the document has no such member" and differs from an empty string, which the facts keep as
    # such (an empty smelter id is judged, and snapshotted, as ""): hence null=True on the text fields.
    lot = models.OneToOneField(Lot, primary_key=True, on_delete=models.CASCADE, related_name="+")
    assay_id = models.BigIntegerField(null=True)
    assay_issued_at = models.TextField(null=True, help_text="issuedAt")  # noqa: DJ001
    footprint_id = models.BigIntegerField(null=True)
    footprint_pcf = models.TextField(null=True, help_text="pcf.pcfExcludingBiogenicUptake")  # noqa: DJ001
    footprint_unit = models.TextField(null=True, help_text="pcf.declaredUnitOfMeasurement")  # noqa: DJ001
    footprint_mass_per_unit = models.TextField(null=True, help_text="pcf.productMassPerDeclaredUnit")  # noqa: DJ001
    footprint_verifier = models.TextField(null=True, help_text="pcf.verification.providerName")  # noqa: DJ001
    footprint_standard = models.TextField(null=True, help_text="pcf.verification.standardName")  # noqa: DJ001
    recycled_id = models.BigIntegerField(null=True)
    recycled_pre_consumer = models.TextField(null=True, help_text="preConsumerShare")  # noqa: DJ001
    recycled_post_consumer = models.TextField(null=True, help_text="postConsumerShare")  # noqa: DJ001
    origin_id = models.BigIntegerField(null=True)
    origin_smelter = models.TextField(null=True, help_text="smelterId")  # noqa: DJ001

    class Meta:
        verbose_name = "ESG facts of a lot"
        verbose_name_plural = "ESG facts of lots"

    def __str__(self) -> str:
        return f"ESG facts of lot {self.lot_id}"


# --- audit trail of other apps' models --------------------------------------------------------
# members and receipts own these tables but must not depend on compliance, so their history is
# declared here through proxy models: the event tables and the triggers (installed on the real
# tables) live in compliance's migrations. The snapshotted fields are listed rather than "all" so
# that a field added to Member or Receipt does not silently need a compliance migration; widen the
# lists (and run makemigrations compliance) when a new field carries status, title or quantity.

MEMBER_AUDIT_FIELDS = ["name", "legal_id", "country", "kyc_status"]
RECEIPT_AUDIT_FIELDS = ["number", "lot", "parent", "grade", "quantity_kg", "holder", "status", "frozen_from",
                        "encumbrance_ref", "last_event_seq", "last_event_hash", "closed_at"]
RECEIPT_CHAIN_AUDIT_FIELDS = ["receipt", "seq", "kind", "event", "hash", "signature", "recorded_at"]


@audited(fields=MEMBER_AUDIT_FIELDS)
class MemberProxy(Member):
    class Meta:
        proxy = True
        verbose_name = "member (audited)"


@audited(fields=RECEIPT_AUDIT_FIELDS, statement_level=True)
class ReceiptProxy(Receipt):
    class Meta:
        proxy = True
        verbose_name = "receipt (audited)"


# The chain is append-only (receipts refuse an update or delete of a link at the database) and each link is its
# own signed record, with its time: copying every new link here (its whole document and signature) cost order
# entry a third of its audit triggers' time and said nothing the link does not. Updates and deletes stay on
# record, for a link rewritten with the refusing trigger switched off. Rows copied before are kept.
@audited(fields=RECEIPT_CHAIN_AUDIT_FIELDS, model_name="ReceiptChainAuditEvent", statement_level=True,
         operations=("update", "delete"))
class ReceiptEventProxy(ReceiptEvent):
    class Meta:
        proxy = True
        verbose_name = "receipt event (audited)"
