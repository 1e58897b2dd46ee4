"""Two traders in two browsers: a receipt offered, bought, settled and verified; a bad order refused next
to its field; a withdrawal refused by export control. Screenshots of every trading page at desktop and
phone width go to var/screenshots/."""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from compliance.services import esg_evaluate
from receipts.models import Receipt, ReceiptStatus
from tests.factories.compliance import EsgWorld
from tests.factories.members import MemberFactory, UserFactory
from tests.factories.trading import funded_member, instrument
from tests.invariants import assert_value_invariants
from trading.ledger import cash_deposit
from trading.models import Trade
from trading.services import order_place

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def ask_levels(page: Page) -> Any:
    return page.locator("#live tbody.asks tr.ask")


def test_trader_a_sells_a_receipt_to_trader_b(new_page: Callable[[], Page], receipt_world: Any,
                                              sign_in: Callable[..., None],
                                              shoot: Callable[[Page, str], None]) -> None:
    inst = instrument("GA-6N-CN")
    seller = MemberFactory(name="Shanghai Gallium Co", roles=["producer", "trader"], country="CN")
    cash_deposit(member=seller, currency="USD", amount=Decimal("1000.00"), by=None, reason="test funding")
    # A fully proven lot (assay, verified footprint, recycled content, conformant smelter), evaluated by the
    # compliance service as its worker would after issue.
    receipt = EsgWorld().proven_receipt(seller, quantity="100.000")
    esg_evaluate(receipt_ids=[receipt.pk])
    buyer = funded_member("100000.00", name="Lumen Displays GmbH")
    UserFactory(username="trader-a", member=seller)
    UserFactory(username="trader-b", member=buyer)

    # Trader A: from the receipt on the dashboard to a sell ticket for it.
    a = new_page()
    sign_in(a, "trader-a")
    expect(a.locator("[data-currency=USD] .cash-available")).to_have_text("1,000.00\xa0USD")
    row = a.get_by_role("row", name=re.compile(receipt.number))
    expect(row.locator(".badge-esg", has_text="LC")).to_be_visible()  # low-carbon: 12.4 kg CO2e/kg, verified
    row.get_by_role("link", name=re.compile("Sell on GA-6N-CN")).click()
    expect(a).to_have_url(re.compile(r"/markets/GA-6N-CN/\?side=sell&quantity_kg=100.000$"))
    expect(a.get_by_label("Sell")).to_be_checked()
    expect(a.get_by_label("Quantity")).to_have_value("100.000")
    expect(a.locator("#position-receipts")).to_contain_text("100.000")

    # A bad order (off tick) is refused next to the price field, and nothing reaches the book.
    a.get_by_label("Quantity").fill("40")
    a.get_by_label("Limit price").fill("580.005")
    with a.expect_response(lambda r: r.url.endswith("/orders/") and r.request.method == "POST") as answer:
        a.get_by_role("button", name="Place order").click()
    assert answer.value.status == 400
    expect(a.locator("#id_price_error")).to_contain_text("price must be a multiple of the tick")
    expect(a.get_by_label("Limit price")).to_have_attribute("aria-invalid", "true")
    expect(a.get_by_label("Limit price")).to_be_focused()  # keyboard users land on what to fix
    expect(a.get_by_label("Quantity")).to_have_value("40")  # the rest of the ticket is kept
    shoot(a, "instrument-refused")

    # The corrected order rests on the book, and A sees it there and in "My open orders".
    a.get_by_label("Limit price").fill("580.00")
    a.get_by_role("button", name="Place order").click()
    expect(a.get_by_role("status").filter(has_text="resting on the book")).to_be_visible()
    expect(ask_levels(a)).to_have_count(1)
    expect(ask_levels(a).first).to_contain_text("580.00")
    expect(ask_levels(a).first).to_contain_text("40.000")
    expect(a.locator("#my-orders tbody tr")).to_have_count(1)
    expect(a.locator("#my-orders tbody tr").first).to_contain_text("Sell")

    # Others quote around it, so the book has both sides (placed through the same service).
    maker = funded_member("100000.00", name="Demo Market Maker")
    receipt_world.receipt(maker, quantity="30.000")
    for n, (side, quantity, price) in enumerate([("sell", "12", "582.50"), ("sell", "18", "585.00"),
                                                 ("buy", "15", "577.00"), ("buy", "25", "575.50")]):
        order_place(member=maker, instrument=inst, side=side, order_type="limit", tif="GTC", quantity_kg=quantity,
                    price=price, client_order_id=f"mm-{n}")
    expect(ask_levels(a)).to_have_count(3)  # the 2 s poll brings them in
    expect(a.locator("#live tbody.bids tr.bid")).to_have_count(2)
    expect(a.locator("#live .spread")).to_contain_text("Spread 3.00")

    # Trader B, in another browser context, sees the offer and buys it.
    b = new_page()
    sign_in(b, "trader-b")
    b.goto("/markets/GA-6N-CN/")
    expect(ask_levels(b).last).to_contain_text("580.00")  # the best ask, next to the spread
    b.get_by_label("Buy").check()
    b.get_by_label("Time in force").select_option("IOC")
    b.get_by_label("Quantity").fill("40")
    b.get_by_label("Limit price").fill("580.00")
    b.get_by_role("button", name="Place order").click()
    expect(b.get_by_role("status").filter(has_text="filled 40.000 kg in 1 trade")).to_be_visible()
    trade = Trade.objects.get()

    # Both see the trade: B at once, A by the 2 s poll, without reloading; the ask is gone from both books.
    for page in (b, a):
        expect(page.locator(f'#live tr[data-trade="{trade.pk}"]')).to_contain_text("580.00")
        expect(ask_levels(page)).to_have_count(2)
        expect(ask_levels(page).filter(has_text="580.00")).to_have_count(0)
        expect(page.locator("#last-price")).to_contain_text("580.00")
    # A's chart, drawn before any trade, took the new candle from the same refresh.
    expect(a.locator("[data-chart-empty]")).to_have_count(0)
    assert a.evaluate("document.getElementById('price-chart').ingotSeries.candles.data().length") == 1
    shoot(b, "instrument")

    # A's cash: + 40 kg x 580 = 23,200.00, less the 5 bp maker fee (11.60).
    a.goto("/")
    expect(a.locator("[data-currency=USD] .cash-available")).to_have_text("24,188.40\xa0USD")
    expect(a.get_by_role("row", name=re.compile("Sold")).first).to_contain_text("+23,188.40")
    expect(a.get_by_role("row", name=re.compile(receipt.number))).to_have_count(0)  # split by the sale
    shoot(a, "dashboard-trader")

    # B's side: the cash paid (23,200.00 + 23.20 taker fee) and a new 40 kg receipt, which verifies.
    b.goto("/")
    expect(b.locator("[data-currency=USD] .cash-available")).to_have_text("76,776.80\xa0USD")
    bought = Receipt.objects.get(holder=buyer, status=ReceiptStatus.ACTIVE)
    assert bought.quantity_kg == Decimal("40.000")
    esg_evaluate(receipt_ids=[bought.pk])
    b.reload()
    bought_row = b.get_by_role("row", name=re.compile(bought.number))
    expect(bought_row.locator("td.num")).to_have_text("40.000\xa0kg")
    bought_row.get_by_role("link", name=bought.number, exact=True).click()
    expect(b.get_by_role("heading", level=1)).to_contain_text(bought.number)
    expect(b.locator("#proof-mark")).to_contain_text("✓ Verified")
    expect(b.locator(".event-chain .event").first).to_contain_text("Issued 100.000 kg")  # the lot's history...
    expect(b.locator(".event-chain .event").last).to_contain_text("Transferred 40.000 kg")  # ...to B's title
    expect(b.get_by_text("signature fails")).to_have_count(0)
    # The lot's proof travels with the part sold: footprint, recycled content, origin, ESG labels.
    expect(b.locator("#carbon-title + .big-figure")).to_contain_text("12.4")
    expect(b.get_by_role("heading", name="Origin").locator("..")).to_contain_text("CID900101")
    expect(b.locator(".esg-pack", has_text="Low-carbon class")).to_contain_text("LC earned")
    shoot(b, "receipt")

    # A withdrawal abroad is refused by export control, with its code and reason, and changes nothing.
    b.get_by_label("Destination country").select_option("US")
    with b.expect_response(lambda r: r.url.endswith("/withdrawal/")) as answer:
        b.get_by_role("button", name="Request withdrawal").click()
    assert answer.value.status == 403
    expect(b.get_by_role("alert")).to_contain_text("export_licence_required")
    expect(b.get_by_role("alert")).to_be_focused()
    shoot(b, "receipt-withdrawal-refused")
    bought.refresh_from_db()
    assert bought.status == ReceiptStatus.ACTIVE
    assert_value_invariants()

    b.goto("/markets/")
    expect(b.get_by_role("row", name=re.compile("GA-6N-CN"))).to_contain_text("40.000")
    shoot(b, "markets")
    b.goto("/index/")
    expect(b.get_by_role("heading", name="Ingot pricing methodology")).to_be_visible()
    expect(b.locator(".chart canvas").first).to_be_visible()
    shoot(b, "index")


def test_a_dropped_submit_is_safe_to_resend_and_cancel_works_by_keyboard(page: Page, receipt_world: Any, sign_in: Callable[..., None],
                                                 tolerated_errors: list[str]) -> None:
    instrument("GA-6N-CN")
    seller = MemberFactory(name="Baltic Metals AS", roles=["trader"], country="CN")
    receipt = receipt_world.receipt(seller, quantity="25.000")
    UserFactory(username="baltic", member=seller)
    sign_in(page, "baltic")
    page.goto("/markets/GA-6N-CN/?side=sell&quantity_kg=25&price=590.00")
    # The network drops the first submit: the ticket says so, and the same ticket can simply be sent again.
    tolerated_errors.extend(["htmx:sendError", "htmx:afterRequest", "net::ERR_FAILED"])  # htmx logs the drop
    page.route("**/markets/GA-6N-CN/orders/", lambda route: route.abort())
    page.get_by_role("button", name="Place order").click()
    expect(page.get_by_role("alert")).to_contain_text("Ingot cannot be reached")
    expect(page.get_by_role("alert")).to_contain_text("submitting this same ticket again is safe")
    page.unroute("**/markets/GA-6N-CN/orders/")
    page.get_by_role("button", name="Place order").click()
    expect(page.get_by_role("status").filter(has_text="resting on the book")).to_be_visible()
    cancel = page.locator("#my-orders").get_by_role("button", name=re.compile("^Cancel"))
    cancel.focus()
    page.keyboard.press("Enter")
    expect(page.locator("#my-orders").get_by_role("status")).to_contain_text("25.000 kg of receipts released")
    expect(page.locator("#my-orders").get_by_role("status")).to_be_focused()
    expect(ask_levels(page)).to_have_count(0)
    receipt.refresh_from_db()
    assert receipt.status == ReceiptStatus.ACTIVE
