"""Instruments, funded accounts and sellers with real receipts, for trading tests."""

from __future__ import annotations

from decimal import Decimal

from members.models import Member
from receipts.models import Grade, Receipt
from tests.factories.members import MemberFactory
from tests.factories.receipts import ReceiptWorld
from trading.ledger import cash_deposit
from trading.models import Instrument


def instrument(code: str = "GA-6N-CN", *, grade: str = "GA-6N", region: str = "CN", tick: str = "0.01",
               lot: str = "1.000", reference: str | None = "580.00", band_pct: str = "10") -> Instrument:
    ref = Decimal(reference) if reference else None
    pct = Decimal(band_pct)
    return Instrument.objects.create(
        code=code, grade=Grade.objects.get(code=grade), region=region, currency="USD", tick_size=Decimal(tick),
        lot_size_kg=Decimal(lot), band_pct=pct, reference_price=ref,
        band_low=(ref * (1 - pct / 100)).quantize(Decimal(tick)) if ref else None,
        band_high=(ref * (1 + pct / 100)).quantize(Decimal(tick)) if ref else None)


def funded_member(amount: str = "1000000.00", *, country: str = "CN", **kwargs: object) -> Member:
    member = MemberFactory(roles=["trader"], country=country, **kwargs)
    cash_deposit(member=member, currency="USD", amount=Decimal(amount), by=None, reason="test funding")
    return member


def seller_with(world: ReceiptWorld, quantity: str = "100.000", *, count: int = 1) -> tuple[Member, list[Receipt]]:
    member = MemberFactory(roles=["trader", "producer"], country=world.warehouse.country.code)
    receipts = [world.receipt(member, quantity=quantity) for _ in range(count)]
    return member, receipts
