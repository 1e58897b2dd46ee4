"""Bad input to the warehouse API: every refusal is a 4xx with a stable code, and nothing is stored —
no lot, attestation, receipt, event, reading or statement, and no Idempotency-Key record either."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from members.models import IdempotencyRecord
from members.services import signing_key_revoke
from receipts import services
from receipts.canonical import utc_stamp
from receipts.models import (
    Attestation,
    Lot,
    Receipt,
    ReceiptEvent,
    StockStatement,
    StorageIncident,
    StorageReading,
)
from tests.conftest import client_for
from tests.factories.members import MemberFactory, UserFactory
from tests.factories.receipts import ReceiptWorld, Signer, assay_document

pytestmark = pytest.mark.django_db

STORED = (Lot, Attestation, Receipt, ReceiptEvent, StorageReading, StorageIncident, StockStatement,
          IdempotencyRecord)


def _counts() -> dict[str, int]:
    return {model.__name__: model.objects.count() for model in STORED}


@pytest.fixture
def nothing_stored() -> Iterator[None]:
    """Wraps one refused request: the row counts of everything the API writes must not move."""
    before = _counts()
    yield
    assert _counts() == before


def refused(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.content
    body = response.json()
    assert body["code"] == code, body
    assert body["message"] and isinstance(body["details"], dict)
    return body


@pytest.fixture
def world() -> ReceiptWorld:
    return ReceiptWorld()


@pytest.fixture
def wh(world: ReceiptWorld) -> Any:
    return client_for(UserFactory(member=world.operator))


@pytest.fixture
def lab(world: ReceiptWorld) -> Any:
    return client_for(UserFactory(member=world.lab))


@pytest.fixture
def bare_lot(world: ReceiptWorld) -> Lot:
    """A registered lot with no attestation yet; the world's lab is nominated for its assay."""
    return services.lot_register(
        warehouse=world.warehouse, registered_by=world.operator, metal="Ga", form="ingot", net_mass_kg="100",
        package_count=100, brand="TESTBRAND", batch_number="BARE-1", production_date=timezone.now().date(),
        location="A1", depositor=MemberFactory(roles=["producer"]), nominees=[(world.lab, ["assay"])])


def lot_body(world: ReceiptWorld, **overrides: Any) -> dict[str, Any]:
    return {"metal": "Ga", "form": "ingot", "net_mass_kg": "100.000", "package_count": 100, "brand": "B",
            "batch_number": "X-1", "production_date": "2026-01-15", "location": "A1",
            "depositor": world.operator.legal_id, **overrides}


# --- registering lots ---------------------------------------------------------------------------------

def test_malformed_json_is_400_and_stores_nothing(world, wh, nothing_stored) -> None:
    response = wh.generic("POST", f"/api/v1/warehouses/{world.warehouse.code}/lots", '{"metal": "Ga",',
                          content_type="application/json", HTTP_IDEMPOTENCY_KEY="broken-json")
    refused(response, 400, "malformed_json")


@pytest.mark.parametrize("overrides, code", [
    ({"net_mass_kg": "0"}, "invalid_quantity"),
    ({"net_mass_kg": "-5.000"}, "invalid_quantity"),
    ({"net_mass_kg": "1.0005"}, "invalid_quantity"),  # finer than a gram
    ({"net_mass_kg": "lots"}, "invalid_quantity"),
    ({"package_count": 0}, "invalid_quantity"),
    ({"metal": "Xx"}, "unknown_metal"),
    ({"form": "wire"}, "invalid_form"),
    ({"depositor": "NOBODY"}, "unknown_member"),
    ({"production_date": "2999-01-01"}, "invalid_date"),
    ({"brand": ""}, "invalid_input"),
])
def test_bad_lot_is_refused_with_a_stable_code(world, wh, nothing_stored, overrides, code) -> None:
    refused(wh.post(f"/api/v1/warehouses/{world.warehouse.code}/lots", lot_body(world, **overrides)), 400, code)


def test_duplicate_batch_is_409(world, wh) -> None:
    assert wh.post(f"/api/v1/warehouses/{world.warehouse.code}/lots", lot_body(world)).status_code == 201
    before = _counts()
    refused(wh.post(f"/api/v1/warehouses/{world.warehouse.code}/lots", lot_body(world)), 409, "lot_exists")
    assert _counts() == before


def test_unapproved_warehouse_cannot_register(world, wh, nothing_stored) -> None:
    services.warehouse_set_approved(warehouse=world.warehouse, approved=False)
    refused(wh.post(f"/api/v1/warehouses/{world.warehouse.code}/lots", lot_body(world)), 403,
            "warehouse_not_approved")


# --- attestations ---------------------------------------------------------------------------------------

def _post_assay(client: Any, lot: Lot, document: dict[str, Any], signature: dict[str, str]) -> Any:
    return client.post(f"/api/v1/lots/{lot.pk}/attestations",
                       {"kind": "assay", "document": document, "signature": signature})


@pytest.mark.parametrize("impurity, problem", [
    ({"element": "Xx", "value": "1", "unit": "ppb"}, "is not an element symbol"),
    ({"element": "CO", "value": "1", "unit": "ppb"}, "is not an element symbol"),  # case matters: Co is cobalt
    ({"element": "Fe", "value": "1"}, "is not a mass-fraction unit"),
    ({"element": "Fe", "value": "1", "unit": "furlongs"}, "is not a mass-fraction unit"),
    ({"element": "Fe", "value": "-1", "unit": "ppb"}, "non-negative decimal"),
    ({"element": "Fe", "value": 1.5, "unit": "ppb"}, "non-negative decimal"),
])
def test_bad_impurity_is_invalid_attestation(world, lab, bare_lot, nothing_stored, impurity, problem) -> None:
    document = assay_document(bare_lot, world.lab)
    document["impurities"].append(impurity)
    # The shape is judged before the signature: a well-formed but wrong signature is enough here.
    signature = {"alg": "EdDSA", "kid": world.lab_signer.key.kid, "sig": "A" * 86}
    body = refused(_post_assay(lab, bare_lot, document, signature), 400, "invalid_attestation")
    assert any(problem in p for p in body["details"]["problems"]), body


def test_float_anywhere_in_a_signed_document_is_refused(world, lab, bare_lot, nothing_stored) -> None:
    document = assay_document(bare_lot, world.lab)
    document["note"] = 0.5  # extra members are signed too, and floats have no canonical form we accept
    refused(_post_assay(lab, bare_lot, document, {"alg": "EdDSA", "kid": world.lab_signer.key.kid, "sig": "A" * 86}),
            400, "float_in_signed_document")


def test_signature_that_does_not_verify(world, lab, bare_lot, nothing_stored) -> None:
    document = assay_document(bare_lot, world.lab)
    signature = world.lab_signer.sign(document)
    document["purityPercent"] = "99.99999"  # the lab signed 99.99995
    refused(_post_assay(lab, bare_lot, document, signature), 400, "signature_invalid")


def test_malformed_signature(world, lab, bare_lot, nothing_stored) -> None:
    document = assay_document(bare_lot, world.lab)
    refused(_post_assay(lab, bare_lot, document, {"alg": "RS256", "kid": world.lab_signer.key.kid, "sig": "x"}),
            400, "malformed_signature")


def test_key_of_the_wrong_role(world, wh, bare_lot, nothing_stored) -> None:
    """A producer's key cannot sign an assay, even naming itself as the lab."""
    producer = MemberFactory(roles=["producer"])
    document = assay_document(bare_lot, producer)
    refused(_post_assay(wh, bare_lot, document, Signer(producer).sign(document)), 400, "signer_role_not_allowed")


def test_key_of_another_member_than_the_certificate_names(world, wh, bare_lot, nothing_stored) -> None:
    """Lab B's key on a certificate that names lab A."""
    other_lab = MemberFactory(roles=["assay_lab"])
    document = assay_document(bare_lot, world.lab)
    refused(_post_assay(wh, bare_lot, document, Signer(other_lab).sign(document)), 400,
            "attestation_signer_mismatch")


def test_a_lab_cannot_submit_under_another_members_key(world, bare_lot, nothing_stored) -> None:
    other_lab = MemberFactory(roles=["assay_lab"])
    other = client_for(UserFactory(member=other_lab))
    document = assay_document(bare_lot, world.lab)
    refused(_post_assay(other, bare_lot, document, world.lab_signer.sign(document)), 404, "not_found")


def test_unregistered_and_revoked_keys(world, wh, lab, bare_lot) -> None:
    document = assay_document(bare_lot, world.lab)
    before = _counts()
    refused(_post_assay(wh, bare_lot, document, {"alg": "EdDSA", "kid": "x" * 43, "sig": "A" * 86}), 400,
            "unknown_key")
    signing_key_revoke(member=world.lab, kid=world.lab_signer.key.kid, reason="compromised")
    refused(_post_assay(lab, bare_lot, document, world.lab_signer.sign(document)), 400, "key_revoked")
    assert _counts() == before


def test_document_about_another_lot(world, lab, wh, bare_lot, nothing_stored) -> None:
    document = assay_document(bare_lot, world.lab)
    document["lot"] = "ELSEWHERE/1"
    # The operator learns why; a signer that does not name the lot is told nothing about it (not even its ref).
    refused(_post_assay(wh, bare_lot, document, world.lab_signer.sign(document)), 400, "attestation_lot_mismatch")
    response = _post_assay(lab, bare_lot, document, world.lab_signer.sign(document))
    refused(response, 404, "not_found")
    assert bare_lot.reference not in response.content.decode()


# --- grading and issuing -------------------------------------------------------------------------------

def test_grading_without_an_assay(wh, bare_lot, nothing_stored) -> None:
    refused(wh.post(f"/api/v1/lots/{bare_lot.pk}/grade", key=None), 409, "assay_missing")


def test_issue_before_grading(world, wh, bare_lot, nothing_stored) -> None:
    refused(wh.post(f"/api/v1/lots/{bare_lot.pk}/receipts", {"holder": world.operator.legal_id,
                                                              "quantity_kg": "1"}), 409, "lot_not_graded")


@pytest.mark.parametrize("quantity", ["0", "-1", "0.0001", "ten"])
def test_issue_of_a_bad_quantity(world, wh, quantity) -> None:
    lot = world.lot(mass="10.000")
    before = _counts()
    refused(wh.post(f"/api/v1/lots/{lot.pk}/receipts", {"holder": lot.depositor.legal_id,
                                                         "quantity_kg": quantity}), 400, "invalid_quantity")
    assert _counts() == before


def test_issuing_beyond_the_lot(world, wh) -> None:
    lot = world.lot(mass="100.000")
    holder = lot.depositor.legal_id
    assert wh.post(f"/api/v1/lots/{lot.pk}/receipts", {"holder": holder, "quantity_kg": "60"}).status_code == 201
    before = _counts()
    body = refused(wh.post(f"/api/v1/lots/{lot.pk}/receipts", {"holder": holder, "quantity_kg": "40.001"}), 409,
                   "lot_over_issued")
    assert body["details"]["available_kg"] == "40.000"
    assert _counts() == before
    assert wh.post(f"/api/v1/lots/{lot.pk}/receipts", {"holder": holder, "quantity_kg": "40"}).status_code == 201


def test_issue_to_unknown_or_unapproved_holder(world, wh) -> None:
    lot = world.lot(mass="10.000")
    pending = MemberFactory(roles=["trader"], kyc_status="pending")
    before = _counts()
    refused(wh.post(f"/api/v1/lots/{lot.pk}/receipts", {"holder": "NOBODY", "quantity_kg": "1"}), 400,
            "unknown_member")
    refused(wh.post(f"/api/v1/lots/{lot.pk}/receipts", {"holder": pending.legal_id, "quantity_kg": "1"}), 403,
            "holder_not_approved")
    assert _counts() == before


def test_issue_after_a_new_assay_needs_a_fresh_grade(world, wh, lab) -> None:
    """Otherwise the receipt would bind an assay its grade was never checked against."""
    lot = world.lot(mass="10.000")
    weaker = assay_document(lot, world.lab, purity="99.9999", issued_days_ago=1)
    assert _post_assay(lab, lot, weaker, world.lab_signer.sign(weaker)).status_code == 201
    before = _counts()
    refused(wh.post(f"/api/v1/lots/{lot.pk}/receipts", {"holder": lot.depositor.legal_id, "quantity_kg": "1"}),
            409, "lot_grading_stale")
    assert _counts() == before


def test_issue_refuses_an_attestation_whose_key_was_revoked_since(world, wh) -> None:
    lot = world.lot(mass="10.000")
    signing_key_revoke(member=world.lab, kid=world.lab_signer.key.kid, reason="lab lost accreditation")
    before = _counts()
    refused(wh.post(f"/api/v1/lots/{lot.pk}/receipts", {"holder": lot.depositor.legal_id, "quantity_kg": "1"}),
            409, "attestation_key_revoked")
    assert _counts() == before


# --- withdrawal ------------------------------------------------------------------------------------------

def test_withdrawing_a_frozen_receipt(world, wh) -> None:
    receipt = world.receipt(quantity="10.000")
    services.receipt_withdrawal_request(receipt=receipt, by=receipt.holder, withdrawal_ref="W-1")
    services.receipt_freeze(receipt=receipt, reason="sanctions review")
    before = _counts()
    refused(wh.post(f"/api/v1/receipts/{receipt.number}/withdrawal/complete", key=None), 409, "receipt_frozen")
    assert _counts() == before
    receipt.refresh_from_db()
    assert receipt.status == "frozen" and receipt.closed_at is None


def test_withdrawal_not_requested(world, wh) -> None:
    receipt = world.receipt(quantity="10.000")
    before = _counts()
    refused(wh.post(f"/api/v1/receipts/{receipt.number}/withdrawal/complete", key=None), 409, "illegal_transition")
    assert _counts() == before


def test_withdrawal_completes_and_the_metal_cannot_be_receipted_again(world, wh) -> None:
    receipt = world.receipt(quantity="10.000", mass="10.000")
    services.receipt_withdrawal_request(receipt=receipt, by=receipt.holder, withdrawal_ref="W-2")
    response = wh.post(f"/api/v1/receipts/{receipt.number}/withdrawal/complete", key=None)
    assert response.status_code == 200 and response.json()["status"] == "withdrawn"
    assert response.json()["closed_at"]
    refused(wh.post(f"/api/v1/lots/{receipt.lot_id}/receipts", {"holder": receipt.holder.legal_id,
                                                                 "quantity_kg": "1"}), 409, "lot_over_issued")


# --- readings and statements -----------------------------------------------------------------------------

@pytest.mark.parametrize("overrides", [
    {"humidity_pct": "101"}, {"temperature_c": "hot"}, {"seal_intact": "perhaps"}, {"location": ""},
    {"observed_at": "yesterday"},
])
def test_bad_reading(world, wh, nothing_stored, overrides) -> None:
    body = {"location": "A1", "observed_at": utc_stamp(timezone.now()), "temperature_c": "20.0",
            "humidity_pct": "40", "seal_intact": True, **overrides}
    refused(wh.post(f"/api/v1/warehouses/{world.warehouse.code}/readings", body), 400, "invalid_input")


def test_reading_from_the_future(world, wh, nothing_stored) -> None:
    body = {"location": "A1", "observed_at": utc_stamp(timezone.now() + timedelta(hours=1)), "temperature_c": "20",
            "humidity_pct": "40", "seal_intact": True}
    refused(wh.post(f"/api/v1/warehouses/{world.warehouse.code}/readings", body), 400, "invalid_date")


def _statement(world: ReceiptWorld, **overrides: Any) -> dict[str, Any]:
    return {"type": "stock_statement", "warehouse": world.warehouse.code,
            "asOf": utc_stamp(timezone.now() - timedelta(minutes=1)), "lots": [], **overrides}


def test_bad_stock_statements(world, wh, nothing_stored) -> None:
    signer = Signer(world.operator)
    url = f"/api/v1/warehouses/{world.warehouse.code}/stock-statements"
    document = _statement(world, lots=[{"lot": "X/1", "quantity": "5.000"}])
    forged = copy.deepcopy(document)
    forged["lots"][0]["quantity"] = "50.000"
    refused(wh.post(url, {"document": forged, "signature": signer.sign(document)}), 400, "signature_invalid")
    lab_signed = world.lab_signer.sign(document)  # a key, but not the operator's
    refused(wh.post(url, {"document": document, "signature": lab_signed}), 400, "unknown_key")
    twice = _statement(world, lots=[{"lot": "X/1", "quantity": "5.000"}, {"lot": "X/1", "quantity": "1.000"}])
    refused(wh.post(url, {"document": twice, "signature": signer.sign(twice)}), 400, "invalid_statement")
    negative = _statement(world, lots=[{"lot": "X/1", "quantity": "-5.000"}])
    refused(wh.post(url, {"document": negative, "signature": signer.sign(negative)}), 400, "invalid_quantity")
    other_wh = _statement(world, warehouse="ELSEWHERE")
    refused(wh.post(url, {"document": other_wh, "signature": signer.sign(other_wh)}), 400, "invalid_statement")
