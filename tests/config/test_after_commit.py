"""config.after_commit: publishes sent after commit, merged per key inside `merged()`, dropped with a failed part."""

from __future__ import annotations

import pytest
from django.db import transaction

from config.after_commit import merged, on_commit_merged, part

pytestmark = pytest.mark.django_db(transaction=True)


def test_outside_merged_each_call_sends_its_distinct_items_after_commit() -> None:
    sent: list[list[int]] = []
    with transaction.atomic():
        on_commit_merged("k", [3, 1, 3], sent.append)
        on_commit_merged("k", [2], sent.append)
        on_commit_merged("k", [], sent.append)  # nothing to send
        assert sent == []
    assert sent == [[1, 3], [2]]


def test_inside_merged_one_send_per_key_after_the_block_and_a_failed_part_is_dropped() -> None:
    sent: list[tuple[str, list[int]]] = []
    with merged(), transaction.atomic():
        on_commit_merged("a", [5, 1], lambda items: sent.append(("a", items)))
        with pytest.raises(RuntimeError), part():
            on_commit_merged("a", [99], lambda items: sent.append(("a", items)))
            raise RuntimeError("this order was refused")
        with part():
            on_commit_merged("a", [1, 2], lambda items: sent.append(("a", items)))
            on_commit_merged("b", [7], lambda items: sent.append(("b", items)))
        assert sent == []
    assert sent == [("a", [1, 2, 5]), ("b", [7])]


def test_a_merged_block_that_fails_sends_nothing_and_a_failing_send_does_not_stop_the_others(caplog) -> None:
    sent: list[list[int]] = []
    with pytest.raises(RuntimeError), merged():
        on_commit_merged("a", [1], sent.append)
        raise RuntimeError("the commit failed")
    assert sent == []

    def broken(items: list[int]) -> None:
        raise ConnectionError("broker down")

    with merged():
        on_commit_merged("broken", [1], broken)
        on_commit_merged("fine", [2], sent.append)
    assert sent == [[2]]
    assert "after-commit publish 'broken' failed" in caplog.text
