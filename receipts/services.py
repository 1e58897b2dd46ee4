"""Every write in the receipts app: catalogue, warehouses, lots, attestations, grading, receipts and their
signed event chain, storage readings and incidents, stock statements.

Each receipt change appends a signed, hash-chained event in the same transaction as the change.
Functions that take row locks say so; callers in trading lock the instrument first, then receipts.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from config.db import new_keys, write_rows
from config.errors import Conflict, IllegalTransition, NotAllowed, NotFound, ValidationFailed
from members.keys import b64url_decode
from members.models import Member, Role, SigningKey
from receipts import chain
from receipts.bundles import (
    DOCUMENT_TIME,
    SIGNER_ROLES,
    allowed_attesters,
    attestation_lot_matches,
    validate_attestation,
)
from receipts.canonical import canonical_bytes, parse_utc, utc_stamp
from receipts.catalogue import load_catalogue, parse_grade
from receipts.errors import ProofError
from receipts.grading import AssayProfile, GradeEvaluation, GradingResult, grade_lot
from receipts.lock_objects import (
    lot_for_update,
    open_incident_for_update,
    order_receipts_locked,
    receipts_for_update,
    stock_statement_for_update,
)
from receipts.models import (
    OPEN_STATUSES,
    Attestation,
    AttestationKind,
    Grade,
    Lot,
    LotNomination,
    Metal,
    Receipt,
    ReceiptEvent,
    ReceiptStatus,
    StockGap,
    StockStatement,
    StorageIncident,
    StorageReading,
    Warehouse,
)
from receipts.numbering import receipt_numbers
from receipts.platform_keys import platform_signer
from receipts.signals import proof_changed_on_commit, receipt_freezing
from receipts.signing import verify_bytes
from receipts.units import format_kg

GRAM = Decimal("0.001")


class InsufficientReceipts(Conflict):
    default_code = "insufficient_receipts"


# --- small parsers shared by the services -------------------------------------------------------

def parse_mass(value: Any, *, field: str = "quantity_kg") -> Decimal:
    try:
        mass = value if isinstance(value, Decimal) else Decimal(str(value))
    except (InvalidOperation, ValueError) as exc:
        raise ValidationFailed(f"{field} must be a number of kilograms.", code="invalid_quantity",
                               field=field) from exc
    if not mass.is_finite() or mass <= 0:
        raise ValidationFailed(f"{field} must be more than zero.", code="invalid_quantity", field=field)
    if mass.quantize(GRAM) != mass:
        raise ValidationFailed(f"{field} is finer than one gram.", code="invalid_quantity", field=field)
    return mass


def member_ref(member: Member) -> str:
    """How a member is named inside signed documents: its legal id, stable and public."""
    return member.legal_id


# --- catalogue -----------------------------------------------------------------------------------

def catalogue_sync() -> tuple[int, int]:
    """Load receipts/catalogue.json into Metal and Grade rows (insert or update; never deletes)."""
    catalogue = load_catalogue()
    version = str(catalogue.version)
    with transaction.atomic():
        for metal in catalogue.metals.values():
            Metal.objects.update_or_create(symbol=metal.symbol, defaults={
                "name": metal.name, "hs_code": metal.hs_code, "export_controlled": metal.export_controlled,
                "controlled_since": metal.controlled_since, "control_reference": metal.control_reference or "",
                "package_kg": metal.package_kg, "min_temp_c": metal.storage.min_temp_c,
                "max_temp_c": metal.storage.max_temp_c, "max_humidity_pct": metal.storage.max_humidity_pct,
                "forms": list(metal.forms), "catalogue_version": version,
            })
        metals = {m.symbol: m for m in Metal.objects.all()}
        for grade in catalogue.grades.values():
            Grade.objects.update_or_create(code=grade.code, defaults={
                "metal": metals[grade.metal], "name": grade.name, "purity_min": grade.purity_min,
                "rank": grade.rank, "forms": list(grade.forms), "spec": catalogue.grade_spec(grade.code),
                "catalogue_version": version,
            })
    return len(catalogue.metals), len(catalogue.grades)


# --- warehouses ----------------------------------------------------------------------------------

def warehouse_create(*, operator: Member, code: str, name: str, country: str, region: str,
                     approved: bool = False) -> Warehouse:
    if not operator.has_role(Role.WAREHOUSE):
        raise ValidationFailed("The operator must be a warehouse member.", code="not_a_warehouse")
    with transaction.atomic():
        if Warehouse.objects.filter(code=code).exists():
            raise Conflict(f"Warehouse {code} exists.", code="warehouse_exists")
        return Warehouse.objects.create(operator=operator, code=code, name=name, country=country, region=region,
                                        approved=approved)


def warehouse_set_approved(*, warehouse: Warehouse, approved: bool) -> Warehouse:
    """A compliance officer approves a warehouse to register lots (or withdraws the approval). Receipts
    already issued there stay valid; only new lots need an approved warehouse."""
    if warehouse.approved != approved:
        warehouse.approved = approved
        warehouse.save(update_fields=["approved"])
    return warehouse


def _require_operator(warehouse: Warehouse, member: Member) -> None:
    if warehouse.operator_id != member.pk:
        raise NotFound("No such warehouse.")  # another member's warehouse is invisible, not forbidden
    if not member.is_approved:
        raise NotAllowed("Only approved members act on the platform.", code="member_not_approved")


# --- lots ----------------------------------------------------------------------------------------

def lot_register(*, warehouse: Warehouse, registered_by: Member, metal: str, form: str, net_mass_kg: Any,
                 package_count: int, brand: str, batch_number: str, production_date: date, location: str,
                 depositor: Member, producer: Member | None = None, seal_numbers: Sequence[str] = (),
                 nominees: Nominees = ()) -> Lot:
    """Register a deposited lot, with the members nominated to attest it (`nominees`: (member, kinds)
    pairs, checked as `lot_nominate` checks them) in the same transaction."""
    _require_operator(warehouse, registered_by)
    if not warehouse.approved:
        raise NotAllowed("The warehouse is not approved to register lots.", code="warehouse_not_approved")
    metal_row = Metal.objects.filter(symbol=metal).first()
    if metal_row is None:
        raise ValidationFailed(f"Unknown metal {metal!r}.", code="unknown_metal", field="metal")
    if form not in metal_row.forms:
        raise ValidationFailed(f"{metal_row.name} is not listed in form {form!r}; forms: {', '.join(metal_row.forms)}.",
                               code="invalid_form", field="form")
    mass = parse_mass(net_mass_kg, field="net_mass_kg")
    if package_count <= 0:
        raise ValidationFailed("package_count must be at least 1.", code="invalid_quantity", field="package_count")
    if production_date > timezone.now().date():
        raise ValidationFailed("production_date is in the future.", code="invalid_date", field="production_date")
    wanted = [(member, _nomination_kinds(member, kinds, prefix=f"nominees[{i}]."))
              for i, (member, kinds) in enumerate(nominees)]
    try:
        with transaction.atomic():
            lot = Lot.objects.create(
                warehouse=warehouse, metal=metal_row, form=form, net_mass_kg=mass, package_count=package_count,
                producer=producer, brand=brand, batch_number=batch_number, seal_numbers=list(seal_numbers),
                production_date=production_date, location=location, depositor=depositor)
            # Nobody else can see the new lot yet: no lock needed to nominate on it.
            for member, kinds in wanted:
                _nominate(lot, member, kinds, by=registered_by, at=lot.created_at)
            return lot
    except IntegrityError as exc:
        raise Conflict(f"Batch {batch_number} is already registered in {warehouse.code}.", code="lot_exists",
                       field="batch_number") from exc


def lot_document(lot: Lot) -> dict[str, Any]:
    """The lot as bound into receipts' issued events and embedded in bundles. Lots never change once
    registered, so this document hashes the same forever."""
    return {
        "ref": lot.reference, "metal": lot.metal.symbol, "form": lot.form,
        "net_mass_kg": format_kg(lot.net_mass_kg), "warehouse": lot.warehouse.code,
        "warehouse_country": lot.warehouse.country.code,  # type: ignore[attr-defined]  # a Country, stubs say str
        "package_count": lot.package_count,
        "brand": lot.brand, "batch_number": lot.batch_number, "seal_numbers": list(lot.seal_numbers),
        "production_date": lot.production_date.isoformat(), "location": lot.location,
        "producer": member_ref(lot.producer) if lot.producer else None,
    }


# --- nominations: who may attest a lot -----------------------------------------------------------------

# (member, attestation kinds) pairs, as lot_register takes them.
Nominees = Sequence[tuple[Member, Sequence[str]]]


def _attestation_kinds(kinds: Sequence[str], *, field: str) -> list[str]:
    """`kinds`, each once, in the order given; refused unless they are one or more attestation kinds."""
    if isinstance(kinds, str) or not kinds:
        raise ValidationFailed("Name at least one attestation kind.", code="invalid_kind", field=field)
    unknown = [k for k in kinds if k not in AttestationKind.values]
    if unknown:
        raise ValidationFailed(f"Unknown attestation kind {unknown[0]!r}; kinds: {', '.join(AttestationKind.values)}.",
                               code="invalid_kind", field=field)
    return list(dict.fromkeys(kinds))


def _nomination_kinds(member: Member, kinds: Sequence[str], *, prefix: str = "") -> list[str]:
    """The kinds to nominate `member` for, each once, in the order given; refused when a kind is unknown or
    the member lacks every role that may sign it (the same roles `attestation_submit` requires)."""
    wanted = _attestation_kinds(kinds, field=f"{prefix}kinds")
    roles = member.role_set()
    for kind in wanted:
        if not roles & SIGNER_ROLES[kind]:
            raise ValidationFailed(
                f"{member_ref(member)} cannot sign {kind} attestations: that needs role "
                f"{' or '.join(sorted(SIGNER_ROLES[kind]))}.", code="nominee_role_not_allowed",
                field=f"{prefix}member", details={"member": member_ref(member), "kind": kind,
                                                  "roles": sorted(SIGNER_ROLES[kind])})
    return wanted


def _nominate(lot: Lot, member: Member, kinds: Sequence[str], *, by: Member, at: datetime) -> list[LotNomination]:
    """The live nominations of `member` for `kinds` on the lot, made where missing. The caller holds the
    lot's row lock (or made the lot in its transaction)."""
    live = {n.kind: n for n in LotNomination.objects.filter(lot=lot, member=member, kind__in=kinds,
                                                            withdrawn_at__isnull=True)}
    fresh = [LotNomination(lot=lot, member=member, kind=kind, nominated_by=by, nominated_at=at)
             for kind in kinds if kind not in live]
    LotNomination.objects.bulk_create(fresh)
    live.update((n.kind, n) for n in fresh)
    return [live[kind] for kind in kinds]


def lot_nominate(*, lot: Lot, by: Member, member: Member, kinds: Sequence[str]) -> list[LotNomination]:
    """The lot's warehouse operator nominates `member` to attest the lot for `kinds`. Idempotent: a kind the
    member is already nominated for keeps its nomination. Returns the live nominations for `kinds`. Takes
    the lot's row lock, so a nomination and a withdrawal or an issue never interleave."""
    _require_operator(lot.warehouse, by)
    wanted = _nomination_kinds(member, kinds)
    with transaction.atomic():
        lot_for_update(lot.pk).get()
        return _nominate(lot, member, wanted, by=by, at=timezone.now())


def lot_nomination_withdraw(*, lot: Lot, by: Member, member: Member, kinds: Sequence[str]) -> list[LotNomination]:
    """The operator withdraws `member`'s nominations for `kinds` (all or none). Refused for a kind the member
    has already attested the lot for: that attestation stays, and so must the nomination that allowed it
    (a receipt issued on the lot names its attesters). The rows stay, marked withdrawn. Takes the lot's
    row lock, so no attestation by the member slips in between the check and the withdrawal."""
    _require_operator(lot.warehouse, by)
    wanted = _attestation_kinds(kinds, field="kinds")
    with transaction.atomic():
        lot_for_update(lot.pk).get()
        live = {n.kind: n for n in LotNomination.objects.filter(lot=lot, member=member, kind__in=wanted,
                                                                withdrawn_at__isnull=True)}
        missing = [k for k in wanted if k not in live]
        if missing:
            raise NotFound(f"{member_ref(member)} is not nominated for {', '.join(missing)} on this lot.",
                           code="nomination_not_found", details={"kinds": missing})
        attested = sorted(set(Attestation.objects.filter(lot=lot, signer=member, kind__in=wanted)
                              .values_list("kind", flat=True)))
        if attested:
            raise Conflict(f"{member_ref(member)} has already attested {', '.join(attested)} for this lot; "
                           "its nomination for that stays.", code="nomination_in_use", details={"kinds": attested})
        now = timezone.now()
        for kind in wanted:
            nomination = live[kind]
            nomination.withdrawn_at, nomination.withdrawn_by = now, by
            nomination.save(update_fields=["withdrawn_at", "withdrawn_by"])
    return [live[kind] for kind in wanted]


def may_attest(lot: Lot, member: Member, kind: str) -> bool:
    """Whether `member` may sign a `kind` attestation about the lot: its warehouse operator, its producer, or
    a member the operator nominated for that kind, judged by the offline verifier's rule
    (`bundles.allowed_attesters`). Roles are checked apart: see SIGNER_ROLES."""
    return member_ref(member) in allowed_attesters(lot_attesters(lot)).get(kind, ())


def lot_attesters(lot: Lot) -> dict[str, Any]:
    """Who may sign the lot's attestations, as bound into a receipt's `issued` event (and checked by the
    offline verifier): the operator and producer by legal id, and the live nominations per kind."""
    nominated: dict[str, list[str]] = {}
    rows = (LotNomination.objects.filter(lot=lot, withdrawn_at__isnull=True)
            .values_list("kind", "member__legal_id").order_by("kind", "member__legal_id"))
    for kind, legal_id in rows:
        nominated.setdefault(kind, []).append(legal_id)
    return {"operator": member_ref(lot.warehouse.operator),
            "producer": member_ref(lot.producer) if lot.producer else None, "nominated": nominated}


# --- attestations ----------------------------------------------------------------------------------

def _proof_error(exc: ProofError) -> ValidationFailed:
    return ValidationFailed(exc.message, code=exc.code, details=exc.details)


def attestation_submit(*, lot: Lot, kind: str, document: Any, signature: Any, submitted_by: Member) -> Attestation:
    """Accept a signed attestation about a lot after checking its shape, its lot, its key and signature.

    Only the lot's warehouse operator, or the member whose key signed the document, may submit it. That is
    decided first, before anything about the lot (its reference) shows in an error: to anyone else the lot
    does not exist. The signer must be the lot's operator, its producer or a member the operator nominated
    for this kind (`may_attest`), judged last, under the lot's row lock."""
    kid = signature.get("kid") if isinstance(signature, dict) else None
    key = SigningKey.objects.select_related("member").filter(kid=kid).first() if isinstance(kid, str) else None
    if submitted_by.pk != lot.warehouse.operator_id and (key is None or key.member_id != submitted_by.pk):
        raise NotFound("No such lot.")
    if not submitted_by.is_approved:
        raise NotAllowed("Only approved members act on the platform.", code="member_not_approved")
    if kind not in AttestationKind.values:
        raise ValidationFailed(f"Unknown attestation kind {kind!r}.", code="invalid_attestation", field="kind")
    problems = validate_attestation(kind, document)
    if problems:
        raise ValidationFailed(f"The {kind} document is invalid: {problems[0]}", code="invalid_attestation",
                               details={"problems": problems}, field="document")
    if not attestation_lot_matches(kind, document, lot.reference):
        if submitted_by.pk != lot.warehouse.operator_id:
            # A signer proves it knows the lot by naming it; to one that does not, the lot is not there
            # (lot ids must not enumerate other members' lot references).
            raise NotFound("No such lot.")
        raise ValidationFailed(f"The document is not about lot {lot.reference}.", code="attestation_lot_mismatch",
                               field="document")
    if not isinstance(signature, dict) or signature.get("alg") != "EdDSA" or not isinstance(signature.get("kid"), str) \
            or not isinstance(signature.get("sig"), str):
        raise ValidationFailed('signature must be {"alg": "EdDSA", "kid": ..., "sig": base64url}.',
                               code="malformed_signature", field="signature")
    try:
        canonical = canonical_bytes(document)
    except ProofError as exc:
        raise _proof_error(exc) from exc
    if key is None:
        raise ValidationFailed("The signing key is not registered.", code="unknown_key", field="signature")
    now = timezone.now()
    if key.revoked_at is not None and key.revoked_at <= now:
        raise ValidationFailed("The signing key is revoked.", code="key_revoked", field="signature")
    if key.valid_from > now or (key.valid_to is not None and key.valid_to <= now):
        raise ValidationFailed("The signing key is outside its validity.", code="key_not_valid", field="signature")
    signer = key.member
    allowed = SIGNER_ROLES[kind]
    if not signer.role_set() & allowed:
        raise ValidationFailed(f"A {kind} attestation must be signed by a member with role "
                               f"{' or '.join(sorted(allowed))}.", code="signer_role_not_allowed", field="signature")
    if not signer.is_approved:
        raise ValidationFailed("The signer is not an approved member.", code="signer_not_approved", field="signature")
    if kind == AttestationKind.ASSAY and document.get("lab") != member_ref(signer):
        raise ValidationFailed(f"The certificate names lab {document.get('lab')!r} but is signed by "
                               f"{member_ref(signer)}; name the lab by its legal id.",
                               code="attestation_signer_mismatch", field="document")
    signed_at = parse_utc(document.get(DOCUMENT_TIME[kind]))
    if signed_at is None or signed_at > now + timedelta(minutes=5):
        raise ValidationFailed(f"{DOCUMENT_TIME[kind]} must be a past UTC time.", code="invalid_attestation",
                               field="document")
    # Judged as the offline verifier judges it: validity is half-open [valid_from, valid_to).
    if key.valid_from > signed_at or (key.valid_to is not None and key.valid_to <= signed_at) \
            or (key.revoked_at is not None and key.revoked_at <= signed_at):
        raise ValidationFailed("The key was not valid when the document was signed.", code="key_not_valid",
                               field="signature")
    public = Ed25519PublicKey.from_public_bytes(b64url_decode(key.public_key))
    if not verify_bytes(canonical, signature, public):
        raise ValidationFailed("The signature does not verify over the canonical document.",
                               code="signature_invalid", field="signature")
    digest = hashlib.sha256(canonical).hexdigest()
    sig = {"alg": "EdDSA", "kid": signature["kid"], "sig": signature["sig"]}
    binding = chain.attestation_hash({"type": kind, "document": document, "signature": sig})
    try:
        with transaction.atomic():
            # Judged under the lot's lock: a withdrawal of the signer's nomination cannot slip in between.
            lot_for_update(lot.pk).get()
            if not may_attest(lot, signer, kind):
                raise ValidationFailed(
                    f"{member_ref(signer)} is not nominated to attest {kind} for lot {lot.reference}; the lot's "
                    "warehouse operator nominates who may.", code="signer_not_nominated", field="signature",
                    details={"signer": member_ref(signer), "kind": kind})
            attestation = Attestation.objects.create(
                lot=lot, kind=kind, document=document, canonical=canonical.decode("utf-8"), digest=digest,
                binding_hash=binding, signature=sig, signing_key=key, signer=signer, submitted_by=submitted_by)
    except IntegrityError as exc:
        raise Conflict("This attestation is already attached to the lot.", code="attestation_exists") from exc
    proof_changed_on_commit(Receipt.objects.filter(lot=lot, status__in=OPEN_STATUSES).values_list("pk", flat=True))
    return attestation


def lot_grade(*, lot: Lot, by: Member) -> GradingResult:
    """Grade a lot against its metal's grades from EVERY assay attached to it; stores the best grade that
    all of them meet. Takes the lot's row lock, so grading and issuing never interleave.

    Why every assay and not the latest: an issued receipt binds all of the lot's attestations, and the
    offline verifier re-grades each bound assay against the claimed grade. Grading from the latest alone
    would let a lot with an older, weaker assay carry a grade its own bundle then fails to support."""
    _require_operator(lot.warehouse, by)
    with transaction.atomic():
        lot_for_update(lot.pk).get()
        assays = list(lot.attestations.filter(kind=AttestationKind.ASSAY).order_by("created_at", "pk"))
        if not assays:
            raise Conflict("The lot has no assay to grade from.", code="assay_missing")
        grades = [parse_grade(g.spec) for g in Grade.objects.filter(metal=lot.metal)]
        try:
            results = [grade_lot(lot.metal.symbol, lot.form, AssayProfile.from_document(a.document), grades)
                       for a in assays]
        except ProofError as exc:
            raise _proof_error(exc) from exc
        result = _combine_gradings(results)
        lot.grade = Grade.objects.filter(code=result.grade).first() if result.grade else None
        lot.grading = {**result.to_dict(), "assays": [a.digest for a in assays]}
        lot.graded_at = timezone.now()
        lot.save(update_fields=["grade", "grading", "graded_at"])
    return result


def _combine_gradings(results: Sequence[GradingResult]) -> GradingResult:
    """One result for several assays of the same lot: a grade is met only if every assay meets it, and its
    failures are every assay's failures (identical ones once)."""
    if len(results) == 1:
        return results[0]
    first = results[0]
    evaluations = []
    for position, evaluation in enumerate(first.evaluations):
        failures: list[Any] = []
        for result in results:
            for failure in result.evaluations[position].failures:
                if failure not in failures:
                    failures.append(failure)
        evaluations.append(GradeEvaluation(code=evaluation.code, rank=evaluation.rank, failures=tuple(failures)))
    best = next((e.code for e in evaluations if e.met), None)
    return GradingResult(metal=first.metal, form=first.form, grade=best, evaluations=tuple(evaluations))


# --- the event chain -----------------------------------------------------------------------------

@dataclass
class _Signer:
    key: Ed25519PrivateKey
    kid: str
    at: datetime

    @classmethod
    def now(cls) -> _Signer:
        key, kid = platform_signer()
        return cls(key, kid, timezone.now())


def _append(receipt: Receipt, kind: str, data: dict[str, Any], signer: _Signer) -> ReceiptEvent:
    """Seal the receipt's next signed event and move the receipt's status as the chain's transition map says.
    The caller holds the receipt's row lock and writes the receipt with the event (`_write(receipt, event)`)."""
    if kind not in chain.OPENING_KINDS and receipt.status not in chain.TRANSITIONS[kind]:
        raise IllegalTransition(f"Receipt {receipt.number} is {receipt.status}; it cannot be {kind}.",
                                details={"receipt": receipt.number, "status": receipt.status, "event": kind})
    try:
        event = chain.new_event(receipt=receipt.number, seq=receipt.last_event_seq + 1, kind=kind,
                                at=utc_stamp(signer.at), data=data, prev_hash=receipt.last_event_hash or None)
    except ProofError as exc:
        raise _proof_error(exc) from exc
    sealed = chain.seal(event, signer.key, signer.kid)
    if kind == chain.FROZEN:
        receipt.frozen_from = receipt.status
    receipt.status = _STATUS_AFTER.get(kind) or receipt.frozen_from or ReceiptStatus.ACTIVE
    if kind == chain.UNFROZEN:
        receipt.frozen_from = ""
    if kind in (chain.SPLIT, chain.WITHDRAWN):
        receipt.closed_at = signer.at
    receipt.last_event_seq = event["seq"]
    receipt.last_event_hash = sealed["hash"]
    return ReceiptEvent(receipt=receipt, seq=event["seq"], kind=kind, event=sealed["event"], hash=sealed["hash"],
                        signature=dict(sealed["sig"]), recorded_at=signer.at)


_STATUS_AFTER: dict[str, str | None] = {
    chain.ISSUED: ReceiptStatus.ACTIVE, chain.SPLIT_FROM: ReceiptStatus.ACTIVE,
    chain.ENCUMBERED: ReceiptStatus.ENCUMBERED, chain.RELEASED: ReceiptStatus.ACTIVE,
    chain.PLEDGED: ReceiptStatus.PLEDGED, chain.UNPLEDGED: ReceiptStatus.ACTIVE,
    chain.FROZEN: ReceiptStatus.FROZEN, chain.UNFROZEN: None,  # back to the status before the freeze
    chain.TRANSFERRED: ReceiptStatus.ACTIVE, chain.SPLIT: ReceiptStatus.SPLIT,
    chain.WITHDRAWAL_REQUESTED: ReceiptStatus.WITHDRAWAL_REQUESTED,
    chain.WITHDRAWAL_CANCELLED: ReceiptStatus.ACTIVE, chain.WITHDRAWN: ReceiptStatus.WITHDRAWN,
}

# What an event changes on the receipt row, written by `_write` in one plain UPDATE (the ORM's `save` compiled
# the same statement anew each time: a third of what appending an event cost in order entry).
_RECEIPT_WRITE = ("UPDATE receipts_receipt SET status = %s, frozen_from = %s, holder_id = %s, encumbrance_ref = %s, "
                  "last_event_seq = %s, last_event_hash = %s, closed_at = %s WHERE id = %s")


def _receipt_write(receipt: Receipt) -> tuple[str, list[Any]]:
    """The UPDATE of the receipt's fields that events change, and its parameters."""
    return _RECEIPT_WRITE, [receipt.status, receipt.frozen_from, receipt.holder_id, receipt.encumbrance_ref,
                            receipt.last_event_seq, receipt.last_event_hash,
                            connection.ops.adapt_datetimefield_value(receipt.closed_at), receipt.pk]


def _write(receipt: Receipt, *events: ReceiptEvent, parts: Sequence[Receipt] = ()) -> None:
    """Write the receipt's fields that events change, insert `parts` (a split's new receipts, their keys taken)
    and `events` (its and their new ones), in one statement: the events' keys are taken ahead. The caller holds
    the receipt's row lock."""
    for event, key in zip(events, new_keys(ReceiptEvent, len(events)) if events else (), strict=True):
        event.pk = key
    write_rows(parts, events, updates=[_receipt_write(receipt)])


def open_quantity(lot: Lot) -> Decimal:
    """Kilograms of the lot under open receipts (the invariant: never more than the lot's mass)."""
    total = Receipt.objects.filter(lot=lot, status__in=OPEN_STATUSES).aggregate(t=Sum("quantity_kg"))["t"]
    return total or Decimal("0")


def receipted_quantity(lot: Lot) -> Decimal:
    """Kilograms of the lot ever put under a receipt that was not split: open receipts plus withdrawn ones.

    Withdrawn metal has left the warehouse, so it can never be receipted again; a split parent is not
    counted because its children carry its quantity."""
    total = (Receipt.objects.filter(lot=lot).exclude(status=ReceiptStatus.SPLIT)
             .aggregate(t=Sum("quantity_kg"))["t"])
    return total or Decimal("0")


def _check_issuable(lot: Lot, attestations: Sequence[Attestation], attesters: Mapping[str, Any],
                    at: datetime) -> None:
    """Refuse to issue a receipt whose own bundle would fail verification: every bound attestation is
    re-checked offline (assays re-graded, keys judged at the issue time, signers against `attesters`)."""
    if lot.graded_at is None:
        raise Conflict("Grade the lot before issuing receipts for it.", code="lot_not_graded")
    if any(a.kind == AttestationKind.ASSAY and a.created_at > lot.graded_at for a in attestations):
        raise Conflict("An assay was attached after the lot was graded; grade it again before issuing.",
                       code="lot_grading_stale")
    allowed = allowed_attesters(attesters)
    for attestation in attestations:
        signer = member_ref(attestation.signer)
        if signer not in allowed.get(attestation.kind, ()):
            # attestation_submit enforces this and a withdrawal waits for it: only rows that bypassed both
            # (an import, a repair) reach here.
            raise Conflict(f"The {attestation.kind} attestation is signed by {signer}, who is not nominated for "
                           "it; nominate them before issuing.", code="attestation_signer_not_nominated",
                           details={"attestation": attestation.pk, "signer": signer})
        key = attestation.signing_key
        if key.revoked_at is not None and key.revoked_at <= at:
            raise Conflict(f"The key that signed the {attestation.kind} attestation is revoked; its signature "
                           "would not verify in the receipt's bundle.", code="attestation_key_revoked",
                           details={"attestation": attestation.pk, "kid": key.kid})
        signed_at = parse_utc(attestation.document.get(DOCUMENT_TIME[attestation.kind]))
        if signed_at is None or signed_at > at:
            raise Conflict(f"The {attestation.kind} attestation is dated after now; retry once that time has "
                           "passed.", code="attestation_in_future", details={"attestation": attestation.pk})


def receipt_issue(*, lot: Lot, holder: Member, quantity_kg: Any, issued_by: Member) -> Receipt:
    """Issue a receipt for (part of) a graded lot to its holder. Takes the lot's row lock, so two issues
    (or an issue and a re-grade) can never interleave, nor together exceed the lot's mass."""
    _require_operator(lot.warehouse, issued_by)
    quantity = parse_mass(quantity_kg)
    if not holder.is_approved:
        raise NotAllowed("The holder is not an approved member.", code="holder_not_approved")
    with transaction.atomic():
        # Re-read under the lock: the caller's copy may predate a re-grade.
        lot = lot_for_update(lot.pk).select_related("warehouse__operator", "metal", "grade", "producer").get()
        attestations = list(lot.attestations.select_related("signing_key", "signer")
                            .order_by("kind", "created_at", "pk"))
        attesters = lot_attesters(lot)
        signer = _Signer.now()
        _check_issuable(lot, attestations, attesters, signer.at)
        available = lot.net_mass_kg - receipted_quantity(lot)
        if quantity > available:
            raise Conflict(f"Only {format_kg(available)} kg of lot {lot.reference} is not yet receipted.",
                           code="lot_over_issued", details={"available_kg": format_kg(available)})
        receipt = Receipt.objects.create(
            number=receipt_numbers(lot.pk, signer.at.year, 1)[0], lot=lot, grade=lot.grade, quantity_kg=quantity,
            holder=holder, status=ReceiptStatus.ACTIVE, issued_at=signer.at)
        data = chain.issued_data(
            metal=lot.metal.symbol, grade=lot.grade.code if lot.grade else None, form=lot.form,
            quantity=format_kg(quantity), warehouse=lot.warehouse.code, holder=member_ref(holder),
            lot=lot_document(lot), grade_spec=lot.grade.spec if lot.grade else None,
            attestations=[{"type": a.kind, "document": a.document, "signature": a.signature} for a in attestations],
            attesters=attesters)
        _write(receipt, _append(receipt, chain.ISSUED, data, signer))
        proof_changed_on_commit([receipt.pk])
    return receipt


# --- moving title ---------------------------------------------------------------------------------

def _split(receipt: Receipt, parts: Sequence[tuple[Decimal, Member]], signer: _Signer,
           trade: str | None = None, encumber: Mapping[int, str] | None = None) -> list[Receipt]:
    """Close `receipt` and open one child per (quantity, holder); quantities sum to the parent's. A child whose
    index is in `encumber` is encumbered at once for that order (its chain's second event). Caller holds the
    receipt's row lock."""
    assert sum(q for q, _ in parts) == receipt.quantity_kg and len(parts) >= 2
    numbers = receipt_numbers(receipt.lot_id, signer.at.year, len(parts))
    children = [Receipt(pk=key, number=n, lot_id=receipt.lot_id, parent=receipt, grade_id=receipt.grade_id,
                        quantity_kg=q, holder=h, status=ReceiptStatus.ACTIVE, issued_at=signer.at)
                for key, n, (q, h) in zip(new_keys(Receipt, len(parts)), numbers, parts, strict=True)]
    data: dict[str, Any] = {"children": [{"receipt": c.number, "quantity": format_kg(c.quantity_kg),
                                          "holder": member_ref(h)} for c, (_, h) in zip(children, parts, strict=True)]}
    if trade:
        data["trade"] = trade
    split_event = _append(receipt, chain.SPLIT, data, signer)
    receipt.encumbrance_ref = ""
    # Every event is sealed before the children's rows exist (each child's chain opens with split_from, then
    # perhaps its encumbrance); with their keys taken ahead, the parent's row, the children and all the
    # events go to the database in one statement.
    events = [split_event]
    for index, (child, (_, holder)) in enumerate(zip(children, parts, strict=True)):
        events.append(_append(child, chain.SPLIT_FROM, {"parent": receipt.number,
                                                       "parent_event_hash": split_event.hash,
                                                       "quantity": format_kg(child.quantity_kg),
                                                       "holder": member_ref(holder)}, signer))
        if encumber and index in encumber:
            events.append(_encumber(child, encumber[index], signer, save=False))
    _write(receipt, *events, parts=children)
    proof_changed_on_commit(c.pk for c in children)
    return children


def _encumber(receipt: Receipt, order_ref: str, signer: _Signer, *, save: bool = True) -> ReceiptEvent:
    """The receipt now backs sell order `order_ref`. Caller holds its row lock; with `save` off the caller writes
    the receipt and the event."""
    event = _append(receipt, chain.ENCUMBERED, {"order": order_ref}, signer)
    receipt.encumbrance_ref = order_ref
    if save:
        _write(receipt, event)
    return event


def receipt_split(*, receipt: Receipt, quantities: Sequence[Any], by: Member) -> list[Receipt]:
    """The holder splits an active receipt into parts that keep the lot's proof. Takes the row lock."""
    parts = [parse_mass(q) for q in quantities]
    with transaction.atomic():
        locked = _locked_own(receipt, by)
        if len(parts) < 2 or sum(parts) != locked.quantity_kg:
            raise ValidationFailed(f"Parts must be at least two and sum to {locked.quantity_kg} kg.",
                                   code="quantity_not_conserved", field="quantities")
        if locked.status != ReceiptStatus.ACTIVE:
            raise IllegalTransition(f"Receipt {locked.number} is {locked.status}; only an active receipt splits.")
        return _split(locked, [(q, locked.holder) for q in parts], _Signer.now())


def _locked_own(receipt: Receipt, member: Member) -> Receipt:
    locked = receipts_for_update([receipt.pk]).select_related("lot__metal", "holder").first()
    if locked is None or locked.holder_id != member.pk:
        raise NotFound("No such receipt.")
    return locked


def receipts_encumber(*, receipts: Sequence[Receipt], quantity_kg: Decimal, order_ref: str) -> list[Receipt]:
    """Encumber `quantity_kg` from the holder's `receipts` (already locked, oldest first) for a sell order,
    splitting the last one if it holds more than needed. Returns the encumbered receipts."""
    if sum((r.quantity_kg for r in receipts), Decimal(0)) < quantity_kg:
        raise InsufficientReceipts("Your eligible receipts do not cover the quantity.",
                                   details={"required_kg": str(quantity_kg)})
    signer = _Signer.now()
    taken: list[Receipt] = []
    needed = quantity_kg
    for receipt in receipts:
        if needed <= 0:
            break
        if receipt.quantity_kg > needed:
            receipt, _rest = _split(receipt, [(needed, receipt.holder), (receipt.quantity_kg - needed,
                                                                           receipt.holder)], signer,
                                    encumber={0: order_ref})
        else:
            _encumber(receipt, order_ref, signer)
        taken.append(receipt)
        needed -= receipt.quantity_kg
    return taken


def receipts_release(*, order_ref: str, holder: Member) -> list[Receipt]:
    """Release every receipt a cancelled or finished sell order still holds. Takes their row locks."""
    pks = list(Receipt.objects.filter(holder=holder, encumbrance_ref=order_ref,
                                      status=ReceiptStatus.ENCUMBERED).values_list("pk", flat=True))
    if not pks:
        return []
    signer = _Signer.now()
    released = list(receipts_for_update(pks))
    for receipt in released:
        event = _append(receipt, chain.RELEASED, {"order": order_ref}, signer)
        receipt.encumbrance_ref = ""
        _write(receipt, event)
    return released


def receipts_deliver(*, order_ref: str, seller: Member, buyer: Member, quantity_kg: Decimal,
                     trade_ref: str, held: list[Receipt] | None = None) -> tuple[list[Receipt], list[Receipt]]:
    """Delivery leg of DvP: move `quantity_kg` of the sell order's encumbered receipts to the buyer, oldest
    first, splitting the last one (the seller's remainder stays encumbered for the order). Takes row locks.

    `held`: the order's encumbered receipts, already read and locked in this transaction
    (`order_receipts_locked`); read here if None. Returns the receipts delivered and those the order still
    holds (for its next delivery in the same transaction)."""
    receipts = order_receipts_locked(holder_id=seller.pk, order_ref=order_ref)() if held is None else list(held)
    # Locked in key order; delivered oldest first. Keys are no measure of age: a split's parts take theirs from
    # a block taken ahead (config.db.new_keys).
    receipts.sort(key=lambda r: (r.issued_at, r.pk))
    if sum((r.quantity_kg for r in receipts), Decimal(0)) < quantity_kg:
        raise InsufficientReceipts(f"Order {order_ref} holds less than {quantity_kg} kg.")
    signer = _Signer.now()
    delivered: list[Receipt] = []
    needed = quantity_kg
    for index, receipt in enumerate(receipts):
        if needed <= 0:
            return delivered, receipts[index:]
        if receipt.quantity_kg <= needed:
            event = _append(receipt, chain.TRANSFERRED, {"from": member_ref(seller), "to": member_ref(buyer),
                                                         "quantity": format_kg(receipt.quantity_kg),
                                                         "trade": trade_ref}, signer)
            receipt.holder = buyer
            receipt.encumbrance_ref = ""
            _write(receipt, event)
            delivered.append(receipt)
            needed -= receipt.quantity_kg
            continue
        # The seller's remainder stays encumbered for the order.
        bought, rest = _split(receipt, [(needed, buyer), (receipt.quantity_kg - needed, seller)], signer,
                              trade=trade_ref, encumber={1: order_ref})
        delivered.append(bought)
        return delivered, [rest, *receipts[index + 1:]]
    return delivered, []


# --- holds, pledges, withdrawals ---------------------------------------------------------------------

def _change(receipt: Receipt, kind: str, data: dict[str, Any]) -> Receipt:
    with transaction.atomic():
        locked = receipts_for_update([receipt.pk]).get()
        event = _append(locked, kind, data, _Signer.now())
        _write(locked, event)
    return locked


def receipt_freeze(*, receipt: Receipt, reason: str) -> Receipt:
    """A compliance hold: nothing moves until unfrozen. A receipt that backs a sell order first has the order
    pulled (`receipt_freezing`: trading cancels it and its receipts are released), so it is frozen as an
    active receipt and no buyer ever meets an ask that cannot deliver. Takes the order's locks through the
    receiver, then the receipt's row lock."""
    if not reason.strip():
        raise ValidationFailed("Freezing needs a reason.", code="reason_required", field="reason")
    with transaction.atomic():
        current = Receipt.objects.filter(pk=receipt.pk).values_list("status", "encumbrance_ref").first()
        if current is not None and current[0] == ReceiptStatus.ENCUMBERED:
            receipt_freezing.send(sender=Receipt, receipt_id=receipt.pk, order_ref=current[1],
                                  reason=reason.strip())
        locked = receipts_for_update([receipt.pk]).get()
        if locked.status == ReceiptStatus.ENCUMBERED:
            # Encumbered again between the cancel and the lock (a new order took it), or nobody pulled it.
            raise Conflict(f"Receipt {locked.number} backs order {locked.encumbrance_ref}; it cannot be frozen "
                           "until that order is cancelled. Try again.", code="receipt_backs_order",
                           details={"order": locked.encumbrance_ref})
        event = _append(locked, chain.FROZEN, {"reason": reason.strip()}, _Signer.now())
        _write(locked, event)
    return locked


def receipt_unfreeze(*, receipt: Receipt, reason: str) -> Receipt:
    if not reason.strip():
        raise ValidationFailed("Unfreezing needs a reason.", code="reason_required", field="reason")
    return _change(receipt, chain.UNFROZEN, {"reason": reason.strip()})


def receipt_pledge(*, receipt: Receipt, by: Member, lender: Member, loan: str) -> Receipt:
    with transaction.atomic():
        locked = _locked_own(receipt, by)
        event = _append(locked, chain.PLEDGED, {"lender": member_ref(lender), "loan": loan}, _Signer.now())
        locked.encumbrance_ref = f"loan:{loan}"
        _write(locked, event)
    return locked


def receipt_unpledge(*, receipt: Receipt, lender: Member, loan: str) -> Receipt:
    with transaction.atomic():
        locked = receipts_for_update([receipt.pk]).get()
        if locked.encumbrance_ref != f"loan:{loan}" or _pledged_to(locked) != member_ref(lender):
            raise Conflict("The receipt is not pledged to that lender under that loan.", code="not_pledged")
        event = _append(locked, chain.UNPLEDGED, {"lender": member_ref(lender), "loan": loan}, _Signer.now())
        locked.encumbrance_ref = ""
        _write(locked, event)
    return locked


def _pledged_to(receipt: Receipt) -> str | None:
    """The lender the receipt's chain says it is pledged to (its last `pledged` event)."""
    data = (ReceiptEvent.objects.filter(receipt=receipt, kind=chain.PLEDGED).order_by("-seq")
            .values_list("event__data__lender", flat=True).first())
    return data if isinstance(data, str) else None


def receipt_withdrawal_request(*, receipt: Receipt, by: Member, withdrawal_ref: str) -> Receipt:
    """The holder asks the warehouse to deliver the metal out. Callers check compliance first."""
    with transaction.atomic():
        locked = _locked_own(receipt, by)
        event = _append(locked, chain.WITHDRAWAL_REQUESTED, {"withdrawal": withdrawal_ref}, _Signer.now())
        locked.encumbrance_ref = f"withdrawal:{withdrawal_ref}"
        _write(locked, event)
    return locked


def receipt_withdrawal_complete(*, receipt: Receipt, by: Member) -> Receipt:
    """The warehouse has delivered the metal: the receipt is closed for good."""
    with transaction.atomic():
        locked = receipts_for_update([receipt.pk]).select_related("lot__warehouse").first()
        if locked is None or locked.lot.warehouse.operator_id != by.pk:
            raise NotFound("No such receipt.")
        if locked.status == ReceiptStatus.FROZEN:
            raise Conflict(f"Receipt {locked.number} is frozen; nothing leaves the warehouse until it is "
                           "unfrozen.", code="receipt_frozen", details={"status": locked.status})
        if locked.status != ReceiptStatus.WITHDRAWAL_REQUESTED:
            raise IllegalTransition(f"Receipt {locked.number} is {locked.status}; the holder has not asked "
                                    "to withdraw it.", details={"status": locked.status})
        ref = locked.encumbrance_ref.removeprefix("withdrawal:")
        event = _append(locked, chain.WITHDRAWN, {"quantity": format_kg(locked.quantity_kg), "withdrawal": ref},
                        _Signer.now())
        locked.encumbrance_ref = ""
        _write(locked, event)
    return locked


# --- storage --------------------------------------------------------------------------------------------

def storage_reading_record(*, warehouse: Warehouse, by: Member, location: str, observed_at: datetime,
                           temperature_c: Decimal, humidity_pct: Decimal,
                           seal_intact: bool) -> tuple[StorageReading, StorageIncident | None]:
    """Record a sensor reading; a breach of the limits of any metal stored at that location (or a broken
    seal) opens an incident that flags every open receipt there. Returns the reading and the incident it
    opened or joined (None when nothing was breached).

    The metals judged are those of every lot physically at the location (not fully withdrawn), receipted or
    not: gallium melts at 29.76 °C whether or not a receipt rests on it. While an incident at the location
    is open, further breaches join it instead of opening one incident per sensor sample."""
    _require_operator(warehouse, by)
    if observed_at > timezone.now() + timedelta(minutes=5):
        raise ValidationFailed("observed_at is in the future.", code="invalid_date", field="observed_at")
    if not Decimal(0) <= humidity_pct <= Decimal(100):
        raise ValidationFailed("humidity_pct must be within 0..100.", code="invalid_reading", field="humidity_pct")
    if not location.strip():
        raise ValidationFailed("location is required.", code="invalid_reading", field="location")
    with transaction.atomic():
        reading = StorageReading.objects.create(warehouse=warehouse, location=location, observed_at=observed_at,
                                                temperature_c=temperature_c, humidity_pct=humidity_pct,
                                                seal_intact=seal_intact)
        withdrawn = Sum("receipts__quantity_kg", filter=Q(receipts__status=ReceiptStatus.WITHDRAWN))
        lots = (Lot.objects.filter(warehouse=warehouse, location=location).select_related("metal")
                .annotate(withdrawn_kg=Coalesce(withdrawn, Decimal(0))).filter(withdrawn_kg__lt=F("net_mass_kg")))
        metals = {lot.metal for lot in lots}
        breaches: list[dict[str, str]] = []
        if not seal_intact:
            breaches.append({"limit": "seal", "measured": "broken", "allowed": "intact"})
        for metal in sorted(metals, key=lambda m: m.symbol):
            if metal.max_temp_c is not None and temperature_c > metal.max_temp_c:
                breaches.append({"metal": metal.symbol, "limit": "max_temp_c", "measured": str(temperature_c),
                                 "allowed": str(metal.max_temp_c)})
            if metal.min_temp_c is not None and temperature_c < metal.min_temp_c:
                breaches.append({"metal": metal.symbol, "limit": "min_temp_c", "measured": str(temperature_c),
                                 "allowed": str(metal.min_temp_c)})
            if metal.max_humidity_pct is not None and humidity_pct > metal.max_humidity_pct:
                breaches.append({"metal": metal.symbol, "limit": "max_humidity_pct", "measured": str(humidity_pct),
                                 "allowed": str(metal.max_humidity_pct)})
        incident: StorageIncident | None = None
        if breaches:
            stamp = utc_stamp(observed_at)
            for breach in breaches:
                breach["observed_at"] = stamp
            open_receipts = list(Receipt.objects.filter(lot__warehouse=warehouse, lot__location=location,
                                                        status__in=OPEN_STATUSES))
            incident = open_incident_for_update(warehouse_id=warehouse.pk, location=location).first()
            if incident is None:
                incident = StorageIncident.objects.create(warehouse=warehouse, location=location, reading=reading,
                                                          breaches=breaches)
            else:
                # Keep the first sample of each kind of breach: a sensor posting every minute must not grow
                # the incident without bound.
                known = {(b.get("metal"), b.get("limit")) for b in incident.breaches}
                fresh = [b for b in breaches if (b.get("metal"), b.get("limit")) not in known]
                if fresh:
                    incident.breaches = [*incident.breaches, *fresh]
                    incident.save(update_fields=["breaches"])
            incident.receipts.add(*open_receipts)
    return reading, incident


def storage_incident_close(*, incident: StorageIncident, reason: str) -> StorageIncident:
    if not reason.strip():
        raise ValidationFailed("Closing an incident needs a reason.", code="reason_required", field="reason")
    if incident.closed_at is not None:
        raise Conflict("The incident is already closed.", code="incident_closed")
    incident.closed_at = timezone.now()
    incident.closed_reason = reason.strip()
    incident.save(update_fields=["closed_at", "closed_reason"])
    return incident


# --- proof of stock ----------------------------------------------------------------------------------------

def stock_statement_submit(*, warehouse: Warehouse, by: Member, document: Any, signature: Any) -> StockStatement:
    """A warehouse's signed statement of its stock: {"type": "stock_statement", "warehouse", "asOf",
    "lots": [{"lot": ref, "quantity": "kg"}]}. Reconciled against open receipts by a Celery task."""
    _require_operator(warehouse, by)
    if not isinstance(document, dict) or document.get("type") != "stock_statement" \
            or document.get("warehouse") != warehouse.code or not isinstance(document.get("lots"), list):
        raise ValidationFailed('document must be {"type": "stock_statement", "warehouse": code, "asOf", "lots"}.',
                               code="invalid_statement", field="document")
    as_of = parse_utc(document.get("asOf"))
    if as_of is None or as_of > timezone.now() + timedelta(minutes=5):
        raise ValidationFailed("asOf must be a past ISO 8601 UTC time.", code="invalid_statement", field="document")
    seen: set[str] = set()
    for i, row in enumerate(document["lots"]):
        if not isinstance(row, dict) or not isinstance(row.get("lot"), str):
            raise ValidationFailed(f"lots[{i}] needs a lot reference.", code="invalid_statement", field="document")
        if row["lot"] in seen:  # two rows for one lot would silently overwrite each other when reconciled
            raise ValidationFailed(f"lots[{i}]: lot {row['lot']} is stated twice.", code="invalid_statement",
                                   field="document")
        seen.add(row["lot"])
        if not isinstance(row.get("quantity"), str):  # signed documents carry decimal strings, never floats
            raise ValidationFailed(f"lots[{i}].quantity must be a decimal string of kg.", code="invalid_quantity",
                                   field="document")
        parse_mass(row["quantity"], field=f"lots[{i}].quantity")
    try:
        canonical = canonical_bytes(document)
    except ProofError as exc:
        raise _proof_error(exc) from exc
    kid = signature.get("kid") if isinstance(signature, dict) else None
    now = timezone.now()
    key = SigningKey.objects.filter(kid=kid, member=warehouse.operator, revoked_at__isnull=True,
                                    valid_from__lte=now).exclude(valid_to__lte=now).first() \
        if isinstance(kid, str) else None
    if key is None:
        raise ValidationFailed("The statement must be signed by a live key of the warehouse operator.",
                               code="unknown_key", field="signature")
    public = Ed25519PublicKey.from_public_bytes(b64url_decode(key.public_key))
    if not verify_bytes(canonical, signature, public):
        raise ValidationFailed("The signature does not verify.", code="signature_invalid", field="signature")
    sig = {"alg": "EdDSA", "kid": key.kid, "sig": signature["sig"]}
    try:
        with transaction.atomic():
            statement = StockStatement.objects.create(warehouse=warehouse, as_of=as_of, document=document,
                                                      canonical=canonical.decode(), signature=sig,
                                                      signing_key=key)
            transaction.on_commit(lambda: _enqueue_reconcile(statement.pk))
            return statement
    except IntegrityError as exc:
        raise Conflict("A statement for that time exists.", code="statement_exists") from exc


def stock_statement_reconcile(*, statement_id: int) -> list[StockGap]:
    """Compare a statement with the receipts that were open at its `asOf`, per lot; a lot receipted beyond
    the stated stock (or not stated at all) is a gap. Idempotent: a statement is reconciled once.

    Receipts are taken as they stood at `asOf` (issued by then, not yet closed), not as they stand when
    the task runs: a receipt issued after the warehouse counted its stock is not a gap in that count."""
    with transaction.atomic():
        statement = stock_statement_for_update(statement_id).first()
        if statement is None or statement.reconciled_at is not None:
            return list(StockGap.objects.filter(statement_id=statement_id))
        as_of = statement.as_of
        stated = {row["lot"]: Decimal(row["quantity"]) for row in statement.document["lots"]}
        totals = dict(Receipt.objects.filter(lot__warehouse_id=statement.warehouse_id, issued_at__lte=as_of)
                      .filter(Q(closed_at__isnull=True) | Q(closed_at__gt=as_of))
                      .values_list("lot_id").annotate(total=Sum("quantity_kg")).order_by())
        lots = Lot.objects.select_related("warehouse").in_bulk(list(totals))
        gaps = []
        for lot_id, total in sorted(totals.items()):
            lot = lots[lot_id]
            held = stated.get(lot.reference, Decimal(0))
            if total > held:
                gaps.append(StockGap(statement=statement, lot=lot, stated_kg=held, receipted_kg=total))
        StockGap.objects.bulk_create(gaps)
        statement.reconciled_at = timezone.now()
        statement.gaps = [{"lot": g.lot.reference, "stated_kg": format_kg(g.stated_kg),
                           "receipted_kg": format_kg(g.receipted_kg)} for g in gaps]
        statement.save(update_fields=["reconciled_at", "gaps"])
    return gaps


def _enqueue_reconcile(statement_id: int) -> None:
    """Best effort: the statement has committed; if the broker is down, the pending-work sweep re-publishes
    every statement still unreconciled (the database is the source of truth)."""
    from receipts.tasks import stock_statement_reconcile_task  # tasks import services; break the cycle here

    try:
        stock_statement_reconcile_task.delay(statement_id)
    except Exception:  # noqa: BLE001 - a broker outage must not turn an accepted statement into an error
        logging.getLogger(__name__).warning("reconciliation of statement %s not enqueued; the sweep will",
                                            statement_id, exc_info=True)
