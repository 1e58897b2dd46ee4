"""Ed25519 public keys as members hand them to us: parsing, validation and RFC 7638 key ids.

Pure (no Django): receipts' signing and the offline verifier use the same functions.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from config.errors import ValidationFailed


def b64url_encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    if not isinstance(text, str) or not text or any(c not in _B64URL for c in text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


_B64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def _malformed(reason: str) -> ValidationFailed:
    return ValidationFailed(f"Malformed Ed25519 public key: {reason}.", code="malformed_key", field="public_key")


def parse_public_key(value: Any) -> bytes:
    """Accept a raw key as base64url (32 bytes), a JWK (OKP/Ed25519) or a PEM; return the raw 32 bytes."""
    if isinstance(value, dict):
        if value.get("kty") != "OKP" or value.get("crv") != "Ed25519":
            raise _malformed("a JWK must have kty OKP and crv Ed25519")
        if "d" in value:
            raise _malformed("the JWK carries a private key; send only the public part")
        value = value.get("x", "")
    if not isinstance(value, str) or not value.strip():
        raise _malformed("expected base64url text, a JWK object or a PEM")
    text = value.strip()
    if text.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(text.encode("ascii"))
        except (ValueError, TypeError, UnicodeEncodeError) as exc:
            raise _malformed("the PEM could not be read") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise _malformed("the PEM holds a key of another algorithm")
        return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    try:
        raw = b64url_decode(text)
    except ValueError as exc:
        raise _malformed("not valid base64url") from exc
    if len(raw) != 32:
        raise _malformed(f"an Ed25519 public key is 32 bytes, got {len(raw)}")
    try:
        Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise _malformed("not a point on the curve") from exc
    return raw


def public_jwk(raw: bytes) -> dict[str, str]:
    return {"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(raw)}


def key_id(raw: bytes) -> str:
    """RFC 7638 thumbprint: SHA-256 over the required members in lexical order, no whitespace."""
    jwk = public_jwk(raw)
    canonical = json.dumps({k: jwk[k] for k in ("crv", "kty", "x")}, separators=(",", ":"), sort_keys=True)
    return b64url_encode(hashlib.sha256(canonical.encode("ascii")).digest())
