"""Members register Ed25519 public keys; malformed keys get a clear error and nothing is stored."""

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import generate_private_key

from members.keys import b64url_encode, key_id
from members.models import SigningKey

pytestmark = pytest.mark.django_db
URL = "/api/v1/members/me/keys"


def _raw() -> bytes:
    return Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def test_register_raw_key_returns_rfc7638_kid(trader) -> None:
    raw = _raw()
    response = trader.post(URL, {"public_key": b64url_encode(raw), "label": "lab key 2026"})
    assert response.status_code == 201, response.content
    assert response.json()["kid"] == key_id(raw)
    assert SigningKey.objects.get(kid=key_id(raw)).member == trader.user.member


def test_register_jwk_and_pem(trader) -> None:
    raw = _raw()
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(raw)}
    assert trader.post(URL, {"public_key": jwk}).status_code == 201
    pem = Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    assert trader.post(URL, {"public_key": pem}).status_code == 201
    assert SigningKey.objects.count() == 2


@pytest.mark.parametrize("bad", [
    "not-base64!!", b64url_encode(b"\x01" * 31), "", {"kty": "RSA", "n": "x"}, 12345,
    {"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(b"\x02" * 32), "d": "secret"},
])
def test_malformed_key_is_400_with_code_and_nothing_stored(trader, bad) -> None:
    response = trader.post(URL, {"public_key": bad})
    assert response.status_code == 400
    assert response.json()["code"] in {"malformed_key", "invalid_input"}
    assert SigningKey.objects.count() == 0


def test_rsa_pem_is_refused(trader) -> None:
    pem = generate_private_key(public_exponent=65537, key_size=2048).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    response = trader.post(URL, {"public_key": pem})
    assert response.status_code == 400
    assert response.json()["code"] == "malformed_key"


def test_revoke_then_list_shows_revocation_and_others_cannot_touch_it(trader, member_client) -> None:
    raw = _raw()
    kid = trader.post(URL, {"public_key": b64url_encode(raw)}).json()["kid"]
    other = member_client(["trader"])
    assert other.post(f"{URL}/{kid}/revoke", {"reason": "not mine"}, key=None).status_code == 404
    response = trader.post(f"{URL}/{kid}/revoke", {"reason": "rotated"}, key=None)
    assert response.status_code == 200 and response.json()["revoked_at"]
    assert trader.post(f"{URL}/{kid}/revoke", {"reason": "again"}, key=None).json()["code"] == "key_revoked"
    assert other.get(URL).json() == []
