"""The platform's own Ed25519 keys that sign receipt events and bundles: creation, rotation, loading.

Private keys are stored encrypted under a secret read from INGOT_KEY_SECRET or the file named by
INGOT_KEY_SECRET_FILE; development creates that file with a random secret on first use.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, transaction
from django.utils import timezone

from members.keys import b64url_encode
from members.models import KycStatus, Member, MemberRole, Role, SigningKey
from receipts.models import PlatformKey
from receipts.signing import decrypt_private_key, encrypt_private_key, key_id, public_key_bytes

PLATFORM_LEGAL_ID = "INGOT-PLATFORM"
_decrypted: dict[str, Ed25519PrivateKey] = {}
# A process re-reads which key is active at most this often; a rotated-out key stays valid for
# ROTATION_GRACE after rotation so events signed from the cache just before it still verify.
_ACTIVE_TTL = timedelta(seconds=2)
ROTATION_GRACE = timedelta(seconds=30)
_active: tuple[str, str, datetime] | None = None


def _secret() -> bytes:
    if settings.INGOT_KEY_SECRET:
        return str(settings.INGOT_KEY_SECRET).encode()
    path = Path(settings.INGOT_KEY_SECRET_FILE)
    if not path.exists():
        if getattr(settings, "INGOT_KEY_SECRET_REQUIRED", False):
            raise ImproperlyConfigured("Set INGOT_KEY_SECRET or INGOT_KEY_SECRET_FILE to encrypt signing keys.")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip().encode()


def platform_member() -> Member:
    member = Member.objects.filter(legal_id=PLATFORM_LEGAL_ID).first()
    if member is not None:
        return member
    try:
        with transaction.atomic():
            member = Member.objects.create(name="Ingot Platform", legal_id=PLATFORM_LEGAL_ID, country="SG",
                                           kyc_status=KycStatus.APPROVED)
            MemberRole.objects.create(member=member, role=Role.PLATFORM)
            return member
    except IntegrityError:
        return Member.objects.get(legal_id=PLATFORM_LEGAL_ID)


def platform_key_rotate() -> SigningKey:
    """Make a new active platform key; the old one stops signing now but keeps verifying."""
    now = timezone.now()
    private = Ed25519PrivateKey.generate()
    public = private.public_key()
    with transaction.atomic():
        member = platform_member()
        old = PlatformKey.objects.select_for_update().filter(active=True).first()
        if old is not None:
            old.active = False
            old.save(update_fields=["active"])
            SigningKey.objects.filter(pk=old.signing_key_id).update(valid_to=now + ROTATION_GRACE)
        signing_key = SigningKey.objects.create(member=member, kid=key_id(public), label="platform event key",
                                                public_key=b64url_encode(public_key_bytes(public)), valid_from=now)
        PlatformKey.objects.create(signing_key=signing_key, encrypted_private_key=encrypt_private_key(private, _secret()))
    forget_active_key()
    return signing_key


def platform_signer() -> tuple[Ed25519PrivateKey, str]:
    """The active platform key and its kid, creating the first one if there is none."""
    global _active
    now = timezone.now()
    if _active is not None and now - _active[2] < _ACTIVE_TTL:
        return _decrypted[_active[0]], _active[0]
    row = PlatformKey.objects.filter(active=True).values_list("signing_key__kid", "encrypted_private_key").first()
    if row is None:
        try:
            platform_key_rotate()
        except IntegrityError:  # another process created it first
            pass
        row = PlatformKey.objects.filter(active=True).values_list("signing_key__kid", "encrypted_private_key").first()
        assert row is not None
    kid, blob = row
    key = _decrypted.get(kid)
    if key is None:
        key = _decrypted[kid] = decrypt_private_key(blob, _secret())
    _active = (kid, blob, now)
    return key, kid


def forget_active_key() -> None:
    """Drop the cached choice of active key (after a rotation in this process, and in tests)."""
    global _active
    _active = None
