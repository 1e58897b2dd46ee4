"""Idempotency-Key on creating POSTs: replay byte for byte, 422 on a changed body, 400 without, one effect."""

import threading

import pytest
from django.db import connections

from members.models import IdempotencyRecord, SigningKey
from tests.conftest import client_for
from tests.factories.members import new_public_key

URL = "/api/v1/members/me/keys"



@pytest.mark.django_db
def test_replay_returns_first_response_byte_for_byte(trader) -> None:
    raw = new_public_key()
    body = {"public_key": raw}
    first = trader.post(URL, body, key="k-1")
    second = trader.post(URL, body, key="k-1")
    assert first.status_code == second.status_code == 201
    assert first.content == second.content
    assert second["Idempotent-Replayed"] == "true"
    assert SigningKey.objects.count() == 1


@pytest.mark.django_db
def test_same_key_other_body_is_422(trader) -> None:
    assert trader.post(URL, {"public_key": new_public_key()}, key="k-2").status_code == 201
    response = trader.post(URL, {"public_key": new_public_key()}, key="k-2")
    assert response.status_code == 422
    assert response.json()["code"] == "idempotency_key_reused"
    assert SigningKey.objects.count() == 1


@pytest.mark.django_db
def test_missing_key_is_400(trader) -> None:
    response = trader.post(URL, {"public_key": "x"}, key=None)
    assert response.status_code == 400
    assert response.json()["code"] == "idempotency_key_missing"


@pytest.mark.django_db
def test_failed_request_does_not_consume_the_key(trader) -> None:
    assert trader.post(URL, {"public_key": "bad"}, key="k-3").status_code == 400
    assert not IdempotencyRecord.objects.exists()
    raw = new_public_key()
    # A corrected request with the same key is a new attempt, not a "different body" conflict.
    assert trader.post(URL, {"public_key": raw}, key="k-3").status_code == 201


@pytest.mark.django_db
def test_keys_are_scoped_per_member(member_client) -> None:
    a, b = member_client(), member_client()
    for client in (a, b):
        raw = new_public_key()
        assert client.post(URL, {"public_key": raw}, key="shared").status_code == 201
    assert SigningKey.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_sixteen_concurrent_identical_requests_make_one_effect(trader) -> None:
    raw = new_public_key()
    body = {"public_key": raw}
    barrier = threading.Barrier(16)
    results: list[tuple[int, bytes]] = []
    lock = threading.Lock()

    def fire() -> None:
        client = client_for(trader.user)
        barrier.wait()
        try:
            response = client.post(URL, body, key="burst")
            with lock:
                results.append((response.status_code, response.content))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=fire) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert SigningKey.objects.count() == 1
    assert IdempotencyRecord.objects.count() == 1
    statuses = sorted(s for s, _ in results)
    assert len(results) == 16
    assert set(statuses) <= {201, 409}
    assert 201 in statuses
    created = {content for status, content in results if status == 201}
    assert len(created) == 1  # every success is the same response, byte for byte
