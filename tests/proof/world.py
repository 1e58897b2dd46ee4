"""A populated platform for the proof suites: two members of every role, each owning real objects.

Everything goes through the services (receipts, trading, compliance, members), so receipts carry real
signed chains with splits and transfers, orders hold real cash, and every object has exactly one owner.

Roles and who owns what:

| role      | A                                              | B                                   |
|-----------|------------------------------------------------|-------------------------------------|
| trader    | receipts at WH-A (one split by a sale), orders, | receipts at WH-B, the part it bought |
|           | a key, an end-use declaration, an export licence | from A (a split child), orders, ... |
| warehouse | WH-A, its lots, a stock statement, a reading     | WH-B, the same                      |
| assay lab | its key, the assays on WH-A's lots               | its key, the assays on WH-B's lots  |
| officer   | staff user without a member (console users)      | the same                            |
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.utils import timezone

from members.models import Member, User
from members.services import signing_key_register
from receipts import services as receipt_services
from receipts.canonical import utc_stamp
from receipts.models import Lot, Receipt, StockStatement
from tests.factories import compliance as compliance_factories
from tests.factories.members import MemberFactory, UserFactory, new_public_key, token_for
from tests.factories.receipts import ReceiptWorld, Signer
from tests.factories.trading import instrument as make_instrument
from trading.ledger import cash_deposit
from trading.models import Instrument, Order
from trading.services import OrderResult, order_place

_coid = itertools.count(1)


@dataclass
class Actor:
    """One identity that calls the API: a user (with a token), its member (None for officers)."""

    name: str
    role: str
    user: User
    member: Member | None
    token: str
    owns: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def authorization(self) -> str:
        return f"Token {self.token}"

    def own(self, kind: str, value: Any) -> None:
        self.owns.setdefault(kind, []).append(value)


@dataclass
class ApiWorld:
    actors: dict[str, Actor]
    instrument: Instrument
    worlds: dict[str, ReceiptWorld]

    def by_role(self, role: str) -> list[Actor]:
        return [a for a in self.actors.values() if a.role == role]

    def members(self) -> list[Actor]:
        return [a for a in self.actors.values() if a.member is not None]


def _actor(name: str, role: str, member: Member | None, **user_fields: Any) -> Actor:
    user = UserFactory(member=member, username=f"proof-{name}", **user_fields)
    return Actor(name=name, role=role, user=user, member=member, token=token_for(user))


def place(member: Member, inst: Instrument, side: str, qty: str, price: str | None, *, tif: str = "GTC",
          order_type: str = "limit") -> OrderResult:
    return order_place(member=member, instrument=inst, side=side, order_type=order_type, tif=tif,
                       quantity_kg=qty, price=price, client_order_id=f"proof-{next(_coid)}")


def _statement(world: ReceiptWorld, signer: Signer, lots: list[Lot]) -> StockStatement:
    document = {"type": "stock_statement", "warehouse": world.warehouse.code,
                "asOf": utc_stamp(timezone.now() - timedelta(minutes=1)),
                "lots": [{"lot": lot.reference, "quantity": f"{lot.net_mass_kg:.3f}"} for lot in lots]}
    return receipt_services.stock_statement_submit(warehouse=world.warehouse, by=world.operator,
                                                   document=document, signature=signer.sign(document))


def build_api_world() -> ApiWorld:
    """Two members of each role with objects of their own; see the module docstring."""
    inst = make_instrument()
    worlds = {"A": ReceiptWorld(), "B": ReceiptWorld()}
    actors: dict[str, Actor] = {}
    for tag, world in worlds.items():
        trader = MemberFactory(roles=["trader", "producer"], country="CN", name=f"Proof Trader {tag}")
        cash_deposit(member=trader, currency="USD", amount=Decimal("1000000.00"), by=None, reason="proof funding")
        actors[f"trader_{tag}"] = _actor(f"trader_{tag}", "trader", trader)
        actors[f"warehouse_{tag}"] = _actor(f"warehouse_{tag}", "warehouse", world.operator)
        actors[f"assay_lab_{tag}"] = _actor(f"assay_lab_{tag}", "assay_lab", world.lab)
        actors[f"officer_{tag}"] = _actor(f"officer_{tag}", "officer", None, is_staff=True, is_superuser=True)

    for tag, world in worlds.items():
        trader = actors[f"trader_{tag}"]
        wh = actors[f"warehouse_{tag}"]
        lab = actors[f"assay_lab_{tag}"]
        assert trader.member is not None
        receipts = [world.receipt(trader.member, quantity="100.000") for _ in range(3)]
        # A lot with nothing receipted yet, so the warehouse has something to issue against.
        spare = world.lot(mass="50.000", depositor=trader.member)
        wh.own("warehouse", world.warehouse.code)
        for lot in {r.lot for r in receipts} | {spare}:
            wh.own("lot", lot.pk)
            lab.own("attestation_lot", lot.pk)
        signer = Signer(world.operator)
        wh.own("stock_statement", _statement(world, signer, [r.lot for r in receipts]).pk)
        receipt_services.storage_reading_record(
            warehouse=world.warehouse, by=world.operator, location="A1", observed_at=timezone.now(),
            temperature_c=Decimal("21.50"), humidity_pct=Decimal("40.00"), seal_intact=True)
        for actor in (trader, wh, lab):
            assert actor.member is not None
            key = signing_key_register(member=actor.member, public_key=new_public_key(), label=f"proof {actor.name}")
            actor.own("key", key.kid)
        # A withdrawal the warehouse may complete.
        receipt_services.receipt_withdrawal_request(receipt=receipts[2], by=trader.member,
                                                   withdrawal_ref=f"W-{receipts[2].number}")
        declaration = compliance_factories.declaration(trader.member)
        licence = compliance_factories.licence(trader.member)
        trader.own("declaration", declaration.pk)
        trader.own("licence", licence.pk)

    a, b = actors["trader_A"].member, actors["trader_B"].member
    assert a is not None and b is not None
    # Trades: A sells part of a receipt (a split), B buys it (a transfer of the split child to B).
    place(a, inst, "sell", "30", "600.00")
    place(b, inst, "buy", "10", "610.00")
    # Resting orders on both sides that stay open.
    place(a, inst, "sell", "5", "620.00")
    place(b, inst, "buy", "7", "560.00")
    for tag in ("A", "B"):
        trader = actors[f"trader_{tag}"]
        for order in Order.objects.filter(member=trader.member):
            trader.own("order", order.pk)
        for receipt in Receipt.objects.filter(holder=trader.member):
            trader.own("receipt", receipt.number)
    return ApiWorld(actors=actors, instrument=inst, worlds=worlds)



