"""Order entry's group commit (trading.batching): orders that queue together for one instrument in one process
are placed in one transaction, each in its own savepoint, on real PostgreSQL with one connection per thread.

Each test holds the instrument's row lock from the test's own connection while the request threads post their
orders, so they all queue behind the first one (the combiner, waiting for the lock), then lets go: the batch
holds every one of them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection, connections, transaction
from django.test import Client

from members.models import IdempotencyRecord
from receipts.signals import receipt_proof_changed
from tests.conftest import client_for
from tests.factories.members import UserFactory
from tests.factories.receipts import ReceiptWorld
from tests.factories.trading import funded_member, instrument, seller_with
from tests.invariants import assert_value_invariants
from trading import batching, book_cache
from trading.models import Instrument, Order, Trade
from trading.services import order_place

pytestmark = pytest.mark.django_db(transaction=True)


def body(side: str, quantity: str, price: str, coid: str) -> dict[str, str]:
    return {"instrument": "GA-6N-CN", "side": side, "order_type": "limit", "tif": "GTC", "quantity_kg": quantity,
            "price": price, "client_order_id": coid}


def in_one_batch(posts: list[Callable[[], Any]]) -> list[Any]:
    """`queued_together`, all of them placed by one batch."""
    return queued_together(posts, batches=1)


def queued_together(posts: list[Callable[[], Any]], *, batches: int) -> list[Any]:
    """Run each post in a thread of its own while the instrument's row is locked here; release the lock once all
    of them have queued. Returns each post's response (or the exception it raised), in the same order.
    `batches`: how many batches got as far as their commit (batching.STATS counts no batch that failed before)."""
    results: list[Any] = [None] * len(posts)

    def run(n: int) -> None:
        try:
            results[n] = posts[n]()
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            results[n] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(n,)) for n in range(len(posts))]
    before = batching.STATS.batches
    with transaction.atomic():
        Instrument.objects.select_for_update().get(code="GA-6N-CN")
        for thread in threads:
            thread.start()
            deadline = time.monotonic() + 10
            while batching.unanswered("GA-6N-CN") < threads.index(thread) + 1:  # queued in the order started
                assert time.monotonic() < deadline, "the order never queued"
                time.sleep(0.005)
    for thread in threads:
        thread.join(30)
        assert not thread.is_alive(), "an order was never answered"
    assert batching.STATS.batches == before + batches, "the orders were not placed in the batches expected"
    return results


@contextmanager
def refusing(table: str, trigger: str) -> Iterator[None]:
    """While the block runs, PostgreSQL refuses what the trigger `test_refuse` on `table` fires on: `trigger` is
    the CREATE TRIGGER statement, its function `test_refuse()`."""
    with connection.cursor() as cursor:
        cursor.execute("CREATE FUNCTION test_refuse() RETURNS trigger LANGUAGE plpgsql AS "
                       "$$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$")
        cursor.execute(trigger)
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TRIGGER test_refuse ON {table}; DROP FUNCTION test_refuse()")


@pytest.fixture
def market() -> tuple[Any, Any, Any]:
    world = ReceiptWorld()
    instrument()
    seller, _ = seller_with(world, "20.000")
    buyer = funded_member("100000.00")
    return world, client_for(UserFactory(member=seller)), client_for(UserFactory(member=buyer))


def book_from_orders() -> dict[str, list[dict[str, str]]]:
    """The depth the resting orders in the database make, as the depth API prints it."""
    levels: dict[tuple[str, Decimal], Decimal] = {}
    for order in Order.objects.filter(status__in=["open", "partially_filled"]):
        key = (order.side, order.price)
        levels[key] = levels.get(key, Decimal(0)) + order.quantity_kg - order.filled_kg
    def side(name: str, best_first: bool) -> list[dict[str, str]]:
        return [{"price": f"{price.normalize():f}", "quantity_kg": f"{qty:.3f}"}
                for (s, price), qty in sorted(levels.items(), key=lambda kv: kv[0][1], reverse=best_first) if s == name]
    return {"bids": side("buy", True), "asks": side("sell", False)}


def test_orders_queued_together_are_placed_and_settled_in_one_batch(market) -> None:
    _, seller, buyer = market
    proof_sends: list[list[int]] = []

    def on_proof(sender: Any, receipt_ids: list[int], **kwargs: Any) -> None:
        proof_sends.append(receipt_ids)

    receipt_proof_changed.connect(on_proof, dispatch_uid="test-batching")
    rebuilds = book_cache.rebuilds
    try:
        responses = in_one_batch([
            lambda: seller.post("/api/v1/orders", body("sell", "5", "600.00", "s1")),
            lambda: seller.post("/api/v1/orders", body("sell", "5", "601.00", "s2")),
            lambda: buyer.post("/api/v1/orders", body("buy", "3", "600.00", "b1")),
            lambda: buyer.post("/api/v1/orders", body("buy", "4", "605.00", "b2"), key="b2-key"),
            lambda: buyer.post("/api/v1/orders", body("buy", "1", "590.00", "b3")),
        ])
    finally:
        receipt_proof_changed.disconnect(dispatch_uid="test-batching")
    assert [r.status_code for r in responses] == [201] * 5, [r.content for r in responses]
    # Placed in the order they queued: b1 meets s1, b2 takes the rest of s1 and one of s2, b3 rests.
    assert [[t["quantity_kg"] for t in r.json()["trades"]] for r in responses] == \
           [[], [], ["3.000"], ["2.000", "2.000"], []]
    assert Trade.objects.count() == 3
    # The batch built the book once, for its first order; the others used it with the batch's own changes.
    assert book_cache.rebuilds - rebuilds <= 1
    # The receipts the three deliveries split off are announced once, after the batch's commit.
    assert len(proof_sends) == 1 and len(proof_sends[0]) >= 3
    assert Client().get("/api/v1/instruments/GA-6N-CN/depth").json() == book_from_orders()
    # Each response was stored with its key: a retry replays it byte for byte.
    again = buyer.post("/api/v1/orders", body("buy", "4", "605.00", "b2"), key="b2-key")
    assert again.status_code == 201 and again.content == responses[3].content
    assert again["Idempotent-Replayed"] == "true"
    assert_value_invariants()


def test_a_refused_order_rolls_back_alone_and_its_key_can_be_used_again(market) -> None:
    _, seller, buyer = market
    broke = client_for(UserFactory(member=funded_member("10.00")))
    responses = in_one_batch([
        lambda: seller.post("/api/v1/orders", body("sell", "5", "600.00", "s1")),
        lambda: broke.post("/api/v1/orders", body("buy", "5", "600.00", "poor"), key="broke-key"),
        lambda: seller.post("/api/v1/orders", body("sell", "50", "600.00", "too-much")),
        lambda: buyer.post("/api/v1/orders", body("buy", "2", "600.00", "b1")),
        lambda: seller.post("/api/v1/orders", body("sell", "1", "599.00", "s2")),
    ])
    assert [r.status_code for r in responses] == [201, 409, 409, 201, 201], [r.content for r in responses]
    assert responses[1].json()["code"] == "insufficient_cash"
    assert responses[2].json()["code"] == "insufficient_receipts"
    # After the refusals the book was rebuilt from the batch's own rows: b1 met s1 at 600; s2 rests below.
    assert [t["price"] for t in responses[3].json()["trades"]] == ["600.0000"]
    assert set(Order.objects.values_list("client_order_id", flat=True)) == {"s1", "b1", "s2"}
    assert not IdempotencyRecord.objects.filter(key="broke-key").exists()
    assert Client().get("/api/v1/instruments/GA-6N-CN/depth").json() == book_from_orders()
    assert_value_invariants()
    # The refused order's key is free: the member, now funded, places it under the same key.
    from trading.ledger import cash_deposit

    cash_deposit(member=broke.user.member, currency="USD", amount=Decimal("5000.00"), by=None, reason="top up")
    retried = broke.post("/api/v1/orders", body("buy", "5", "600.00", "poor"), key="broke-key")
    assert retried.status_code == 201, retried.content
    assert_value_invariants()


def test_the_same_key_twice_in_one_batch_is_in_progress_for_the_second(market) -> None:
    _, _, buyer = market
    order = body("buy", "1", "590.00", "twice")
    responses = in_one_batch([lambda: buyer.post("/api/v1/orders", order, key="same-key"),
                              lambda: buyer.post("/api/v1/orders", order, key="same-key")])
    assert [r.status_code for r in responses] == [201, 409]
    assert responses[1].json()["code"] == "idempotency_in_flight"
    replay = buyer.post("/api/v1/orders", order, key="same-key")
    assert replay.content == responses[0].content and Order.objects.count() == 1


def test_a_batch_whose_commit_fails_answers_every_order_with_the_error_and_writes_nothing(market) -> None:
    _, seller, buyer = market
    # The test client re-raises a request's exception through a process-wide signal, which threads would share.
    seller.raise_request_exception = buyer.raise_request_exception = False
    # Refuses, at commit, any transaction that inserted the order "poison".
    with refusing("trading_order", "CREATE CONSTRAINT TRIGGER test_refuse AFTER INSERT ON trading_order "
                                   "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.client_order_id = 'poison') "
                                   "EXECUTE FUNCTION test_refuse()"):
        responses = in_one_batch([
            lambda: seller.post("/api/v1/orders", body("sell", "5", "600.00", "s1")),
            lambda: buyer.post("/api/v1/orders", body("buy", "2", "600.00", "poison")),
            lambda: buyer.post("/api/v1/orders", body("buy", "1", "0.5", "off-tick")),
        ])
    # The orders that ran get the commit's error (a 500); a refusal keeps its own answer; nothing was written.
    assert [r.status_code for r in responses] == [500, 500, 400], [r.content for r in responses]
    assert responses[0].json()["code"] == "server_error" and responses[2].json()["code"] == "out_of_band"
    assert not Order.objects.exists() and not Trade.objects.exists()
    assert not IdempotencyRecord.objects.exists()
    # The book this process cached during the failed batch is not trusted: the next order sees an empty book.
    after = buyer.post("/api/v1/orders", body("buy", "2", "600.00", "after"))
    assert after.status_code == 201 and after.json()["trades"] == []
    assert Client().get("/api/v1/instruments/GA-6N-CN/depth").json() == book_from_orders()
    assert_value_invariants()


def test_an_order_whose_write_fails_in_the_database_rolls_back_alone(market) -> None:
    """Under the instrument's lock an order's writes are pipelined (config.db.pipelined: not waited for). The
    error of one of them, raised by PostgreSQL after the statement that sent it has returned, still lands in
    that order's savepoint: the order fails alone and the batch's other orders commit."""
    _, seller, buyer = market
    seller.raise_request_exception = buyer.raise_request_exception = False
    # Refuses the event of a whole receipt delivered to a buyer.
    with refusing("receipts_receiptevent", "CREATE TRIGGER test_refuse AFTER INSERT ON receipts_receiptevent "
                                           "FOR EACH ROW WHEN (NEW.kind = 'transferred') EXECUTE FUNCTION test_refuse()"):
        responses = in_one_batch([
            lambda: seller.post("/api/v1/orders", body("sell", "5", "600.00", "s1")),
            lambda: buyer.post("/api/v1/orders", body("buy", "5", "600.00", "takes-all"), key="takes-all-key"),
            lambda: buyer.post("/api/v1/orders", body("buy", "1", "590.00", "b2")),
        ])
    assert [r.status_code for r in responses] == [201, 500, 201], [r.content for r in responses]
    assert set(Order.objects.values_list("client_order_id", flat=True)) == {"s1", "b2"}
    assert not Trade.objects.exists() and not IdempotencyRecord.objects.filter(key="takes-all-key").exists()
    assert Client().get("/api/v1/instruments/GA-6N-CN/depth").json() == book_from_orders()
    assert_value_invariants()
    # Its key is free and the seller's receipts are still behind s1: the same order now fills.
    again = buyer.post("/api/v1/orders", body("buy", "5", "600.00", "takes-all"), key="takes-all-key")
    assert again.status_code == 201 and [t["quantity_kg"] for t in again.json()["trades"]] == ["5.000"]
    assert_value_invariants()


def test_when_the_first_orders_write_fails_the_orders_queued_behind_it_go_in_the_next_batch(market) -> None:
    """The batch's first order runs outside a savepoint, its writes waited for only with the COMMIT, unless
    orders are queued: then they are waited for before those join, so a failing write of the first order fails
    it alone, and the queued orders are placed by the next batch."""
    _, seller, buyer = market
    seller.raise_request_exception = buyer.raise_request_exception = False
    # Refuses the sell's encumbrance (the buy encumbers nothing).
    with refusing("receipts_receiptevent", "CREATE TRIGGER test_refuse AFTER INSERT ON receipts_receiptevent "
                                           "FOR EACH ROW WHEN (NEW.kind = 'encumbered') EXECUTE FUNCTION test_refuse()"):
        # The buy's own batch; a batch that fails is not counted.
        results = queued_together([lambda: seller.post("/api/v1/orders", body("sell", "3", "600.00", "s3")),
                                   lambda: buyer.post("/api/v1/orders", body("buy", "1", "590.00", "b1"))],
                                  batches=1)
    assert [r.status_code for r in results] == [500, 201], [r.content for r in results]
    assert set(Order.objects.values_list("client_order_id", flat=True)) == {"b1"}
    assert Client().get("/api/v1/instruments/GA-6N-CN/depth").json() == book_from_orders()
    assert_value_invariants()


def test_sixteen_threads_of_mixed_orders_answer_as_the_database_says(market) -> None:
    """Threads post crossing orders, orders a member cannot pay for and retries of one key, at once, so batches
    mix placements and refusals. Every 201 is an order in the database with its key row; every refusal left
    neither; the books balance."""
    world, seller, buyer = market
    poor = client_for(UserFactory(member=funded_member("700.00")))  # pays for one 1 kg buy at 600, not two
    sellers = [client_for(UserFactory(member=seller_with(world, "30.000")[0])) for _ in range(3)]
    answers: list[tuple[str, str, int, dict[str, Any]]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(16)

    def trader(t: int) -> None:
        try:
            barrier.wait()
            for i in range(12):
                if t % 4 == 0:
                    client, side, price = poor, "buy", "600.00"
                elif t % 2:
                    client, side, price = sellers[t % 3], "sell", f"{598 + i // 2 % 5}.00"
                else:
                    client, side, price = buyer, "buy", f"{596 + i // 2 % 7}.00"
                key = f"k-{t}-{i // 2}"  # every key twice: the second is a replay or still in flight
                client.raise_request_exception = False
                response = client.post("/api/v1/orders", body(side, "1", price, f"c-{t}-{i // 2}"), key=key)
                with lock:
                    answers.append((key, f"c-{t}-{i // 2}", response.status_code, response.json()))
        finally:
            connections.close_all()

    before = batching.STATS.orders, batching.STATS.batches
    threads = [threading.Thread(target=trader, args=(t,)) for t in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(answers) == 16 * 12
    placed = {coid for _, coid, status, _ in answers if status == 201}
    statuses = {status for _, _, status, _ in answers}
    assert statuses <= {200, 201, 409}, statuses  # 200: a replay; 409: in flight, or cash short for `poor`
    assert {a[3]["code"] for a in answers if a[2] == 409} <= {"idempotency_in_flight", "insufficient_cash"}
    assert any(a[3].get("code") == "insufficient_cash" for a in answers)
    assert set(Order.objects.values_list("client_order_id", flat=True)) == placed
    keys = set(IdempotencyRecord.objects.values_list("key", flat=True))
    assert keys == {key for key, _, status, _ in answers if status == 201}
    assert Client().get("/api/v1/instruments/GA-6N-CN/depth").json() == book_from_orders()
    assert_value_invariants()
    # Sixteen threads of one process queued behind each other: some batches held several orders.
    orders, batches = batching.STATS.orders - before[0], batching.STATS.batches - before[1]
    assert orders > batches


def test_members_buying_and_selling_at_once_never_deadlock(market) -> None:
    """Each member here buys and sells, against the others and itself (self-trade prevention), from twelve
    threads, over the API (orders alone and in batches) and through the service the portal calls. Nothing
    deadlocks (PostgreSQL would abort one side: a 500 or an error raised) and the books balance. (It caught the
    deadlocks of an attempt to encumber a sell's receipts before the instrument's lock; DEVELOPERS.md.)"""
    world, _, _ = market
    traders = []
    for _ in range(4):
        member = funded_member("50000.00")
        for _ in range(2):
            world.receipt(member, quantity="20.000")
        traders.append(client_for(UserFactory(member=member)))
    statuses: list[tuple[int, str]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(12)

    def trade(t: int) -> None:
        try:
            client = traders[t % 4]
            client.raise_request_exception = False
            barrier.wait()
            for i in range(15):
                side = "sell" if (t + i) % 2 else "buy"
                order = body(side, "1", f"{598 + (t * 7 + i) % 5}.00", f"m-{t}-{i}")
                if t % 3 == 2:  # the portal's way in: the service, outside any batch
                    order_place(member=client.user.member, instrument=Instrument.objects.get(code="GA-6N-CN"),
                                **{k: v for k, v in order.items() if k != "instrument"})
                    status, code = 201, ""
                else:
                    response = client.post("/api/v1/orders", order)
                    status, code = response.status_code, response.json().get("code", "")
                with lock:
                    statuses.append((status, code))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=trade, args=(t,)) for t in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(statuses) == 180
    assert {status for status, _ in statuses} == {201}, [s for s in statuses if s[0] != 201][:5]
    assert Trade.objects.exists()
    assert Client().get("/api/v1/instruments/GA-6N-CN/depth").json() == book_from_orders()
    assert_value_invariants()


def test_a_replay_is_answered_while_the_instrument_is_locked(market) -> None:
    """The first order of a batch claims its key before the instrument's lock: a retry of a committed order is
    answered from its key row without waiting for the lock (a client retrying a timeout does not queue behind
    the book), and a new order still waits for it."""
    _, _, buyer = market
    first = buyer.post("/api/v1/orders", body("buy", "1", "590.00", "r1"), key="r1-key")
    assert first.status_code == 201
    answered: dict[str, Any] = {}

    def post(name: str, order: dict[str, str], key: str) -> None:
        try:
            answered[name] = buyer.post("/api/v1/orders", order, key=key)
        finally:
            connections.close_all()

    with transaction.atomic():
        Instrument.objects.select_for_update().get(code="GA-6N-CN")
        replay = threading.Thread(target=post, args=("replay", body("buy", "1", "590.00", "r1"), "r1-key"))
        fresh = threading.Thread(target=post, args=("fresh", body("buy", "1", "590.00", "r2"), "r2-key"))
        replay.start()
        replay.join(10)
        assert "replay" in answered, "the replay waited for the instrument's lock"
        fresh.start()
        fresh.join(0.5)
        assert "fresh" not in answered, "a new order was placed while the instrument was locked"
    fresh.join(30)
    assert answered["replay"].content == first.content and answered["replay"]["Idempotent-Replayed"] == "true"
    assert answered["fresh"].status_code == 201
    assert Order.objects.count() == 2
