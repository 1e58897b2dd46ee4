"""The trading pages through Django's test client (no browser): what each page shows, who may see it, and
that order and withdrawal refusals carry the services' codes to the right place. The browser journey is in
test_trading_journey.py."""

from __future__ import annotations

import json
import re
from html import unescape
from typing import Any

import pytest
from django.test import Client

from receipts.bundles import verify_bundle
from receipts.models import Receipt, ReceiptStatus
from receipts.selectors import jwks
from tests.factories.members import MemberFactory, UserFactory
from tests.factories.receipts import ReceiptWorld
from tests.factories.trading import funded_member, instrument, seller_with
from tests.invariants import assert_value_invariants
from trading.models import Order, OrderStatus, Trade
from trading.services import order_place
from trading.views import markdown_to_html

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true", "HTTP_HX_CURRENT_URL": "http://testserver/markets/GA-6N-CN/"}


@pytest.fixture
def market() -> dict[str, Any]:
    world = ReceiptWorld()
    inst = instrument()
    seller, [receipt] = seller_with(world, "100.000")
    buyer = funded_member("100000.00")
    return {"world": world, "instrument": inst, "seller": seller, "receipt": receipt, "buyer": buyer,
            "seller_user": UserFactory(member=seller), "buyer_user": UserFactory(member=buyer)}


def client_of(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def ticket(coid: str, **fields: str) -> dict[str, str]:
    return {"side": "sell", "order_type": "limit", "tif": "GTC", "quantity_kg": "40", "price": "580.00",
            "client_order_id": coid, **fields}


def text_of(html: bytes) -> str:
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html.decode())).replace("\xa0", " "))


def test_pages_answer_and_public_ones_need_no_sign_in(market: dict[str, Any]) -> None:
    anonymous = Client()
    for url in ("/markets/", "/markets/GA-6N-CN/", "/markets/GA-6N-CN/live/", "/index/"):
        assert anonymous.get(url).status_code == 200, url
    page = anonymous.get("/markets/GA-6N-CN/")
    assert b"Sign in to trade" in page.content and b"data-order-ticket" not in page.content
    for url in ("/", f"/receipts/{market['receipt'].number}/", "/markets/GA-6N-CN/my-orders/"):
        assert anonymous.get(url).status_code == 302, url
    # An htmx panel whose session ended sends the whole page to sign in, not a login form into the panel.
    expired = anonymous.get("/markets/GA-6N-CN/my-orders/", **HTMX)
    assert expired.status_code == 200 and expired["HX-Redirect"] == "/login/?next=%2Fmarkets%2FGA-6N-CN%2F"
    assert anonymous.get("/markets/NOPE/").status_code == 404


def test_markets_row_has_reference_last_change_and_volume(market: dict[str, Any]) -> None:
    order_place(member=market["seller"], instrument=market["instrument"], side="sell", order_type="limit",
                tif="GTC", quantity_kg="10", price="575.00", client_order_id="s1")
    order_place(member=market["buyer"], instrument=market["instrument"], side="buy", order_type="limit",
                tif="IOC", quantity_kg="4", price="575.00", client_order_id="b1")
    order_place(member=market["buyer"], instrument=market["instrument"], side="buy", order_type="limit",
                tif="IOC", quantity_kg="6", price="575.00", client_order_id="b2")
    row = re.search(rb'<tr data-instrument="GA-6N-CN">.*?</tr>', Client().get("/markets/").content, re.S)
    assert row is not None
    cells = text_of(row.group(0))
    assert "580.00 USD/kg" in cells  # reference
    assert "522.00–638.00" in cells  # band
    assert "575.00 USD/kg" in cells  # last trade
    assert "10.000 kg" in cells and "2 trades" in cells  # 24 h volume
    assert "0.00" in cells  # change: the first trade in the window to the last, both at 575


def test_live_panel_answers_204_until_the_book_moves(market: dict[str, Any]) -> None:
    first = Client().get("/markets/GA-6N-CN/live/")
    version = re.search(rb'live/\?v=([0-9a-f]+)', first.content).group(1).decode()  # type: ignore[union-attr]
    assert Client().get(f"/markets/GA-6N-CN/live/?v={version}").status_code == 204
    order_place(member=market["seller"], instrument=market["instrument"], side="sell", order_type="limit",
                tif="GTC", quantity_kg="7", price="590.00", client_order_id="s1")
    moved = Client().get(f"/markets/GA-6N-CN/live/?v={version}")
    assert moved.status_code == 200
    assert re.search(r'<tr class="ask"[^>]*><th scope="row" class="num price">590.00', moved.content.decode())


@pytest.mark.parametrize(("fields", "code_field", "message"), [
    ({"price": "580.005"}, "price", "price must be a multiple of the tick"),
    ({"price": "700.00"}, "price", "price is outside today&#x27;s band"),
    ({"price": ""}, "price", "A limit order needs a price."),
    ({"quantity_kg": "1.5"}, "quantity_kg", "quantity_kg must be a multiple of the lot size"),
    ({"quantity_kg": "0"}, "quantity_kg", "quantity_kg must be more than zero."),
    ({"quantity_kg": "500"}, "quantity_kg", None),  # insufficient_receipts: more than the seller holds
])
def test_ticket_refusal_is_shown_next_to_its_field(market: dict[str, Any], fields: dict[str, str], code_field: str,
                                                   message: str | None) -> None:
    response = client_of(market["seller_user"]).post("/markets/GA-6N-CN/orders/", ticket("t1", **fields), **HTMX)
    assert response.status_code in (400, 409) and response["X-Ingot-Form"] == "1"
    error = re.search(rf'<div class="field-error" id="id_{code_field}_error">(.*?)</div>', response.content.decode(), re.S)
    assert error is not None, response.content.decode()
    if message:
        assert message in error.group(1)
    assert not Order.objects.exists()


def test_refusal_without_a_field_is_shown_above_the_form(market: dict[str, Any]) -> None:
    poor = funded_member("10.00")
    response = client_of(UserFactory(member=poor)).post(
        "/markets/GA-6N-CN/orders/", ticket("t1", side="buy", quantity_kg="1"), **HTMX)
    assert response.status_code == 409
    alert = re.search(r'<div class="form-error" role="alert"[^>]*>(.*?)</div>', response.content.decode(), re.S)
    assert alert is not None and "Not enough available cash" in alert.group(1)


def test_pending_member_is_refused_with_403_in_place(market: dict[str, Any]) -> None:
    pending = MemberFactory(kyc_status="pending")
    response = client_of(UserFactory(member=pending)).post("/markets/GA-6N-CN/orders/",
                                                           ticket("t1", side="buy", quantity_kg="1"), **HTMX)
    assert response.status_code == 403 and response["X-Ingot-Form"] == "1"  # portal.js swaps it in place
    assert b"not KYC-approved" in response.content


def test_double_submit_of_one_ticket_places_one_order(market: dict[str, Any]) -> None:
    client = client_of(market["seller_user"])
    first = client.post("/markets/GA-6N-CN/orders/", ticket("same-ticket"), **HTMX)
    second = client.post("/markets/GA-6N-CN/orders/", ticket("same-ticket"), **HTMX)
    assert first.status_code == second.status_code == 200
    assert json.loads(first["HX-Trigger"]) == {"order-placed": {}}
    assert b"resting on the book" in first.content
    assert b"was already placed by this ticket" in second.content
    assert Order.objects.count() == 1
    # The answer carries a fresh ticket: the next submit is a new order.
    fresh = re.search(rb'name="client_order_id" value="([^"]+)"', first.content).group(1)  # type: ignore[union-attr]
    assert fresh != b"same-ticket"
    # The same ticket changed after its order went in gets a new id and a message, not a silent replay.
    changed = client.post("/markets/GA-6N-CN/orders/", ticket("same-ticket", quantity_kg="5"), **HTMX)
    assert changed.status_code == 422 and b"already placed an order" in changed.content
    assert b'value="same-ticket"' not in changed.content
    assert Order.objects.count() == 1


def test_ticket_without_htmx_redirects_with_the_outcome(market: dict[str, Any]) -> None:
    client = client_of(market["seller_user"])
    response = client.post("/markets/GA-6N-CN/orders/", ticket("plain"), follow=True)
    assert response.redirect_chain == [("/markets/GA-6N-CN/", 302)]
    assert b"resting on the book" in response.content
    refused = client.post("/markets/GA-6N-CN/orders/", ticket("plain-2", price="580.005"))
    assert refused.status_code == 400 and b'id="id_price_error"' in refused.content


def test_cancel_from_the_instrument_page_releases_the_receipt(market: dict[str, Any]) -> None:
    client = client_of(market["seller_user"])
    client.post("/markets/GA-6N-CN/orders/", ticket("c1"), **HTMX)
    order = Order.objects.get()
    page = client.get("/markets/GA-6N-CN/my-orders/", **HTMX)
    assert f"O{order.pk}".encode() in page.content
    cancel = {"region": "instrument", "instrument": "GA-6N-CN"}
    other = client_of(market["buyer_user"]).post(f"/orders/{order.pk}/cancel/", cancel, **HTMX)
    assert other.status_code == 404 and b"No such order." in other.content  # someone else's order
    response = client.post(f"/orders/{order.pk}/cancel/", cancel, **HTMX)
    assert response.status_code == 200 and json.loads(response["HX-Trigger"]) == {"order-cancelled": {}}
    assert b"40.000 kg of receipts released" in response.content
    assert b"No open orders on GA-6N-CN" in response.content
    order.refresh_from_db()
    assert order.status == OrderStatus.CANCELLED
    assert not Receipt.objects.filter(holder=market["seller"], status=ReceiptStatus.ENCUMBERED).exists()
    assert_value_invariants()


def test_dashboard_shows_cash_orders_trades_and_a_sell_link(market: dict[str, Any]) -> None:
    order_place(member=market["seller"], instrument=market["instrument"], side="sell", order_type="limit",
                tif="GTC", quantity_kg="40", price="580.00", client_order_id="s1")
    order_place(member=market["buyer"], instrument=market["instrument"], side="buy", order_type="limit",
                tif="GTC", quantity_kg="10", price="580.00", client_order_id="b1")
    seller_page = client_of(market["seller_user"]).get("/").content.decode()
    assert "5,797.10" in seller_page  # 10 kg x 580 = 5,800 less the 5 bp maker fee (2.90)
    assert "Sold" in seller_page and "Open orders" in seller_page and "Partially filled" in seller_page
    buyer = client_of(market["buyer_user"]).get("/").content.decode()
    assert "94,194.20" in buyer  # 100,000 - 5,800 - 5.80 taker fee
    bought = Receipt.objects.get(holder=market["buyer"], status=ReceiptStatus.ACTIVE)
    assert f'href="/receipts/{bought.number}/"' in buyer
    assert f"/markets/GA-6N-CN/?side=sell&amp;quantity_kg={bought.quantity_kg}" in buyer
    assert "Sell on GA-6N-CN" in buyer


def test_receipt_page_is_verified_and_visible_to_holder_and_operator_only(market: dict[str, Any]) -> None:
    receipt = market["receipt"]
    page = client_of(market["seller_user"]).get(f"/receipts/{receipt.number}/")
    assert page.status_code == 200
    text = text_of(page.content)
    assert "✓ Verified" in text
    # The impurity table against GA-6N: O 2 ppb <= 5, C 1 <= 3, total metallic 6 <= 10.
    assert "O <= 5 ppb 2 ppb ✓ within the limit" in text
    assert "total metallic total_metallic <= 10 ppb 6 ppb ✓ within the limit" in text
    assert "evaluation pending" in text  # no compliance worker has evaluated it yet
    assert "Issued 100.000 kg of Ga GA-6N in" in text
    operator = UserFactory(member=market["world"].operator)
    assert client_of(operator).get(f"/receipts/{receipt.number}/").status_code == 200
    assert client_of(market["buyer_user"]).get(f"/receipts/{receipt.number}/").status_code == 404
    assert client_of(market["buyer_user"]).get(f"/receipts/{receipt.number}/bundle.json").status_code == 404


def test_bundle_download_is_an_attachment_that_verifies(market: dict[str, Any]) -> None:
    receipt = market["receipt"]
    response = client_of(market["seller_user"]).get(f"/receipts/{receipt.number}/bundle.json")
    assert response["Content-Disposition"] == f'attachment; filename="{receipt.number}.bundle.json"'
    bundle = json.loads(response.content)
    assert verify_bundle(bundle, trusted_keys=jwks()["keys"]).ok


def test_withdrawal_refusal_shows_export_control_code_and_reason(market: dict[str, Any]) -> None:
    receipt = market["receipt"]
    client = client_of(market["seller_user"])
    refused = client.post(f"/receipts/{receipt.number}/withdrawal/", {"destination_country": "US"})
    assert refused.status_code == 403
    text = text_of(refused.content)
    assert "Export control refused this withdrawal." in text and "Code: export_licence_required" in text
    receipt.refresh_from_db()
    assert receipt.status == ReceiptStatus.ACTIVE
    allowed = client.post(f"/receipts/{receipt.number}/withdrawal/", {"destination_country": "CN"}, follow=True)
    assert b"Withdrawal of" in allowed.content and b"requested" in allowed.content
    receipt.refresh_from_db()
    assert receipt.status == ReceiptStatus.WITHDRAWAL_REQUESTED
    again = client.post(f"/receipts/{receipt.number}/withdrawal/", {"destination_country": "CN"})
    assert again.status_code == 409  # already requested: the receipt service refuses, nothing drawn twice
    blank = client.post(f"/receipts/{receipt.number}/withdrawal/", {"destination_country": ""})
    assert blank.status_code == 400


def test_instrument_page_renders_candles_from_trades(market: dict[str, Any]) -> None:
    order_place(member=market["seller"], instrument=market["instrument"], side="sell", order_type="limit",
                tif="GTC", quantity_kg="10", price="580.00", client_order_id="s1")
    order_place(member=market["buyer"], instrument=market["instrument"], side="buy", order_type="limit",
                tif="IOC", quantity_kg="3", price="580.00", client_order_id="b1")
    page = client_of(market["buyer_user"]).get("/markets/GA-6N-CN/?interval=1d")
    candles = json.loads(re.search(rb'id="candles-data" type="application/json">(.*?)</script>',  # type: ignore[union-attr]
                                   page.content, re.S).group(1))
    assert [(c["open"], c["close"], c["volume"], c["trades"]) for c in candles] == [("580", "580", "3", 1)]
    assert Trade.objects.count() == 1


def test_the_tape_dates_trades_older_than_today(market: dict[str, Any]) -> None:
    from datetime import UTC, datetime, timedelta

    from tests.factories.pricing import record_trade

    old = datetime.now(UTC).replace(hour=9, minute=30, second=0, microsecond=0) - timedelta(days=2)
    earlier = record_trade(market["instrument"], price="575.00", at=old, buyer=market["buyer"],
                           seller=market["seller"])
    order_place(member=market["seller"], instrument=market["instrument"], side="sell", order_type="limit",
                tif="GTC", quantity_kg="10", price="580.00", client_order_id="s1")
    order_place(member=market["buyer"], instrument=market["instrument"], side="buy", order_type="limit",
                tif="IOC", quantity_kg="3", price="580.00", client_order_id="b1")
    today = Trade.objects.exclude(pk=earlier.pk).get()
    page = client_of(market["buyer_user"]).get("/markets/GA-6N-CN/").content.decode()

    now = today.executed_at.astimezone(UTC)
    assert re.search(rf'data-trade="{today.pk}"><td class="nowrap"><time datetime="[^"]+">{now:%H:%M:%S}</time>', page)
    assert re.search(rf'data-trade="{earlier.pk}"><td class="nowrap"><time datetime="[^"]+">{old:%b} {old.day} 09:30'
                     "</time>", page)


def test_markdown_subset_escapes_and_renders_the_methodology() -> None:
    rendered = markdown_to_html("# T\n\nA **b** `c<d>` 2 * 3\n\n| x | y |\n|---|---|\n| 1 | 2 |\n\n    code <x>\n\n"
                                "1. one\n   more\n2. two\n\n- a\n")
    assert '<h2 id="m-t">T</h2>' in rendered
    assert "<p>A <strong>b</strong> <code>c&lt;d&gt;</code> 2 * 3</p>" in rendered
    assert "<td>1</td><td>2</td>" in rendered
    assert "<pre><code>code &lt;x&gt;</code></pre>" in rendered
    assert "<ol><li>one more</li><li>two</li></ol>" in rendered and "<ul><li>a</li></ul>" in rendered


def test_receipt_page_shows_esg_rule_results_once_evaluated(market: dict[str, Any]) -> None:
    from compliance.services import esg_evaluate

    receipt = market["receipt"]
    esg_evaluate(receipt_ids=[receipt.pk])
    text = text_of(client_of(market["seller_user"]).get(f"/receipts/{receipt.number}/").content)
    assert "evaluation pending" not in text
    # The test receipt carries an assay only: the footprint rules have nothing to judge.
    assert re.search(r"footprint\S* .*? not declared .*? ✗ fail", text), text
    assert "Evaluated" in text


def test_index_page_and_markets_show_the_published_index(market: dict[str, Any]) -> None:
    from trading.pricing_services import index_days_due, index_publish

    days = index_days_due()[-3:]
    for day in days:  # no trades in those windows: assessed from the reference, and marked so
        index_publish(grade=market["instrument"].grade, day=day)
    index = Client().get("/index/?grade=GA-6N")
    assert index.status_code == 200
    points = json.loads(re.search(rb'id="index-data" type="application/json">(.*?)</script>',  # type: ignore[union-attr]
                                  index.content, re.S).group(1))
    assert [p["value"] for p in points] == ["580"] * len(days) and all(p["status"] == "assessed" for p in points)
    assert b'data-line="1"' in index.content and b"No index value has been published" not in index.content
    text = text_of(index.content)
    assert f"{days[-1]:%Y-%m-%d} 580.00 assessed 0 0 0.000 IDX-1" in text
    markets = text_of(Client().get("/markets/").content)
    assert f"GA-6N {days[-1]:%Y-%m-%d} 580.00 USD/kg assessed" in markets


def test_a_grade_in_two_regions_shows_each_regions_value_and_the_spread(market: dict[str, Any]) -> None:
    from trading.pricing_services import index_days_due, index_publish, index_scopes

    instrument("GA-6N-EU", region="EU", reference="612.00")
    grade, day = market["instrument"].grade, index_days_due()[-1]
    for region in index_scopes(grade):
        index_publish(grade=grade, day=day, region=region)

    index = text_of(Client().get("/index/?grade=GA-6N").content)
    assert f"By delivery region, {day:%Y-%m-%d}" in index
    assert "All regions 580.00 assessed 0 0.000 GA-6N-CN, GA-6N-EU" in index
    assert "CN 580.00 assessed 0 0.000 GA-6N-CN EU 612.00 assessed 0 0.000 GA-6N-EU" in index
    assert "EU over CN: 32.00 USD/kg (5.5 %)." in index
    markets = text_of(Client().get("/markets/").content)
    assert (f"GA-6N {day:%Y-%m-%d} 580.00 USD/kg assessed 0.000 kg 0 trades "
            "CN 580.00 assessed EU 612.00 assessed EU over CN: 32.00 (5.5 %)") in markets


def test_chart_uses_stored_candles_and_folds_the_newest_bucket_from_trades(market: dict[str, Any]) -> None:
    from trading.pricing_models import Candle
    from trading.pricing_services import candles_fold

    inst, seller, buyer = market["instrument"], market["seller"], market["buyer"]
    for n, (quantity, price) in enumerate([("3", "580.00"), ("2", "585.00")]):
        order_place(member=seller, instrument=inst, side="sell", order_type="limit", tif="GTC", quantity_kg=quantity,
                    price=price, client_order_id=f"s{n}")
        order_place(member=buyer, instrument=inst, side="buy", order_type="limit", tif="IOC", quantity_kg=quantity,
                    price=price, client_order_id=f"b{n}")
        if n == 0:
            candles_fold(instrument=inst)  # the worker folds the first trade only
    assert Candle.objects.filter(instrument=inst, interval="1h").get().trade_count == 1
    page = Client().get("/markets/GA-6N-CN/?interval=1h")
    candles = json.loads(re.search(rb'id="candles-data" type="application/json">(.*?)</script>',  # type: ignore[union-attr]
                                   page.content, re.S).group(1))
    assert [(c["open"], c["close"], c["volume"], c["trades"]) for c in candles] == [("580", "585", "5", 2)]


def test_cancel_without_javascript_redirects_back_with_a_message(market: dict[str, Any]) -> None:
    order = order_place(member=market["seller"], instrument=market["instrument"], side="sell", order_type="limit",
                        tif="GTC", quantity_kg="5", price="590.00", client_order_id="s1").order
    client = client_of(market["seller_user"])
    response = client.post(f"/orders/{order.pk}/cancel/", {"region": "dashboard", "next": "/"}, follow=True)
    assert response.redirect_chain == [("/", 302)]
    assert f"Order O{order.pk} cancelled; 5.000 kg of receipts released.".encode() in response.content
    elsewhere = client.post(f"/orders/{order.pk}/cancel/", {"next": "https://evil.example/"})
    assert elsewhere["Location"] == "/"  # an off-site `next` is ignored; the order was not live any more
    # With htmx, the dashboard's panel answers with itself and the refusal in place (409: not live).
    again = client.post(f"/orders/{order.pk}/cancel/", {"region": "dashboard"}, **HTMX)
    assert again.status_code == 409 and again["X-Ingot-Form"] == "1"
    assert b'<section id="open-orders"' in again.content and b"there is nothing to cancel" in again.content


def test_a_nul_in_a_path_value_is_a_404_not_a_500(market: dict[str, Any]) -> None:
    client = client_of(market["seller_user"])
    client.raise_request_exception = False
    for path in ("/receipts/%00/", "/receipts/A%00B/bundle.json", "/markets/%00/", "/markets/GA%00/live/",
                 "/markets/%00/my-orders/"):
        assert client.get(path).status_code == 404, path
    assert client.post("/receipts/%00/withdrawal/", {"destination_country": "CN"}).status_code == 404
    # Form fields refuse NUL themselves (Django's CharField): a 400 with the form, not a database error.
    assert client.post("/markets/GA-6N-CN/orders/", ticket("a\x00b")).status_code == 400
