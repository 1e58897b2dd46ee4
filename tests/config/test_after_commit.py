"""config.after_commit: publishes sent after commit, merged per key inside `merged()`, dropped with a failed part."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest
from django.db import connection, transaction

from config import after_commit
from config.after_commit import flush_spool, merged, on_commit_merged, part
from tests.conftest import ROOT, wait_for

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


# --- the spool (AFTER_COMMIT_SPOOL_MS > 0, the default outside tests) ---------------------------------------


@pytest.fixture
def spooled(settings):
    settings.AFTER_COMMIT_SPOOL_MS = 50
    flush_spool()  # nothing of an earlier test left behind
    yield
    flush_spool()


def test_spooled_publishes_of_several_transactions_go_once_per_key_from_the_spool_thread(spooled) -> None:
    sent: list[tuple[str, list[int], str]] = []

    def send(key: str):
        return lambda items: sent.append((key, items, threading.current_thread().name))

    for items in ([3, 1], [2, 3], [9]):
        with transaction.atomic():
            on_commit_merged("a", items, send("a"))
    with merged(), transaction.atomic():
        on_commit_merged("a", [4], send("a"))
        on_commit_merged("b", [7], send("b"))
    assert sent == []  # committed, not yet sent

    wait_for(lambda: len(sent) == 2, timeout=5, interval=0.01)
    assert sorted(sent) == [("a", [1, 2, 3, 4, 9], "after-commit-spool"), ("b", [7], "after-commit-spool")]
    time.sleep(0.2)  # a few more intervals: nothing is sent twice
    assert len(sent) == 2


def test_a_rolled_back_transaction_spools_nothing_and_a_failing_send_does_not_stop_the_others(spooled,
                                                                                             caplog) -> None:
    sent: list[list[int]] = []
    with pytest.raises(RuntimeError), transaction.atomic():
        on_commit_merged("a", [1], sent.append)
        raise RuntimeError("refused")

    def broken(items: list[int]) -> None:
        raise ConnectionError("broker down")

    with transaction.atomic():
        on_commit_merged("broken", [1], broken)
        on_commit_merged("fine", [2], sent.append)
    wait_for(lambda: sent, timeout=5, interval=0.01)
    assert sent == [[2]]
    wait_for(lambda: "after-commit publish 'broken' failed" in caplog.text, timeout=5, interval=0.01)


def test_a_forked_child_starts_with_an_empty_spool(spooled) -> None:
    sent: list[list[int]] = []
    after_commit._spool.add("a", [1], sent.append, 60)
    pid = os.fork()
    if pid == 0:  # the child: what the parent spooled is the parent's to send
        os._exit(0 if not after_commit._spool.gathered.items and after_commit._spool.thread is None else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    flush_spool()
    assert sent == [[1]]  # by the parent (its thread or this flush), once


def test_a_process_that_exits_sends_what_it_spooled(tmp_path) -> None:
    """A long interval, then the process ends: the spool is sent at exit (a gunicorn worker restarting)."""
    out = tmp_path / "sent.txt"
    code = ("import django; django.setup()\n"
            "from django.db import transaction\n"
            "from config.after_commit import on_commit_merged\n"
            "with transaction.atomic():\n"
            f"    on_commit_merged('k', [2, 1], lambda items: open({str(out)!r}, 'w').write(repr(items)))\n")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test", "AFTER_COMMIT_SPOOL_MS": "600000",
           "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{connection.settings_dict['NAME']}"}
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, timeout=60)
    assert out.read_text() == "[1, 2]"
