"""Real receipt bundles to tamper with, and the random single changes made to them.

The receipts are built through the services and the trading engine: lots with all four attestation kinds,
receipts split by partial sales and transferred on settlement (so bundles carry ancestors), pledged and
unpledged, frozen and unfrozen, withdrawal requested; and a platform key rotation halfway, so chains mix
events signed by the old and the new platform key.

A mutation is one change anywhere in the bundle: a character of a string, a digit of a number or of a
decimal string, an event dropped, duplicated, moved or swapped, a key swapped for another registered key
or a signature's kid pointed at another key, a member renamed, dropped or added, two items of a list
swapped, a leaf given another JSON type, or a subtree replaced by the same member of another bundle.
"""

from __future__ import annotations

import copy
import json
import random
import string
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from members.models import Member
from receipts import services
from receipts.models import Lot, Receipt, ReceiptStatus
from receipts.platform_keys import platform_key_rotate
from receipts.selectors import jwks, receipt_bundle
from tests.factories.members import MemberFactory
from tests.factories.receipts import (
    ReceiptWorld,
    Signer,
    assay_document,
    carbon_footprint_document,
    origin_document,
    recycled_content_document,
)
from tests.factories.trading import instrument as make_instrument
from tests.proof.world import place
from trading.ledger import cash_deposit

JsonPath = tuple[str | int, ...]


def full_lot(world: ReceiptWorld, producer: Member, signer: Signer, mass: str = "200.000") -> Lot:
    """A lot with an assay, a carbon footprint, recycled content and origin, graded."""
    lot = services.lot_register(
        warehouse=world.warehouse, registered_by=world.operator, metal=world.metal, form="ingot",
        net_mass_kg=Decimal(mass), package_count=8, brand="TAMPER", batch_number=f"T{Lot.objects.count() + 1:05d}",
        production_date=date(2026, 1, 10), location="A1", depositor=producer, producer=producer,
        seal_numbers=["S-1", "S-2"], nominees=[(world.lab, ["assay"])])
    documents = [("assay", assay_document(lot, world.lab), world.lab_signer, world.lab),
                 ("carbon_footprint", carbon_footprint_document(lot, producer), signer, producer),
                 ("recycled_content", recycled_content_document(lot), signer, producer),
                 ("origin", origin_document(lot), signer, producer)]
    for kind, document, by, member in documents:
        services.attestation_submit(lot=lot, kind=kind, document=document, signature=by.sign(document),
                                    submitted_by=member)
    services.lot_grade(lot=lot, by=world.operator)
    lot.refresh_from_db()
    return lot


@dataclass
class BundleSet:
    before_rotation: list[dict[str, Any]]  # exported before the platform key rotated
    after_rotation: list[dict[str, Any]]  # every receipt, exported after (chains mix both keys)
    old_kid: str
    new_kid: str

    @property
    def all(self) -> list[dict[str, Any]]:
        return self.before_rotation + self.after_rotation


def _export_all() -> list[dict[str, Any]]:
    return [receipt_bundle(r) for r in Receipt.objects.select_related("lot").order_by("number")]


def build_bundles() -> BundleSet:
    inst = make_instrument()
    world = ReceiptWorld()
    producer = MemberFactory(roles=["trader", "producer"], country="CN")
    signer = Signer(producer)
    lender = MemberFactory(roles=["lender"], country="CN")
    buyers = [MemberFactory(roles=["trader"], country="CN") for _ in range(2)]
    for buyer in buyers:
        cash_deposit(member=buyer, currency="USD", amount=Decimal("1000000.00"), by=None, reason="tamper funding")

    services.receipt_issue(lot=full_lot(world, producer, signer), holder=producer, quantity_kg="200.000",
                                 issued_by=world.operator)
    plain = world.receipt(producer, quantity="50.000")  # assay only
    services.receipt_pledge(receipt=plain, by=producer, lender=lender, loan="LOAN-1")
    services.receipt_unpledge(receipt=Receipt.objects.get(pk=plain.pk), lender=lender, loan="LOAN-1")
    # A partial sale: the seller's receipt splits, the buyer's part is transferred on settlement.
    place(producer, inst, "sell", "60", "590.00")
    place(buyers[0], inst, "buy", "25", "600.00")
    old_kid = jwks_platform_kid()
    before = _export_all()

    platform_key_rotate()
    new_kid = jwks_platform_kid()
    assert new_kid != old_kid
    # After the rotation: more fills (splits of splits), a freeze, a withdrawal request.
    place(buyers[1], inst, "buy", "20", "600.00")
    services.receipt_freeze(receipt=Receipt.objects.get(pk=plain.pk), reason="inspection")
    services.receipt_unfreeze(receipt=Receipt.objects.get(pk=plain.pk), reason="inspection done")
    held = Receipt.objects.filter(holder=buyers[0], status=ReceiptStatus.ACTIVE).first()
    assert held is not None
    services.receipt_withdrawal_request(receipt=held, by=buyers[0], withdrawal_ref="W-T1")
    return BundleSet(before_rotation=before, after_rotation=_export_all(), old_kid=old_kid, new_kid=new_kid)


def jwks_platform_kid() -> str:
    from receipts.platform_keys import platform_signer

    return platform_signer()[1]


# --- walking a bundle ----------------------------------------------------------------------------------

def paths(node: Any, prefix: JsonPath = ()) -> list[tuple[JsonPath, Any]]:
    """Every node below the root, with its path."""
    found: list[tuple[JsonPath, Any]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            found.append(((*prefix, key), value))
            found.extend(paths(value, (*prefix, key)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found.append(((*prefix, index), value))
            found.extend(paths(value, (*prefix, index)))
    return found


def get(node: Any, path: JsonPath) -> Any:
    for step in path:
        node = node[step]
    return node


def put(node: Any, path: JsonPath, value: Any) -> None:
    get(node, path[:-1])[path[-1]] = value


def fingerprint(bundle: Any) -> str:
    return json.dumps(bundle, sort_keys=True, ensure_ascii=False)


# --- mutations -------------------------------------------------------------------------------------------

Mutation = Callable[[random.Random, dict[str, Any], "Context"], str | None]


@dataclass
class Context:
    others: list[dict[str, Any]]  # other bundles, for transplants and inserted events
    keys: list[dict[str, Any]]  # every registered JWK, for key swaps


def flip_char(rng: random.Random, bundle: dict[str, Any], ctx: Context) -> str | None:
    candidates = [(p, v) for p, v in paths(bundle) if isinstance(v, str) and v]
    path, value = rng.choice(candidates)
    i = rng.randrange(len(value))
    alphabet = string.ascii_letters + string.digits + "-_.:/ Zé"
    new = rng.choice([c for c in alphabet if c != value[i]])
    put(bundle, path, value[:i] + new + value[i + 1:])
    return f"flip char {path}"


def change_number(rng: random.Random, bundle: dict[str, Any], ctx: Context) -> str | None:
    ints = [(p, v) for p, v in paths(bundle) if isinstance(v, int) and not isinstance(v, bool)]
    decimals = [(p, v) for p, v in paths(bundle) if isinstance(v, str) and v and
                all(c in "0123456789." for c in v) and any(c.isdigit() for c in v)]
    pool = ints + decimals
    path, value = rng.choice(pool)
    if isinstance(value, int):
        put(bundle, path, value + rng.choice([-2, -1, 1, 2, 1000]))
        return f"int {path}"
    digits = [i for i, c in enumerate(value) if c.isdigit()]
    i = rng.choice(digits)
    put(bundle, path, value[:i] + rng.choice([d for d in "0123456789" if d != value[i]]) + value[i + 1:])
    return f"decimal {path}"


def _chains(bundle: dict[str, Any]) -> list[JsonPath]:
    return [("chain",)] + [("ancestors", i, "chain") for i in range(len(bundle["ancestors"]))]


def drop_event(rng: random.Random, bundle: dict[str, Any], ctx: Context) -> str | None:
    where = rng.choice(_chains(bundle))
    chain = get(bundle, where)
    del chain[rng.randrange(len(chain))]
    return f"drop event {where}"


def insert_event(rng: random.Random, bundle: dict[str, Any], ctx: Context) -> str | None:
    where = rng.choice(_chains(bundle))
    chain = get(bundle, where)
    donors = [chain] + [o["chain"] for o in ctx.others]
    event = copy.deepcopy(rng.choice(rng.choice(donors)))
    chain.insert(rng.randrange(len(chain) + 1), event)
    return f"insert event {where}"


def reorder_events(rng: random.Random, bundle: dict[str, Any], ctx: Context) -> str | None:
    choices = [w for w in _chains(bundle) if len(get(bundle, w)) >= 2]
    if not choices:
        return None
    chain = get(bundle, rng.choice(choices))
    i, j = rng.sample(range(len(chain)), 2)
    chain[i], chain[j] = chain[j], chain[i]
    return "reorder events"


def swap_key(rng: random.Random, bundle: dict[str, Any], ctx: Context) -> str | None:
    """Replace a bundle key by another registered key, or point a signature at another key's kid."""
    if rng.random() < 0.5:
        i = rng.randrange(len(bundle["keys"]))
        others = [k for k in ctx.keys if k["kid"] != bundle["keys"][i]["kid"]]
        bundle["keys"][i] = copy.deepcopy(rng.choice(others))
        return "swap a key"
    signatures = [p for p, v in paths(bundle) if isinstance(v, dict) and set(v) == {"alg", "kid", "sig"}]
    path = rng.choice(signatures)
    signature = get(bundle, path)
    signature["kid"] = rng.choice([k["kid"] for k in ctx.keys if k["kid"] != signature["kid"]])
    return f"swap kid {path}"


def rename_member(rng: random.Random, bundle: dict[str, Any], ctx: Context) -> str | None:
    dicts = [((), bundle)] + [(p, v) for p, v in paths(bundle) if isinstance(v, dict) and v]
    path, node = rng.choice(dicts)
    old = rng.choice(list(node))
    new = old + rng.choice(["_", "X", "2"]) if rng.random() < 0.5 else old.upper() if old != old.upper() else old + "x"
    if new in node:
        return None
    node[new] = node.pop(old)
    return f"rename {path}/{old}"


def drop_member(rng: random.Random, bundle: dict[str, Any], ctx: Context) -> str | None:
    dicts = [((), bundle)] + [(p, v) for p, v in paths(bundle) if isinstance(v, dict) and v]
    path, node = rng.choice(dicts)
    del node[rng.choice(list(node))]
    return f"drop member {path}"


def add_member(rng: random.Random, bundle: dict[str, Any], ctx: Context) -> str | None:
    dicts = [((), bundle)] + [(p, v) for p, v in paths(bundle) if isinstance(v, dict)]
    path, node = rng.choice(dicts)
    node[f"x-{rng.randrange(1000)}"] = rng.choice(["", "1", 0, None, True, [], {}])
    return f"add member {path}"


def swap_items(rng: random.Random, bundle: dict[str, Any], ctx: Context) -> str | None:
    lists = [(p, v) for p, v in paths(bundle) if isinstance(v, list) and len(v) >= 2]
    if not lists:
        return None
    path, items = rng.choice(lists)
    i, j = rng.sample(range(len(items)), 2)
    if fingerprint(items[i]) == fingerprint(items[j]):
        return None
    items[i], items[j] = items[j], items[i]
    return f"swap items {path}"


def change_type(rng: random.Random, bundle: dict[str, Any], ctx: Context) -> str | None:
    leaves = [(p, v) for p, v in paths(bundle) if not isinstance(v, (dict, list))]
    path, value = rng.choice(leaves)
    replacement = rng.choice([None, True, False, 0, 1, "", [value], {"v": value}, str(value)])
    put(bundle, path, replacement)
    return f"type {path}"


def transplant(rng: random.Random, bundle: dict[str, Any], ctx: Context) -> str | None:
    donor = rng.choice(ctx.others)
    shared = [p for p, _ in paths(bundle) if _exists(donor, p)]
    path = rng.choice(shared)
    put(bundle, path, copy.deepcopy(get(donor, path)))
    return f"transplant {path}"


def _exists(node: Any, path: JsonPath) -> bool:
    try:
        get(node, path)
    except (KeyError, IndexError, TypeError):
        return False
    return True


MUTATIONS: dict[str, Mutation] = {
    "flip a character": flip_char,
    "change a number": change_number,
    "drop an event": drop_event,
    "insert an event": insert_event,
    "reorder events": reorder_events,
    "swap a key": swap_key,
    "rename a member": rename_member,
    "drop a member": drop_member,
    "add a member": add_member,
    "swap two list items": swap_items,
    "change a type": change_type,
    "transplant from another bundle": transplant,
}


def mutate(rng: random.Random, bundle: dict[str, Any], ctx: Context) -> tuple[str, str, dict[str, Any]]:
    """One random change that really changes the bundle: (mutation name, what, the changed copy)."""
    original = fingerprint(bundle)
    while True:
        name = rng.choice(list(MUTATIONS))
        changed = copy.deepcopy(bundle)
        what = MUTATIONS[name](rng, changed, ctx)
        if what is not None and fingerprint(changed) != original:
            return name, what, changed


def registered_keys() -> list[dict[str, Any]]:
    return jwks()["keys"]
