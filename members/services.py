"""Every write in the members app: creating members, KYC decisions, signing keys."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from config.errors import Conflict, IllegalTransition, NotFound, ValidationFailed
from members.keys import b64url_encode, key_id, parse_public_key
from members.lock_objects import members_for_update, signing_key_for_update
from members.models import (
    KYC_TRANSITIONS,
    IdempotencyRecord,
    KycDecision,
    Member,
    MemberRole,
    Role,
    SigningKey,
    User,
)


def member_create(*, name: str, legal_id: str, country: str, roles: Iterable[str],
                  qualifications: str = "") -> Member:
    roles = sorted(set(roles))
    unknown = [r for r in roles if r not in Role.values]
    if unknown:
        raise ValidationFailed(f"Unknown role(s): {', '.join(unknown)}.", code="unknown_role", field="roles")
    if not name.strip() or not legal_id.strip():
        raise ValidationFailed("A member needs a name and a legal id.", code="invalid_member")
    with transaction.atomic():
        if Member.objects.filter(legal_id=legal_id).exists():
            raise Conflict(f"A member with legal id {legal_id} exists.", code="member_exists", field="legal_id")
        member = Member.objects.create(name=name.strip(), legal_id=legal_id.strip(), country=country,
                                       qualifications=qualifications)
        MemberRole.objects.bulk_create(MemberRole(member=member, role=r) for r in roles)
    return member


def member_set_kyc_status(*, member: Member, status: str, decided_by: User | None, reason: str) -> Member:
    """Move a member's KYC status along KYC_TRANSITIONS and record who, when and why.

    Takes the member's row lock.
    """
    if not reason or not reason.strip():
        raise ValidationFailed("A KYC decision needs a reason.", code="reason_required", field="reason")
    with transaction.atomic():
        locked = members_for_update(member.pk).first()
        if locked is None:
            raise NotFound("No such member.")
        if status not in KYC_TRANSITIONS.get(locked.kyc_status, frozenset()):
            raise IllegalTransition(
                f"KYC status cannot move from {locked.kyc_status} to {status}.",
                details={"from": locked.kyc_status, "to": status},
            )
        KycDecision.objects.create(member=locked, from_status=locked.kyc_status, to_status=status,
                                   decided_by=decided_by, reason=reason.strip())
        locked.kyc_status = status
        locked.save(update_fields=["kyc_status"])
    member.kyc_status = status
    return member


def signing_key_register(*, member: Member, public_key: object, label: str = "",
                         valid_from: datetime | None = None, valid_to: datetime | None = None) -> SigningKey:
    raw = parse_public_key(public_key)
    valid_from = valid_from or timezone.now()
    if valid_to is not None and valid_to <= valid_from:
        raise ValidationFailed("valid_to must be after valid_from.", code="invalid_validity", field="valid_to")
    kid = key_id(raw)
    with transaction.atomic():
        if SigningKey.objects.filter(kid=kid).exists():
            raise Conflict("This key is already registered.", code="key_exists", field="public_key")
        return SigningKey.objects.create(member=member, kid=kid, public_key=b64url_encode(raw), label=label,
                                         valid_from=valid_from, valid_to=valid_to)


def signing_key_revoke(*, member: Member, kid: str, reason: str) -> SigningKey:
    """Revoke a key from now on; signatures made before revocation keep verifying. Takes the key's row lock."""
    if not reason or not reason.strip():
        raise ValidationFailed("Revoking a key needs a reason.", code="reason_required", field="reason")
    with transaction.atomic():
        key = signing_key_for_update(member=member, kid=kid).first()
        if key is None:
            raise NotFound("No such signing key.")
        if key.revoked_at is not None:
            raise Conflict("The key is already revoked.", code="key_revoked")
        key.revoked_at = timezone.now()
        key.revoked_reason = reason.strip()
        key.save(update_fields=["revoked_at", "revoked_reason"])
    return key


def user_create(*, username: str, password: str, member: Member | None, email: str = "",
                is_staff: bool = False) -> User:
    user = User(username=username, email=email, member=member, is_staff=is_staff)
    user.set_password(password)
    user.save()
    return user



def idempotency_records_purge(*, older_than: timedelta | None = None) -> int:
    """Delete idempotency records past retention; returns how many went."""
    age = older_than or timedelta(hours=settings.IDEMPOTENCY_KEY_TTL_HOURS)
    deleted, _ = IdempotencyRecord.objects.filter(created_at__lt=timezone.now() - age).delete()
    return deleted


OFFICER_GROUP = "compliance_officer"
# Officers may read everything in the platform's own apps and change what the admin lets them;
# the ModelAdmins keep money and title read-only whatever the permissions say.
_OFFICER_APPS = ("members", "receipts", "compliance", "trading", "axes", "otp_totp")


def officer_group_sync(*, using: str = "default") -> None:
    from django.contrib.auth.models import Group, Permission

    group, _ = Group.objects.using(using).get_or_create(name=OFFICER_GROUP)
    perms = Permission.objects.using(using).filter(content_type__app_label__in=_OFFICER_APPS)
    group.permissions.set(perms)
