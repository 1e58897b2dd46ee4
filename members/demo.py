"""DEMO data for the members app: organisations, users and a compliance officer. Idempotent."""

from __future__ import annotations

from django.db import transaction
from django_otp.plugins.otp_totp.models import TOTPDevice

from members.models import KycStatus, Member, User
from members.services import (
    OFFICER_GROUP,
    member_create,
    member_set_kyc_status,
    officer_group_sync,
    user_create,
)

DEMO_PASSWORD = "ingot-demo-2026"  # noqa: S105 - published demo credential, demo data only
# A fixed TOTP secret so the demo officer can sign in to the console: `manage.py demo_totp` prints the code.
DEMO_OFFICER_TOTP_HEX = "3132333435363738393031323334353637383930"

# (username, member name, legal id, country, roles, approved)
DEMO_MEMBERS: list[tuple[str, str, str, str, list[str], bool]] = [
    ("sgc", "Shanghai Gallium Co (demo)", "DEMO-CN-91310000-01", "CN", ["producer", "trader"], True),
    ("gtw", "Ganzhou Tungsten Works (demo)", "DEMO-CN-91360700-02", "CN", ["producer", "trader"], True),
    ("nir", "Nordic Indium Recycling AB (demo)", "DEMO-SE-556677-8899", "SE", ["recycler", "trader"], True),
    ("lumen", "Lumen Displays GmbH (demo)", "DEMO-DE-HRB-123456", "DE", ["end_user", "trader"], True),
    ("mm", "Demo Market Maker Ltd (demo)", "DEMO-SG-2026-MM", "SG", ["trader"], True),
    ("rms", "Rotterdam Metals Storage BV (demo)", "DEMO-NL-KVK-24681357", "NL", ["warehouse"], True),
    ("sbw", "Shanghai Bonded Metals Warehouse (demo)", "DEMO-CN-91310115-03", "CN", ["warehouse"], True),
    ("gzd", "Ganzhou Strategic Metals Depot (demo)", "DEMO-CN-91360702-04", "CN", ["warehouse"], True),
    ("sinoassay", "SinoAssay Laboratories (demo)", "DEMO-CN-CNAS-L0001", "CN", ["assay_lab"], True),
    ("euroassay", "EuroAssay Analytik GmbH (demo)", "DEMO-DE-DAkkS-D-PL-1", "DE", ["assay_lab", "verifier"], True),
    ("baltic", "Baltic Rare Metals Trading OÜ (demo)", "DEMO-EE-14725836", "EE", ["trader"], False),
]


def load() -> list[str]:
    """Create the demo members and users if missing; return the lines to print for the logins."""
    officer_group_sync()
    with transaction.atomic():
        for username, name, legal_id, country, roles, approved in DEMO_MEMBERS:
            member = Member.objects.filter(legal_id=legal_id).first()
            if member is None:
                member = member_create(name=name, legal_id=legal_id, country=country, roles=roles)
                if approved:
                    member_set_kyc_status(member=member, status=KycStatus.APPROVED, decided_by=None,
                                          reason="Demo data: approved at load")
            if not User.objects.filter(username=username).exists():
                user_create(username=username, password=DEMO_PASSWORD, member=member)
        officer = User.objects.filter(username="officer").first()
        if officer is None:
            from django.contrib.auth.models import Group

            officer = user_create(username="officer", password=DEMO_PASSWORD, member=None, is_staff=True)
            officer.groups.add(Group.objects.get(name=OFFICER_GROUP))
        if not TOTPDevice.objects.filter(user=officer).exists():
            TOTPDevice.objects.create(user=officer, name="demo authenticator", key=DEMO_OFFICER_TOTP_HEX,
                                      confirmed=True)
    return [
        f"  traders:    sgc, gtw, nir, lumen, mm (approved), baltic (pending KYC) — password {DEMO_PASSWORD}",
        f"  warehouses: rms, sbw, gzd; labs: sinoassay, euroassay — password {DEMO_PASSWORD}",
        f"  officer:    officer / {DEMO_PASSWORD} at /admin/ — OTP code: `python manage.py demo_totp`",
    ]
