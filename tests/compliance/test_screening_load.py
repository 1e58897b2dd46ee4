"""Screening lists: `screening_load FILE` loads all or nothing, refuses missing columns by name, is
idempotent, replaces the active list, and the rescreen of members is enqueued on commit."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from compliance.models import Flag, ScreeningEntry, ScreeningList
from compliance.services import screening_list_load
from compliance.tasks import members_screen_all
from config.errors import ValidationFailed
from tests.compliance.conftest import DEMO_LIST
from tests.factories.members import MemberFactory

HEADER = "name,aliases,country,source\n"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.django_db
def test_command_loads_the_demo_list_and_reloading_it_changes_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    call_command("screening_load", str(DEMO_LIST), "--no-rescreen")
    first = ScreeningList.objects.get(active=True)
    assert first.source_name == "screening_demo.csv"
    assert first.entry_count == ScreeningEntry.objects.filter(screening_list=first).count() >= 25
    assert "Active screening list: screening_demo.csv" in capsys.readouterr().out

    call_command("screening_load", str(DEMO_LIST), "--no-rescreen")
    assert list(ScreeningList.objects.all()) == [first]
    assert ScreeningEntry.objects.count() == first.entry_count


@pytest.mark.django_db
def test_missing_columns_are_refused_by_name_and_nothing_is_stored(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.csv", "name,source\nAcme Ltd,DEMO\n")
    with pytest.raises(CommandError, match=r"missing required column\(s\): aliases, country"):
        call_command("screening_load", str(path), "--no-rescreen")
    assert not ScreeningList.objects.exists()
    assert not ScreeningEntry.objects.exists()


@pytest.mark.django_db
def test_a_bad_row_loads_nothing_and_the_active_list_stays(tmp_path: Path, demo_list: ScreeningList) -> None:
    rows = "".join(f"Party {i} Ltd,,CY,DEMO\n" for i in range(50))
    path = write(tmp_path, "half.csv", HEADER + rows + "Broken Party,,CYP,DEMO\n" + rows)
    with pytest.raises(CommandError, match=r"half.csv: line 52 \(row 51\): country 'CYP'"):
        call_command("screening_load", str(path), "--no-rescreen")
    assert list(ScreeningList.objects.all()) == [demo_list]
    assert ScreeningList.objects.get(active=True) == demo_list
    assert ScreeningEntry.objects.count() == demo_list.entry_count


@pytest.mark.django_db
def test_service_error_has_a_stable_code_and_the_line(tmp_path: Path) -> None:
    with pytest.raises(ValidationFailed) as caught:
        screening_list_load(source=write(tmp_path, "e.csv", HEADER), rescreen=False)
    assert caught.value.code == "screening_list_invalid"
    assert "no entries" in caught.value.message
    with pytest.raises(ValidationFailed) as caught:
        screening_list_load(source=tmp_path / "missing.csv", rescreen=False)
    assert caught.value.code == "screening_list_invalid"


@pytest.mark.django_db
def test_a_new_list_replaces_the_active_one(tmp_path: Path, demo_list: ScreeningList) -> None:
    newer = screening_list_load(source=write(tmp_path, "v2.csv", HEADER + "Acme Dual Use Ltd,Acme DU,CY,DEMO\n"),
                                rescreen=False)
    demo_list.refresh_from_db()
    assert newer.active and not demo_list.active
    assert ScreeningList.objects.filter(active=True).count() == 1
    assert list(newer.entries.values_list("name", "aliases", "country", "row")) == [
        ("Acme Dual Use Ltd", ["Acme DU"], "CY", 1)]


@pytest.mark.django_db
def test_the_rescreen_task_is_enqueued_only_when_the_load_commits(
        django_capture_on_commit_callbacks: object) -> None:
    with mock.patch.object(members_screen_all, "delay") as delay:
        with django_capture_on_commit_callbacks(execute=True):  # type: ignore[operator]
            loaded = screening_list_load(source=DEMO_LIST)
        delay.assert_called_once_with(loaded.pk)
        delay.reset_mock()
        with django_capture_on_commit_callbacks(execute=True):  # type: ignore[operator]
            screening_list_load(source=DEMO_LIST)  # unchanged file: nothing new to screen against
        delay.assert_not_called()


@pytest.mark.django_db
def test_the_rescreen_task_flags_near_misses_and_ignores_a_stale_list(demo_list: ScreeningList,
                                                                       tmp_path: Path) -> None:
    baltic = MemberFactory(name="Baltic Rare Metals Trading OÜ (demo)", country="EE")
    MemberFactory(name="Lumen Displays GmbH (demo)", country="DE")
    assert members_screen_all(demo_list.pk) == 1
    assert members_screen_all(demo_list.pk) == 1  # a second delivery adds nothing
    assert list(Flag.objects.values_list("member", flat=True)) == [baltic.pk]
    newer = screening_list_load(source=write(tmp_path, "v2.csv", HEADER + "Nobody Matching,,CY,DEMO\n"),
                                rescreen=False)
    assert members_screen_all(demo_list.pk) == 0  # stale id: the newer load runs its own
    assert members_screen_all(newer.pk) == 0
    assert Flag.objects.count() == 1
