"""member_screen: fuzzy hits open sanctions flags for review, once per member and listed party."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from django.db import connections

from compliance.models import Flag, FlagKind, FlagStatus, ScreeningList
from compliance.services import flag_resolve, member_screen, screening_list_load, screening_names
from tests.compliance.conftest import DEMO_LIST
from tests.factories.members import MemberFactory

HEADER = "name,aliases,country,source\n"
DEMO_TEXT = DEMO_LIST.read_text(encoding="utf-8")


def test_parenthetical_remarks_are_screened_with_and_without() -> None:
    assert screening_names("Baltic Rare Metals Trading OÜ (demo)") == ["Baltic Rare Metals Trading OÜ"]
    assert screening_names("Acme (Hong Kong) Ltd") == ["Acme Ltd"]
    assert screening_names("Plain Name GmbH") == []


@pytest.mark.django_db
def test_no_active_list_means_no_hits() -> None:
    assert member_screen(member=MemberFactory(name="Baltik Rare Metal Trading")) == []
    assert not Flag.objects.exists()


@pytest.mark.django_db
def test_near_miss_opens_one_flag_with_the_evidence(demo_list: ScreeningList) -> None:
    baltic = MemberFactory(name="Baltic Rare Metals Trading OÜ (demo)", country="EE")
    [flag] = member_screen(member=baltic)
    assert (flag.kind, flag.status, flag.member) == (FlagKind.SANCTIONS_HIT, FlagStatus.OPEN, baltic)
    assert flag.screening_entry.name == "Baltik Rare Metal Trading"
    assert flag.reference == "DEMO: Baltik Rare Metal Trading"
    assert 88 <= flag.details["score"] < 100
    assert flag.details["query"] == "Baltic Rare Metals Trading OÜ"
    assert flag.details["list"]["content_hash"] == demo_list.content_hash
    # Screening again (every title transfer does) adds nothing.
    assert member_screen(member=baltic) == [flag]
    assert Flag.objects.count() == 1


@pytest.mark.django_db
def test_clean_members_raise_nothing(demo_list: ScreeningList) -> None:
    for name, country in [("Lumen Displays GmbH (demo)", "DE"), ("Shanghai Gallium Co (demo)", "CN")]:
        assert member_screen(member=MemberFactory(name=name, country=country)) == []
    assert not Flag.objects.exists()


@pytest.mark.django_db
def test_a_dismissed_hit_stays_dismissed_until_the_entry_changes(demo_list: ScreeningList, tmp_path: Path) -> None:
    baltic = MemberFactory(name="Baltic Rare Metals Trading OÜ (demo)", country="EE")
    [flag] = member_screen(member=baltic)
    flag_resolve(flag=flag, outcome=FlagStatus.DISMISSED, decided_by=None, reason="Different company, EE registry")
    assert member_screen(member=baltic) == [flag]
    assert Flag.objects.get().status == FlagStatus.DISMISSED

    # A reload that keeps the entry as it was (another entry added) does not re-raise the hit...
    same = tmp_path / "v2.csv"
    same.write_text(DEMO_TEXT + "Someone Else Entirely,,CY,DEMO\n", encoding="utf-8")
    screening_list_load(source=same, rescreen=False)
    assert [f.pk for f in member_screen(member=baltic)] == [flag.pk]
    # ...but a changed entry (a new alias) is new information for the officer.
    changed = tmp_path / "v3.csv"
    changed.write_text(DEMO_TEXT.replace("BRMT SIA", "BRMT SIA;Baltik RMT"), encoding="utf-8")
    screening_list_load(source=changed, rescreen=False)
    flags = member_screen(member=baltic)
    assert len(flags) == 1 and flags[0].pk != flag.pk and flags[0].status == FlagStatus.OPEN


@pytest.mark.django_db(transaction=True)
def test_concurrent_screenings_of_one_member_raise_one_flag(tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_text(HEADER + "Baltik Rare Metal Trading,BRMT SIA,LV,DEMO\n", encoding="utf-8")
    screening_list_load(source=path, rescreen=False)
    baltic = MemberFactory(name="Baltic Rare Metals Trading OÜ", country="EE")
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def screen() -> None:
        try:
            barrier.wait()
            member_screen(member=baltic)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=screen) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert Flag.objects.filter(member=baltic, status=FlagStatus.OPEN).count() == 1
