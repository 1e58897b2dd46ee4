"""The officer's console for trading: money is read-only; cash moves only through the ledger with a reason."""

from decimal import Decimal

import pytest
from django.test import Client
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

from tests.factories.members import MemberFactory, UserFactory
from tests.invariants import assert_value_invariants
from trading.ledger import member_account
from trading.models import Account, JournalEntry

pytestmark = pytest.mark.django_db


@pytest.fixture
def officer_client() -> Client:
    staff = UserFactory(member=None, is_staff=True, is_superuser=True, username="cash-officer")
    device = TOTPDevice.objects.create(user=staff, name="auth", confirmed=True)
    client = Client()
    code = f"{totp(device.bin_key, step=device.step, t0=device.t0, digits=device.digits):06d}"
    response = client.post("/admin/login/?next=/admin/", {"username": "cash-officer", "password": "test-password-123",
                                                          "otp_device": device.persistent_id, "otp_token": code})
    assert response.status_code == 302
    return client


def test_deposit_through_the_console_posts_a_balanced_entry_with_reason(officer_client) -> None:
    account = member_account(MemberFactory(), "USD")
    url = f"/admin/trading/account/{account.pk}/cash/deposit/"
    assert officer_client.get(url).status_code == 200
    response = officer_client.post(url, {"amount": "2500.00", "reason": "wire ref 42"})
    assert response.status_code == 302
    account.refresh_from_db()
    assert account.available == Decimal("2500.00")
    entry = JournalEntry.objects.get(kind="deposit")
    assert entry.memo == "wire ref 42" and entry.created_by.username == "cash-officer"
    assert_value_invariants()


def test_overdraw_through_the_console_is_refused(officer_client) -> None:
    account = member_account(MemberFactory(), "USD")
    officer_client.post(f"/admin/trading/account/{account.pk}/cash/withdraw/", {"amount": "1.00", "reason": "test"})
    account.refresh_from_db()
    assert account.available == 0 and not JournalEntry.objects.exists()


def test_balances_cannot_be_edited_in_the_console(officer_client) -> None:
    account = member_account(MemberFactory(), "USD")
    response = officer_client.post(f"/admin/trading/account/{account.pk}/change/", {"available": "1000000"})
    assert response.status_code == 403
    assert Account.objects.get(pk=account.pk).available == 0
