"""The value invariants of DESIGN.md §6, checked after every test that moves money or title."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

from django.db.models import QuerySet, Sum

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
    holding = {(r["member_id"], r["instrument__currency"]): r["t"] for r in Order.objects.filter(
        status__in=LIVE_ORDER_STATUSES).values("member_id", "instrument__currency").annotate(t=Sum("held_amount"))}
    for account in Account.objects.filter(kind=AccountKind.MEMBER):
        held = holding.get((account.member_id, account.currency))
        assert account.held == (held or 0), f"{account} holds {account.held} but its orders hold {held}"
    # 4. Receipt quantity per lot is conserved: what was issued = open + withdrawn leaves; never over the lot.
    def per_lot(receipts: QuerySet[Receipt]) -> dict[int, Decimal]:
        return {r["lot_id"]: r["t"] for r in receipts.values("lot_id").annotate(t=Sum("quantity_kg"))}

    issued_by_lot = per_lot(Receipt.objects.filter(parent=None))
    leaves_by_lot = per_lot(Receipt.objects.exclude(status=ReceiptStatus.SPLIT))
    open_by_lot = per_lot(Receipt.objects.filter(status__in=OPEN_STATUSES))
    for lot in Lot.objects.all():
        issued, leaves = issued_by_lot.get(lot.pk, 0), leaves_by_lot.get(lot.pk, 0)
        open_ = open_by_lot.get(lot.pk, 0)
        assert issued == leaves, f"lot {lot}: issued {issued} != leaves {leaves}"
        assert open_ <= lot.net_mass_kg, f"lot {lot}: open receipts {open_} exceed {lot.net_mass_kg}"
    parts_of = {r["parent_id"]: r["t"] for r in Receipt.objects.filter(parent__isnull=False)
                .values("parent_id").annotate(t=Sum("quantity_kg"))}
    for parent in Receipt.objects.filter(status=ReceiptStatus.SPLIT):
        parts = parts_of.get(parent.pk)
        assert parts == parent.quantity_kg, f"{parent}: parts {parts} != {parent.quantity_kg}"
    # 5. Every open receipt has one holder; an encumbered one belongs to a live sell order of its holder.
    encumbered = list(Receipt.objects.filter(status=ReceiptStatus.ENCUMBERED))
    orders = Order.objects.in_bulk([int(r.encumbrance_ref.removeprefix("O")) for r in encumbered])
    for receipt in encumbered:
        order = orders[int(receipt.encumbrance_ref.removeprefix("O"))]
        assert order.member_id == receipt.holder_id and order.status in LIVE_ORDER_STATUSES, \
            f"{receipt} encumbered by {order} ({order.status})"
    assert not Receipt.objects.filter(status__in=OPEN_STATUSES, holder__isnull=True).exists()
