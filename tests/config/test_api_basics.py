"""One error format across the API, a schema that documents errors, docs served without a CDN."""

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def test_malformed_json_is_400_malformed_json(trader) -> None:
    response = trader.generic("POST", "/api/v1/members/me/keys", "{not json", content_type="application/json",
                              HTTP_IDEMPOTENCY_KEY="m-1")
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "malformed_json" and body["message"] and "details" in body


def test_anonymous_is_401_not_authenticated() -> None:
    response = Client().get("/api/v1/members/me")
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


def test_bad_token_is_401() -> None:
    response = Client().get("/api/v1/members/me", HTTP_AUTHORIZATION="Token nope")
    assert response.status_code == 401
    assert response.json()["code"] == "authentication_failed"


def test_validation_error_shape(trader) -> None:
    response = trader.post("/api/v1/members/me/keys", {"label": "x" * 500})
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid_input"
    assert "public_key" in body["details"]["fields"]


def test_unknown_url_under_api_is_404() -> None:
    assert Client().get("/api/v1/nothing-here").status_code == 404


def test_me_shows_member_roles_and_kyc(member_client) -> None:
    client = member_client(["warehouse", "trader"], country="NL")
    body = client.get("/api/v1/members/me").json()
    assert body["roles"] == ["trader", "warehouse"]
    assert body["kyc_status"] == "approved" and body["country"] == "NL"


def test_token_endpoint_gives_token() -> None:
    from tests.factories.members import UserFactory

    user = UserFactory()
    response = Client().post("/api/v1/auth/token", {"username": user.username, "password": "test-password-123"},
                             content_type="application/json")
    assert response.status_code == 200 and len(response.json()["token"]) == 40


def test_request_id_is_echoed() -> None:
    response = Client().get("/healthz", HTTP_X_REQUEST_ID="abc-123")
    assert response["X-Request-ID"] == "abc-123"
    assert len(Client().get("/healthz")["X-Request-ID"]) == 32


def test_schema_documents_errors_and_idempotency_key() -> None:
    response = Client().get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    import json

    schema = json.loads(response.content)
    register = schema["paths"]["/api/v1/members/me/keys"]["post"]
    assert {"400", "401", "403", "409", "422"} <= set(register["responses"])
    assert any(p["name"] == "Idempotency-Key" and p["required"] for p in register["parameters"])
    assert "Error" in schema["components"]["schemas"]


def test_swagger_ui_is_served_locally() -> None:
    html = Client().get("/api/docs/").content.decode()
    assert "cdn." not in html and "unpkg" not in html and "jsdelivr" not in html
    assert "/static/drf_spectacular_sidecar/" in html
