"""Idempotency-Key under random retries: orders (POST /api/v1/orders), issuance (POST
/api/v1/lots/{id}/receipts) and withdrawals (POST /api/v1/holdings/{number}/withdrawal), each retried
at random with the same key — the same body replays the first response byte for byte and has no second
effect, another body is 422, a request without a key is 400; concurrent retries of one key make one
effect (409 while the first is in flight).
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
from django.db import connections

from compliance.models import ExportLicence
from members.models import IdempotencyRecord
from receipts.models import Receipt, ReceiptStatus
from tests.conftest import client_for
from tests.invariants import assert_value_invariants
from tests.proof.state_model import (
    ChainAuditor,
    MarketWorld,
    assert_more_invariants,
    build_market_world,
    proof_scenario,
    seed_from_env,
)
from trading.models import Order


@dataclass
class Attempted:
    """One Idempotency-Key and everything sent with it."""

    kind: str
    member: int  # index of the member whose key it is (-1: the warehouse operator)
    client: Any
    path: str
    body: dict[str, Any]
    key: str
    first: tuple[int, bytes] | None = None  # the first 2xx answer; None while every attempt was refused
    attempts: list[int] = field(default_factory=list)


class RetryRun:
    def __init__(self, world: MarketWorld, rng: random.Random) -> None:
        self.world = world
        self.rng = rng
        self.keys: list[Attempted] = []
        self.stats: Counter[str] = Counter()
        self.serial = 0
        self.opening = set(Receipt.objects.values_list("number", flat=True))  # issued by build_market_world

    def _next(self, prefix: str) -> str:
        self.serial += 1
        return f"{prefix}-{self.serial}"

    def new_request(self) -> Attempted:
        w, rng = self.world, self.rng
        kind = rng.choice(["order", "order", "issue", "withdrawal"])
        m = rng.randrange(len(w.traders))
        if kind == "order":
            side = rng.choice(["buy", "sell"])
            price = Decimal("578.00" if side == "buy" else "575.00") + Decimal(rng.randrange(15)) / 2
            body: dict[str, Any] = {"instrument": w.instrument.code, "side": side, "order_type": "limit",
                                    "tif": rng.choice(["GTC", "IOC"]), "quantity_kg": str(rng.randint(1, 8)),
                                    "price": str(price), "client_order_id": self._next("coid")}
            return Attempted(kind, m, w.clients[m], "/api/v1/orders", body, self._next("key"))
        if kind == "issue":
            lot = rng.choice(w.lots)
            body = {"holder": w.traders[m].legal_id,
                    "quantity_kg": str(Decimal(rng.randint(1, 20)) + Decimal(rng.choice(["0", "0.5", "0.125"])))}
            return Attempted(kind, -1, w.operator_client, f"/api/v1/lots/{lot.pk}/receipts", body, self._next("key"))
        active = list(Receipt.objects.filter(holder=w.traders[m], status=ReceiptStatus.ACTIVE)
                      .values_list("number", flat=True))
        number = rng.choice(active) if active else "WR-XX-2026-000000"  # well formed, held by nobody
        return Attempted("withdrawal", m, w.clients[m], f"/api/v1/holdings/{number}/withdrawal",
                         {"destination_country": rng.choice(["CN", "DE"])}, self._next("key"))

    def send(self, request: Attempted, body: dict[str, Any] | None = None) -> Any:
        response = request.client.post(request.path, body or request.body, key=request.key)
        assert response.status_code < 500, (request.path, response.status_code, response.content[:1000])
        return response

    def attempt(self, request: Attempted) -> None:
        """A first attempt, or a retry of a key no attempt of which has succeeded yet (it runs again)."""
        response = self.send(request)
        request.attempts.append(response.status_code)
        if response.status_code in (200, 201):
            request.first = (response.status_code, response.content)
            self.stats[f"{request.kind}:created"] += 1
        else:
            # Refused by a domain rule (no cash, no receipt, lot used up, licence drawn, not active, gone):
            # the key row rolled back with the work, so the key may be used again.
            assert response.status_code in (403, 404, 409), (request.path, response.status_code, response.content)
            self.stats[f"{request.kind}:refused_{response.status_code}"] += 1

    def retry(self, request: Attempted) -> None:
        if request.first is None:
            self.stats["retry_of_refused_key"] += 1
            self.attempt(request)
            return
        if self.rng.random() < 0.25:
            other = dict(request.body)
            if request.kind == "withdrawal":
                other["destination_country"] = "DE" if other["destination_country"] == "CN" else "CN"
            else:
                other["quantity_kg"] = str(Decimal(other["quantity_kg"]) + 1)
            response = self.send(request, other)
            assert response.status_code == 422 and response.json()["code"] == "idempotency_key_reused", \
                response.content[:500]
            self.stats["mismatch_422"] += 1
            return
        response = self.send(request)
        assert (response.status_code, response.content) == request.first, \
            f"{request.key}: replay differs from the first response"
        assert response["Idempotent-Replayed"] == "true"
        self.stats["replayed_byte_for_byte"] += 1

    def run(self, retries: int) -> None:
        while self.stats["retries"] < retries:
            if not self.keys or self.rng.random() < 0.3:
                request = self.new_request()
                self.keys.append(request)
                self.attempt(request)
                self.stats["first_attempts"] += 1
            else:
                # Recent keys are retried most, as a client retrying a timeout would.
                request = self.keys[-1 - min(int(self.rng.expovariate(0.2)), len(self.keys) - 1)]
                self.retry(request)
                self.stats["retries"] += 1
            if self.rng.random() < 0.02:
                self.without_key()

    def without_key(self) -> None:
        request = self.new_request()
        response = request.client.post(request.path, request.body, key=None)
        assert response.status_code == 400 and response.json()["code"] == "idempotency_key_missing"
        self.stats["no_key_400"] += 1

    def assert_one_effect_per_key(self) -> dict[str, int]:
        created = [r for r in self.keys if r.first is not None]
        records = IdempotencyRecord.objects.filter(key__in=[r.key for r in self.keys])
        assert records.count() == len(created), "a key row exists for a request that never succeeded, or twice"
        orders = [r for r in created if r.kind == "order"]
        assert Order.objects.count() == len(orders), f"{Order.objects.count()} orders from {len(orders)} keys"
        assert set(Order.objects.values_list("client_order_id", flat=True)) == \
            {r.body["client_order_id"] for r in orders}
        issues = [r for r in created if r.kind == "issue"]
        numbers = [_json(r.first[1])["number"] for r in issues if r.first]
        issued = Receipt.objects.filter(parent=None).exclude(number__in=self.opening)
        assert sorted(issued.values_list("number", flat=True)) == sorted(numbers), "issued receipts differ"
        for request, number in zip(issues, numbers, strict=True):
            assert Receipt.objects.get(number=number).quantity_kg == Decimal(request.body["quantity_kg"])
        withdrawals = [r for r in created if r.kind == "withdrawal"]
        pending = set(Receipt.objects.filter(status=ReceiptStatus.WITHDRAWAL_REQUESTED).values_list("number", flat=True))
        assert pending == {r.path.split("/")[4] for r in withdrawals}, "withdrawals differ from their keys"
        drawn = sum((Decimal(_json(r.first[1])["quantity_kg"]) for r in withdrawals
                     if r.first and r.body["destination_country"] == "DE"), Decimal(0))
        licences = ExportLicence.objects.filter(pk__in=[lic.pk for lic in self.world.licences])
        assert sum(lic.drawn_kg for lic in licences) == drawn, "a licence was drawn other than once per withdrawal"
        return {"keys": len(self.keys), "keys_created": len(created), "orders": len(orders), "issues": len(issues),
                "withdrawals": len(withdrawals), "duplicate_effects": 0}


def _json(content: bytes) -> Any:
    import json

    return json.loads(content)


RETRIES = "idempotency: random retries of orders, issuance and withdrawals"
CONCURRENT = "idempotency: concurrent retries of one key"


def run_retries(capsys: pytest.CaptureFixture[str], retries: int, variant: str) -> None:
    seed = seed_from_env()
    with capsys.disabled():
        print(f"\n[{RETRIES}, {retries}] seed {seed} (INGOT_PROOF_SEED={seed} to replay)")
    # Lots and licences sized so most creations succeed and some, late, are refused (a refused key is not
    # consumed: its retry runs again).
    world = build_market_world(traders=3, lot_masses=("1500.000", "1500.000"), licence_cap="250.000",
                               funding="5000000.00")
    run = RetryRun(world, random.Random(seed))
    with proof_scenario(RETRIES, variant=variant) as out:
        try:
            run.run(retries)
            figures = run.assert_one_effect_per_key()
            assert_value_invariants()
            assert_more_invariants(auditor=ChainAuditor())
        finally:
            out.update(runs=run.stats["retries"], figures={"seed": seed, **dict(sorted(run.stats.items()))})
        out["figures"].update(figures)
    with capsys.disabled():
        print(f"[{RETRIES}] {run.stats['retries']} retries of {len(run.keys)} keys: "
              f"{run.stats['replayed_byte_for_byte']} replayed byte for byte, {run.stats['mismatch_422']} "
              f"mismatched bodies 422, 0 duplicate effects")


@pytest.mark.django_db
def test_random_retries_replay_and_never_duplicate(capsys: pytest.CaptureFixture[str]) -> None:
    run_retries(capsys, 300, "ci")


@pytest.mark.proof
@pytest.mark.django_db
def test_random_retries_replay_and_never_duplicate_proof(capsys: pytest.CaptureFixture[str]) -> None:
    run_retries(capsys, 2000, "proof")


# --- the same key from several threads at once -----------------------------------------------------------

def _burst(copies: int, user: Any, path: str, body: dict[str, Any], key: str) -> list[tuple[int, bytes]]:
    """`copies` threads, each with its own client and connection, POST the same request at once."""
    barrier = threading.Barrier(copies)
    answers: list[tuple[int, bytes]] = []
    lock = threading.Lock()

    def fire() -> None:
        client = client_for(user)
        try:
            barrier.wait()
            response = client.post(path, body, key=key)
            with lock:
                answers.append((response.status_code, response.content))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=fire) for _ in range(copies)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(answers) == copies
    return answers


def concurrent_retries(keys: int, copies: int, seed: int) -> dict[str, Any]:
    """For each key, `copies` threads send the same creating request at the same moment."""
    rng = random.Random(seed)
    world = build_market_world(traders=2, lot_masses=("500.000",), funding="500000.00", opening_kg="200.000")
    opening = list(Receipt.objects.values_list("number", flat=True))
    statuses: Counter[str] = Counter()
    fired = 0
    for n in range(keys):
        kind = ["order", "issue", "withdrawal"][n % 3]
        m = rng.randrange(2)
        user = world.clients[m].user if kind != "issue" else world.operator_client.user
        if kind == "order":
            side = rng.choice(["buy", "sell"])
            path, body = "/api/v1/orders", {
                "instrument": world.instrument.code, "side": side, "order_type": "limit", "tif": "GTC",
                "quantity_kg": str(rng.randint(1, 5)), "price": "580.00" if side == "buy" else "581.00",
                "client_order_id": f"burst-{n}"}
        elif kind == "issue":
            path, body = f"/api/v1/lots/{world.lots[0].pk}/receipts", {"holder": world.traders[m].legal_id,
                                                                        "quantity_kg": "1.500"}
        else:
            receipt = Receipt.objects.filter(holder=world.traders[m], status=ReceiptStatus.ACTIVE).first()
            if receipt is None:
                continue
            path, body = f"/api/v1/holdings/{receipt.number}/withdrawal", {"destination_country": "CN"}
        answers = _burst(copies, user, path, body, f"burst-key-{n}")
        fired += 1
        created = {content for status, content in answers if status in (200, 201)}
        assert len(created) <= 1, f"key {n}: different successful answers"
        assert all(status in (200, 201, 403, 409) for status, _ in answers), answers
        # 409 idempotency_in_flight while the first runs; a domain refusal (no receipts left, ...) rolls the
        # key back, so a later copy may run again.
        statuses.update(str(status) if status < 300 else _json(content)["code"] for status, content in answers)
        # Whatever raced, a replay now returns the one first answer.
        if created:
            again = client_for(user).post(path, body, key=f"burst-key-{n}")
            assert again.content in created and again["Idempotent-Replayed"] == "true"
    records = IdempotencyRecord.objects.filter(key__startswith="burst-key-")
    assert Order.objects.count() == records.filter(path="/api/v1/orders").count()
    issued = Receipt.objects.filter(parent=None).exclude(number__in=opening)
    assert issued.count() == records.filter(path__endswith="/receipts").count()
    assert Receipt.objects.filter(status=ReceiptStatus.WITHDRAWAL_REQUESTED).count() == \
        records.filter(path__endswith="/withdrawal").count()
    assert_value_invariants()
    return {"keys": fired, "threads_per_key": copies, "requests": sum(statuses.values()),
            "answers": dict(sorted(statuses.items())), "effects": records.count(),
            "duplicate_effects": 0}


@pytest.mark.django_db(transaction=True)
def test_concurrent_retries_of_one_key_make_one_effect() -> None:
    seed = seed_from_env()
    with proof_scenario(CONCURRENT, variant="ci") as out:
        figures = concurrent_retries(24, 4, seed)
        out.update(runs=figures["requests"], figures={**figures, "seed": seed})


@pytest.mark.proof
@pytest.mark.django_db(transaction=True)
def test_concurrent_retries_of_one_key_make_one_effect_proof() -> None:
    seed = seed_from_env()
    with proof_scenario(CONCURRENT, variant="proof") as out:
        figures = concurrent_retries(150, 8, seed)
        out.update(runs=figures["requests"], figures={**figures, "seed": seed})
