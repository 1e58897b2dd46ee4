"""Canonical bytes (RFC 8785, byte-identical to the rfc8785 library) and Ed25519 keys,
key ids, detached signatures and private keys at rest."""

from __future__ import annotations

import base64
import string
from decimal import Decimal
from typing import Any

import pytest
import rfc8785
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from receipts.canonical import (
    canonical_bytes,
    content_hash,
    is_plain,
    parse_utc,
    reference_canonical_bytes,
    utc_stamp,
)
from receipts.errors import ProofError
from receipts.signing import (
    b64url_decode,
    b64url_encode,
    decrypt_private_key,
    encrypt_private_key,
    generate_key_pair,
    jwk_to_public_key,
    key_id,
    parse_public_key,
    public_key_bytes,
    public_key_to_jwk,
    public_key_to_pem,
    registered_key_jwk,
    sign_document,
    verify_document,
)

# RFC 8032 section 7.1, test 1 / RFC 8037 appendix A
RFC8032_SECRET = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_SIGNATURE = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065"
    "224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)


# --- canonical form ----------------------------------------------------------------------------


def test_rfc8785_examples() -> None:
    assert canonical_bytes({"b": 1, "a": [True, None, "x"]}) == b'{"a":[true,null,"x"],"b":1}'
    assert canonical_bytes({"€": 1, "\r": 2, "1": 3}) == '{"\\r":2,"1":3,"€":1}'.encode()
    assert canonical_bytes("\u2028\x7f\x1f") == '"\u2028\x7f\\u001f"'.encode()


def test_keys_sort_by_utf16_code_units() -> None:
    # U+1F600 is D83D DE00 in UTF-16, which sorts before U+FFFF; code-point order disagrees.
    doc = {"\U0001f600": 1, "\uffff": 2, "a": 3}
    assert canonical_bytes(doc) == rfc8785.dumps(doc)
    assert canonical_bytes(doc).index("\U0001f600".encode()) < canonical_bytes(doc).index("\uffff".encode())


@pytest.mark.parametrize(("doc", "code"), [
    ({"purity": 99.9999}, "float_in_signed_document"),
    ([1, [2, [3.0]]], "float_in_signed_document"),
    ({"qty": Decimal("1.5")}, "not_canonicalisable"),
    ({"n": 2**53}, "not_canonicalisable"),
    ({"n": -(2**53)}, "not_canonicalisable"),
    ({1: "x"}, "not_canonicalisable"),
    ({"s": "\ud800"}, "not_canonicalisable"),
    ({"s": {1, 2}}, "not_canonicalisable"),
    (float("nan"), "float_in_signed_document"),
])
def test_unsignable_documents_are_refused(doc: Any, code: str) -> None:
    with pytest.raises(ProofError) as caught:
        canonical_bytes(doc)
    assert caught.value.code == code
    with pytest.raises(ProofError):
        reference_canonical_bytes(doc)


def test_float_error_says_where() -> None:
    with pytest.raises(ProofError) as caught:
        canonical_bytes({"pcf": {"primaryDataShare": 64.5}})
    assert caught.value.details["path"] == "$.pcf.primaryDataShare"


def test_tuples_and_subclasses_serialise_like_their_bases() -> None:
    class Code(str):
        pass

    doc = {"a": (1, 2), Code("k"): Code("v"), "b": True}
    assert canonical_bytes(doc) == rfc8785.dumps(doc)


def test_self_reference_is_refused() -> None:
    doc: dict[str, Any] = {}
    doc["me"] = doc
    with pytest.raises(ProofError):
        canonical_bytes(doc)


json_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1) | json_text,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(json_text, children, max_size=5),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None)
@given(json_values)
def test_fast_canonicaliser_is_byte_identical_to_rfc8785(doc: Any) -> None:
    assert canonical_bytes(doc) == rfc8785.dumps(doc)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text(alphabet=st.sampled_from("aZ\u00e9\uffff\U0001f600\U00010000"), max_size=3),
                       st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1), max_size=8))
def test_astral_keys_match_rfc8785(doc: dict[str, int]) -> None:
    assert canonical_bytes(doc) == rfc8785.dumps(doc)


def test_content_hash() -> None:
    assert content_hash({"b": "1", "a": "2"}) == content_hash({"a": "2", "b": "1"})
    assert len(content_hash([])) == 64


def test_utc_stamps() -> None:
    moment = parse_utc("2026-01-05T09:30:00Z")
    assert moment is not None and moment.utcoffset() is not None
    assert utc_stamp(moment) == "2026-01-05T09:30:00Z"
    assert parse_utc("2026-01-05T09:30:00.25Z") is not None
    for bad in ("2026-01-05", "2026-01-05T09:30:00+00:00", "2026-01-05 09:30:00Z", "2026-02-30T00:00:00Z", 5, None):
        assert parse_utc(bad) is None


# --- base64url --------------------------------------------------------------------------------


@given(st.binary(max_size=80))
def test_b64url_round_trip(raw: bytes) -> None:
    text = b64url_encode(raw)
    assert "=" not in text and b64url_decode(text) == raw


@given(st.binary(min_size=1, max_size=80), st.sampled_from(string.ascii_letters + string.digits + "-_"))
def test_b64url_has_one_spelling(raw: bytes, last: str) -> None:
    text = b64url_encode(raw)
    variant = text[:-1] + last
    if variant == text:
        return
    try:
        decoded = b64url_decode(variant)
    except ValueError:
        return
    assert decoded != raw  # a different text never decodes to the same bytes


@pytest.mark.parametrize("text", ["a", "ab=", "a+b/", "ab c", "é", "abc\n"])
def test_b64url_refuses_junk(text: str) -> None:
    with pytest.raises(ValueError):
        b64url_decode(text)


# --- keys ----------------------------------------------------------------------------------------


def test_rfc8037_thumbprint_and_rfc8032_signature() -> None:
    private_key = Ed25519PrivateKey.from_private_bytes(RFC8032_SECRET)
    jwk = public_key_to_jwk(private_key.public_key())
    assert jwk == {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
                   "kid": "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"}
    assert private_key.sign(b"") == RFC8032_SIGNATURE


def test_public_key_forms_all_parse_to_the_same_key() -> None:
    private_key, public_key = generate_key_pair()
    raw = public_key_bytes(public_key)
    forms: list[Any] = [public_key_to_jwk(public_key), public_key_to_pem(public_key), b64url_encode(raw), raw,
                        public_key_to_pem(public_key).encode(), public_key]
    for form in forms:
        assert public_key_bytes(parse_public_key(form)) == raw


def ec_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


@pytest.mark.parametrize("bad", [
    {"kty": "EC", "crv": "P-256", "x": "AAAA"},
    {"kty": "OKP", "crv": "X25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
    {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "d": "secret"},
    {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "kid": "not-the-thumbprint"},
    {"kty": "OKP", "crv": "Ed25519", "x": "AAAA"},
    {"kty": "OKP", "crv": "Ed25519"},
    "-----BEGIN PUBLIC KEY-----\nnonsense\n-----END PUBLIC KEY-----",
    "not base64!",
    "AAAA",
    b"\x00" * 31,
    12345,
])
def test_malformed_keys_are_refused_clearly(bad: Any) -> None:
    with pytest.raises(ProofError) as caught:
        parse_public_key(bad)
    assert caught.value.code == "malformed_key"
    assert caught.value.message


def test_pem_of_another_algorithm_is_refused() -> None:
    with pytest.raises(ProofError) as caught:
        parse_public_key(ec_pem())
    assert "not an Ed25519" in caught.value.message


def test_jwk_kid_is_checked() -> None:
    _, public_key = generate_key_pair()
    jwk = public_key_to_jwk(public_key)
    assert public_key_bytes(jwk_to_public_key(jwk)) == public_key_bytes(public_key)
    assert jwk["kid"] == key_id(public_key)


def test_registered_key_carries_member_roles_and_validity() -> None:
    _, public_key = generate_key_pair()
    jwk = registered_key_jwk(public_key, member="M-LAB", roles=["assay_lab"], valid_from="2026-01-01T00:00:00Z")
    assert jwk["ingot:member"] == "M-LAB" and jwk["ingot:roles"] == ["assay_lab"]
    assert jwk["ingot:validTo"] is None and jwk["ingot:revokedAt"] is None
    assert public_key_bytes(parse_public_key(jwk)) == public_key_bytes(public_key)


# --- signatures ------------------------------------------------------------------------------------


def test_detached_signature_round_trip_and_tampering() -> None:
    private_key, public_key = generate_key_pair()
    kid = key_id(public_key)
    doc = {"type": "assay", "lot": "SH01/1", "purityPercent": "99.9999", "impurities": []}
    signature = sign_document(doc, private_key, kid)
    assert set(signature) == {"alg", "kid", "sig"} and signature["alg"] == "EdDSA" and signature["kid"] == kid
    assert len(base64.urlsafe_b64decode(signature["sig"] + "==")) == 64
    assert verify_document(doc, signature, public_key)
    assert verify_document(dict(reversed(list(doc.items()))), signature, public_key)  # member order is irrelevant
    assert verify_document(doc, signature, public_key_to_jwk(public_key))
    assert not verify_document(dict(doc, purityPercent="99.99999"), signature, public_key)
    assert not verify_document(doc, signature, generate_key_pair()[1])
    assert not verify_document(doc, dict(signature, alg="ES256"), public_key)
    assert not verify_document(doc, dict(signature, sig=signature["sig"][:-1]), public_key)
    assert not verify_document(doc, dict(signature, sig="!" * 86), public_key)
    assert not verify_document(doc, "not a signature", public_key)
    last = signature["sig"][-1]
    assert not verify_document(doc, dict(signature, sig=signature["sig"][:-1] + ("B" if last != "B" else "C")),
                               public_key)


def test_signature_is_over_rfc8785_bytes() -> None:
    private_key, public_key = generate_key_pair()
    doc = {"b": "2", "a": ["x", {"d": None, "c": True}]}
    signature = sign_document(doc, private_key, key_id(public_key))
    public_key.verify(b64url_decode(signature["sig"]), rfc8785.dumps(doc))  # raises if not


def test_unsignable_document_raises_rather_than_failing_quietly() -> None:
    private_key, public_key = generate_key_pair()
    with pytest.raises(ProofError) as caught:
        sign_document({"purityPercent": 99.9999}, private_key, key_id(public_key))
    assert caught.value.code == "float_in_signed_document"
    with pytest.raises(ProofError):
        verify_document({"purityPercent": 99.9999}, {"alg": "EdDSA", "kid": "k", "sig": "x"}, public_key)


# --- private keys at rest --------------------------------------------------------------------------


def test_private_key_encryption_round_trip() -> None:
    private_key, public_key = generate_key_pair()
    secret = bytes(range(32))
    blob = encrypt_private_key(private_key, secret)
    assert blob.startswith("ingot-ed25519-v1.")
    assert encrypt_private_key(private_key, secret) != blob  # fresh salt and nonce each time
    restored = decrypt_private_key(blob, secret)
    assert key_id(restored.public_key()) == key_id(public_key)
    raw = private_key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                    serialization.NoEncryption())
    assert b64url_encode(raw) not in blob


def test_wrong_secret_or_damaged_blob_is_refused() -> None:
    private_key, _ = generate_key_pair()
    blob = encrypt_private_key(private_key, b"s" * 32)
    for bad_blob, secret in ((blob, b"t" * 32), (blob[:-2] + ("AA" if blob[-2:] != "AA" else "BA"), b"s" * 32),
                             ("ingot-ed25519-v1.x.y.z", b"s" * 32), ("something else", b"s" * 32),
                             (blob.replace("ingot-ed25519-v1", "ingot-ed25519-v2"), b"s" * 32)):
        with pytest.raises(ProofError) as caught:
            decrypt_private_key(bad_blob, secret)
        assert caught.value.code == "undecryptable_key"


def test_weak_secret_is_refused() -> None:
    private_key, _ = generate_key_pair()
    with pytest.raises(ProofError) as caught:
        encrypt_private_key(private_key, b"short")
    assert caught.value.code == "weak_secret"


def _types_only(obj: Any) -> bool:
    """What the level-by-level check decides: exact JSON container and scalar types anywhere
    (keys and the integer range are left to the encoder)."""
    if type(obj) is dict:
        return all(_types_only(value) for value in obj.values())
    if type(obj) is list:
        return all(_types_only(value) for value in obj)
    return type(obj) in (str, int, bool, type(None))


class _Text(str):
    pass


mixed_values = st.recursive(
    st.none() | st.booleans() | st.integers() | json_text | st.floats(allow_nan=True)
    | st.decimals(allow_nan=False, places=2) | st.builds(_Text, json_text),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(json_text, children, max_size=4)
    | st.tuples(children) | st.dictionaries(st.integers(0, 9), children, max_size=2),
    max_leaves=25,
)


@settings(max_examples=500, deadline=None)
@given(mixed_values)
def test_level_check_sees_every_value_the_walk_sees(doc: Any) -> None:
    assert is_plain(doc) == _types_only(doc)


@settings(max_examples=300, deadline=None)
@given(mixed_values)
def test_every_document_gets_rfc8785_bytes_or_a_proof_error(doc: Any) -> None:
    try:
        expected: bytes | None = reference_canonical_bytes(doc)
    except ProofError:
        expected = None
    if expected is None:
        with pytest.raises(ProofError):
            canonical_bytes(doc)
    else:
        assert canonical_bytes(doc) == expected


def test_a_float_deep_in_an_untracked_dict_is_found() -> None:
    # Dicts of atomic values may be untracked by the garbage collector; the traversal must see them anyway.
    doc = {"a": [{"b": {"c": {"d": 1.5}}}]}
    with pytest.raises(ProofError) as caught:
        canonical_bytes(doc)
    assert caught.value.code == "float_in_signed_document"
    assert "$.a[0].b.c.d" in caught.value.message


def test_unsafe_integer_and_non_string_key_errors_still_say_where() -> None:
    with pytest.raises(ProofError) as caught:
        canonical_bytes({"a": [2**60]})
    assert caught.value.details == {"path": "$.a[0]"}
    with pytest.raises(ProofError) as caught:
        canonical_bytes({"a": {3: "x"}})
    assert caught.value.details == {"path": "$.a"}
