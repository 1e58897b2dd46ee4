"""The value invariants of DESIGN.md §6, checked after every test that moves money or title."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

from django.db.models import Sum

from receipts.models import OPEN_STATUSES, Lot, Receipt, ReceiptStatus
from trading.models import LIVE_ORDER_STATUSES, Account, AccountKind, Order, Posting


def assert_value_invariants() -> None:
    # 1. Every journal entry balances per currency.
    unbalanced = (Posting.objects.values("entry_id", "currency").annotate(total=Sum("amount"))
                  .exclude(total=0))
    assert not unbalanced.exists(), f"unbalanced journal entries: {list(unbalanced[:5])}"
    # 2. Cash per currency sums to zero over all accounts, and balances equal their postings.
    totals: dict[str, Decimal] = defaultdict(Decimal)
    posted = {(r["account_id"], r["bucket"]): r["total"]
              for r in Posting.objects.values("account_id", "bucket").annotate(total=Sum("amount"))}
    for account in Account.objects.all():
        totals[account.currency] += account.available + account.held
        assert account.available == posted.get((account.pk, "available"), 0), f"{account} available drifted"
        assert account.held == posted.get((account.pk, "held"), 0), f"{account} held drifted"
        if account.kind != AccountKind.EXTERNAL:
            assert account.available >= 0 and account.held >= 0, f"{account} negative"
    assert all(total == 0 for total in totals.values()), f"cash does not sum to zero: {dict(totals)}"
    # 3. Held cash equals what live buy orders still hold.
    for account in Account.objects.filter(kind=AccountKind.MEMBER):
        held = Order.objects.filter(member_id=account.member_id, status__in=LIVE_ORDER_STATUSES,
                                    instrument__currency=account.currency).aggregate(t=Sum("held_amount"))["t"]
        assert account.held == (held or 0), f"{account} holds {account.held} but its orders hold {held}"
    # 4. Receipt quantity per lot is conserved: what was issued = open + withdrawn leaves; never over the lot.
    for lot in Lot.objects.all():
        issued = Receipt.objects.filter(lot=lot, parent=None).aggregate(t=Sum("quantity_kg"))["t"] or 0
        leaves = Receipt.objects.filter(lot=lot).exclude(status=ReceiptStatus.SPLIT).aggregate(
            t=Sum("quantity_kg"))["t"] or 0
        open_ = Receipt.objects.filter(lot=lot, status__in=OPEN_STATUSES).aggregate(t=Sum("quantity_kg"))["t"] or 0
        assert issued == leaves, f"lot {lot}: issued {issued} != leaves {leaves}"
        assert open_ <= lot.net_mass_kg, f"lot {lot}: open receipts {open_} exceed {lot.net_mass_kg}"
        for parent in Receipt.objects.filter(lot=lot, status=ReceiptStatus.SPLIT):
            parts = parent.parts.aggregate(t=Sum("quantity_kg"))["t"]
            assert parts == parent.quantity_kg, f"{parent}: parts {parts} != {parent.quantity_kg}"
    # 5. Every open receipt has one holder; an encumbered one belongs to a live sell order of its holder.
    for receipt in Receipt.objects.filter(status=ReceiptStatus.ENCUMBERED):
        order_id = int(receipt.encumbrance_ref.removeprefix("O"))
        order = Order.objects.get(pk=order_id)
        assert order.member_id == receipt.holder_id and order.status in LIVE_ORDER_STATUSES, \
            f"{receipt} encumbered by {order} ({order.status})"
    assert not Receipt.objects.filter(status__in=OPEN_STATUSES, holder__isnull=True).exists()
