"""Trading over HTTP: order entry with Idempotency-Key, public market data, own-only reads, withdrawals."""

from decimal import Decimal

import pytest
from django.test import Client

from receipts.models import ReceiptStatus
from receipts.services import warehouse_set_approved
from tests.conftest import client_for
from tests.factories.members import UserFactory
from tests.factories.receipts import ReceiptWorld
from tests.factories.trading import funded_member, instrument, seller_with
from tests.invariants import assert_value_invariants
from trading.models import Order

pytestmark = pytest.mark.django_db


@pytest.fixture
def book():
    world = ReceiptWorld()
    inst = instrument()
    seller, receipts = seller_with(world, "20.000")
    buyer = funded_member("100000.00")
    return world, inst, client_for(UserFactory(member=seller)), client_for(UserFactory(member=buyer)), receipts


def order(client, **fields):
    body = {"instrument": "GA-6N-CN", "side": "buy", "order_type": "limit", "tif": "GTC", "quantity_kg": "5",
            "price": "600.00", "client_order_id": f"api-{Order.objects.count()}-{fields.get('side', 'buy')}"}
    body.update(fields)
    return client.post("/api/v1/orders", body)


def test_place_match_and_read_back(book) -> None:
    _, _, seller, buyer, _ = book
    placed = order(seller, side="sell", quantity_kg="10", price="600.00")
    assert placed.status_code == 201, placed.content
    depth = Client().get("/api/v1/instruments/GA-6N-CN/depth").json()
    assert depth["asks"] == [{"price": "600", "quantity_kg": "10.000"}] and depth["bids"] == []
    crossed = order(buyer, quantity_kg="4", price="605.00")
    assert crossed.status_code == 201
    assert [t["quantity_kg"] for t in crossed.json()["trades"]] == ["4.000"]
    assert Client().get("/api/v1/instruments/GA-6N-CN/trades").json()[0]["price"] == "600.0000"
    holdings = buyer.get("/api/v1/holdings").json()
    assert [h["quantity_kg"] for h in holdings] == ["4.000"]
    balances = buyer.get("/api/v1/balances").json()
    assert balances == [{"currency": "USD", "available": "97597.60", "held": "0.00"}]
    assert len(buyer.get("/api/v1/trades/mine").json()) == 1
    assert_value_invariants()


def test_idempotent_replay_and_missing_key(book) -> None:
    _, _, _, buyer, _ = book
    body = {"instrument": "GA-6N-CN", "side": "buy", "quantity_kg": "1", "price": "590.00", "client_order_id": "x1"}
    first = buyer.post("/api/v1/orders", body, key="order-key-1")
    again = buyer.post("/api/v1/orders", body, key="order-key-1")
    assert first.status_code == 201 and again.content == first.content
    assert Order.objects.count() == 1
    assert buyer.post("/api/v1/orders", body, key=None).json()["code"] == "idempotency_key_missing"


@pytest.mark.parametrize(("fields", "status", "code"), [
    ({"price": "600.001"}, 400, "off_tick"),
    ({"price": "900.00"}, 400, "out_of_band"),
    ({"quantity_kg": "0.5"}, 400, "off_lot"),
    ({"quantity_kg": "abc"}, 400, "invalid_input"),
    ({"instrument": "XX-1N-CN"}, 404, "not_found"),
    ({"side": "sideways"}, 400, "invalid_side"),
    ({"quantity_kg": "1000"}, 409, "insufficient_cash"),
])
def test_bad_orders_have_stable_codes_and_store_nothing(book, fields, status, code) -> None:
    _, _, _, buyer, _ = book
    response = order(buyer, **fields)
    assert response.status_code == status, response.content
    assert response.json()["code"] == code
    assert not Order.objects.exists()


def test_other_members_orders_are_404_and_cancel_works(book) -> None:
    _, _, seller, buyer, _ = book
    placed = order(buyer, quantity_kg="1", price="590.00").json()["order"]
    assert seller.get(f"/api/v1/orders/{placed['id']}").status_code == 404
    assert seller.post(f"/api/v1/orders/{placed['id']}/cancel", key=None).status_code == 404
    cancelled = buyer.post(f"/api/v1/orders/{placed['id']}/cancel", key=None)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert buyer.get("/api/v1/balances").json()[0]["held"] == "0.00"


def test_market_data_is_public_and_own_data_is_not() -> None:
    instrument()
    assert Client().get("/api/v1/instruments").status_code == 200
    assert Client().get("/api/v1/balances").status_code == 401


def test_withdrawal_request_inside_the_country_needs_no_licence(book) -> None:
    _, _, seller, _, receipts = book
    number = receipts[0].number
    response = seller.post(f"/api/v1/holdings/{number}/withdrawal", {"destination_country": "CN"})
    assert response.status_code == 201, response.content
    assert response.json()["status"] == ReceiptStatus.WITHDRAWAL_REQUESTED


def test_withdrawal_across_the_border_without_licence_is_refused(book) -> None:
    _, _, seller, _, receipts = book
    response = seller.post(f"/api/v1/holdings/{receipts[0].number}/withdrawal", {"destination_country": "DE"})
    assert response.status_code == 403
    assert response.json()["code"] == "export_licence_required"
    receipts[0].refresh_from_db()
    assert receipts[0].status == ReceiptStatus.ACTIVE and receipts[0].quantity_kg == Decimal("20.000")


def test_a_buy_needs_clearance_for_every_country_its_region_may_deliver_from(book) -> None:
    """The API reads the region's delivery countries with the instrument (one statement): a buyer in CN needs an
    end-use declaration for gallium once an approved warehouse of region CN sits in HK, and not once it is
    no longer approved. A refused buy writes nothing."""
    _, _, _, buyer, _ = book
    abroad = ReceiptWorld(country="HK", region="CN").warehouse
    refused = order(buyer, quantity_kg="1", price="590.00")
    assert refused.status_code == 403 and refused.json()["code"] == "end_use_declaration_required", refused.content
    assert Order.objects.count() == 0
    assert buyer.get("/api/v1/balances").json()[0]["held"] == "0.00"

    warehouse_set_approved(warehouse=abroad, approved=False)
    assert order(buyer, quantity_kg="1", price="590.00").status_code == 201
    assert_value_invariants()
