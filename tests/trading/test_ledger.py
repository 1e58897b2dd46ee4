"""The cash ledger: balanced entries, no negative balances, an append-only journal, audited balances."""

from decimal import Decimal

import pytest
from django.db import InternalError, ProgrammingError, transaction
from django.db.models import ProtectedError

from config.errors import ApplicationError
from tests.factories.members import MemberFactory, UserFactory
from tests.invariants import assert_value_invariants
from trading.ledger import cash_deposit, cash_withdraw
from trading.models import Account, JournalEntry, Posting

pytestmark = pytest.mark.django_db


def test_deposit_and_withdraw_balance_and_record_who_and_why() -> None:
    member = MemberFactory()
    staff = UserFactory(member=None, is_staff=True)
    entry = cash_deposit(member=member, currency="USD", amount=Decimal("1000.00"), by=staff, reason="wire 123")
    assert entry.created_by == staff and entry.memo == "wire 123"
    cash_withdraw(member=member, currency="USD", amount=Decimal("400.00"), by=staff, reason="payout")
    assert Account.objects.get(member=member).available == Decimal("600.00")
    assert_value_invariants()


@pytest.mark.parametrize("amount", ["0", "-5", "1.001"])
def test_bad_amounts_are_refused(amount: str) -> None:
    with pytest.raises(ApplicationError) as err:
        cash_deposit(member=MemberFactory(), currency="USD", amount=Decimal(amount), by=None, reason="x")
    assert err.value.code == "invalid_amount"
    assert not JournalEntry.objects.exists()


def test_overdraw_is_refused_and_nothing_moves() -> None:
    member = MemberFactory()
    cash_deposit(member=member, currency="USD", amount=Decimal("10.00"), by=None, reason="seed")
    with pytest.raises(ApplicationError) as err:
        cash_withdraw(member=member, currency="USD", amount=Decimal("10.01"), by=None, reason="too much")
    assert err.value.code == "insufficient_cash"
    assert Account.objects.get(member=member).available == Decimal("10.00")
    assert JournalEntry.objects.count() == 1


def test_journal_rows_can_never_be_updated_or_deleted() -> None:
    member = MemberFactory()
    cash_deposit(member=member, currency="USD", amount=Decimal("10.00"), by=None, reason="seed")
    for action in (lambda: Posting.objects.update(amount=Decimal("99")),
                   lambda: JournalEntry.objects.filter(pk__in=[]).update(memo='x') or JournalEntry.objects.update(memo='rewritten'),
                   lambda: Posting.objects.all().delete()):
        with pytest.raises((InternalError, ProgrammingError, ProtectedError)), transaction.atomic():
            action()
    assert Posting.objects.filter(amount=Decimal("10.00")).exists()


def test_every_balance_change_is_in_the_audit_trail_even_bulk_updates() -> None:
    member = MemberFactory()
    cash_deposit(member=member, currency="USD", amount=Decimal("10.00"), by=None, reason="seed")
    account = Account.objects.get(member=member)
    Account.objects.filter(pk=account.pk).update(held=Decimal("0.00"), available=Decimal("10.00"))  # no change
    Account.objects.filter(pk=account.pk).update(available=Decimal("9.00"))  # a rogue bulk update
    events = list(account.audit_events.order_by("pgh_id").values_list("pgh_label", "available"))
    assert events[-1] == ("update", Decimal("9.00"))
    assert ("insert", Decimal("0.00")) in events
