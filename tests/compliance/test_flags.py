"""Flags: status moves only along the transition map, with officer, reason and time recorded; a
confirmed sanctions hit suspends the member in the same transaction."""

from __future__ import annotations

import pytest
from django.db import DatabaseError, transaction

from compliance.models import Flag, FlagKind, FlagStatus, FlagTransition, ScreeningList
from compliance.services import flag_member_suspend, flag_open, flag_resolve, flag_set_status, member_screen
from config.errors import Conflict, IllegalTransition, ValidationFailed
from members.models import KycDecision, KycStatus
from tests.factories.compliance import officer
from tests.factories.members import MemberFactory


@pytest.fixture
def hit(demo_list: ScreeningList) -> Flag:
    baltic = MemberFactory(name="Baltic Rare Metals Trading OÜ (demo)", country="EE")
    [flag] = member_screen(member=baltic)
    return flag


@pytest.mark.django_db
def test_confirming_a_sanctions_hit_suspends_the_member_and_records_who_and_why(hit: Flag) -> None:
    who = officer()
    flag_resolve(flag=hit, outcome=FlagStatus.CONFIRMED, decided_by=who, reason="Same party, LV registry match")
    hit.refresh_from_db()
    assert (hit.status, hit.resolved_by, hit.resolution_reason) == (FlagStatus.CONFIRMED, who,
                                                                    "Same party, LV registry match")
    assert hit.resolved_at is not None
    [step] = FlagTransition.objects.filter(flag=hit)
    assert (step.from_status, step.to_status, step.decided_by) == (FlagStatus.OPEN, FlagStatus.CONFIRMED, who)
    hit.member.refresh_from_db()
    assert hit.member.kyc_status == KycStatus.SUSPENDED
    decision = KycDecision.objects.get(member=hit.member, to_status=KycStatus.SUSPENDED)
    assert f"flag #{hit.pk}" in decision.reason and decision.decided_by == who


@pytest.mark.django_db
def test_a_pending_member_is_suspended_too_and_an_already_suspended_one_is_left_alone(hit: Flag) -> None:
    hit.member.kyc_status = KycStatus.PENDING
    hit.member.save(update_fields=["kyc_status"])
    flag_resolve(flag=hit, outcome=FlagStatus.CONFIRMED, decided_by=None, reason="Confirmed")
    hit.member.refresh_from_db()
    assert hit.member.kyc_status == KycStatus.SUSPENDED
    other = flag_open(kind=FlagKind.SANCTIONS_HIT, member=hit.member, subject_key="other-entry", reference="x")
    flag_resolve(flag=other, outcome=FlagStatus.CONFIRMED, decided_by=None, reason="Confirmed as well")
    assert KycDecision.objects.filter(member=hit.member, to_status=KycStatus.SUSPENDED).count() == 1


@pytest.mark.django_db
def test_dismissing_leaves_the_member_approved(hit: Flag) -> None:
    flag_resolve(flag=hit, outcome=FlagStatus.DISMISSED, decided_by=None, reason="Different company")
    hit.member.refresh_from_db()
    assert hit.member.kyc_status == KycStatus.APPROVED
    assert Flag.objects.get().status == FlagStatus.DISMISSED


@pytest.mark.django_db
def test_illegal_moves_and_missing_reasons_change_nothing(hit: Flag) -> None:
    with pytest.raises(ValidationFailed) as caught:
        flag_resolve(flag=hit, outcome=FlagStatus.CONFIRMED, decided_by=None, reason="  ")
    assert caught.value.code == "reason_required"
    with pytest.raises(ValidationFailed) as caught:
        flag_resolve(flag=hit, outcome=FlagStatus.OPEN, decided_by=None, reason="why not")
    assert caught.value.code == "invalid_outcome"
    with pytest.raises(IllegalTransition) as moved:
        flag_set_status(flag=hit, status=FlagStatus.OPEN, decided_by=None, reason="already open")
    assert moved.value.code == "illegal_transition" and moved.value.status == 409
    flag_resolve(flag=hit, outcome=FlagStatus.DISMISSED, decided_by=None, reason="Different company")
    with pytest.raises(IllegalTransition):
        flag_set_status(flag=hit, status=FlagStatus.CONFIRMED, decided_by=None, reason="changed my mind")
    assert FlagTransition.objects.count() == 1
    hit.member.refresh_from_db()
    assert hit.member.kyc_status == KycStatus.APPROVED


@pytest.mark.django_db
def test_reopen_and_the_one_open_flag_per_subject_rule(hit: Flag) -> None:
    flag_resolve(flag=hit, outcome=FlagStatus.DISMISSED, decided_by=None, reason="Different company")
    again = flag_open(kind=FlagKind.SANCTIONS_HIT, member=hit.member, subject_key=hit.subject_key, reference="r")
    assert again.pk != hit.pk
    assert flag_open(kind=FlagKind.SANCTIONS_HIT, member=hit.member, subject_key=hit.subject_key,
                     reference="r") == again
    with pytest.raises(Conflict) as caught:
        flag_set_status(flag=hit, status=FlagStatus.OPEN, decided_by=None, reason="new evidence")
    assert caught.value.code == "flag_already_open"
    flag_resolve(flag=again, outcome=FlagStatus.DISMISSED, decided_by=None, reason="duplicate")
    flag_set_status(flag=hit, status=FlagStatus.OPEN, decided_by=None, reason="new evidence")
    hit.refresh_from_db()
    assert (hit.status, hit.resolved_by, hit.resolution_reason) == (FlagStatus.OPEN, None, "")


@pytest.mark.django_db
def test_suspending_the_member_of_a_flag(hit: Flag) -> None:
    who = officer()
    flag_member_suspend(flag=hit, decided_by=who, reason="Pending investigation")
    hit.member.refresh_from_db()
    assert hit.member.kyc_status == KycStatus.SUSPENDED
    assert Flag.objects.get().status == FlagStatus.OPEN  # the flag still waits for its own decision
    with pytest.raises(Conflict) as caught:
        flag_member_suspend(flag=hit, decided_by=who, reason="again")
    assert caught.value.code == "member_already_suspended"
    loose = flag_open(kind=FlagKind.OTHER, reference="Unattributed stock note")
    with pytest.raises(ValidationFailed) as missing:
        flag_member_suspend(flag=loose, decided_by=who, reason="whom?")
    assert missing.value.code == "flag_has_no_member"


@pytest.mark.django_db
def test_flag_open_validates_kind_and_subject() -> None:
    with pytest.raises(ValidationFailed) as kind:
        flag_open(kind="gossip", reference="x")
    assert kind.value.code == "unknown_flag_kind"
    with pytest.raises(ValidationFailed) as subject:
        flag_open(kind=FlagKind.OTHER)
    assert subject.value.code == "flag_subject_required"
    assert not Flag.objects.exists()


@pytest.mark.django_db
def test_transition_rows_are_append_only_in_the_database(hit: Flag) -> None:
    flag_resolve(flag=hit, outcome=FlagStatus.DISMISSED, decided_by=None, reason="Different company")
    with pytest.raises(DatabaseError, match="append_only"), transaction.atomic():
        FlagTransition.objects.update(reason="rewritten")
    with pytest.raises(DatabaseError, match="append_only"), transaction.atomic():
        FlagTransition.objects.all().delete()
    assert FlagTransition.objects.get().reason == "Different company"
