"""Every write in the compliance app: screening lists and member screening, the flag review queue,
end-use declarations, export licences and their drawdown ledger."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import IO, Any, Final, NamedTuple, cast

from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from django_countries import countries

from compliance import errors
from compliance.audit import audit_context
from compliance.esg import FAIL, CompactResult, CompiledPack, ReceiptFacts, compact_evaluator, pack_canonical
from compliance.export_control import is_export_controlled
from compliance.facts import (
    ReceiptProof,
    facts_snapshot_text,
    ids_in,
    pg_bigint_array,
    receipt_fact_rows,
    receipt_proofs,
)
from compliance.lock_objects import (
    active_screening_list_for_update,
    end_use_declarations_for_update,
    export_licences_for_update,
    flags_for_update,
)
from compliance.models import (
    DECLARATION_TRANSITIONS,
    FLAG_TRANSITIONS,
    LICENCE_TRANSITIONS,
    DeclarationStatus,
    EndUseDeclaration,
    EsgEvaluation,
    EsgRulePack,
    ExportLicence,
    Flag,
    FlagKind,
    FlagStatus,
    FlagTransition,
    LicenceDrawdown,
    LicenceStatus,
    ScreeningEntry,
    ScreeningList,
)
from compliance.rulepack_loader import RULEPACK_DIR, RulePackError, compiled_from_canonical, load_rulepacks
from compliance.screening import ListEntry, ScreeningListError, load_list_csv
from compliance.screening import ScreeningList as PureScreeningList
from config.errors import Conflict, IllegalTransition, NotFound, ValidationFailed
from members.models import KycStatus, Member, User
from members.services import member_set_kyc_status
from receipts.models import MASS, Metal, Receipt

# Hits at or above this score (0-100, compliance.screening's scale) go to an officer. 88 catches
# transliterations and a dropped plural ("Baltik Rare Metal Trading") without flooding the queue.
SCREENING_THRESHOLD: Final = 88.0
_KG_QUANTUM: Final = Decimal(1).scaleb(-MASS["decimal_places"])
_MAX_KG: Final = Decimal(10) ** (MASS["max_digits"] - MASS["decimal_places"])


# --- small validators shared by the services ---------------------------------------------


def _reason(reason: str) -> str:
    if not reason or not reason.strip():
        raise ValidationFailed("A decision needs a reason.", code="reason_required", field="reason")
    return reason.strip()


def _text(value: str, field: str, *, max_length: int | None = None) -> str:
    text = (value or "").strip()
    if not text:
        raise ValidationFailed(f"{field} is required.", code="required", field=field)
    if max_length is not None and len(text) > max_length:
        raise ValidationFailed(f"{field} is at most {max_length} characters.", code="too_long", field=field)
    return text


def kg_amount(value: Decimal | str | int, *, field: str = "quantity_kg") -> Decimal:
    """A positive mass in kg with at most gram resolution; never rounded (rounding metal loses metal)."""
    try:
        amount = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise ValidationFailed(f"{field} {value!r} is not a number.", code="invalid_quantity", field=field) from None
    if not amount.is_finite() or amount <= 0:
        raise ValidationFailed(f"{field} must be more than 0 kg.", code="invalid_quantity", field=field)
    if amount >= _MAX_KG or amount != amount.quantize(_KG_QUANTUM):
        raise ValidationFailed(f"{field} {amount} kg needs more than gram resolution or is too large.",
                               code="invalid_quantity", field=field)
    return amount.quantize(_KG_QUANTUM)


def country_code(value: str, *, field: str = "destination_country") -> str:
    code = (value or "").strip().upper()
    # countries.alpha2 also accepts numeric and alpha-3 codes ("10" is Antarctica): insist on alpha-2 itself.
    if len(code) != 2 or not code.isalpha() or countries.alpha2(code) != code:
        raise ValidationFailed(f"{value!r} is not an ISO 3166 alpha-2 country code.", code="invalid_country",
                               field=field)
    return code


def metal_resolve(metal: Metal | str) -> Metal:
    if isinstance(metal, Metal):
        return metal
    found = Metal.objects.filter(symbol__iexact=(metal or "").strip()).first()
    if found is None:
        raise ValidationFailed(f"Unknown metal {metal!r}.", code="unknown_metal", field="metal")
    return found


def _validity(valid_from: date, valid_to: date) -> None:
    if valid_to <= valid_from:
        raise ValidationFailed("valid_to must be after valid_from.", code="invalid_validity", field="valid_to")
    if valid_to < timezone.localdate():
        raise ValidationFailed("The validity period has already ended.", code="invalid_validity", field="valid_to")


def _actor(user: User | None) -> int | None:
    return user.pk if user is not None else None


# --- screening lists ------------------------------------------------------------------------


def entry_key(entry: ListEntry) -> str:
    """Identity of a listed party across list versions: same source, name, aliases and country."""
    identity = [entry.source, entry.name, sorted(entry.aliases), entry.country or ""]
    return hashlib.sha256(json.dumps(identity, ensure_ascii=False).encode()).hexdigest()


def screening_list_load(*, source: str | Path | IO[str] | IO[bytes], loaded_by: User | None = None,
                        rescreen: bool = True) -> ScreeningList:
    """Load a list CSV all or nothing and make it the active list; returns it.

    Loading the file that is already active changes nothing. With `rescreen`, every member is
    screened against the new list by a task enqueued when the load commits.
    """
    try:
        parsed = load_list_csv(source)
    except ScreeningListError as exc:
        raise ValidationFailed(str(exc), code="screening_list_invalid",
                               details={"problem": exc.problem, "line": exc.line, "row": exc.row}) from None
    source_name = Path(parsed.source).name or parsed.source
    try:
        with transaction.atomic(), audit_context(actor=_actor(loaded_by), action="screening_list_load"):
            active = active_screening_list_for_update().first()
            if active is not None and active.content_hash == parsed.content_hash:
                return active
            if active is not None:
                active.active = False
                active.save(update_fields=["active"])
            loaded = ScreeningList.objects.create(source_name=source_name[:255], content_hash=parsed.content_hash,
                                                  entry_count=len(parsed), active=True, loaded_by=loaded_by,
                                                  rescreen_due=rescreen)
            ScreeningEntry.objects.bulk_create(
                (ScreeningEntry(screening_list=loaded, name=e.name, aliases=list(e.aliases), country=e.country or "",
                                source=e.source, row=e.row, entry_key=entry_key(e)) for e in parsed.entries),
                batch_size=1000,
            )
            if rescreen:
                from compliance.tasks import members_screen_all

                list_id = loaded.pk
                transaction.on_commit(lambda: members_screen_all.delay(list_id), robust=True)
    except IntegrityError:
        # Only the first-ever load can race (there is no active row to lock yet): one wins.
        raise Conflict("Another screening list load is in progress; retry.", code="screening_load_in_progress") from None
    return loaded


@dataclass(frozen=True)
class _LoadedList:
    identity: tuple[int, str, Any]  # pk, content hash, loaded_at of the ScreeningList row
    matcher: PureScreeningList
    entries_by_row: dict[int, tuple[int, str]]  # row -> (ScreeningEntry pk, entry_key)


# Matching keys are built once per list version and process: members are screened on every title
# transfer, and normalising a large list takes far longer than one screening. Entries never change
# after a load, so the list row's pk, hash and load time identify its cached matcher exactly.
_matcher_cache: dict[int, _LoadedList] = {}
_matcher_lock = threading.Lock()


def _loaded_list(active: ScreeningList) -> _LoadedList:
    identity = (active.pk, active.content_hash, active.loaded_at)
    cached = _matcher_cache.get(active.pk)
    if cached is not None and cached.identity == identity:
        return cached
    rows = list(active.entries.order_by("row").values_list("pk", "name", "aliases", "country", "source", "row",
                                                           "entry_key"))
    matcher = PureScreeningList.from_entries(
        (ListEntry(name=name, aliases=tuple(aliases), country=country or None, source=src, row=row)
         for _, name, aliases, country, src, row, _ in rows),
        source=active.source_name, content_hash=active.content_hash,
    )
    loaded = _LoadedList(identity, matcher,
                         {row: (pk, key) for pk, _, _, _, _, row, key in rows})
    with _matcher_lock:
        _matcher_cache.clear()
        _matcher_cache[active.pk] = loaded
    return loaded


_PARENTHESES = re.compile(r"\s*\([^)]*\)")


def screening_names(name: str) -> list[str]:
    """The name plus variants without parenthetical remarks ("(demo)", "(in liquidation)", "(HK)").

    Screening more variants can only add hits, never hide one, and a remark must not lift a listed
    party's name below the threshold.
    """
    stripped = " ".join(_PARENTHESES.sub(" ", name).split())
    return [stripped] if stripped and stripped != name.strip() else []


def member_screen(*, member: Member, threshold: float = SCREENING_THRESHOLD) -> list[Flag]:
    """Screen the member's name against the active list; every hit is a sanctions flag for review.

    Idempotent: a listed party already flagged for this member (open, confirmed or dismissed) is not
    flagged again, so an officer's dismissal stands until the list entry itself changes. Returns the
    member's sanctions flags for the current hits, whatever their status; [] with no active list.
    """
    active = ScreeningList.objects.filter(active=True).first()
    if active is None:
        return []
    loaded = _loaded_list(active)
    country = str(member.country) or None
    hits = loaded.matcher.screen(member.name, aliases=screening_names(member.name), country=country,
                                 threshold=threshold)
    if not hits:
        return []
    by_key: dict[str, Flag] = {}
    for hit in hits:
        entry_pk, key = loaded.entries_by_row[hit.entry.row]
        by_key.setdefault(key, Flag(
            kind=FlagKind.SANCTIONS_HIT, member=member, screening_entry_id=entry_pk, subject_key=key,
            reference=f"{hit.entry.source}: {hit.entry.name}"[:200],
            details={
                "score": hit.score, "method": hit.method, "threshold": threshold,
                "matched_alias": hit.matched_alias, "query": hit.query, "country_match": hit.country_match,
                "entry": {"name": hit.entry.name, "aliases": list(hit.entry.aliases), "country": hit.entry.country,
                          "source": hit.entry.source, "row": hit.entry.row},
                "list": {"id": active.pk, "source_name": active.source_name, "content_hash": active.content_hash},
                "member": {"name": member.name, "country": country},
            },
        ))
    known = set(Flag.objects.filter(kind=FlagKind.SANCTIONS_HIT, member=member, subject_key__in=by_key)
                .values_list("subject_key", flat=True))
    fresh = [flag for key, flag in by_key.items() if key not in known]
    if fresh:
        with transaction.atomic(), audit_context(action="member_screen", member=member.pk):
            # A concurrent screening of the same member may insert the same open flag first: the
            # partial unique index turns the second insert into a no-op instead of a duplicate.
            Flag.objects.bulk_create(fresh, ignore_conflicts=True)
    return list(Flag.objects.filter(kind=FlagKind.SANCTIONS_HIT, member=member, subject_key__in=by_key)
                .order_by("pk"))


# --- flags -------------------------------------------------------------------------------------


def flag_open(*, kind: str, member: Member | None = None, receipt: Receipt | None = None, reference: str = "",
              subject_key: str = "", details: dict[str, Any] | None = None) -> Flag:
    """Put something in the review queue. With a member and a subject_key it is idempotent: the open
    flag for the same subject is returned instead of a second one."""
    if kind not in FlagKind.values:
        raise ValidationFailed(f"Unknown flag kind {kind!r}.", code="unknown_flag_kind", field="kind")
    if member is None and receipt is None and not reference.strip():
        raise ValidationFailed("A flag needs a member, a receipt or a reference.", code="flag_subject_required")
    if member is not None and subject_key:
        with transaction.atomic():
            Flag.objects.bulk_create([Flag(kind=kind, member=member, receipt=receipt, reference=reference[:200],
                                           subject_key=subject_key[:200], details=details or {})],
                                     ignore_conflicts=True)
        flag = Flag.objects.filter(kind=kind, member=member, subject_key=subject_key[:200],
                                   status=FlagStatus.OPEN).first()
        if flag is not None:
            return flag
        # The open flag was resolved between the insert and the read: nothing left to add.
        return Flag.objects.filter(kind=kind, member=member, subject_key=subject_key[:200]).latest("pk")
    return Flag.objects.create(kind=kind, member=member, receipt=receipt, reference=reference[:200],
                               subject_key=subject_key[:200], details=details or {})


def flag_set_status(*, flag: Flag, status: str, decided_by: User | None, reason: str) -> Flag:
    """Move a flag along FLAG_TRANSITIONS, recording who, when and why. Takes the flag's row lock."""
    why = _reason(reason)
    try:
        with transaction.atomic(), audit_context(actor=_actor(decided_by), action="flag_set_status", reason=why):
            locked = flags_for_update(flag.pk).first()
            if locked is None:
                raise NotFound("No such flag.")
            if status not in FLAG_TRANSITIONS.get(locked.status, frozenset()):
                raise IllegalTransition(f"A flag cannot move from {locked.status} to {status}.",
                                        details={"from": locked.status, "to": status})
            FlagTransition.objects.create(flag=locked, from_status=locked.status, to_status=status,
                                          decided_by=decided_by, reason=why)
            locked.status = status
            if status == FlagStatus.OPEN:
                locked.resolved_by, locked.resolved_at, locked.resolution_reason = None, None, ""
            else:
                locked.resolved_by, locked.resolved_at, locked.resolution_reason = decided_by, timezone.now(), why
            locked.save(update_fields=["status", "resolved_by", "resolved_at", "resolution_reason"])
    except IntegrityError:
        raise Conflict("An open flag for the same subject already exists.", code="flag_already_open") from None
    for name in ("status", "resolved_by", "resolved_at", "resolution_reason"):
        setattr(flag, name, getattr(locked, name))
    return flag


def flag_resolve(*, flag: Flag, outcome: str, decided_by: User | None, reason: str) -> Flag:
    """Confirm or dismiss a flag. A confirmed sanctions hit suspends the member in the same transaction."""
    if outcome not in (FlagStatus.CONFIRMED, FlagStatus.DISMISSED):
        raise ValidationFailed("A flag is resolved as confirmed or dismissed.", code="invalid_outcome",
                               field="outcome")
    why = _reason(reason)
    with transaction.atomic(), audit_context(actor=_actor(decided_by), action=f"flag_{outcome}", reason=why):
        flag_set_status(flag=flag, status=outcome, decided_by=decided_by, reason=why)
        if outcome == FlagStatus.CONFIRMED and flag.kind == FlagKind.SANCTIONS_HIT and flag.member_id:
            member = Member.objects.get(pk=flag.member_id)
            if member.kyc_status != KycStatus.SUSPENDED:
                member_set_kyc_status(member=member, status=KycStatus.SUSPENDED, decided_by=decided_by,
                                      reason=f"Confirmed sanctions hit (flag #{flag.pk}): {why}")
    return flag


def flag_member_suspend(*, flag: Flag, decided_by: User | None, reason: str) -> Member:
    """Suspend the member a flag is about (any kind), citing the flag; the flag itself stays as it is."""
    why = _reason(reason)
    if flag.member_id is None:
        raise ValidationFailed("This flag is not about a member.", code="flag_has_no_member")
    member = Member.objects.get(pk=flag.member_id)
    if member.kyc_status == KycStatus.SUSPENDED:
        raise Conflict(f"{member} is already suspended.", code="member_already_suspended")
    with transaction.atomic(), audit_context(actor=_actor(decided_by), action="flag_member_suspend", reason=why,
                                             flag=flag.pk):
        return member_set_kyc_status(member=member, status=KycStatus.SUSPENDED, decided_by=decided_by,
                                     reason=f"Flag #{flag.pk} ({flag.get_kind_display()}): {why}")


def _review_flag_close(*, subject_key: str, member: Member, approved: bool, decided_by: User | None,
                       reason: str) -> None:
    """Take a decided declaration or licence out of the review queue."""
    flag = Flag.objects.filter(kind=FlagKind.LICENCE_REQUEST, member=member, subject_key=subject_key,
                               status=FlagStatus.OPEN).first()
    if flag is not None:
        flag_set_status(flag=flag, status=FlagStatus.CONFIRMED if approved else FlagStatus.DISMISSED,
                        decided_by=decided_by, reason=reason)


# --- end-use declarations -------------------------------------------------------------------


def _controlled_metal(metal: Metal | str) -> Metal:
    resolved = metal_resolve(metal)
    if not is_export_controlled(resolved.symbol):
        raise ValidationFailed(f"{resolved.symbol} is not export-controlled: nothing to declare or licence.",
                               code="metal_not_controlled", field="metal")
    return resolved


def _not_suspended(member: Member) -> None:
    if member.kyc_status == KycStatus.SUSPENDED:
        raise errors.ComplianceRefused(f"{member} is suspended.", code=errors.MEMBER_SUSPENDED)


def end_use_declaration_submit(*, member: Member, metal: Metal | str, end_user: str, end_use: str,
                               destination_country: str, valid_from: date, valid_to: date,
                               submitted_by: User | None = None) -> EndUseDeclaration:
    """A buyer declares who will use a controlled metal, for what and where; it waits for an officer."""
    _not_suspended(member)
    resolved = _controlled_metal(metal)
    end_user = _text(end_user, "end_user", max_length=200)
    end_use = _text(end_use, "end_use", max_length=5000)
    destination = country_code(destination_country)
    _validity(valid_from, valid_to)
    with transaction.atomic(), audit_context(actor=_actor(submitted_by), action="end_use_declaration_submit"):
        declaration = EndUseDeclaration.objects.create(
            member=member, metal=resolved, end_user=end_user, end_use=end_use, destination_country=destination,
            valid_from=valid_from, valid_to=valid_to, submitted_by=submitted_by)
        flag_open(kind=FlagKind.LICENCE_REQUEST, member=member, subject_key=f"end_use_declaration:{declaration.pk}",
                  reference=f"EUD-{declaration.pk} {resolved.symbol} for {end_user}",
                  details={"end_use_declaration": declaration.pk})
    return declaration


def end_use_declaration_decide(*, declaration: EndUseDeclaration, status: str, decided_by: User | None,
                               reason: str) -> EndUseDeclaration:
    """Approve or reject a pending declaration. Takes the declaration's row lock."""
    why = _reason(reason)
    with transaction.atomic(), audit_context(actor=_actor(decided_by), action="end_use_declaration_decide",
                                             reason=why):
        locked = end_use_declarations_for_update(declaration.pk).first()
        if locked is None:
            raise NotFound("No such end-use declaration.")
        if status not in DECLARATION_TRANSITIONS.get(locked.status, frozenset()):
            raise IllegalTransition(f"A declaration cannot move from {locked.status} to {status}.",
                                    details={"from": locked.status, "to": status})
        locked.status, locked.decided_by, locked.decided_at, locked.reason = status, decided_by, timezone.now(), why
        locked.save(update_fields=["status", "decided_by", "decided_at", "reason"])
        _review_flag_close(subject_key=f"end_use_declaration:{locked.pk}", member=locked.member,
                           approved=status == DeclarationStatus.APPROVED, decided_by=decided_by, reason=why)
    for name in ("status", "decided_by", "decided_at", "reason"):
        setattr(declaration, name, getattr(locked, name))
    return declaration


# --- export licences --------------------------------------------------------------------------


def export_licence_submit(*, exporter: Member, licence_number: str, metal: Metal | str,
                          quantity_cap_kg: Decimal | str | int, consignee: str, end_user: str, end_use: str,
                          destination_country: str, valid_from: date, valid_to: date,
                          submitted_by: User | None = None) -> ExportLicence:
    """Register a licence the authorities issued to the member; it is usable once an officer approves it."""
    _not_suspended(exporter)
    number = _text(licence_number, "licence_number", max_length=64)
    resolved = _controlled_metal(metal)
    cap = kg_amount(quantity_cap_kg, field="quantity_cap_kg")
    consignee = _text(consignee, "consignee", max_length=200)
    end_user = _text(end_user, "end_user", max_length=200)
    end_use = _text(end_use, "end_use", max_length=5000)
    destination = country_code(destination_country)
    _validity(valid_from, valid_to)
    try:
        with transaction.atomic(), audit_context(actor=_actor(submitted_by), action="export_licence_submit"):
            licence = ExportLicence.objects.create(
                licence_number=number, exporter=exporter, metal=resolved, quantity_cap_kg=cap, consignee=consignee,
                end_user=end_user, end_use=end_use, destination_country=destination, valid_from=valid_from,
                valid_to=valid_to, submitted_by=submitted_by)
            flag_open(kind=FlagKind.LICENCE_REQUEST, member=exporter, subject_key=f"export_licence:{licence.pk}",
                      reference=f"Licence {number}: {cap} kg {resolved.symbol} to {destination}",
                      details={"export_licence": licence.pk})
    except IntegrityError:
        raise Conflict(f"Licence number {number} is already registered.", code="licence_number_taken",
                       field="licence_number") from None
    return licence


def export_licence_decide(*, licence: ExportLicence, status: str, decided_by: User | None,
                          reason: str) -> ExportLicence:
    """Approve, reject or revoke a licence along LICENCE_TRANSITIONS. Takes the licence's row lock."""
    why = _reason(reason)
    with transaction.atomic(), audit_context(actor=_actor(decided_by), action="export_licence_decide", reason=why):
        locked = export_licences_for_update(licence.pk).first()
        if locked is None:
            raise NotFound("No such export licence.")
        if status not in LICENCE_TRANSITIONS.get(locked.status, frozenset()):
            raise IllegalTransition(f"A licence cannot move from {locked.status} to {status}.",
                                    details={"from": locked.status, "to": status})
        locked.status, locked.decided_by, locked.decided_at, locked.reason = status, decided_by, timezone.now(), why
        locked.save(update_fields=["status", "decided_by", "decided_at", "reason"])
        if status in (LicenceStatus.APPROVED, LicenceStatus.REJECTED):
            _review_flag_close(subject_key=f"export_licence:{locked.pk}", member=locked.exporter,
                               approved=status == LicenceStatus.APPROVED, decided_by=decided_by, reason=why)
    for name in ("status", "decided_by", "decided_at", "reason"):
        setattr(licence, name, getattr(locked, name))
    return licence


def licence_draw(*, licence: ExportLicence, quantity_kg: Decimal | str | int, receipt: Receipt | None = None,
                 reference: str) -> LicenceDrawdown:
    """Use `quantity_kg` of an approved, valid licence: a ledger row and the running total, together.

    Takes the licence's row lock, so concurrent draws queue and the cap holds; an over-draw is
    refused with `licence_exhausted` and changes nothing. Runs in the caller's transaction if any.
    """
    amount = kg_amount(quantity_kg)
    ref = _text(reference, "reference", max_length=200)
    if receipt is not None and receipt.lot.metal_id != licence.metal_id:
        raise ValidationFailed("The receipt's metal is not the licence's metal.", code="licence_metal_mismatch",
                               field="receipt")
    with transaction.atomic(), audit_context(action="licence_draw", reference=ref):
        locked = export_licences_for_update(licence.pk).first()
        if locked is None:
            raise NotFound("No such export licence.")
        if locked.status != LicenceStatus.APPROVED:
            raise errors.ComplianceRefused(f"Licence {locked.licence_number} is {locked.status}, not approved.",
                                           code=errors.LICENCE_NOT_APPROVED, details={"status": locked.status})
        today = timezone.localdate()
        if not locked.valid_from <= today <= locked.valid_to:
            raise errors.ComplianceRefused(
                f"Licence {locked.licence_number} is valid {locked.valid_from} to {locked.valid_to}, not today.",
                code=errors.LICENCE_NOT_VALID)
        if locked.drawn_kg + amount > locked.quantity_cap_kg:
            raise errors.ComplianceRefused(
                f"Licence {locked.licence_number} has {locked.remaining_kg} kg left; {amount} kg asked.",
                code=errors.LICENCE_EXHAUSTED,
                details={"remaining_kg": str(locked.remaining_kg), "requested_kg": str(amount)})
        locked.drawn_kg += amount
        locked.save(update_fields=["drawn_kg"])
        row = LicenceDrawdown.objects.create(licence=locked, quantity_kg=amount, drawn_total_kg=locked.drawn_kg,
                                             receipt=receipt, reference=ref)
    licence.drawn_kg = locked.drawn_kg
    return row


# --- ESG rule packs and results ------------------------------------------------------------------

# Receipts evaluated per transaction: one chunk's facts and stored digests cost two queries (PostgreSQL), its
# results one COPY (and one upsert for results that replace stored ones), its flags one more.
ESG_CHUNK: Final = 5000
_ESG_UPDATE_FIELDS: Final = ["outcome", "label", "rules", "cbam", "facts", "result_hash", "evaluated_at"]


def esg_rule_packs_sync(*, directory: str | Path = RULEPACK_DIR, reevaluate: bool = True) -> list[EsgRulePack]:
    """Load every rule pack file; a version not seen before becomes its pack's active version.

    Returns the versions activated by this call (empty when nothing changed). With `reevaluate`, a call
    that activated anything enqueues, once it commits, the evaluation of every open receipt
    (compliance.tasks.esg_evaluate_all): results under a superseded version count for nothing. A file
    whose content changed under an already loaded version number is refused, so a stored result always
    names the exact rules it was judged by.
    """
    try:
        packs = load_rulepacks(directory)
    except RulePackError as exc:
        raise ValidationFailed(str(exc), code="rulepack_invalid") from None
    activated: list[EsgRulePack] = []
    try:
        with transaction.atomic(), audit_context(action="esg_rule_packs_sync"):
            for pack in packs.values():
                version = str(pack.version)
                row = EsgRulePack.objects.select_for_update().filter(pack_id=pack.id, version=version).first()
                if row is not None and row.content_hash != pack.content_hash:
                    raise ValidationFailed(
                        f"{pack.source}: pack {pack.id} changed but still says version {version}; bump the version.",
                        code="rulepack_version_reused", details={"pack": pack.id, "version": version})
                if row is not None and row.active:
                    continue
                EsgRulePack.objects.filter(pack_id=pack.id, active=True).update(active=False)
                if row is None:
                    row = EsgRulePack.objects.create(
                        pack_id=pack.id, version=version, content_hash=pack.content_hash, title=pack.title,
                        market=pack.market, label=pack.label or "", canonical=pack_canonical(pack), active=True)
                else:
                    row.active = True
                    row.save(update_fields=["active"])
                activated.append(row)
            if activated and reevaluate:
                transaction.on_commit(_enqueue_esg_all, robust=True)
    except IntegrityError:
        raise Conflict("Another rule pack sync is in progress; retry.", code="rulepack_sync_in_progress") from None
    return activated


def _enqueue_esg_all() -> None:
    from compliance.tasks import enqueue_esg_all  # tasks import services; break the cycle here

    enqueue_esg_all()


def esg_compiled_pack(rule_pack: EsgRulePack) -> CompiledPack:
    """The stored version compiled (once per process): what it means is its canonical form in the database,
    so a worker evaluates exactly the version it names, whatever files its checkout has."""
    try:
        return compiled_from_canonical(rule_pack.pk, rule_pack.content_hash, rule_pack.canonical)
    except RulePackError as exc:
        raise ValidationFailed(str(exc), code="rulepack_invalid", details={"rule_pack": rule_pack.pk}) from None


@dataclass(frozen=True)
class EsgRun:
    """What one `esg_evaluate` call did."""

    receipts: int = 0  # receipts found and evaluated
    results: int = 0  # receipt x pack-version results computed
    written: int = 0  # evaluation rows inserted or replaced (0 when every result was already stored)
    flags: int = 0  # ESG failure flags raised

    def __add__(self, other: EsgRun) -> EsgRun:
        return EsgRun(self.receipts + other.receipts, self.results + other.results, self.written + other.written,
                      self.flags + other.flags)


def _digest(outcome: str, label: str, outcomes_text: str, cbam_text: str, facts_text: str) -> str:
    """What a stored result is compared by: outcome, label, the rule outcomes joined by commas, the CBAM
    estimate as "low/high" (empty without one) and the facts text. Not the time: the same result reached a
    day later writes nothing."""
    text = f"{outcome}|{label}|{outcomes_text}|{cbam_text}|{facts_text}"
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def esg_flag_subject(receipt_number: str, rule_pack: EsgRulePack) -> str:
    """One ESG flag per receipt and pack version: a new version that still fails raises a new one."""
    return f"esg:{receipt_number}:{rule_pack.pack_id}:{rule_pack.version}"[:200]


def esg_evaluate(*, receipt_ids: Iterable[int], pack_versions: Sequence[EsgRulePack] | None = None,
                 now: datetime | None = None) -> EsgRun:
    """Evaluate receipts under pack versions (default: every active one) and store the results.

    Per chunk of ESG_CHUNK receipts: facts read set-based (compliance.facts) and the stored digests read
    once; then, in one transaction, each receipt evaluated under every pack version and only the results
    that differ stored (_esg_store: COPY for new ones, INSERT ... ON CONFLICT (receipt, rule_pack) DO UPDATE
    for replaced ones). A result that fails a block rule raises one ESG flag per receipt and pack version
    (kept if an officer already dismissed it).

    Idempotent: evaluating the same receipts again with the same facts on the same day writes nothing —
    no row, no audit event, no flag. Unknown receipt ids are skipped.
    """
    ids = list(dict.fromkeys(int(pk) for pk in receipt_ids))
    rows = list(pack_versions) if pack_versions is not None else \
        list(EsgRulePack.objects.filter(active=True).order_by("pack_id"))
    if not ids or not rows:
        return EsgRun()
    packs = [(row, esg_compiled_pack(row)) for row in rows]
    moment = now or timezone.now()
    run = EsgRun()
    for start in range(0, len(ids), ESG_CHUNK):
        run += _esg_evaluate_chunk(ids[start:start + ESG_CHUNK], packs, moment)
    return run


class _EsgRow(NamedTuple):
    """One result to store, in the table's column order; JSON members already as text (the facts text is
    shared by a receipt's packs, the rules and CBAM texts by every result with the same outcomes)."""

    receipt_id: int
    rule_pack_id: int
    outcome: str
    label: str
    rules: str
    cbam: str | None
    facts: str
    result_hash: str
    evaluated_at: datetime


def _esg_stored_digests(receipt_ids: list[int], pack_ids: list[int]) -> dict[tuple[int, int], str]:
    """(receipt id, pack version id) -> the stored result's digest."""
    if connection.vendor == "postgresql":
        lowest, highest = min(receipt_ids), max(receipt_ids)
        with connection.cursor() as cursor:
            if highest - lowest < 4 * len(receipt_ids):
                # Dense ids (a sweep's chunk): one walk along the (receipt, rule_pack) index over their span instead
                # of a descent per receipt (measured: 13-16 ms -> 2 ms per 5,000); rows of receipts in the span but
                # not asked for are dropped here.
                wanted = set(receipt_ids)
                sql = ("SELECT receipt_id, rule_pack_id, result_hash FROM {table} "
                       "WHERE receipt_id BETWEEN %s AND %s AND rule_pack_id = ANY(%s::bigint[])")
                cursor.execute(sql.format(table=_esg_table()), (lowest, highest, pack_ids))
                return {(receipt_id, pack_id): digest for receipt_id, pack_id, digest in cursor.fetchall()
                        if receipt_id in wanted}
            # Scattered ids: probed receipt by receipt (LATERAL ... OFFSET 0 is never turned into a join): a plan
            # from the table's statistics goes wrong right after a pack change, when the table has just doubled.
            sql = ("SELECT e.receipt_id, e.rule_pack_id, e.result_hash FROM unnest(%s::bigint[]) AS wanted (id) "
                   "CROSS JOIN LATERAL (SELECT receipt_id, rule_pack_id, result_hash FROM {table} "
                   "WHERE receipt_id = wanted.id AND rule_pack_id = ANY(%s::bigint[]) OFFSET 0) e")
            cursor.execute(sql.format(table=_esg_table()), (pg_bigint_array(receipt_ids), pack_ids))
            return {(receipt_id, pack_id): digest for receipt_id, pack_id, digest in cursor.fetchall()}
    return {(receipt_id, pack_id): digest for receipt_id, pack_id, digest in EsgEvaluation.objects.filter(
        receipt_id__in=ids_in(receipt_ids), rule_pack_id__in=pack_ids,
    ).values_list("receipt_id", "rule_pack_id", "result_hash")}


def _esg_table() -> str:
    return connection.ops.quote_name(EsgEvaluation._meta.db_table)


def _esg_transaction_settings(*, owned: bool) -> None:
    """Settings for the rest of an ESG transaction (SET LOCAL: they end with it).

    No JIT compilation: each ESG statement touches a few thousand rows by index, but with statistics that lag
    behind tables growing a chunk at a time (autovacuum late, or off) their estimated cost passes
    jit_above_cost, and PostgreSQL then spent more compiling one (measured: 186 ms of inlining and
    optimisation) than running it (30 ms).

    When the transaction is this service's own (`owned`), not a caller's:

    - more work_mem: the audit triggers on results and flags read the rows a statement inserted from a
      transition table, kept in memory up to work_mem and spilled to a temporary file beyond it (the default
      4 MB is less than one chunk's results, ~5 MB);
    - asynchronous commit: the commit returns without waiting for its WAL (megabytes per chunk) to reach the
      disk. What it writes is derived state only (results, their flags and audit events, all recomputed from
      the facts): a crash within the next fraction of a second may lose them, never corrupt them, and the
      receipts left without a result under an active pack version are found again by `pending_work_sweep`.
      Never in a caller's transaction, whose own writes may be money or title."""
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        if owned:
            cursor.execute("SELECT set_config('jit', 'off', true), set_config('work_mem', '32MB', true), "
                           "set_config('synchronous_commit', 'off', true)")
        else:
            cursor.execute("SELECT set_config('jit', 'off', true)")


def _esg_evaluate_chunk(ids: list[int], packs: list[tuple[EsgRulePack, CompiledPack]], now: datetime) -> EsgRun:
    with transaction.atomic():
        _esg_transaction_settings(owned=False)
        rows = receipt_fact_rows(ids)
        if not rows:
            return EsgRun()
        receipt_ids = [pk for pk in ids if pk in rows]
        stored = _esg_stored_digests(receipt_ids, [row.pk for row, _ in packs])
    results = len(receipt_ids) * len(packs)
    proofs: list[ReceiptProof] = []
    failures: dict[tuple[int, int], tuple[int, EsgRulePack, list[str]]] = {}  # -> (proof index, version, failed)
    changes = _esg_changes(receipt_proofs(receipt_ids, rows), packs, stored, now, proofs, failures)
    first = next(changes, None)
    if first is None:  # every result already stored, and its flag (if any) raised with it
        return EsgRun(receipts=len(receipt_ids), results=results)
    owned = not connection.in_atomic_block
    with transaction.atomic(), audit_context(action="esg_evaluate"):
        _esg_transaction_settings(owned=owned)
        # The rest of the results are computed as they are stored: on PostgreSQL the server inserts the rows
        # already sent while the next ones are evaluated.
        written = _esg_store(itertools.chain([first], changes), stored)
        failed = [failures[key] for key in written if key in failures]
        flags = _esg_flags_raise(proofs, failed) if failed else 0
    return EsgRun(receipts=len(receipt_ids), results=results, written=len(written), flags=flags)


def _esg_changes(receipts: Iterable[ReceiptProof], packs: list[tuple[EsgRulePack, CompiledPack]],
                 stored: dict[tuple[int, int], str], now: datetime, proofs: list[ReceiptProof],
                 failures: dict[tuple[int, int], tuple[int, EsgRulePack, list[str]]]) -> Iterator[_EsgRow]:
    """The results that differ from the stored ones, receipt by receipt, every pack version each; appends
    each receipt's proof to `proofs` and each failing result to `failures` on the way."""
    # Per pack version: its evaluator, and the texts of the outcome patterns and CBAM estimates met so far (a
    # pack has few distinct ones: each is encoded once).
    judges: list[tuple[EsgRulePack, int, tuple[str, ...], Callable[[ReceiptFacts], CompactResult],
                       dict[tuple[str, ...], tuple[str, str, list[str]]], dict[tuple[str, str], tuple[str, str]]]]
    judges = [(row, row.pk, compiled.rule_ids, compact_evaluator(compiled, now), {}, {}) for row, compiled in packs]
    for index, proof in enumerate(receipts):
        proofs.append(proof)
        facts = proof.facts
        receipt_id = proof.receipt_id
        text = facts_snapshot_text(proof)
        for row, pack_id, rule_ids, judge, patterns, estimates in judges:
            result = judge(facts)
            outcomes = result.rule_outcomes
            pattern = patterns.get(outcomes)
            if pattern is None:
                pattern = patterns[outcomes] = (
                    ",".join(outcomes),
                    json.dumps(list(outcomes), separators=(",", ":")),
                    [r for r, o in zip(rule_ids, outcomes, strict=True) if o == FAIL])
            cbam_text, cbam = "", None
            if result.cbam_eur_low is not None:
                amounts = (str(result.cbam_eur_low), str(result.cbam_eur_high))
                estimate = estimates.get(amounts)
                if estimate is None:
                    estimate = estimates[amounts] = (
                        "/".join(amounts), json.dumps({"eur_low": amounts[0], "eur_high": amounts[1]}))
                cbam_text, cbam = estimate
            label = result.label or ""
            digest = _digest(result.outcome, label, pattern[0], cbam_text, text)
            if stored.get((receipt_id, pack_id)) == digest:
                continue
            if result.outcome == FAIL:
                failures[(receipt_id, pack_id)] = (index, row, pattern[2])
            yield _EsgRow(receipt_id, pack_id, result.outcome, label, pattern[1], cbam, text, digest, now)


# Set to False to store through bulk_create on PostgreSQL too (the path every other database takes).
ESG_STORE_BY_COPY = True
_ESG_COLUMNS: Final = ("receipt_id", "rule_pack_id", "outcome", "label", "rules", "cbam", "facts", "result_hash",
                       "evaluated_at")
_FLAG_COLUMNS: Final = ("kind", "status", "member_id", "receipt_id", "reference", "subject_key", "details",
                        "opened_at", "resolution_reason")


def _by_copy() -> bool:
    return connection.vendor == "postgresql" and ESG_STORE_BY_COPY


def _esg_store(changes: Iterable[_EsgRow], stored: dict[tuple[int, int], str]) -> list[tuple[int, int]]:
    """Store results on (receipt, rule_pack), replacing a stored row only when its digest differs; returns
    the (receipt_id, rule_pack_id) of the rows written.

    Generic path: bulk_create(update_conflicts=True), i.e. INSERT ... ON CONFLICT DO UPDATE. On PostgreSQL,
    building and binding thousands of model rows and JSON values through the ORM cost more than everything
    else together (bench/esg_sweep.py), so: results with no stored row when the digests were read (all of
    them after a pack change) are COPied straight into the table as they come; the others are COPied into a
    temporary table and upserted from it in one INSERT ... SELECT ... ON CONFLICT DO UPDATE ... WHERE the
    digest differs. Should another worker have stored one of the new results in the meantime (a duplicate
    delivery), the COPY's unique violation rolls back to its savepoint and they all take the upsert.
    """
    if not _by_copy():
        rows = list(changes)
        EsgEvaluation.objects.bulk_create(
            [EsgEvaluation(receipt_id=r.receipt_id, rule_pack_id=r.rule_pack_id, outcome=r.outcome, label=r.label,
                           rules=json.loads(r.rules), cbam=None if r.cbam is None else json.loads(r.cbam),
                           facts=json.loads(r.facts), result_hash=r.result_hash, evaluated_at=r.evaluated_at)
             for r in rows],
            batch_size=1000, update_conflicts=True, unique_fields=["receipt", "rule_pack"],
            update_fields=_ESG_UPDATE_FIELDS)
        return [(r.receipt_id, r.rule_pack_id) for r in rows]

    changes = iter(changes)
    fresh: list[_EsgRow] = []
    upsert: list[_EsgRow] = []
    for r in changes:
        if (r.receipt_id, r.rule_pack_id) in stored:
            upsert.append(r)
        else:
            fresh.append(r)
            break
    written: list[tuple[int, int]] = []
    if fresh:
        try:
            # (COPY is psycopg's own: wrap_database_errors makes its errors Django's, as execute's are.)
            with transaction.atomic(), connection.wrap_database_errors, connection.cursor() as cursor, \
                    cursor.copy(_copy_sql(EsgEvaluation)) as copy:
                moment = fresh[0].evaluated_at
                stamp = moment.isoformat()
                lines = [_esg_copy_line(fresh[0], stamp)]
                for r in changes:
                    if (r.receipt_id, r.rule_pack_id) in stored:
                        upsert.append(r)
                        continue
                    fresh.append(r)
                    if r.evaluated_at is not moment:
                        moment = r.evaluated_at
                        stamp = moment.isoformat()
                    lines.append(_esg_copy_line(r, stamp))
                    if len(lines) >= _COPY_BATCH:  # psycopg sends each write() at once: batch them
                        copy.write("".join(lines))
                        lines = []
                copy.write("".join(lines))
            written = [(r.receipt_id, r.rule_pack_id) for r in fresh]
        except IntegrityError:
            upsert = [*fresh, *upsert, *changes]
    if upsert:
        table = _esg_table()
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in _ESG_COLUMNS[2:])
        written += _staged_insert(
            EsgEvaluation, _ESG_COLUMNS, upsert,
            f"ON CONFLICT (receipt_id, rule_pack_id) DO UPDATE SET {updates} "  # nosec B608 - names from model meta
            f"WHERE {table}.result_hash IS DISTINCT FROM EXCLUDED.result_hash RETURNING receipt_id, rule_pack_id")
    return written


_COPY_ESCAPES: Final = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_COPY_NULL: Final = "\\N"
_COPY_BATCH: Final = 250  # rows per write while streaming: ~250 kB, sent while the next ones are evaluated


def _copy_text(text: str) -> str:
    """A text in COPY's text format. Our JSON texts are ASCII without raw control characters, so most pass
    untouched; the rest take COPY's backslash escapes."""
    if "\\" in text or "\t" in text or "\n" in text or "\r" in text:
        return text.translate(_COPY_ESCAPES)
    return text


def _copy_field(value: Any) -> str:
    if value is None:
        return _COPY_NULL
    if isinstance(value, datetime):
        return value.isoformat()
    return _copy_text(str(value))


def _copy_line(row: Iterable[Any]) -> str:
    return "\t".join([_copy_field(value) for value in row]) + "\n"


def _esg_copy_line(r: _EsgRow, stamp: str) -> str:
    """`_copy_line(r)`, spelt out for the one row type written by the thousand; `stamp` is
    r.evaluated_at.isoformat(), the same for a whole chunk. Outcome and digest need no escaping."""
    cbam = _COPY_NULL if r.cbam is None else _copy_text(r.cbam)
    return (f"{r.receipt_id:d}\t{r.rule_pack_id:d}\t{r.outcome}\t{_copy_text(r.label)}\t{_copy_text(r.rules)}\t"
            f"{cbam}\t{_copy_text(r.facts)}\t{r.result_hash}\t{stamp}\n")


def _copy_sql(model: type[Any], columns: Sequence[str] | None = None) -> str:
    table = connection.ops.quote_name(model._meta.db_table)
    names = ", ".join(connection.ops.quote_name(c) for c in (columns or _ESG_COLUMNS))
    return f"COPY {table} ({names}) FROM STDIN"


def _staged_insert(model: type[Any], columns: Sequence[str], rows: Iterable[tuple[Any, ...]],
                   tail: str) -> list[tuple[Any, ...]]:
    """INSERT INTO model's table (columns) SELECT ... FROM a temporary table filled by COPY, then `tail`
    (ON CONFLICT ..., RETURNING ...); returns what RETURNING returned. Column types are the model's."""
    table = connection.ops.quote_name(model._meta.db_table)
    names = ", ".join(connection.ops.quote_name(c) for c in columns)
    types = {f.column: f.db_type(connection) for f in model._meta.concrete_fields}
    definition = ", ".join(f"{connection.ops.quote_name(c)} {types[c]}" for c in columns)
    with connection.cursor() as cursor:
        # Identifiers from model meta and this module's constants; the values travel through COPY.
        cursor.execute(f"CREATE TEMPORARY TABLE esg_stage ({definition}) ON COMMIT DROP")
        with cursor.copy(f"COPY esg_stage ({names}) FROM STDIN") as copy:
            copy.write("".join([_copy_line(row) for row in rows]))
        cursor.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM esg_stage {tail}")  # noqa: S608  # nosec B608 - table/column names from model meta, values via COPY
        returned = [tuple(row) for row in cursor.fetchall()] if "RETURNING" in tail else []
        cursor.execute("DROP TABLE esg_stage")
    return returned


def _esg_flag_subjects(receipt_ids: list[int]) -> set[str]:
    """The subject keys of the ESG flags (any status) on these receipts."""
    flags = Flag.objects.filter(kind=FlagKind.ESG_FAILURE)
    if connection.vendor != "postgresql":
        return set(flags.filter(receipt_id__in=receipt_ids).values_list("subject_key", flat=True))
    # Receipt by receipt, as for the stored digests (_esg_stored_digests): a plan from statistics scans every
    # ESG flag once the table has grown faster than they were gathered.
    with connection.cursor() as cursor:
        sql = ("SELECT f.subject_key FROM unnest(%s::bigint[]) AS wanted (id) CROSS JOIN LATERAL "
               "(SELECT subject_key FROM {table} WHERE receipt_id = wanted.id AND kind = %s OFFSET 0) f")
        cursor.execute(sql.format(table=connection.ops.quote_name(Flag._meta.db_table)),
                       (pg_bigint_array(receipt_ids), FlagKind.ESG_FAILURE.value))
        return {key for (key,) in cursor.fetchall()}


def _esg_flags_raise(proofs: list[ReceiptProof], failed: list[tuple[int, EsgRulePack, list[str]]]) -> int:
    """One ESG_FAILURE flag per receipt and pack version, whatever its status: an officer's dismissal stands
    for that version. Two workers racing on the same receipt meet the open-flag unique index (the insert
    skips the conflicting row). Returns the flags raised."""
    keyed = {esg_flag_subject(proofs[index].facts.receipt_number, row): (index, row, rules)
             for index, row, rules in failed}
    receipt_ids = sorted({proofs[index].receipt_id for index, _, _ in failed})
    known = _esg_flag_subjects(receipt_ids)
    fresh = []
    for key, (index, row, rules) in keyed.items():
        if key in known:
            continue
        proof = proofs[index]
        fresh.append((proof.holder_id, proof.receipt_id, key,
                      f"{proof.facts.receipt_number} fails {row.pack_id} v{row.version} ({', '.join(rules)})"[:200],
                      {"rule_pack": row.pk, "pack": row.pack_id, "version": row.version, "failed_rules": rules}))
    if not fresh:
        return 0
    if _by_copy():
        now = timezone.now()
        # A chunk's failures share a few (pack version, failed rules) patterns: each details text is made once.
        details_texts: dict[tuple[Any, ...], str] = {}
        rows = []
        for member_id, receipt_id, key, reference, details in fresh:
            pattern: tuple[Any, ...] = (details["rule_pack"], *cast(list[str], details["failed_rules"]))
            text = details_texts.get(pattern)
            if text is None:
                text = details_texts[pattern] = json.dumps(details)
            rows.append((FlagKind.ESG_FAILURE.value, FlagStatus.OPEN.value, member_id, receipt_id, reference, key,
                         text, now, ""))
        head = f"{_copy_text(FlagKind.ESG_FAILURE.value)}\t{_copy_text(FlagStatus.OPEN.value)}\t"
        tail = f"\t{now.isoformat()}\t\n"
        try:  # the common case: no other worker raised any of these meanwhile
            with transaction.atomic(), connection.wrap_database_errors, connection.cursor() as cursor, \
                    cursor.copy(_copy_sql(Flag, _FLAG_COLUMNS)) as copy:
                # `_copy_line(row)`, spelt out: ids need no escaping, kind, status and the stamp are the same
                # for every row.
                copy.write("".join([f"{head}{row[2]:d}\t{row[3]:d}\t{_copy_text(row[4])}\t{_copy_text(row[5])}\t"
                                    f"{_copy_text(row[6])}{tail}" for row in rows]))
            return len(rows)
        except IntegrityError:
            return len(_staged_insert(Flag, _FLAG_COLUMNS, rows, "ON CONFLICT DO NOTHING RETURNING id"))
    Flag.objects.bulk_create([Flag(kind=FlagKind.ESG_FAILURE, member_id=member_id, receipt_id=receipt_id,
                                   subject_key=key, reference=reference, details=details)
                              for member_id, receipt_id, key, reference, details in fresh],
                             batch_size=1000, ignore_conflicts=True)
    return len(fresh)
