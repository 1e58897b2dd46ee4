"""Sixteen concurrent drawdowns against one licence on PostgreSQL never exceed its cap."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest
from django.db import connections
from django.db.models import Sum

from compliance.errors import ComplianceRefused
from compliance.models import ExportLicence, LicenceDrawdown
from compliance.services import licence_draw
from tests.factories.compliance import licence
from tests.factories.members import MemberFactory


@pytest.mark.django_db(transaction=True)
def test_sixteen_threads_drawing_one_licence_never_exceed_the_cap() -> None:
    made = licence(MemberFactory(), cap="100.000")
    barrier = threading.Barrier(16)
    outcomes: list[str] = []
    lock = threading.Lock()

    def draw(n: int) -> None:
        try:
            mine = ExportLicence.objects.get(pk=made.pk)  # each thread reads its own (stale) copy
            barrier.wait()
            licence_draw(licence=mine, quantity_kg="7.500", reference=f"thread {n}")
            outcome = "drawn"
        except ComplianceRefused as exc:
            outcome = exc.code
        except BaseException as exc:  # noqa: BLE001 - any other outcome fails the test below
            outcome = repr(exc)
        finally:
            connections.close_all()
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=draw, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    # 13 x 7.5 = 97.5 fits under 100; the 14th would make 105.
    assert sorted(outcomes) == ["drawn"] * 13 + ["licence_exhausted"] * 3
    made.refresh_from_db()
    assert made.drawn_kg == Decimal("97.500") <= made.quantity_cap_kg
    ledger = LicenceDrawdown.objects.filter(licence=made)
    assert ledger.count() == 13
    assert ledger.aggregate(total=Sum("quantity_kg"))["total"] == made.drawn_kg
    assert sorted(ledger.values_list("drawn_total_kg", flat=True)) == [Decimal("7.500") * k for k in range(1, 14)]
