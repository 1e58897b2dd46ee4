"""Ed25519 keys and signatures for receipts and attestations: key ids, JWK and PEM
forms, detached signatures over canonical bytes, and private keys encrypted at rest.

Signature format (chosen over JWS; see receipts/BUNDLE_FORMAT.md): a detached EdDSA
(Ed25519, RFC 8032) signature over the RFC 8785 canonical bytes of the document itself,
carried next to the document as {"alg": "EdDSA", "kid": <key id>, "sig": <base64url>}.
It is not a JWS: there is no protected header and no base64url payload, so a verifier
needs only a JSON canonicaliser and Ed25519. Key ids are RFC 7638 JWK thumbprints
(SHA-256, base64url) of the public key, so a kid cannot be attached to another key.

Private keys at rest: AES-256-GCM under a key derived with HKDF-SHA256 from a random
platform secret (>= 32 bytes, from the environment or a file) and a fresh random salt
per blob. HKDF, not scrypt, because the input is a random secret, not a password.
"""

from __future__ import annotations

import binascii
import hashlib
import os
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from receipts.canonical import canonical_bytes
from receipts.errors import MALFORMED_KEY, UNDECRYPTABLE_KEY, WEAK_SECRET, ProofError

ALG = "EdDSA"
KEY_BYTES = 32
SIGNATURE_BYTES = 64
MIN_SECRET_BYTES = 32

# JWK members Ingot adds to a published key (RFC 7517 allows extra members).
MEMBER = "ingot:member"
ROLES = "ingot:roles"
VALID_FROM = "ingot:validFrom"
VALID_TO = "ingot:validTo"
REVOKED_AT = "ingot:revokedAt"

_B64URL_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_SPARE_4_ZERO = frozenset(_B64URL_ALPHABET[::16])  # last char of a 2-char tail
_SPARE_2_ZERO = frozenset(_B64URL_ALPHABET[::4])  # last char of a 3-char tail
_PADDING = (b"", b"", b"==", b"=")
# bytes.translate with a 256-byte table runs in C; str.translate with a dict does not.
_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")


# --- base64url (RFC 4648 section 5, no padding, canonical only) ----------------------------


def b64url_encode(raw: bytes) -> str:
    return binascii.b2a_base64(raw, newline=False).rstrip(b"=").translate(_TO_URLSAFE).decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Strict decoding: no padding, no foreign characters, and no non-zero spare bits,
    so one byte string has one text form and a changed character is always a change."""
    if type(text) is not str or "+" in text or "/" in text or "=" in text:
        raise ValueError("not unpadded base64url")
    tail = len(text) % 4
    # The last character of a 2- or 3-character tail carries 4 or 2 spare bits that must
    # be zero; otherwise several texts would decode to the same bytes.
    if tail and text[-1] not in (_SPARE_4_ZERO if tail == 2 else _SPARE_2_ZERO):
        raise ValueError("not canonical unpadded base64url")
    try:
        return binascii.a2b_base64(text.encode("ascii").translate(_TO_STANDARD) + _PADDING[tail], strict_mode=True)
    except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
        raise ValueError("not unpadded base64url") from exc


# --- keys -----------------------------------------------------------------------------------


def generate_private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def generate_key_pair() -> tuple[Ed25519PrivateKey, Ed25519PublicKey]:
    private_key = Ed25519PrivateKey.generate()
    return private_key, private_key.public_key()


def public_key_bytes(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def thumbprint_of_x(x: str) -> str:
    """RFC 7638 thumbprint from the base64url `x` of an Ed25519 OKP key: SHA-256 of
    {"crv":"Ed25519","kty":"OKP","x":...} (required members, lexicographic order, no
    whitespace). `x` must already be validated base64url, which needs no escaping."""
    members = '{"crv":"Ed25519","kty":"OKP","x":"' + x + '"}'
    return b64url_encode(hashlib.sha256(members.encode("ascii")).digest())


def key_id(public_key: Ed25519PublicKey) -> str:
    """The key id Ingot uses everywhere: the RFC 7638 JWK thumbprint."""
    return thumbprint_of_x(b64url_encode(public_key_bytes(public_key)))


def public_key_to_jwk(public_key: Ed25519PublicKey) -> dict[str, str]:
    x = b64url_encode(public_key_bytes(public_key))
    return {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": thumbprint_of_x(x)}


def registered_key_jwk(
    public_key: Ed25519PublicKey,
    *,
    member: str,
    roles: list[str],
    valid_from: str,
    valid_to: str | None = None,
    revoked_at: str | None = None,
) -> dict[str, Any]:
    """A public key as published in JWKS and embedded in bundles: the JWK plus who holds
    it, in which roles, and when it may sign (ISO 8601 UTC strings, 'Z' suffix)."""
    jwk: dict[str, Any] = dict(public_key_to_jwk(public_key))
    jwk[MEMBER] = member
    jwk[ROLES] = sorted(roles)
    jwk[VALID_FROM] = valid_from
    jwk[VALID_TO] = valid_to
    jwk[REVOKED_AT] = revoked_at
    return jwk


def _malformed(message: str) -> ProofError:
    return ProofError(MALFORMED_KEY, message, {})


def _key_from_raw(raw: bytes) -> Ed25519PublicKey:
    if len(raw) != KEY_BYTES:
        raise _malformed(f"an Ed25519 public key is {KEY_BYTES} bytes, got {len(raw)}")
    try:
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise _malformed(f"not an Ed25519 public key: {exc}") from exc


def jwk_to_public_key(jwk: dict[str, Any]) -> Ed25519PublicKey:
    """The public key of an OKP/Ed25519 JWK. Refuses private JWKs (a 'd' member means
    someone is about to publish a secret) and a 'kid' that is not the key's thumbprint."""
    if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
        raise _malformed("JWK must have kty 'OKP' and crv 'Ed25519'")
    if "d" in jwk:
        raise _malformed("JWK holds a private key ('d'); publish public keys only")
    x = jwk.get("x")
    try:
        raw = b64url_decode(x) if isinstance(x, str) else b""
    except ValueError as exc:
        raise _malformed(f"JWK 'x' is not base64url: {exc}") from exc
    key = _key_from_raw(raw)
    kid = jwk.get("kid")
    if kid is not None and kid != thumbprint_of_x(x):  # type: ignore[arg-type]
        raise _malformed("JWK 'kid' is not the RFC 7638 thumbprint of its key")
    return key


def parse_public_key(value: str | bytes | dict[str, Any] | Ed25519PublicKey) -> Ed25519PublicKey:
    """A public key given as a JWK (dict), PEM (str or bytes), base64url of the raw 32
    bytes (str) or the raw bytes; ProofError(malformed_key) with the reason otherwise."""
    if isinstance(value, Ed25519PublicKey):
        return value
    if isinstance(value, dict):
        return jwk_to_public_key(value)
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("-----BEGIN"):
            return _from_pem(text.encode("ascii", "replace"))
        try:
            raw = b64url_decode(text)
        except ValueError as exc:
            raise _malformed(f"public key is neither PEM nor base64url of 32 bytes: {exc}") from exc
        return _key_from_raw(raw)
    if isinstance(value, (bytes, bytearray)):
        raw = bytes(value)
        if raw.lstrip().startswith(b"-----BEGIN"):
            return _from_pem(raw)
        return _key_from_raw(raw)
    raise _malformed(f"unsupported public key type {type(value).__name__}")


def _from_pem(pem: bytes) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise _malformed(f"unreadable PEM public key: {exc}") from exc
    except Exception as exc:  # the backend raises its own types on some garbage input
        raise _malformed(f"unreadable PEM public key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise _malformed(f"PEM holds a {type(key).__name__}, not an Ed25519 public key")
    return key


def public_key_to_pem(public_key: Ed25519PublicKey) -> str:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


# --- detached signatures --------------------------------------------------------------------


def sign_bytes(message: bytes, private_key: Ed25519PrivateKey, kid: str) -> dict[str, str]:
    return {"alg": ALG, "kid": kid, "sig": b64url_encode(private_key.sign(message))}


def sign_document(doc: dict[str, Any], private_key: Ed25519PrivateKey, kid: str) -> dict[str, str]:
    """Detached EdDSA signature over the RFC 8785 bytes of `doc`."""
    return sign_bytes(canonical_bytes(doc), private_key, kid)


# base64url -> standard alphabet for binascii; '+' and '/' are not base64url, so they
# become '!', which strict decoding refuses.
_FROM_URLSAFE_STRICT = bytes.maketrans(b"-_+/", b"+/!!")
# The last of a signature's 86 characters carries 4 spare bits that must be zero.
_SIGNATURE_LAST = frozenset("AQgw")


def signature_from_text(sig: str) -> bytes | None:
    """The 64 bytes of an Ed25519 signature written as 86 base64url characters, or None
    for anything else: the same acceptance as `b64url_decode` plus the length check,
    with the per-character work left to binascii's strict mode."""
    if len(sig) != 86 or sig[-1] not in _SIGNATURE_LAST:
        return None
    try:
        return binascii.a2b_base64(sig.encode("ascii").translate(_FROM_URLSAFE_STRICT) + b"==", strict_mode=True)
    except (binascii.Error, UnicodeEncodeError):
        return None


def signature_bytes(signature: Any) -> bytes | None:
    """The 64 raw signature bytes of a well-formed {alg, kid, sig}, else None."""
    if not isinstance(signature, dict) or signature.get("alg") != ALG or not isinstance(signature.get("kid"), str):
        return None
    sig = signature.get("sig")
    return signature_from_text(sig) if type(sig) is str else None


def verify_bytes(message: bytes, signature: Any, public_key: Ed25519PublicKey) -> bool:
    raw = signature_bytes(signature)
    if raw is None:
        return False
    try:
        public_key.verify(raw, message)
    except InvalidSignature:
        return False
    return True


def verify_document(doc: dict[str, Any], signature: Any, public_key: Ed25519PublicKey | dict[str, Any] | str) -> bool:
    """True iff `signature` is a well-formed EdDSA signature of `doc`'s canonical bytes
    by `public_key`. A document that cannot be canonicalised (a float, say) raises
    ProofError: it was never signable, which is a different fault from a bad signature.
    The kid is not checked here; callers pick the key by kid."""
    return verify_bytes(canonical_bytes(doc), signature, parse_public_key(public_key))


# --- private keys at rest -------------------------------------------------------------------

_BLOB_PREFIX = "ingot-ed25519-v1"
_HKDF_INFO = b"ingot/receipts/signing-key/v1"


def _wrapping_key(secret: bytes, salt: bytes) -> bytes:
    if not isinstance(secret, (bytes, bytearray)) or len(secret) < MIN_SECRET_BYTES:
        raise ProofError(WEAK_SECRET, f"the key-encryption secret must be at least {MIN_SECRET_BYTES} random bytes", {})
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=_HKDF_INFO).derive(bytes(secret))


def encrypt_private_key(private_key: Ed25519PrivateKey, secret: bytes) -> str:
    """'ingot-ed25519-v1.<salt>.<nonce>.<ciphertext>' (base64url parts): the raw private
    key sealed with AES-256-GCM; the prefix is authenticated as associated data."""
    raw = private_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    salt, nonce = os.urandom(16), os.urandom(12)
    sealed = AESGCM(_wrapping_key(secret, salt)).encrypt(nonce, raw, _BLOB_PREFIX.encode("ascii"))
    return ".".join((_BLOB_PREFIX, b64url_encode(salt), b64url_encode(nonce), b64url_encode(sealed)))


def decrypt_private_key(blob: str, secret: bytes) -> Ed25519PrivateKey:
    """The private key from `encrypt_private_key`'s blob; ProofError(undecryptable_key)
    for a wrong secret or a damaged blob."""
    parts = blob.split(".") if isinstance(blob, str) else []
    if len(parts) != 4 or parts[0] != _BLOB_PREFIX:
        raise ProofError(UNDECRYPTABLE_KEY, "not an ingot-ed25519-v1 key blob", {})
    try:
        salt, nonce, sealed = (b64url_decode(p) for p in parts[1:])
    except ValueError as exc:
        raise ProofError(UNDECRYPTABLE_KEY, "damaged key blob", {}) from exc
    if len(salt) != 16 or len(nonce) != 12:
        raise ProofError(UNDECRYPTABLE_KEY, "damaged key blob", {})
    try:
        raw = AESGCM(_wrapping_key(secret, salt)).decrypt(nonce, sealed, _BLOB_PREFIX.encode("ascii"))
    except InvalidTag as exc:
        raise ProofError(UNDECRYPTABLE_KEY, "wrong secret or damaged key blob", {}) from exc
    return Ed25519PrivateKey.from_private_bytes(raw)
