"""Bugs the proof suites found in code owned by others: one precise reproducer each, xfail(strict=True).

When the owner fixes one, its test passes, strict xfail reports that as a failure, and whoever fixes it
removes the xfail here and the matching entry in tests/proof/fuzzing.KNOWN_BUGS (or test_tampering's
KNOWN_ACCEPTED), so the fuzzer and the tampering campaign hold the line from then on.
"""

from __future__ import annotations

import copy
import re

import pytest
from django.test import Client

from receipts import services
from receipts.bundles import verify_bundle
from receipts.models import Receipt, ReceiptStatus
from receipts.selectors import jwks, receipt_bundle
from tests.conftest import MemberClient
from tests.factories.members import MemberFactory, UserFactory
from tests.factories.receipts import ReceiptWorld, Signer, origin_document
from tests.proof.tampering import full_lot
from tests.proof.world import ApiWorld, build_api_world

pytestmark = pytest.mark.django_db


@pytest.fixture
def world() -> ApiWorld:
    return build_api_world()


def api(world: ApiWorld, name: str) -> MemberClient:
    client = MemberClient(raise_request_exception=False)
    client.credentials(HTTP_AUTHORIZATION=world.actors[name].authorization)
    return client


def active_receipt(world: ApiWorld, name: str) -> str:
    found = Receipt.objects.filter(holder=world.actors[name].member, status=ReceiptStatus.ACTIVE).first()
    assert found is not None
    return found.number


def test_bug1_numeric_country_code_is_refused_not_a_500(world: ApiWorld) -> None:
    """django-countries' alpha2("10") is "AQ" (ISO 3166 numeric 010, Antarctica), so country_code() lets "10"
    through but returns the raw "10"; export_control._country then raises ValueError: a 500 on withdrawal,
    and a declaration or licence for "10" is silently stored for Antarctica."""
    client = api(world, "trader_A")
    response = client.post(f"/api/v1/holdings/{active_receipt(world, 'trader_A')}/withdrawal",
                           {"destination_country": "10"})
    assert response.status_code == 400, response.content
    declaration = client.post("/api/v1/compliance/end-use-declarations", {
        "metal": "Ga", "end_user": "x", "end_use": "y", "destination_country": "10",
        "valid_from": "2026-01-01", "valid_to": "2026-12-01"})
    assert declaration.status_code == 400, declaration.content


def test_bug2_compliance_list_refuses_a_status_outside_its_enum(world: ApiWorld) -> None:
    client = api(world, "trader_A")
    for path in ("/api/v1/compliance/end-use-declarations", "/api/v1/compliance/export-licences"):
        response = client.get(f"{path}?status=AAA")
        assert response.status_code == 400, (path, response.status_code, response.content[:200])


def test_bug3_depth_refuses_levels_that_is_not_an_integer(world: ApiWorld) -> None:
    response = api(world, "trader_A").get(f"/api/v1/instruments/{world.instrument.code}/depth?levels=abc")
    assert response.status_code == 400, response.content[:200]


def test_bug4_paginated_lists_refuse_a_limit_that_is_not_an_integer(world: ApiWorld) -> None:
    client = api(world, "trader_A")
    for path in ("/api/v1/lots?limit=abc", "/api/v1/receipts?offset=x",
                 "/api/v1/compliance/export-licences?limit=true"):
        response = client.get(path)
        assert response.status_code == 400, (path, response.status_code)


def test_bug11_a_huge_page_limit_is_not_a_500(world: ApiWorld) -> None:
    response = api(world, "warehouse_A").get("/api/v1/lots?limit=9223372036854775808")
    assert response.status_code in (200, 400), response.status_code


def test_bug12_verify_is_not_a_receipt_number(world: ApiWorld) -> None:
    """Fixed: {number} is the `receipt` path converter (receipts/converters.py), published as the parameter's
    pattern, so "verify" is not a receipt number: GET receipts/verify is the POST-only verifier's 405 with
    `Allow`, a well-formed unknown number is 404, anything else no route (JSON 404)."""
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)
    [number] = [p for p in schema["paths"]["/api/v1/receipts/{number}"]["get"]["parameters"]
                if p["name"] == "number"]
    assert re.fullmatch(number["schema"]["pattern"].strip("^$"), "WR-GA-2026-000123")
    assert not re.fullmatch(number["schema"]["pattern"].strip("^$"), "verify")
    client = api(world, "trader_A")
    response = client.get("/api/v1/receipts/verify")
    assert response.status_code == 405 and "POST" in response["Allow"], response.status_code
    for path in ("/api/v1/receipts/WR-GA-1999-999999", "/api/v1/receipts/not-a-number"):
        response = client.get(path)
        assert (response.status_code, response.json()["code"]) == (404, "not_found"), path


def test_bug5_reordered_attestations_are_rejected() -> None:
    """BUNDLE_FORMAT.md: "Any changed, added or removed byte in any member fails at least one of them." The
    attestations array in another order verifies: `binding: attestations` compares sorted lists."""
    world = ReceiptWorld()
    producer = MemberFactory(roles=["trader", "producer"])
    lot = full_lot(world, producer, Signer(producer))
    receipt = services.receipt_issue(lot=lot, holder=producer, quantity_kg="200.000", issued_by=world.operator)
    bundle = receipt_bundle(receipt)
    assert verify_bundle(bundle, trusted_keys=jwks()["keys"]).ok
    reordered = copy.deepcopy(bundle)
    reordered["attestations"].reverse()
    assert not verify_bundle(reordered, trusted_keys=jwks()["keys"]).ok


def test_bug6_portal_refuses_a_nul_in_the_path(world: ApiWorld) -> None:
    """Fixed (trading/views.py refuses a NUL in a URL value); kept as a regression test. The API answers 400
    through config.api.errors, which maps the DataError."""
    client = Client(raise_request_exception=False)
    client.force_login(world.actors["trader_A"].user)
    for path in ("/receipts/%00/", "/markets/%00/"):
        response = client.get(path)
        assert response.status_code in (400, 404), (path, response.status_code)


def test_bug7_attestation_submit_does_not_reveal_another_members_lot(world: ApiWorld) -> None:
    """Any member with a registered key passes the "operator or signer" gate for any lot id, and the
    mismatch error names the lot's reference ("WH0001/B000123"): lot ids enumerate other members' lots.
    To a member that is neither the operator nor related to the lot, the lot must not exist (404)."""
    other_lot = world.worlds["A"].warehouse.lots.first()
    assert other_lot is not None
    outsider = world.actors["trader_B"]
    assert outsider.member is not None
    document = {**origin_document(other_lot), "lot": "NOT/THIS-LOT"}
    response = api(world, "trader_B").post(f"/api/v1/lots/{other_lot.pk}/attestations", {
        "kind": "origin", "document": document, "signature": Signer(outsider.member).sign(document)})
    assert other_lot.reference not in response.content.decode()
    assert response.status_code == 404, response.content[:300]


def test_bug8_api_login_says_locked_out_when_it_is() -> None:
    UserFactory(member=None, username="locked-api")
    client = Client()
    for _ in range(5):
        client.post("/api/v1/auth/token", {"username": "locked-api", "password": "wrong-password"},
                    content_type="application/json", REMOTE_ADDR="10.9.0.1")
    response = client.post("/api/v1/auth/token", {"username": "locked-api", "password": "test-password-123"},
                           content_type="application/json", REMOTE_ADDR="10.9.0.1")
    assert response.status_code == 429, response.content
    assert response.json()["code"] == "locked_out"


def test_bug9_api_login_is_throttled() -> None:
    """ObtainAuthToken sets throttle_classes = (), so TokenView's throttle_scope is dead and password guessing
    over the API is limited only by the per-username lockout (which any caller can trigger for anyone)."""
    from rest_framework.throttling import ScopedRateThrottle

    from members.api import TokenView

    assert any(isinstance(t, ScopedRateThrottle) for t in TokenView().get_throttles())

