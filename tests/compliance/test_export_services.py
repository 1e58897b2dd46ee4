"""End-use declarations, export licences and licence drawdowns: submission, bad input refused with
stable codes and nothing stored, officer decisions along the transition maps, and the ledger."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import DatabaseError, IntegrityError, transaction
from django.utils import timezone

from compliance.errors import ComplianceRefused
from compliance.models import (
    DeclarationStatus,
    EndUseDeclaration,
    ExportLicence,
    Flag,
    FlagKind,
    FlagStatus,
    LicenceDrawdown,
    LicenceStatus,
)
from compliance.services import (
    end_use_declaration_decide,
    end_use_declaration_submit,
    export_licence_decide,
    export_licence_submit,
    licence_draw,
)
from config.errors import ApplicationError, Conflict, IllegalTransition
from members.models import KycStatus
from tests.factories.compliance import licence, metal, officer, receipt, validity
from tests.factories.members import MemberFactory

TODAY = timezone.localdate


def licence_fields(**overrides: Any) -> dict[str, Any]:
    return {"licence_number": "MOFCOM-2026-001", "metal": "Ga", "quantity_cap_kg": "500.000",
            "consignee": "Lumen Displays GmbH", "end_user": "Lumen Displays GmbH", "end_use": "IGZO backplanes",
            "destination_country": "DE", **validity(), **overrides}


def declaration_fields(**overrides: Any) -> dict[str, Any]:
    return {"metal": "Ga", "end_user": "Lumen Displays GmbH", "end_use": "IGZO backplanes",
            "destination_country": "DE", **validity(), **overrides}


@pytest.fixture(autouse=True)
def catalogue(db: None) -> None:
    for symbol in ("Ga", "In", "Re"):
        metal(symbol)


# --- declarations ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_declaration_waits_in_the_queue_until_an_officer_decides() -> None:
    buyer, who = MemberFactory(country="DE"), officer()
    made = end_use_declaration_submit(member=buyer, **declaration_fields(metal="ga"))
    assert (made.status, made.metal.symbol, made.destination_country.code) == ("pending", "Ga", "DE")
    queued = Flag.objects.get(kind=FlagKind.LICENCE_REQUEST, member=buyer)
    assert queued.status == FlagStatus.OPEN and f"EUD-{made.pk}" in queued.reference

    end_use_declaration_decide(declaration=made, status=DeclarationStatus.APPROVED, decided_by=who,
                               reason="End user verified")
    made.refresh_from_db()
    assert (made.status, made.decided_by, made.reason) == ("approved", who, "End user verified")
    queued.refresh_from_db()
    assert queued.status == FlagStatus.CONFIRMED
    with pytest.raises(IllegalTransition):
        end_use_declaration_decide(declaration=made, status=DeclarationStatus.REJECTED, decided_by=who,
                                   reason="second thoughts")


@pytest.mark.parametrize(("overrides", "code"), [
    ({"metal": "Xx"}, "unknown_metal"),
    ({"metal": "Re"}, "metal_not_controlled"),
    ({"end_user": " "}, "required"),
    ({"end_use": ""}, "required"),
    ({"destination_country": "Germany"}, "invalid_country"),
    ({"destination_country": "XX"}, "invalid_country"),
    ({"valid_from": TODAY(), "valid_to": TODAY()}, "invalid_validity"),
    ({"valid_from": TODAY(), "valid_to": TODAY() - timedelta(days=3)}, "invalid_validity"),
    ({"valid_from": TODAY() - timedelta(days=30), "valid_to": TODAY() - timedelta(days=1)}, "invalid_validity"),
])
@pytest.mark.django_db
def test_bad_declarations_are_refused_and_nothing_is_stored(overrides: dict[str, Any], code: str) -> None:
    with pytest.raises(ApplicationError) as caught:
        end_use_declaration_submit(member=MemberFactory(), **declaration_fields(**overrides))
    assert caught.value.code == code and caught.value.status == 400
    assert not EndUseDeclaration.objects.exists() and not Flag.objects.exists()


@pytest.mark.django_db
def test_a_suspended_member_cannot_submit() -> None:
    with pytest.raises(ComplianceRefused) as caught:
        end_use_declaration_submit(member=MemberFactory(kyc_status=KycStatus.SUSPENDED), **declaration_fields())
    assert (caught.value.code, caught.value.status) == ("member_suspended", 403)
    with pytest.raises(ComplianceRefused):
        export_licence_submit(exporter=MemberFactory(kyc_status=KycStatus.SUSPENDED), **licence_fields())


# --- licences ------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_licence_lifecycle_approve_then_revoke() -> None:
    exporter, who = MemberFactory(country="DE"), officer()
    made = export_licence_submit(exporter=exporter, **licence_fields(quantity_cap_kg=250))
    assert (made.status, made.quantity_cap_kg, made.drawn_kg) == ("pending", Decimal("250.000"), Decimal("0"))
    export_licence_decide(licence=made, status=LicenceStatus.APPROVED, decided_by=who, reason="Licence checked")
    assert Flag.objects.get(kind=FlagKind.LICENCE_REQUEST).status == FlagStatus.CONFIRMED
    export_licence_decide(licence=made, status=LicenceStatus.REVOKED, decided_by=who, reason="Authority revoked")
    made.refresh_from_db()
    assert (made.status, made.reason) == ("revoked", "Authority revoked")
    with pytest.raises(IllegalTransition):
        export_licence_decide(licence=made, status=LicenceStatus.APPROVED, decided_by=who, reason="undo")


@pytest.mark.django_db
def test_rejection_dismisses_the_review_flag() -> None:
    made = export_licence_submit(exporter=MemberFactory(), **licence_fields())
    export_licence_decide(licence=made, status=LicenceStatus.REJECTED, decided_by=None, reason="Forged stamp")
    assert Flag.objects.get(kind=FlagKind.LICENCE_REQUEST).status == FlagStatus.DISMISSED


@pytest.mark.parametrize(("overrides", "code"), [
    ({"quantity_cap_kg": "0"}, "invalid_quantity"),
    ({"quantity_cap_kg": "-5.000"}, "invalid_quantity"),
    ({"quantity_cap_kg": "12.0001"}, "invalid_quantity"),
    ({"quantity_cap_kg": "lots"}, "invalid_quantity"),
    ({"quantity_cap_kg": "NaN"}, "invalid_quantity"),
    ({"quantity_cap_kg": "1e30"}, "invalid_quantity"),
    ({"metal": "Unobtainium"}, "unknown_metal"),
    ({"metal": "Re"}, "metal_not_controlled"),
    ({"licence_number": ""}, "required"),
    ({"consignee": ""}, "required"),
    ({"destination_country": "ZZ"}, "invalid_country"),
    ({"valid_from": TODAY(), "valid_to": TODAY() - timedelta(days=1)}, "invalid_validity"),
])
@pytest.mark.django_db
def test_bad_licences_are_refused_and_nothing_is_stored(overrides: dict[str, Any], code: str) -> None:
    with pytest.raises(ApplicationError) as caught:
        export_licence_submit(exporter=MemberFactory(), **licence_fields(**overrides))
    assert caught.value.code == code
    assert not ExportLicence.objects.exists() and not Flag.objects.exists()


@pytest.mark.django_db
def test_a_licence_number_is_registered_once() -> None:
    export_licence_submit(exporter=MemberFactory(), **licence_fields())
    with pytest.raises(Conflict) as caught:
        export_licence_submit(exporter=MemberFactory(), **licence_fields())
    assert caught.value.code == "licence_number_taken"
    assert ExportLicence.objects.count() == 1 and Flag.objects.count() == 1


@pytest.mark.django_db
def test_the_database_holds_the_licence_invariants() -> None:
    made = licence(MemberFactory(), cap="10.000")
    with pytest.raises(IntegrityError), transaction.atomic():
        ExportLicence.objects.filter(pk=made.pk).update(drawn_kg=Decimal("10.001"))
    with pytest.raises(IntegrityError), transaction.atomic():
        ExportLicence.objects.filter(pk=made.pk).update(quantity_cap_kg=0, drawn_kg=0)
    with pytest.raises(IntegrityError), transaction.atomic():
        ExportLicence.objects.filter(pk=made.pk).update(valid_to=made.valid_from)


# --- drawdowns -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_draws_append_to_the_ledger_and_an_over_draw_is_refused_whole() -> None:
    made = licence(MemberFactory(), cap="100.000")
    goods = receipt(symbol="Ga", quantity_kg="60.000")
    first = licence_draw(licence=made, quantity_kg="60.000", receipt=goods, reference="withdrawal W-1")
    assert (first.quantity_kg, first.drawn_total_kg, first.receipt) == (Decimal("60.000"), Decimal("60.000"), goods)
    assert made.drawn_kg == Decimal("60.000")
    with pytest.raises(ComplianceRefused) as caught:
        licence_draw(licence=made, quantity_kg="40.001", reference="withdrawal W-2")
    assert (caught.value.code, caught.value.status) == ("licence_exhausted", 403)
    assert caught.value.details == {"remaining_kg": "40.000", "requested_kg": "40.001"}
    licence_draw(licence=made, quantity_kg=Decimal("40"), reference="withdrawal W-3")
    made.refresh_from_db()
    assert made.drawn_kg == made.quantity_cap_kg == Decimal("100.000")
    assert [r.drawn_total_kg for r in LicenceDrawdown.objects.order_by("pk")] == [Decimal("60.000"),
                                                                                   Decimal("100.000")]


@pytest.mark.django_db
def test_draw_refusals() -> None:
    pending = licence(MemberFactory(), approve=False)
    with pytest.raises(ComplianceRefused) as caught:
        licence_draw(licence=pending, quantity_kg="1", reference="r")
    assert caught.value.code == "licence_not_approved"
    future = licence(MemberFactory(), valid_from=TODAY() + timedelta(days=5), valid_to=TODAY() + timedelta(days=50))
    with pytest.raises(ComplianceRefused) as caught:
        licence_draw(licence=future, quantity_kg="1", reference="r")
    assert caught.value.code == "licence_not_valid"
    usable = licence(MemberFactory())
    for amount in ("0", "-1", "0.0001", "x"):
        with pytest.raises(ApplicationError) as bad:
            licence_draw(licence=usable, quantity_kg=amount, reference="r")
        assert bad.value.code == "invalid_quantity"
    with pytest.raises(ApplicationError) as blank:
        licence_draw(licence=usable, quantity_kg="1", reference=" ")
    assert blank.value.code == "required"
    with pytest.raises(ApplicationError) as mismatch:
        licence_draw(licence=usable, quantity_kg="1", receipt=receipt(symbol="In"), reference="r")
    assert mismatch.value.code == "licence_metal_mismatch"
    assert not LicenceDrawdown.objects.exists()
    assert set(ExportLicence.objects.values_list("drawn_kg", flat=True)) == {Decimal("0")}


@pytest.mark.django_db
def test_ledger_rows_are_never_updated_or_deleted() -> None:
    made = licence(MemberFactory())
    licence_draw(licence=made, quantity_kg="5", reference="r")
    with pytest.raises(DatabaseError, match="append_only"), transaction.atomic():
        LicenceDrawdown.objects.update(quantity_kg=Decimal("1"))
    with pytest.raises(DatabaseError, match="append_only"), transaction.atomic():
        LicenceDrawdown.objects.all().delete()
    assert LicenceDrawdown.objects.get().quantity_kg == Decimal("5.000")
