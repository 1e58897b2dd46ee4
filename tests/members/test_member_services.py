"""KYC decisions move only along the transition map and always record who, when and why."""

import pytest

from config.errors import IllegalTransition, ValidationFailed
from members.models import KycDecision, KycStatus
from members.services import member_create, member_set_kyc_status
from tests.factories.members import MemberFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_new_member_starts_pending_with_roles() -> None:
    member = member_create(name="Yunnan Germanium", legal_id="CN-1", country="CN", roles=["producer", "trader"])
    assert member.kyc_status == KycStatus.PENDING
    assert member.role_set() == {"producer", "trader"}


def test_unknown_role_refused_and_nothing_stored() -> None:
    with pytest.raises(ValidationFailed) as err:
        member_create(name="X", legal_id="X-1", country="CN", roles=["trader", "wizard"])
    assert err.value.code == "unknown_role"
    from members.models import Member

    assert not Member.objects.filter(legal_id="X-1").exists()


def test_approval_records_who_and_why() -> None:
    member = MemberFactory(kyc_status=KycStatus.PENDING)
    officer = UserFactory(member=None, is_staff=True)
    member_set_kyc_status(member=member, status=KycStatus.APPROVED, decided_by=officer, reason="documents checked")
    member.refresh_from_db()
    assert member.kyc_status == KycStatus.APPROVED
    decision = KycDecision.objects.get(member=member)
    assert (decision.from_status, decision.to_status, decision.decided_by, decision.reason) == (
        KycStatus.PENDING, KycStatus.APPROVED, officer, "documents checked")


def test_illegal_transition_raises_and_records_nothing() -> None:
    member = MemberFactory(kyc_status=KycStatus.APPROVED)
    with pytest.raises(IllegalTransition):
        member_set_kyc_status(member=member, status=KycStatus.PENDING, decided_by=None, reason="oops")
    assert not KycDecision.objects.filter(member=member).exists()


def test_decision_without_reason_is_refused() -> None:
    member = MemberFactory(kyc_status=KycStatus.PENDING)
    with pytest.raises(ValidationFailed) as err:
        member_set_kyc_status(member=member, status=KycStatus.APPROVED, decided_by=None, reason="  ")
    assert err.value.code == "reason_required"
    member.refresh_from_db()
    assert member.kyc_status == KycStatus.PENDING
