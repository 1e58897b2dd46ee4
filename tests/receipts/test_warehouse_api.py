"""The warehouse API end to end over HTTP: register a lot, attach signed attestations, grade, issue, export
the bundle, verify it (and fail to verify a tampered copy); idempotent replays; object-level 404s."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from receipts.models import Attestation, Lot, Receipt, ReceiptEvent
from tests.conftest import client_for
from tests.factories.members import MemberFactory, UserFactory
from tests.factories.receipts import (
    ReceiptWorld,
    Signer,
    assay_document,
    carbon_footprint_document,
    origin_document,
    recycled_content_document,
)

pytestmark = pytest.mark.django_db

LOT_BODY = {"metal": "Ga", "form": "ingot", "net_mass_kg": "100.000", "package_count": 100, "brand": "TESTBRAND",
            "batch_number": "GA-2026-0001", "seal_numbers": ["S-1", "S-2"], "production_date": "2026-01-15",
            "location": "A1"}


@pytest.fixture
def world() -> ReceiptWorld:
    return ReceiptWorld()


@pytest.fixture
def depositor() -> Any:
    return MemberFactory(roles=["producer", "trader"])


@pytest.fixture
def wh(world: ReceiptWorld) -> Any:
    return client_for(UserFactory(member=world.operator))


@pytest.fixture
def lab(world: ReceiptWorld) -> Any:
    return client_for(UserFactory(member=world.lab))


def register(wh: Any, world: ReceiptWorld, depositor: Any, *, key: str | None = "auto", **overrides: Any) -> Any:
    body = {**LOT_BODY, "depositor": depositor.legal_id, **overrides}
    return wh.post(f"/api/v1/warehouses/{world.warehouse.code}/lots", body, key=key)


def attest(client: Any, lot_id: int, kind: str, document: dict[str, Any], signature: dict[str, str]) -> Any:
    return client.post(f"/api/v1/lots/{lot_id}/attestations", {"kind": kind, "document": document,
                                                              "signature": signature})


def test_full_warehouse_flow_register_attest_grade_issue_bundle_verify_tamper(world, wh, lab, depositor) -> None:
    response = register(wh, world, depositor, producer=depositor.legal_id,
                        nominees=[{"member": world.lab.legal_id, "kinds": ["assay"]}])
    assert response.status_code == 201, response.content
    lot_id = response.json()["id"]
    assert response.json()["reference"] == f"{world.warehouse.code}/GA-2026-0001"
    assert [(n["member"], n["kind"], n["live"]) for n in response.json()["nominations"]] == [
        (world.lab.legal_id, "assay", True)]
    lot = Lot.objects.get(pk=lot_id)

    # The lab the warehouse nominated posts its own certificate; the producer's footprint, recycled content
    # and origin come through the warehouse operator, signed by the producer's key (no nomination needed).
    assay = assay_document(lot, world.lab)
    assert attest(lab, lot_id, "assay", assay, world.lab_signer.sign(assay)).status_code == 201
    producer = Signer(depositor)
    for kind, document in [("carbon_footprint", carbon_footprint_document(lot, depositor)),
                           ("recycled_content", recycled_content_document(lot)),
                           ("origin", origin_document(lot))]:
        response = attest(wh, lot_id, kind, document, producer.sign(document))
        assert response.status_code == 201, response.content

    graded = wh.post(f"/api/v1/lots/{lot_id}/grade", key=None)
    assert graded.status_code == 200, graded.content
    result = graded.json()
    assert result["grade"] == "GA-6N" and result["met"] is True
    # The better grade it missed says exactly why: measured vs allowed.
    seven = next(e for e in result["evaluations"] if e["code"] == "GA-7N")
    assert not seven["met"]
    purity = next(f for f in seven["failures"] if f["subject"] == "purity")
    assert purity["measured"] == "99.99995" and purity["allowed"] == "99.99999" and purity["reason"] == "below_min"

    issued = wh.post(f"/api/v1/lots/{lot_id}/receipts", {"holder": depositor.legal_id, "quantity_kg": "60.000"})
    assert issued.status_code == 201, issued.content
    receipt = issued.json()
    assert receipt["grade"] == "GA-6N" and receipt["status"] == "active" and receipt["quantity_kg"] == "60.000"
    assert receipt["holder"] == depositor.legal_id and receipt["storage_incidents_open"] == []
    assert [e["kind"] for e in receipt["events"]] == ["issued"]

    holder = client_for(UserFactory(member=depositor))
    detail = holder.get(f"/api/v1/receipts/{receipt['number']}")
    assert detail.status_code == 200 and detail.json()["lot_reference"] == lot.reference
    bundle_response = holder.get(f"/api/v1/receipts/{receipt['number']}/bundle")
    assert bundle_response.status_code == 200
    raw = bundle_response.content
    bundle = json.loads(raw)
    assert {a["type"] for a in bundle["attestations"]} == {"assay", "carbon_footprint", "recycled_content", "origin"}
    assert wh.get(f"/api/v1/receipts/{receipt['number']}/bundle").status_code == 200  # the operator too

    anyone = Client()
    verified = anyone.post("/api/v1/receipts/verify", raw, content_type="application/json")
    assert verified.status_code == 200
    assert verified.json()["ok"] is True, [c for c in verified.json()["checks"] if not c["ok"]]
    assert any(c["name"] == "trust anchors" and c["ok"] for c in verified.json()["checks"])

    def flip(at: int) -> bytes:
        """The bundle with the one byte at `at` (a quantity's leading 6) changed to a 7."""
        assert raw[at:at + 1] == b"6"
        return raw[:at] + b"7" + raw[at + 1:]

    # Canonical keys sort "chain" before "receipt": the first quantity is the issued event's, the last the header's.
    in_chain = raw.index(b'"quantity":"60.000"') + len(b'"quantity":"')
    in_header = raw.rindex(b'"quantity":"60.000"') + len(b'"quantity":"')
    assert in_chain < in_header
    failed = anyone.post("/api/v1/receipts/verify", flip(in_header), content_type="application/json")
    assert failed.status_code == 200 and failed.json()["ok"] is False
    assert {"bundle seal", "receipt matches its chain"} <= {c["name"] for c in failed.json()["checks"] if not c["ok"]}
    failed = anyone.post("/api/v1/receipts/verify", flip(in_chain), content_type="application/json").json()
    assert failed["ok"] is False
    assert any(c["name"].startswith("chain ") and not c["ok"] for c in failed["checks"])

    # One byte in an impurity of the signed assay: the lab's signature and the issued binding both break.
    tampered = raw.replace(b'"element":"O","unit":"ppb","value":"2"', b'"element":"O","unit":"ppb","value":"3"', 1)
    assert tampered != raw
    failed = anyone.post("/api/v1/receipts/verify", tampered, content_type="application/json").json()
    assert failed["ok"] is False
    assert "binding: attestations" in {c["name"] for c in failed["checks"] if not c["ok"]}


def test_verify_is_public_and_judges_signatures_against_the_platform_jwks(world) -> None:
    from receipts.selectors import receipt_bundle

    receipt = world.receipt(quantity="10.000")
    bundle = receipt_bundle(receipt)
    ok = Client().post("/api/v1/receipts/verify", json.dumps(bundle), content_type="text/plain")
    assert ok.status_code == 200 and ok.json()["ok"] is True  # a raw file post, whatever its Content-Type



def test_forged_bundle_with_its_own_keys_fails_trust() -> None:
    """A self-consistent bundle sealed by someone else's "platform" key proves nothing: not in our JWKS."""
    from receipts.bundles import build_bundle
    from receipts.chain import issued_data, new_event, seal
    from receipts.signing import generate_private_key, key_id, registered_key_jwk

    forger = generate_private_key()
    kid = key_id(forger.public_key())
    jwk = registered_key_jwk(forger.public_key(), member="FORGER", roles=["platform"],
                             valid_from="2025-01-01T00:00:00Z")
    lot = {"ref": "X/1", "metal": "Ga", "form": "ingot", "net_mass_kg": "5.000", "warehouse": "X"}
    data = issued_data(metal="Ga", grade=None, form="ingot", quantity="5.000", warehouse="X", holder="FORGER",
                       lot=lot, grade_spec=None, attestations=[])
    event = new_event(receipt="WR-GA-2026-999999", seq=1, kind="issued", at="2026-01-05T00:00:00Z", data=data,
                      prev_hash=None)
    bundle = build_bundle(
        receipt={"number": "WR-GA-2026-999999", "metal": "Ga", "grade": None, "form": "ingot", "quantity": "5.000",
                 "warehouse": "X", "lot": "X/1", "holder": "FORGER", "status": "active"},
        lot=lot, grade_spec=None, attestations=[], chain=[seal(event, forger, kid)], keys=[jwk],
        exported_at="2026-01-06T00:00:00Z", platform_key=forger, platform_kid=kid)
    body = Client().post("/api/v1/receipts/verify", bundle, content_type="application/json").json()
    assert body["ok"] is False
    assert "not in the trusted set" in next(c["detail"] for c in body["checks"] if c["name"] == "bundle seal")


@pytest.mark.parametrize("body, content_type, code", [
    (b"{not json", "application/json", "malformed_json"),
    (b"\xff\xfe", "application/octet-stream", "malformed_json"),
    (b"[1, 2]", "application/json", "invalid_bundle"),
    (b'"a string"', "application/json", "invalid_bundle"),
    (b"{}", "application/json", "invalid_bundle"),
])
def test_verify_refuses_what_is_not_a_json_object_with_400(body, content_type, code) -> None:
    response = Client().post("/api/v1/receipts/verify", body, content_type=content_type)
    assert response.status_code == 400, response.content
    assert response.json()["code"] == code


def test_verify_reports_a_structurally_broken_bundle_as_ok_false() -> None:
    response = Client().post("/api/v1/receipts/verify", {"format": "nope"}, content_type="application/json")
    assert response.status_code == 200 and response.json()["ok"] is False


def test_jwks_is_public_and_lists_member_and_platform_keys(world) -> None:
    receipt = world.receipt(quantity="5.000")
    body = Client().get("/.well-known/jwks.json").json()
    kids = {k["kid"] for k in body["keys"]}
    platform_kid = ReceiptEvent.objects.get(receipt=receipt, seq=1).signature["kid"]
    assert {world.lab_signer.key.kid, platform_kid} <= kids
    lab_key = next(k for k in body["keys"] if k["kid"] == world.lab_signer.key.kid)
    assert lab_key["ingot:roles"] == ["assay_lab"] and lab_key["kty"] == "OKP" and "d" not in lab_key


# --- idempotency ----------------------------------------------------------------------------------------

def test_register_replay_returns_the_first_response_and_stores_one_lot(world, wh, depositor) -> None:
    first = register(wh, world, depositor, key="lot-1")
    again = register(wh, world, depositor, key="lot-1")
    assert first.status_code == again.status_code == 201
    assert again.content == first.content and again["Idempotent-Replayed"] == "true"
    assert Lot.objects.count() == 1
    other = register(wh, world, depositor, key="lot-1", batch_number="OTHER")
    assert other.status_code == 422 and other.json()["code"] == "idempotency_key_reused"
    missing = register(wh, world, depositor, key=None, batch_number="NOKEY")
    assert missing.status_code == 400 and missing.json()["code"] == "idempotency_key_missing"
    assert Lot.objects.count() == 1


def test_issue_and_attestation_replays_store_once(world, wh, lab) -> None:
    lot = world.lot(mass="50.000")
    holder = lot.depositor
    body = {"holder": holder.legal_id, "quantity_kg": "20"}
    first = wh.post(f"/api/v1/lots/{lot.pk}/receipts", body, key="issue-1")
    again = wh.post(f"/api/v1/lots/{lot.pk}/receipts", body, key="issue-1")
    assert first.status_code == 201 and again.content == first.content
    assert Receipt.objects.filter(lot=lot).count() == 1

    extra = assay_document(lot, world.lab, issued_days_ago=3)
    signature = world.lab_signer.sign(extra)
    one = lab.post(f"/api/v1/lots/{lot.pk}/attestations", {"kind": "assay", "document": extra,
                                                          "signature": signature}, key="att-1")
    two = lab.post(f"/api/v1/lots/{lot.pk}/attestations", {"kind": "assay", "document": extra,
                                                          "signature": signature}, key="att-1")
    assert one.status_code == 201 and two.content == one.content
    assert Attestation.objects.filter(lot=lot).count() == 2  # the factory's assay and this one
    # The same attestation under a new key is a conflict, not a second copy.
    dup = lab.post(f"/api/v1/lots/{lot.pk}/attestations", {"kind": "assay", "document": extra,
                                                          "signature": signature})
    assert dup.status_code == 409 and dup.json()["code"] == "attestation_exists"


# --- reading what is yours ------------------------------------------------------------------------------

def test_lists_show_own_things_paginated_and_filtered(world, wh) -> None:
    holder = MemberFactory(roles=["trader"])
    world.receipt(holder, quantity="10.000")
    world.receipt(holder, quantity="12.000")
    other_world = ReceiptWorld(metal="In")
    other_world.receipt(quantity="3.000", impurities=[("Na", "0.5", "ppb"), ("K", "0.4", "ppb"), ("Fe", "0.8", "ppb")],
                        purity="99.9997")

    mine = client_for(UserFactory(member=holder))
    page = mine.get("/api/v1/receipts?limit=1").json()
    assert page["count"] == 2 and len(page["results"]) == 1 and page["next"]
    assert mine.get("/api/v1/receipts?metal=In").json()["count"] == 0
    assert mine.get("/api/v1/receipts?status=active&metal=Ga").json()["count"] == 2
    assert mine.get("/api/v1/receipts?status=frozen").json()["count"] == 0
    bad = mine.get("/api/v1/receipts?status=lost")
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_input"

    assert wh.get("/api/v1/receipts").json()["count"] == 2  # the operator sees what its warehouse issued
    assert [w["code"] for w in wh.get("/api/v1/warehouses").json()] == [world.warehouse.code]
    assert wh.get("/api/v1/lots").json()["count"] == 2
    assert wh.get("/api/v1/lots?metal=In").json()["count"] == 0
    # A holder reads the lot its receipt rests on.
    lot_id = page["results"][0]["lot"]
    assert mine.get(f"/api/v1/lots/{lot_id}").status_code == 200


def test_another_members_objects_are_404(world, wh, member_client) -> None:
    receipt = world.receipt(quantity="10.000")
    lot = receipt.lot
    stranger_world = ReceiptWorld()
    stranger = client_for(UserFactory(member=stranger_world.operator))
    code = world.warehouse.code
    for path in [f"/api/v1/lots/{lot.pk}", f"/api/v1/receipts/{receipt.number}",
                 f"/api/v1/receipts/{receipt.number}/bundle", f"/api/v1/warehouses/{code}/stock-statements"]:
        response = stranger.get(path)
        assert response.status_code == 404, path
        assert response.json()["code"] == "not_found"
    posts = [
        (f"/api/v1/warehouses/{code}/lots", {**LOT_BODY, "depositor": stranger_world.operator.legal_id}),
        (f"/api/v1/warehouses/{code}/readings", {"location": "A1", "observed_at": "2026-01-01T00:00:00Z",
                                                 "temperature_c": "20", "humidity_pct": "30", "seal_intact": True}),
        (f"/api/v1/warehouses/{code}/stock-statements", {"document": {}, "signature": {}}),
        (f"/api/v1/lots/{lot.pk}/grade", {}),
        (f"/api/v1/lots/{lot.pk}/receipts", {"holder": stranger_world.operator.legal_id, "quantity_kg": "1"}),
        (f"/api/v1/receipts/{receipt.number}/withdrawal/complete", {}),
    ]
    for path, body in posts:
        response = stranger.post(path, body)
        assert response.status_code == 404, (path, response.content)
    # A trader with no part in the lot cannot attach to it, whatever it signs.
    trader = member_client(["trader"])
    doc = assay_document(lot, world.lab)
    response = attest(trader, lot.pk, "assay", doc, world.lab_signer.sign(doc))
    assert response.status_code == 404 and "reference" not in response.content.decode()
    assert Attestation.objects.filter(lot=lot).count() == 1
    # The stranger's own lists do not show any of it.
    assert stranger.get("/api/v1/receipts").json()["count"] == 0
    assert stranger.get("/api/v1/lots").json()["count"] == 0


def test_depositor_sees_the_lot_but_cannot_act_as_its_warehouse(world) -> None:
    lot = world.lot(mass="10.000")
    depositor = client_for(UserFactory(member=lot.depositor))
    assert depositor.get(f"/api/v1/lots/{lot.pk}").status_code == 200
    response = depositor.post(f"/api/v1/lots/{lot.pk}/grade", key=None)
    assert response.status_code == 403 and response.json()["code"] == "not_warehouse_operator"
    response = depositor.post(f"/api/v1/lots/{lot.pk}/receipts", {"holder": lot.depositor.legal_id,
                                                                  "quantity_kg": "1"})
    assert response.status_code == 403 and Receipt.objects.count() == 0


def test_lot_detail_shows_quantities_and_attestations(world, wh) -> None:
    receipt = world.receipt(quantity="30.000", mass="100.000")
    body = wh.get(f"/api/v1/lots/{receipt.lot_id}").json()
    assert body["quantities"] == {"open_kg": "30.000", "withdrawn_kg": "0.000", "available_kg": "70.000"}
    assert [a["kind"] for a in body["attestations"]] == ["assay"]
    assert body["grade"] == "GA-6N" and body["net_mass_kg"] == "100.000"


def test_schema_documents_the_warehouse_api() -> None:
    schema = json.loads(Client().get("/api/schema/", HTTP_ACCEPT="application/json").content)
    paths = schema["paths"]
    for path in ["/api/v1/warehouses/{code}/lots", "/api/v1/lots/{id}/attestations", "/api/v1/lots/{id}/receipts",
                 "/api/v1/warehouses/{code}/readings", "/api/v1/warehouses/{code}/stock-statements"]:
        post = paths[path]["post"]
        assert any(p["name"] == "Idempotency-Key" and p["required"] for p in post["parameters"]), path
        assert {"400", "404", "409"} <= set(post["responses"]), path
    assert "/api/v1/receipts/verify" in paths and "/.well-known/jwks.json" in paths
    assert not paths["/api/v1/receipts/verify"]["post"].get("security")  # anyone, no credentials
    listing = paths["/api/v1/receipts"]["get"]
    assert {p["name"] for p in listing["parameters"]} >= {"status", "metal", "limit", "offset"}
