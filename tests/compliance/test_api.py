"""Members submit and read their own end-use declarations and export licences through the API."""

from __future__ import annotations

from typing import Any

import pytest

from compliance.models import EndUseDeclaration, ExportLicence
from tests.factories.compliance import metal, validity

DECLARATIONS = "/api/v1/compliance/end-use-declarations"
LICENCES = "/api/v1/compliance/export-licences"


def dates() -> dict[str, str]:
    return {k: v.isoformat() for k, v in validity().items()}


def declaration_body(**overrides: Any) -> dict[str, Any]:
    return {"metal": "Ga", "end_user": "Lumen Displays GmbH", "end_use": "IGZO backplanes",
            "destination_country": "DE", **dates(), **overrides}


def licence_body(**overrides: Any) -> dict[str, Any]:
    return {"licence_number": "MOFCOM-API-1", "metal": "Ga", "quantity_cap_kg": "250.000",
            "consignee": "Lumen Displays GmbH", "end_user": "Lumen Displays GmbH", "end_use": "IGZO backplanes",
            "destination_country": "DE", **dates(), **overrides}


@pytest.fixture(autouse=True)
def catalogue(db: None) -> None:
    metal("Ga")
    metal("In")


@pytest.mark.django_db
def test_submit_a_declaration_and_replay_it(trader: Any) -> None:
    first = trader.post(DECLARATIONS, declaration_body(), key="eud-1")
    assert first.status_code == 201, first.content
    body = first.json()
    assert (body["metal"], body["status"], body["destination_country"]) == ("Ga", "pending", "DE")
    replay = trader.post(DECLARATIONS, declaration_body(), key="eud-1")
    assert replay.content == first.content and replay["Idempotent-Replayed"] == "true"
    assert EndUseDeclaration.objects.count() == 1
    assert trader.post(DECLARATIONS, declaration_body(), key=None).json()["code"] == "idempotency_key_missing"


@pytest.mark.django_db
def test_bad_input_is_a_stable_error_and_stores_nothing(trader: Any) -> None:
    cases = [
        (DECLARATIONS, declaration_body(metal="Zz"), 400, "unknown_metal"),
        (DECLARATIONS, declaration_body(valid_to="2001-01-01", valid_from="2000-01-01"), 400, "invalid_validity"),
        (DECLARATIONS, declaration_body(valid_from="yesterday"), 400, "invalid_input"),
        (LICENCES, licence_body(quantity_cap_kg="0"), 400, "invalid_quantity"),
        (LICENCES, licence_body(quantity_cap_kg=-3), 400, "invalid_quantity"),
        (LICENCES, licence_body(metal="Re"), 400, "metal_not_controlled"),
        (LICENCES, licence_body(destination_country="DEU"), 400, "invalid_input"),
    ]
    for url, body, status, code in cases:
        response = trader.post(url, body)
        assert (response.status_code, response.json()["code"]) == (status, code), (body, response.json())
    assert not EndUseDeclaration.objects.exists() and not ExportLicence.objects.exists()


@pytest.mark.django_db
def test_members_see_only_their_own(member_client: Any) -> None:
    mine, theirs = member_client(["trader"], country="DE"), member_client(["trader"])
    own = mine.post(DECLARATIONS, declaration_body()).json()
    other = theirs.post(DECLARATIONS, declaration_body(metal="In")).json()
    own_licence = mine.post(LICENCES, licence_body()).json()
    other_licence = theirs.post(LICENCES, licence_body(licence_number="MOFCOM-API-2")).json()

    listing = mine.get(DECLARATIONS).json()
    assert listing["count"] == 1 and [d["id"] for d in listing["results"]] == [own["id"]]
    assert mine.get(f"{DECLARATIONS}/{own['id']}").json()["end_user"] == "Lumen Displays GmbH"
    hidden = mine.get(f"{DECLARATIONS}/{other['id']}")
    assert (hidden.status_code, hidden.json()["code"]) == (404, "not_found")
    assert mine.get(f"{DECLARATIONS}/999999").status_code == 404

    assert [lic["licence_number"] for lic in mine.get(LICENCES).json()["results"]] == ["MOFCOM-API-1"]
    detail = mine.get(f"{LICENCES}/{own_licence['id']}").json()
    assert (detail["quantity_cap_kg"], detail["drawn_kg"], detail["remaining_kg"]) == ("250.000", "0.000", "250.000")
    assert mine.get(f"{LICENCES}/{other_licence['id']}").status_code == 404


@pytest.mark.django_db
def test_list_filters_and_pagination(trader: Any) -> None:
    for symbol in ("Ga", "In", "Ga"):
        assert trader.post(DECLARATIONS, declaration_body(metal=symbol)).status_code == 201
    assert trader.get(DECLARATIONS + "?metal=ga").json()["count"] == 2
    assert trader.get(DECLARATIONS + "?status=approved").json()["count"] == 0
    page = trader.get(DECLARATIONS + "?limit=1&offset=1").json()
    assert page["count"] == 3 and len(page["results"]) == 1 and page["next"] and page["previous"]


@pytest.mark.django_db
def test_anonymous_and_memberless_users_are_refused(client: Any) -> None:
    assert client.get(DECLARATIONS).status_code == 401
    from tests.conftest import client_for
    from tests.factories.members import UserFactory

    staff = client_for(UserFactory(member=None, is_staff=True))
    assert staff.get(LICENCES).json()["code"] == "no_member"


@pytest.mark.django_db
def test_the_schema_documents_the_endpoints(client: Any) -> None:
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    for path in ("/api/v1/compliance/end-use-declarations", "/api/v1/compliance/export-licences/{id}"):
        assert path in schema["paths"]
    submit = schema["paths"]["/api/v1/compliance/export-licences"]["post"]
    assert any(p["name"] == "Idempotency-Key" for p in submit.get("parameters", []))
