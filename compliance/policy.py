"""What a member may do, asked BEFORE acting: trading, receipts and the portal call these.

Each check returns a Decision (allowed, stable code, reason to show); `require(decision)` turns a
refusal into a 403 ComplianceRefused with that code. Only `can_receive_title` (which screens) and
`withdrawal_check_and_draw` (which draws a licence down) write, in the caller's transaction.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal

from django.db import connection, transaction
from django.utils import timezone

from compliance import errors
from compliance.export_control import end_use_declaration_decision, export_licence_decision
from compliance.lock_objects import export_licences_for_update
from compliance.models import (
    DeclarationStatus,
    EndUseDeclaration,
    ExportLicence,
    Flag,
    FlagKind,
    FlagStatus,
    LicenceStatus,
)
from compliance.selectors import sanctions_flags_blocking
from compliance.services import country_code, kg_amount, licence_draw, member_screen, metal_resolve
from members.models import KycStatus, Member, Role
from receipts.models import Metal, Receipt

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    code: str
    reason: str

    def __bool__(self) -> bool:
        return self.allowed


def _allow(reason: str) -> Decision:
    return Decision(True, errors.OK, reason)


def _refuse(code: str, reason: str) -> Decision:
    return Decision(False, code, reason)


def require(decision: Decision) -> Decision:
    """Return an allowed decision; raise ComplianceRefused (403, the decision's code) for a refusal."""
    if not decision.allowed:
        raise errors.ComplianceRefused(decision.reason, code=decision.code)
    return decision


def _kyc(member: Member) -> Decision | None:
    if member.kyc_status == KycStatus.APPROVED:
        return None
    if member.kyc_status == KycStatus.SUSPENDED:
        return _refuse(errors.MEMBER_SUSPENDED, f"{member} is suspended.")
    return _refuse(errors.KYC_PENDING, f"{member} is not KYC-approved yet ({member.kyc_status}).")


def can_trade(member: Member) -> Decision:
    """Only KYC-approved members place orders."""
    refused = _kyc(member)
    return refused if refused is not None else _allow(f"{member} is KYC-approved.")


def can_issue(member: Member) -> Decision:
    """Only approved warehouse operators issue receipts."""
    refused = _kyc(member)
    if refused is not None:
        return refused
    if not member.has_role(Role.WAREHOUSE):
        return _refuse(errors.ROLE_REQUIRED, f"{member} is not a warehouse operator.")
    return _allow(f"{member} is an approved warehouse operator.")


def _publish_rescreen(member_id: int) -> None:
    from compliance.tasks import member_screen_task

    try:
        member_screen_task.delay(member_id)
    except Exception:  # a broker outage must not decide a transfer; the daily rescreen catches up
        log.exception("could not publish the rescreen of member %s", member_id)


def can_receive_title(member: Member) -> Decision:
    """Approved, and no open or confirmed sanctions hit after screening again against the active list."""
    refused = _kyc(member)
    if refused is not None:
        return refused
    before = set(Flag.objects.filter(member=member, kind=FlagKind.SANCTIONS_HIT).values_list("pk", flat=True))
    member_screen(member=member)
    hits = list(sanctions_flags_blocking(member))
    if not hits:
        return _allow(f"{member} is approved and clear of sanctions hits.")
    if connection.in_atomic_block and any(f.pk not in before for f in hits):
        # The flag just opened lives in the caller's transaction, which this refusal will most likely
        # roll back; a rescreen outside it (idempotent) makes sure the officer still sees the hit.
        _publish_rescreen(member.pk)
    confirmed = any(f.status == FlagStatus.CONFIRMED for f in hits)
    what = "a confirmed" if confirmed else "an open"
    return _refuse(errors.SANCTIONS_HIT,
                   f"{member} has {what} sanctions screening hit ({', '.join(f.reference for f in hits)}); "
                   "title cannot move to it until an officer clears it.")


def can_buy(member: Member, metal: Metal | str, warehouse_country: str) -> Decision:
    """Approved, and for a controlled metal bought by a member outside the warehouse's country, an
    approved end-use declaration for that metal valid today."""
    refused = _kyc(member)
    if refused is not None:
        return refused
    resolved = metal_resolve(metal)
    buyer = str(member.country)  # a django_countries Country: str() is its ISO code
    warehouse = country_code(warehouse_country, field="warehouse_country")
    today = timezone.localdate()
    needed = end_use_declaration_decision(resolved.symbol, buyer, warehouse, on=today)
    if not needed:
        return _allow(needed.reason)
    declaration = (EndUseDeclaration.objects
                   .filter(member=member, metal=resolved, status=DeclarationStatus.APPROVED,
                           valid_from__lte=today, valid_to__gte=today)
                   .order_by("valid_to", "pk").first())
    if declaration is None:
        return _refuse(errors.END_USE_DECLARATION_REQUIRED, needed.reason)
    return _allow(f"EUD-{declaration.pk} (end user {declaration.end_user}) covers {resolved.symbol} "
                  f"until {declaration.valid_to}.")


def withdrawal_check_and_draw(member: Member, receipt: Receipt, destination_country: str,
                              quantity_kg: Decimal | str | int) -> Decision:
    """May `member` take `quantity_kg` of the receipt's metal to `destination_country`? When the metal is
    controlled and leaves the warehouse's country, draw an approved, valid export licence of the member
    (for that metal and destination, with enough left) down, in the caller's transaction.

    Takes the row locks of the candidate licences (by pk). Of those with enough left, the one
    expiring first is used, so licences are not left to lapse unused.
    """
    refused = _kyc(member)
    if refused is not None:
        return refused
    amount = kg_amount(quantity_kg)
    destination = country_code(destination_country)
    lot = receipt.lot
    metal, origin = lot.metal, str(lot.warehouse.country)
    today = timezone.localdate()
    needed = export_licence_decision(metal.symbol, origin, destination, on=today)
    if not needed:
        return _allow(needed.reason)
    with transaction.atomic():
        candidates = list(export_licences_for_update(*ExportLicence.objects.filter(
            exporter=member, metal=metal, destination_country=destination, status=LicenceStatus.APPROVED,
            valid_from__lte=today, valid_to__gte=today).values_list("pk", flat=True)))
        # Re-check under the lock: a revocation may have committed while we waited.
        usable = [lic for lic in candidates if lic.status == LicenceStatus.APPROVED]
        if not usable:
            return _refuse(errors.EXPORT_LICENCE_REQUIRED,
                           f"{needed.reason}; {member} holds no approved licence for {metal.symbol} to "
                           f"{destination} valid today.")
        enough = sorted((lic for lic in usable if lic.remaining_kg >= amount), key=lambda lic: (lic.valid_to, lic.pk))
        if not enough:
            left = ", ".join(f"{lic.licence_number}: {lic.remaining_kg} kg" for lic in usable)
            return _refuse(errors.LICENCE_EXHAUSTED,
                           f"No licence of {member} has {amount} kg of {metal.symbol} left for {destination} "
                           f"({left}).")
        chosen = enough[0]
        licence_draw(licence=chosen, quantity_kg=amount, receipt=receipt,
                     reference=f"withdrawal of {receipt.number} to {destination}")
    return _allow(f"Drawn {amount} kg on licence {chosen.licence_number} ({chosen.remaining_kg} kg left).")
