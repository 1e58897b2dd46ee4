"""Order entry: reservations, refusals with stable codes, matching and DvP settlement, cancel."""

from decimal import Decimal

import pytest

from config.errors import ApplicationError
from members.models import KycStatus
from receipts.models import Receipt, ReceiptStatus
from tests.factories.members import MemberFactory
from tests.factories.receipts import ReceiptWorld
from tests.factories.trading import funded_member, instrument, seller_with
from tests.invariants import assert_value_invariants
from trading.models import Account, Order, OrderStatus, Trade
from trading.services import order_cancel, order_place

pytestmark = pytest.mark.django_db


def place(member, inst, side, qty, price=None, *, order_type="limit", tif="GTC", coid=None):
    place.n = getattr(place, "n", 0) + 1
    return order_place(member=member, instrument=inst, side=side, order_type=order_type, tif=tif,
                       quantity_kg=qty, price=price, client_order_id=coid or f"c{place.n}")


def usd(member):
    return Account.objects.get(member=member, currency="USD")


@pytest.fixture
def market():
    world = ReceiptWorld()
    return world, instrument()


def test_sell_encumbers_exact_quantity_and_buy_holds_cash(market) -> None:
    world, inst = market
    seller, [receipt] = seller_with(world, "100.000")
    sell = place(seller, inst, "sell", "30", "600.00").order
    encumbered = Receipt.objects.filter(holder=seller, status=ReceiptStatus.ENCUMBERED)
    assert [r.quantity_kg for r in encumbered] == [Decimal("30.000")]
    assert encumbered[0].encumbrance_ref == f"O{sell.pk}"
    buyer = funded_member("100000.00")
    buy = place(buyer, inst, "buy", "10", "590.00").order
    # 10 kg x 590 = 5,900 + 10 bps fee = 5.90 -> 5,905.90 held
    assert buy.held_amount == Decimal("5905.90")
    assert usd(buyer).held == Decimal("5905.90") and usd(buyer).available == Decimal("94094.10")
    assert_value_invariants()


def test_crossing_buy_settles_delivery_versus_payment(market) -> None:
    world, inst = market
    seller, _ = seller_with(world, "100.000")
    place(seller, inst, "sell", "40", "600.00")
    buyer = funded_member("100000.00")
    result = place(buyer, inst, "buy", "25", "610.00")
    [trade] = result.trades
    assert (trade.price, trade.quantity_kg, trade.notional) == (Decimal("600.00"), Decimal("25.000"),
                                                                Decimal("15000.00"))
    assert trade.buyer_fee == Decimal("15.00") and trade.seller_fee == Decimal("7.50")  # taker 10 bps, maker 5
    bought = Receipt.objects.filter(holder=buyer, status=ReceiptStatus.ACTIVE)
    assert sum(r.quantity_kg for r in bought) == Decimal("25.000")
    assert usd(seller).available == Decimal("14992.50")
    assert usd(buyer).held == 0 and usd(buyer).available == Decimal("100000.00") - Decimal("15015.00")
    result.order.refresh_from_db()
    assert result.order.status == OrderStatus.FILLED
    still = Receipt.objects.filter(holder=seller, status=ReceiptStatus.ENCUMBERED)
    assert sum(r.quantity_kg for r in still) == Decimal("15.000")
    assert_value_invariants()


def test_a_sell_that_meets_several_bids_delivers_each_from_what_the_last_delivery_left(market) -> None:
    """Settlement reads a sell order's encumbered receipts once (with the trades' insert) and each delivery
    passes on what it left: a split's encumbered remainder and the receipts not reached, oldest first."""
    from receipts.bundles import verify_bundle
    from receipts.selectors import receipt_bundle

    world, inst = market
    seller, _ = seller_with(world, "3.000", count=3)  # three receipts of 3 kg: 9 kg
    buyers = [funded_member("100000.00") for _ in range(3)]
    for buyer, qty in zip(buyers, ["2", "3", "2"], strict=True):
        place(buyer, inst, "buy", qty, "600.00")
    sell = place(seller, inst, "sell", "8", "600.00")  # 2 + 3 + 2 filled, 1 kg rests
    assert [t.quantity_kg for t in sell.trades] == [Decimal("2.000"), Decimal("3.000"), Decimal("2.000")]
    for buyer, qty in zip(buyers, ["2.000", "3.000", "2.000"], strict=True):
        bought = list(Receipt.objects.filter(holder=buyer, status=ReceiptStatus.ACTIVE))
        assert sum(r.quantity_kg for r in bought) == Decimal(qty)
        assert all(verify_bundle(receipt_bundle(r)).ok for r in bought)
    still = Receipt.objects.filter(holder=seller, status=ReceiptStatus.ENCUMBERED, encumbrance_ref=f"O{sell.order.pk}")
    assert [r.quantity_kg for r in still] == [Decimal("1.000")]
    assert [r.quantity_kg for r in Receipt.objects.filter(holder=seller, status=ReceiptStatus.ACTIVE)] == \
        [Decimal("1.000")]
    assert_value_invariants()


def test_cancel_releases_exactly_what_the_order_holds(market) -> None:
    world, inst = market
    seller, _ = seller_with(world, "50.000")
    sell = place(seller, inst, "sell", "50", "600.00").order
    buyer = funded_member("100000.00")
    place(buyer, inst, "buy", "20", "600.00")  # fills 20 of the sell
    order_cancel(member=seller, order_id=sell.pk)
    assert not Receipt.objects.filter(holder=seller, status=ReceiptStatus.ENCUMBERED).exists()
    assert sum(r.quantity_kg for r in Receipt.objects.filter(holder=seller, status="active")) == Decimal("30.000")
    rest = place(buyer, inst, "buy", "5", "590.00").order
    before = usd(buyer).available
    order_cancel(member=buyer, order_id=rest.pk)
    assert usd(buyer).available == before + rest.held_amount and usd(buyer).held == 0
    with pytest.raises(ApplicationError) as err:
        order_cancel(member=buyer, order_id=rest.pk)
    assert err.value.code == "order_not_live"
    assert_value_invariants()


@pytest.mark.parametrize(("kwargs", "code"), [
    ({"qty": "10", "price": "600.005"}, "off_tick"),
    ({"qty": "10.5", "price": "600.00"}, "off_lot"),
    ({"qty": "10", "price": "700.00"}, "out_of_band"),
    ({"qty": "0", "price": "600.00"}, "invalid_quantity"),
    ({"qty": "10", "price": None}, "price_required"),
])
def test_bad_orders_are_refused_and_nothing_is_stored(market, kwargs, code) -> None:
    world, inst = market
    buyer = funded_member("100000.00")
    with pytest.raises(ApplicationError) as err:
        place(buyer, inst, "buy", kwargs["qty"], kwargs["price"])
    assert err.value.code == code
    assert not Order.objects.exists() and usd(buyer).held == 0


def test_insufficient_cash_and_receipts_and_kyc(market) -> None:
    world, inst = market
    poor = funded_member("100.00")
    with pytest.raises(ApplicationError) as err:
        place(poor, inst, "buy", "10", "600.00")
    assert err.value.code == "insufficient_cash"
    seller, _ = seller_with(world, "5.000")
    with pytest.raises(ApplicationError) as err:
        place(seller, inst, "sell", "10", "600.00")
    assert err.value.code == "insufficient_receipts"
    pending = MemberFactory(kyc_status=KycStatus.PENDING)
    with pytest.raises(ApplicationError) as err:
        place(pending, inst, "buy", "1", "600.00")
    assert err.value.code == "kyc_pending"
    assert not Order.objects.exists()
    assert not Receipt.objects.filter(status=ReceiptStatus.ENCUMBERED).exists()


def test_market_buy_is_protected_at_band_edge_and_never_rests(market) -> None:
    world, inst = market
    seller, _ = seller_with(world, "10.000")
    place(seller, inst, "sell", "10", "620.00")
    buyer = funded_member("100000.00")
    result = place(buyer, inst, "buy", "15", order_type="market", tif="GTC")
    assert sum(t.quantity_kg for t in result.trades) == Decimal("10.000")
    result.order.refresh_from_db()
    assert result.order.status == OrderStatus.EXPIRED and usd(buyer).held == 0
    assert_value_invariants()


def test_self_trade_prevention_cancels_resting_order_and_releases_it(market) -> None:
    world, inst = market
    member, _ = seller_with(world, "10.000")
    Account.objects.all()  # the seller also buys
    from trading.ledger import cash_deposit

    cash_deposit(member=member, currency="USD", amount=Decimal("50000"), by=None, reason="test")
    sell = place(member, inst, "sell", "10", "600.00").order
    result = place(member, inst, "buy", "10", "600.00")
    assert result.cancelled_order_ids == [sell.pk] and not result.trades
    sell.refresh_from_db()
    assert sell.status == OrderStatus.CANCELLED
    assert not Receipt.objects.filter(status=ReceiptStatus.ENCUMBERED).exists()
    assert_value_invariants()


def test_fok_fills_all_or_nothing(market) -> None:
    world, inst = market
    seller, _ = seller_with(world, "10.000")
    place(seller, inst, "sell", "10", "600.00")
    buyer = funded_member("100000.00")
    killed = place(buyer, inst, "buy", "11", "600.00", tif="FOK")
    assert not killed.trades
    filled = place(buyer, inst, "buy", "10", "600.00", tif="FOK")
    assert sum(t.quantity_kg for t in filled.trades) == Decimal("10.000")
    assert Trade.objects.count() == 1
    assert_value_invariants()


def test_client_order_id_is_idempotent(market) -> None:
    world, inst = market
    buyer = funded_member("100000.00")
    first = place(buyer, inst, "buy", "1", "600.00", coid="same")
    again = place(buyer, inst, "buy", "1", "600.00", coid="same")
    assert again.replayed and again.order.pk == first.order.pk and Order.objects.count() == 1
    with pytest.raises(ApplicationError) as err:
        place(buyer, inst, "sell", "1", "600.00", coid="same")
    assert err.value.code == "client_order_id_reused"



def test_a_replayed_sell_encumbers_nothing_more(market) -> None:
    """A sell's receipts are read and locked in the round trip of its insert, before the insert is known to be a
    replay: the replay returns the first order and leaves the receipts as the first order left them."""
    world, inst = market
    seller, _ = seller_with(world, "10.000")
    first = place(seller, inst, "sell", "4", "600.00", coid="s-same")
    encumbered = sorted(Receipt.objects.filter(holder=seller, status="encumbered").values_list("pk", "quantity_kg"))
    again = place(seller, inst, "sell", "4", "600.00", coid="s-same")
    assert again.replayed and again.order.pk == first.order.pk and Order.objects.count() == 1
    assert sorted(Receipt.objects.filter(holder=seller, status="encumbered").values_list("pk", "quantity_kg")) == \
        encumbered == [(encumbered[0][0], Decimal("4.000"))]
    assert_value_invariants()


def test_price_time_priority_and_receipts_carry_proof(market) -> None:
    from receipts.bundles import verify_bundle
    from receipts.selectors import receipt_bundle

    world, inst = market
    early, _ = seller_with(world, "10.000")
    late, _ = seller_with(world, "10.000")
    place(early, inst, "sell", "10", "600.00")
    place(late, inst, "sell", "10", "600.00")
    buyer = funded_member("100000.00")
    [trade] = place(buyer, inst, "buy", "10", "600.00").trades
    assert trade.seller_id == early.pk
    [bought] = Receipt.objects.filter(holder=buyer)
    assert verify_bundle(receipt_bundle(bought)).ok


def test_eligible_receipts_are_the_holders_active_receipts_of_the_grade_in_an_approved_warehouse_of_the_region(
        market) -> None:
    """The rule a sell is backed by (one plain statement, read or read-and-locked): every way a receipt can
    fall outside it is left out, the rest come oldest first."""
    from receipts.services import receipt_freeze, warehouse_set_approved
    from trading.services import eligible_receipts

    world, inst = market
    seller, [first, second] = seller_with(world, "10.000", count=2)
    _, [others] = seller_with(world, "10.000")  # another holder's
    frozen = world.receipt(seller, quantity="10.000")
    receipt_freeze(receipt=frozen, reason="test hold")
    encumbered = world.receipt(seller, quantity="10.000")
    place(seller, inst, "sell", "10", "600.00")  # takes the oldest: `first`
    encumbered_now = Receipt.objects.filter(holder=seller, status=ReceiptStatus.ENCUMBERED).get()
    assert encumbered_now.pk == first.pk
    elsewhere = ReceiptWorld(region="EU").receipt(seller, quantity="10.000")  # another delivery region
    closed_vault = ReceiptWorld()
    unapproved = closed_vault.receipt(seller, quantity="10.000")
    warehouse_set_approved(warehouse=closed_vault.warehouse, approved=False)
    del others, elsewhere, unapproved

    for lock in (False, True):
        assert [r.pk for r in eligible_receipts(seller, inst, lock=lock)] == [second.pk, encumbered.pk]
    other_grade = instrument("GA-7N-CN", grade="GA-7N")
    assert eligible_receipts(seller, other_grade) == []
