"""Policy checks asked before acting: each refusal code, and what the allowed paths do."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from unittest import mock

import pytest
from django.db import transaction
from django.utils import timezone

from compliance import policy
from compliance.errors import ComplianceRefused
from compliance.models import (
    DeclarationStatus,
    ExportLicence,
    Flag,
    FlagKind,
    FlagStatus,
    LicenceDrawdown,
    LicenceStatus,
    ScreeningList,
)
from compliance.policy import (
    Decision,
    can_buy,
    can_issue,
    can_receive_title,
    can_trade,
    require,
    withdrawal_check_and_draw,
)
from compliance.services import end_use_declaration_decide, export_licence_decide, flag_resolve
from config.errors import ValidationFailed
from members.models import KycStatus
from tests.factories.compliance import declaration, licence, metal, receipt
from tests.factories.members import MemberFactory


def test_require_passes_allowed_decisions_and_raises_refusals_as_403() -> None:
    ok = Decision(True, "ok", "fine")
    assert require(ok) is ok and bool(ok)
    with pytest.raises(ComplianceRefused) as caught:
        require(Decision(False, "export_licence_required", "no licence"))
    assert (caught.value.code, caught.value.status, caught.value.message) == (
        "export_licence_required", 403, "no licence")


@pytest.mark.django_db
def test_can_trade_needs_kyc_approval() -> None:
    approved = MemberFactory(name="Nordic Indium AB")
    assert can_trade(approved) == Decision(True, "ok", "Nordic Indium AB is KYC-approved.")
    assert can_trade(MemberFactory(kyc_status=KycStatus.PENDING)).code == "kyc_pending"
    assert can_trade(MemberFactory(kyc_status=KycStatus.SUSPENDED)).code == "member_suspended"


@pytest.mark.django_db
def test_can_issue_needs_an_approved_warehouse() -> None:
    assert can_issue(MemberFactory(roles=["warehouse"])).allowed
    assert can_issue(MemberFactory(roles=["trader"])).code == "role_required"
    assert can_issue(MemberFactory(roles=["warehouse"], kyc_status=KycStatus.PENDING)).code == "kyc_pending"


# --- title transfer: screened again every time ------------------------------------------------


@pytest.mark.django_db
def test_can_receive_title_screens_again_and_refuses_a_hit(demo_list: ScreeningList) -> None:
    clean = MemberFactory(name="Lumen Displays GmbH (demo)", country="DE")
    assert can_receive_title(clean).allowed
    baltic = MemberFactory(name="Baltic Rare Metals Trading OÜ (demo)", country="EE")
    assert not Flag.objects.exists()  # never screened before this transfer
    refused = can_receive_title(baltic)
    assert (refused.allowed, refused.code) == (False, "sanctions_hit")
    assert "Baltik Rare Metal Trading" in refused.reason
    flag = Flag.objects.get(member=baltic)
    assert flag.status == FlagStatus.OPEN

    flag_resolve(flag=flag, outcome=FlagStatus.DISMISSED, decided_by=None, reason="Different company")
    assert can_receive_title(baltic).allowed  # the officer's dismissal stands on the next screening
    assert Flag.objects.filter(member=baltic).count() == 1


@pytest.mark.django_db
def test_a_confirmed_hit_blocks_even_after_reinstatement(demo_list: ScreeningList) -> None:
    from members.services import member_set_kyc_status

    baltic = MemberFactory(name="Baltic Rare Metals Trading OÜ (demo)", country="EE")
    assert can_receive_title(baltic).code == "sanctions_hit"
    flag_resolve(flag=Flag.objects.get(), outcome=FlagStatus.CONFIRMED, decided_by=None, reason="Same party")
    baltic.refresh_from_db()
    assert can_receive_title(baltic).code == "member_suspended"
    member_set_kyc_status(member=baltic, status=KycStatus.APPROVED, decided_by=None, reason="appeal")
    refused = can_receive_title(baltic)
    assert refused.code == "sanctions_hit" and "a confirmed" in refused.reason


@pytest.mark.django_db
def test_a_hit_found_inside_a_transaction_that_rolls_back_is_rescreened_outside_it(
        demo_list: ScreeningList) -> None:
    baltic = MemberFactory(name="Baltic Rare Metals Trading OÜ (demo)", country="EE")
    with mock.patch("compliance.tasks.member_screen_task.delay") as delay:
        with pytest.raises(ComplianceRefused), transaction.atomic():
            require(can_receive_title(baltic))
        delay.assert_called_once_with(baltic.pk)
        assert not Flag.objects.exists()  # rolled back with the refused transfer...
        from compliance.tasks import member_screen_task

        member_screen_task(baltic.pk)  # ...and raised again by the task the refusal published
        assert Flag.objects.filter(member=baltic, status=FlagStatus.OPEN).count() == 1
        delay.reset_mock()
        with pytest.raises(ComplianceRefused), transaction.atomic():
            require(can_receive_title(baltic))
        delay.assert_not_called()  # nothing new to lose


@pytest.mark.django_db
def test_can_receive_title_needs_kyc() -> None:
    assert can_receive_title(MemberFactory(kyc_status=KycStatus.PENDING)).code == "kyc_pending"


# --- buying controlled metal across a border -----------------------------------------------------


@pytest.mark.django_db
def test_can_buy_controlled_metal_across_a_border_needs_a_valid_declaration() -> None:
    buyer = MemberFactory(country="DE")
    metal("Ga")
    refused = can_buy(buyer, "Ga", "CN")
    assert (refused.allowed, refused.code) == (False, "end_use_declaration_required")
    assert "export-controlled" in refused.reason
    assert can_buy(MemberFactory(country="CN"), "Ga", "CN").allowed  # no border crossed
    assert can_buy(buyer, metal("Re"), "CN").allowed  # not controlled

    pending = declaration(buyer, approve=False)
    assert can_buy(buyer, "Ga", "CN").code == "end_use_declaration_required"
    end_use_declaration_decide(declaration=pending, status=DeclarationStatus.APPROVED, decided_by=None,
                               reason="ok")
    allowed = can_buy(buyer, "Ga", "CN")
    assert allowed.allowed and f"EUD-{pending.pk}" in allowed.reason
    assert can_buy(buyer, "In", "CN").code == "end_use_declaration_required"  # per metal


@pytest.mark.django_db
def test_can_buy_ignores_rejected_expired_and_other_members_declarations() -> None:
    buyer = MemberFactory(country="DE")
    rejected = declaration(buyer, approve=False)
    end_use_declaration_decide(declaration=rejected, status=DeclarationStatus.REJECTED, decided_by=None, reason="no")
    declaration(MemberFactory(country="DE"))
    expired = declaration(buyer)
    today = timezone.localdate()
    type(expired).objects.filter(pk=expired.pk).update(valid_from=today - timedelta(days=90),
                                                       valid_to=today - timedelta(days=1))
    assert can_buy(buyer, "Ga", "CN").code == "end_use_declaration_required"
    assert can_buy(MemberFactory(country="DE", kyc_status=KycStatus.PENDING), "Ga", "CN").code == "kyc_pending"
    with pytest.raises(ValidationFailed) as bad:
        can_buy(buyer, "Ga", "China")
    assert bad.value.code == "invalid_country"


# --- withdrawing controlled metal across a border ---------------------------------------------------


@pytest.mark.django_db
def test_withdrawal_abroad_needs_a_licence_and_draws_it_down() -> None:
    exporter = MemberFactory(country="DE")
    goods = receipt(symbol="Ga", warehouse_country="CN", holder=exporter, quantity_kg="40.000")
    refused = withdrawal_check_and_draw(exporter, goods, "DE", "40.000")
    assert (refused.allowed, refused.code) == (False, "export_licence_required")

    # Wrong destination, other metal, other member, pending and revoked licences do not count.
    licence(exporter, destination="FR")
    licence(exporter, symbol="In")
    licence(MemberFactory(country="DE"))
    licence(exporter, approve=False)
    revoked = licence(exporter)
    export_licence_decide(licence=revoked, status=LicenceStatus.REVOKED, decided_by=None, reason="revoked")
    assert withdrawal_check_and_draw(exporter, goods, "DE", "40.000").code == "export_licence_required"

    usable = licence(exporter, cap="100.000")
    with transaction.atomic():  # the caller's transaction: trading's withdrawal
        allowed = withdrawal_check_and_draw(exporter, goods, "de", "40.000")
    assert allowed.allowed and usable.licence_number in allowed.reason
    usable.refresh_from_db()
    assert usable.drawn_kg == Decimal("40.000")
    assert LicenceDrawdown.objects.get().receipt == goods
    assert set(ExportLicence.objects.exclude(pk=usable.pk).values_list("drawn_kg", flat=True)) == {Decimal("0")}


@pytest.mark.django_db
def test_withdrawal_without_enough_left_is_licence_exhausted_and_draws_nothing() -> None:
    exporter = MemberFactory(country="DE")
    goods = receipt(symbol="Ga", warehouse_country="CN", holder=exporter)
    licence(exporter, cap="30.000")
    licence(exporter, cap="25.000")
    refused = withdrawal_check_and_draw(exporter, goods, "DE", "40.000")
    assert (refused.allowed, refused.code) == (False, "licence_exhausted")
    assert "30.000 kg" in refused.reason and "25.000 kg" in refused.reason
    assert not LicenceDrawdown.objects.exists()


@pytest.mark.django_db
def test_the_licence_expiring_first_is_used_first() -> None:
    exporter = MemberFactory(country="DE")
    goods = receipt(symbol="Ga", warehouse_country="CN", holder=exporter)
    today = timezone.localdate()
    later = licence(exporter, valid_to=today + timedelta(days=300))
    sooner = licence(exporter, valid_to=today + timedelta(days=20))
    tiny = licence(exporter, cap="1.000", valid_to=today + timedelta(days=5))  # too small for 10 kg
    assert withdrawal_check_and_draw(exporter, goods, "DE", "10").allowed
    assert [lic.drawn_kg for lic in ExportLicence.objects.filter(pk__in=[later.pk, sooner.pk, tiny.pk])
            .order_by("pk")] == [Decimal("0"), Decimal("10.000"), Decimal("0")]


@pytest.mark.django_db
def test_withdrawals_that_need_no_licence_draw_nothing() -> None:
    member = MemberFactory(country="CN")
    assert withdrawal_check_and_draw(member, receipt(symbol="Ga", warehouse_country="CN"), "CN", "5").allowed
    assert withdrawal_check_and_draw(member, receipt(symbol="Re", warehouse_country="CN"), "DE", "5").allowed
    assert not LicenceDrawdown.objects.exists()
    pending = MemberFactory(kyc_status=KycStatus.PENDING)
    assert withdrawal_check_and_draw(pending, receipt(), "DE", "5").code == "kyc_pending"
    with pytest.raises(ValidationFailed) as bad:
        withdrawal_check_and_draw(member, receipt(), "DE", "-1")
    assert bad.value.code == "invalid_quantity"


def test_policy_never_imports_trading() -> None:
    import ast
    from pathlib import Path

    package = Path(policy.__file__).parent
    for source in package.rglob("*.py"):
        tree = ast.parse(source.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n == "trading" or n.startswith("trading.") for n in names), source


@pytest.mark.django_db
def test_flag_kinds_exist_for_every_reviewable_subject() -> None:
    assert set(FlagKind.values) >= {"sanctions_hit", "esg_failure", "storage_incident", "stock_gap",
                                    "licence_request", "other"}
