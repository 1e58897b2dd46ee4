"""DEMO market: instruments for the demo grades, cash for demo traders, resting orders on both sides,
a few trades, and the demo market maker's re-quoting. Idempotent; everything here is demo data."""

from __future__ import annotations

import random
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from django.db import transaction

from config.errors import ApplicationError
from members.models import Member
from receipts.models import Grade, Receipt, ReceiptStatus
from trading.ledger import cash_deposit
from trading.models import LIVE_ORDER_STATUSES, Instrument, JournalEntry, Order, Trade
from trading.services import order_cancel, order_place

# Demo reference prices, USD/kg. Ga and Ge from the report's 2026 figures (DESIGN.md §8); the rest are
# plausible placeholders for the demo only.
DEMO_REFERENCE: dict[str, str] = {
    "GA-6N": "580.00", "GA-7N": "820.00", "GA-4N": "390.00", "GE-6N": "1750.00", "IN-5N5": "450.00",
    "IN-6N": "520.00", "W-4N": "62.00", "RE-6N": "3200.00", "MO-4N": "55.00", "SB-4N": "38.00",
}
# Where the demo's books start, from the report (DESIGN.md §8): after China's 2023 export controls gallium and
# germanium delivered abroad trade above metal delivered in China (Q4 2025: European quotes for 6N gallium at
# 610-620 USD/kg while the exchange's 6N receipts averaged 580, about +5 %), and receipts with recycled-content
# and footprint declarations (the low-carbon class) sell at an 8-12 % premium (+10 % here).
EXPORT_CONTROLLED_ABROAD_PREMIUM = {"EU": Decimal("0.05")}
LOW_CARBON_PREMIUM = Decimal("0.10")
DEMO_CASH = {"sgc": "2000000.00", "gtw": "2000000.00", "nir": "2000000.00", "lumen": "5000000.00",
             "mm": "10000000.00"}
MARKET_MAKER = "DEMO-SG-2026-MM"


def _tick(grade: str) -> Decimal:
    return Decimal("0.05") if Decimal(DEMO_REFERENCE.get(grade, "100")) < 100 else Decimal("0.50")


def demo_reference(grade: Grade, region: str, esg_class: str) -> Decimal:
    """A new demo book's first reference price: the grade's, with the report's premiums for export-controlled
    metal delivered abroad and for the low-carbon class, on the grade's tick."""
    price = Decimal(DEMO_REFERENCE.get(grade.code, "100.00"))
    if grade.metal.export_controlled:
        price *= 1 + EXPORT_CONTROLLED_ABROAD_PREMIUM.get(region, Decimal(0))
    if esg_class == "LC":
        price *= 1 + LOW_CARBON_PREMIUM
    tick = _tick(grade.code)
    return (price / tick).to_integral_value() * tick


def ensure_instruments() -> list[Instrument]:
    """An instrument per (grade, region) that holds demo receipts, plus the low-carbon twin for gallium."""
    pairs = set(Receipt.objects.exclude(grade=None).values_list("grade__code", "lot__warehouse__region"))
    made = []
    for grade_code, region in sorted(pairs):
        grade = Grade.objects.select_related("metal").get(code=grade_code)
        for esg_class in ([""] + (["LC"] if grade_code.startswith("GA-6N") else [])):
            code = f"{grade_code}-{region}" + (f"-{esg_class}" if esg_class else "")
            reference = demo_reference(grade, region, esg_class)
            tick = _tick(grade_code)
            band = Decimal("10")
            instrument, _ = Instrument.objects.get_or_create(code=code, defaults={
                "grade": grade, "region": region, "esg_class": esg_class,
                "currency": "USD", "tick_size": tick, "lot_size_kg": Decimal("1.000"), "band_pct": band,
                "reference_price": reference,
                "band_low": (reference * (1 - band / 100) / tick).to_integral_value() * tick,
                "band_high": (reference * (1 + band / 100) / tick).to_integral_value() * tick,
            })
            made.append(instrument)
    return made


def ensure_cash() -> None:
    for username, amount in DEMO_CASH.items():
        member = Member.objects.filter(users__username=username).first()
        if member is None or JournalEntry.objects.filter(kind="deposit", reference=f"M{member.pk}").exists():
            continue
        cash_deposit(member=member, currency="USD", amount=Decimal(amount), by=None, reason="DEMO funding")


def ensure_end_use_declarations() -> None:
    """The demo market maker (Singapore) and Lumen (Germany) buy controlled metals stored in China: each
    needs an approved end-use declaration per metal, as any foreign buyer would (DEMO)."""
    from datetime import timedelta

    from django.utils import timezone

    from compliance.models import DeclarationStatus, EndUseDeclaration
    from compliance.services import end_use_declaration_decide, end_use_declaration_submit

    today = timezone.localdate()
    metals = {i.grade.metal for i in Instrument.objects.select_related("grade__metal") if i.grade.metal.export_controlled}
    for legal_id, end_user, use in ((MARKET_MAKER, "Demo Market Maker Ltd (demo)", "inventory for resale to "
                                     "approved end users (demo market making)"),
                                    ("DEMO-DE-HRB-123456", "Lumen Displays GmbH (demo)", "display and "
                                     "semiconductor manufacturing (demo)")):
        member = Member.objects.filter(legal_id=legal_id).first()
        if member is None:
            continue
        for metal in sorted(metals, key=lambda m: m.symbol):
            if EndUseDeclaration.objects.filter(member=member, metal=metal,
                                                status=DeclarationStatus.APPROVED).exists():
                continue
            declaration = end_use_declaration_submit(
                member=member, metal=metal, end_user=end_user, end_use=use,
                destination_country=str(member.country), valid_from=today - timedelta(days=1),
                valid_to=today + timedelta(days=365))
            end_use_declaration_decide(declaration=declaration, status=DeclarationStatus.APPROVED, decided_by=None,
                                       reason="DEMO: approved at load")


def _quote(member: Member, instrument: Instrument, side: str, qty: int, price: Decimal, tag: str) -> bool:
    try:
        order_place(member=member, instrument=instrument, side=side, order_type="limit", tif="GTC",
                    quantity_kg=Decimal(qty), price=price, client_order_id=tag)
        return True
    except ApplicationError:
        return False


def market_maker_requote(seed: int | None = None) -> int:
    """Cancel the market maker's quotes and quote again around the reference (3 levels a side)."""
    mm = Member.objects.filter(legal_id=MARKET_MAKER).first()
    if mm is None:
        return 0
    rng = random.Random(seed)
    placed = 0
    for order in Order.objects.filter(member=mm, status__in=LIVE_ORDER_STATUSES):
        order_cancel(member=mm, order_id=order.pk)
    for instrument in Instrument.objects.filter(status="open").exclude(reference_price=None):
        ref, tick = instrument.reference_price, instrument.tick_size
        assert ref is not None
        for level in range(1, 4):
            # Quotes sit on the tick grid: bids rounded down, asks up (the reference itself is not on it).
            offset = ref * Decimal("0.004") * level
            bid = ((ref - offset) / tick).to_integral_value(rounding=ROUND_FLOOR) * tick
            ask = ((ref + offset) / tick).to_integral_value(rounding=ROUND_CEILING) * tick
            tag = f"mm-{instrument.code}-{level}-{rng.random():.9f}"
            placed += _quote(mm, instrument, "buy", rng.randint(2, 8), bid, tag + "-b")
            placed += _quote(mm, instrument, "sell", rng.randint(1, 4), ask, tag + "-s")
    return placed


def ensure_trades() -> int:
    """A few crossing orders so the demo market has prints; skipped once there are trades."""
    if Trade.objects.exists():
        return 0
    lumen = Member.objects.filter(users__username="lumen").first()
    count = 0
    for instrument in Instrument.objects.all():
        sellers = Member.objects.filter(receipts_held__grade=instrument.grade,
                                        receipts_held__status=ReceiptStatus.ACTIVE,
                                        receipts_held__lot__warehouse__region=instrument.region).distinct()
        for i, seller in enumerate(sellers[:3]):
            ref = instrument.reference_price or Decimal("100")
            price = (ref * (1 + Decimal(i - 1) / 200) / instrument.tick_size).to_integral_value() * instrument.tick_size
            if _quote(seller, instrument, "sell", 2, price, f"demo-open-{instrument.code}-{i}") and lumen:
                count += _quote(lumen, instrument, "buy", 2, price, f"demo-open-buy-{instrument.code}-{i}")
    return count


def load() -> list[str]:
    with transaction.atomic():
        instruments = ensure_instruments()
        ensure_cash()
        ensure_end_use_declarations()
    trades = ensure_trades()
    quotes = market_maker_requote(seed=7) if not Order.objects.filter(
        member__legal_id=MARKET_MAKER, status__in=LIVE_ORDER_STATUSES).exists() else 0
    from trading import pricing_demo

    history = pricing_demo.load()
    if quotes:  # the price history's trades took some quotes: both sides again, around the reference it left
        quotes = market_maker_requote(seed=8)
    return [f"  market:     {len(instruments)} instruments, {trades} opening trades, {quotes} market-maker quotes",
            *history]
