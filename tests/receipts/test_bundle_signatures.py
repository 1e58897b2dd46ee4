"""The bundle verifier's signature checks and the fast paths behind them: every Ed25519
verification runs in one batch after the parsing and replay, and a signature that does
not verify still fails its own check (whatever else that check said, and even when the
verification stopped early); the signature decoder, the one-pass impurity totals and the
kg-quantity test agree with the slower definitions they replace."""

from __future__ import annotations

import copy
import json
import os
from decimal import Decimal
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

import receipts.bundles as bundles
from receipts.catalogue import load_catalogue
from receipts.chain import event_data_problems, issued_data, new_event, seal
from receipts.grading import AssayProfile, _totals_ppb
from receipts.signing import (
    b64url_decode,
    b64url_encode,
    key_id,
    registered_key_jwk,
    sign_document,
    signature_bytes,
    signature_from_text,
)

LOT_REF = "SH01/GA-2026-0001"
LOT = {"ref": LOT_REF, "metal": "Ga", "form": "ingot", "net_mass_kg": "1000.000", "warehouse": "SH01"}


def _party(member: str, role: str) -> tuple[Ed25519PrivateKey, str, dict[str, Any]]:
    private_key = Ed25519PrivateKey.generate()
    jwk = registered_key_jwk(private_key.public_key(), member=member, roles=[role], valid_from="2025-01-01T00:00:00Z")
    return private_key, key_id(private_key.public_key()), jwk


def _bundle(*, lab_named: str = "M-LAB") -> dict[str, Any]:
    """A root receipt with an assay and an origin attestation and three events, as an
    outside verifier holds it (the exported bytes, parsed)."""
    platform, platform_kid, platform_jwk = _party("M-INGOT", "platform")
    lab, lab_kid, lab_jwk = _party("M-LAB", "assay_lab")
    warehouse, warehouse_kid, warehouse_jwk = _party("M-WH", "warehouse")
    assay = {
        "type": "assay", "id": "COA-1", "lot": LOT_REF, "lab": lab_named, "method": "GDMS",
        "sampledAt": "2026-01-05T08:00:00Z", "issuedAt": "2026-01-06T12:00:00Z", "purityPercent": "99.99995",
        "impurities": [{"element": e, "value": v, "unit": "ppb"} for e, v in [("O", "2"), ("C", "1"), ("Fe", "3")]],
        "properties": [],
    }
    origin = {"type": "origin", "lot": LOT_REF, "issuedAt": "2026-01-03T09:00:00Z", "smelterId": "CID003027",
              "smelterName": "Demo Smelter", "mineCountry": "CN", "dueDiligenceScheme": "RMAP"}
    attestations = [
        {"type": "assay", "document": assay, "signature": sign_document(assay, lab, lab_kid)},
        {"type": "origin", "document": origin, "signature": sign_document(origin, warehouse, warehouse_kid)},
    ]
    spec = load_catalogue().grade_spec("GA-6N")
    steps = [
        ("issued", "2026-01-10T09:00:00Z", issued_data(
            metal="Ga", grade="GA-6N", form="ingot", quantity="1000.000", warehouse="SH01", holder="M-A",
            lot=LOT, grade_spec=spec, attestations=attestations)),
        ("encumbered", "2026-01-11T10:00:00Z", {"order": "O-1"}),
        ("transferred", "2026-01-11T10:00:01Z", {"from": "M-A", "to": "M-B", "quantity": "1000.000", "trade": "T-1"}),
    ]
    chain: list[Any] = []
    for seq, (kind, at, data) in enumerate(steps, start=1):
        event = new_event(receipt="R-1", seq=seq, kind=kind, at=at, data=data,
                          prev_hash=chain[-1]["hash"] if chain else None)
        chain.append(seal(event, platform, platform_kid))
    header = {"number": "R-1", "metal": "Ga", "grade": "GA-6N", "form": "ingot", "quantity": "1000.000",
              "warehouse": "SH01", "lot": LOT_REF, "holder": "M-B", "status": "active"}
    built = bundles.build_bundle(
        receipt=header, lot=LOT, grade_spec=spec, attestations=attestations, chain=chain,
        keys=[platform_jwk, lab_jwk, warehouse_jwk], exported_at="2026-02-01T00:00:00Z",
        platform_key=platform, platform_kid=platform_kid)
    parsed: dict[str, Any] = json.loads(bundles.bundle_bytes(built))
    return parsed


def _other_signature(signature: dict[str, str]) -> dict[str, str]:
    """Well-formed (86 base64url characters, canonical) but not the signature of anything
    here: passes every check but the Ed25519 equation."""
    return dict(signature, sig=b64url_encode(os.urandom(64)))


@pytest.fixture(scope="module")
def good() -> dict[str, Any]:
    return _bundle()


def _check(result: bundles.VerificationResult, name: str) -> bundles.Check:
    return result.check(name)


def test_good_bundle_verifies_every_signature(good: dict[str, Any]) -> None:
    result = bundles.verify_bundle(good)
    assert result.ok, result.failures
    signature_checks = [c for c in result.checks if "signature" in c.name or c.name == "bundle seal"]
    assert len(signature_checks) == 6  # 2 attestations, 3 events, the seal
    assert all(c.detail.startswith("EdDSA by ") for c in signature_checks)


@pytest.mark.parametrize("where", ["attestation", "event", "seal"])
def test_a_signature_that_does_not_verify_fails_its_own_check(good: dict[str, Any], where: str) -> None:
    tampered = copy.deepcopy(good)
    if where == "attestation":
        entry = tampered["attestations"][1]
        entry["signature"] = _other_signature(entry["signature"])
        name, kid = "attestation 2 (origin): signature", entry["signature"]["kid"]
    elif where == "event":
        sealed = tampered["chain"][1]
        sealed["sig"] = _other_signature(sealed["sig"])
        name, kid = "event R-1#2 encumbered: platform signature", sealed["sig"]["kid"]
    else:
        tampered["seal"] = _other_signature(tampered["seal"])
        name, kid = "bundle seal", tampered["seal"]["kid"]
    result = bundles.verify_bundle(tampered)
    assert not result.ok
    assert _check(result, name) == (name, False, f"signature by {kid} does not verify")
    others = [c for c in result.checks if c.name != name and "binding" not in c.name]
    assert all(c.ok for c in others), result.failures


def test_a_bad_signature_outranks_the_other_faults_of_its_check() -> None:
    # The certificate names another lab than the key's holder; with a signature that also
    # does not verify, the check says the latter, as when verification ran first.
    mismatched = _bundle(lab_named="M-OTHER-LAB")
    result = bundles.verify_bundle(mismatched)
    assert "certificate names lab 'M-OTHER-LAB'" in _check(result, "attestation 1 (assay): signature").detail
    mismatched["attestations"][0]["signature"] = _other_signature(mismatched["attestations"][0]["signature"])
    detail = _check(bundles.verify_bundle(mismatched), "attestation 1 (assay): signature").detail
    assert detail == f"signature by {mismatched['attestations'][0]['signature']['kid']} does not verify"


def test_signatures_listed_before_a_stop_are_still_verified(good: dict[str, Any], monkeypatch: Any) -> None:
    tampered = copy.deepcopy(good)
    tampered["chain"][0]["sig"] = _other_signature(tampered["chain"][0]["sig"])

    def crash(self: Any, state: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(bundles._Verifier, "_check_grade", crash)
    result = bundles.verify_bundle(tampered)
    assert not result.check("verification completed").ok
    assert not result.check("event R-1#1 issued: platform signature").ok
    assert result.check("event R-1#2 encumbered: platform signature").ok
    assert "bundle seal" not in {c.name for c in result.checks}  # never reached


# --- the fast paths agree with what they replace -------------------------------------------------


def _decode_reference(text: str) -> bytes | None:
    try:
        raw = b64url_decode(text)
    except ValueError:
        return None
    return raw if len(raw) == 64 else None


_B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@settings(max_examples=400, deadline=None)
@given(st.binary(min_size=64, max_size=64), st.integers(min_value=0, max_value=85),
       st.sampled_from(_B64URL + "+/= \n.é\x00"))
def test_signature_decoder_matches_b64url_decode(raw: bytes, position: int, replacement: str) -> None:
    text = b64url_encode(raw)
    assert signature_from_text(text) == raw
    changed = text[:position] + replacement + text[position + 1:]
    assert signature_from_text(changed) == _decode_reference(changed)
    assert signature_bytes({"alg": "EdDSA", "kid": "k", "sig": changed}) == _decode_reference(changed)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=_B64URL + "+/=", min_size=84, max_size=88))
def test_signature_decoder_matches_on_any_text(text: str) -> None:
    assert signature_from_text(text) == _decode_reference(text)


_AMOUNTS = st.sampled_from(["0", "0.5", "1", "3", "12.25", "1E-30", "12345678901234567890.123456789", "7.25E+3"])


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["O", "C", "N", "H", "Si", "Fe", "Cu", "Pb", "Zn", "Ga", "In"]),
                       _AMOUNTS.map(Decimal), max_size=11))
def test_one_pass_totals_match_total_ppb(table: dict[str, Decimal]) -> None:
    # Same additions in the same order: equal to the digit, rounding at 28 digits included.
    assay = AssayProfile(purity_percent=Decimal("99.9999"), impurities_ppb=table, properties={})
    for matrix in ("Ga", "In"):
        expected = (assay.total_ppb(matrix, metallic_only=True), assay.total_ppb(matrix, metallic_only=False))
        totals = _totals_ppb(assay, matrix)
        assert totals == expected
        assert [str(t) for t in totals] == [str(t) for t in expected]


@pytest.mark.parametrize(("quantity", "fine"), [
    ("0.000", False), ("0.001", True), ("1.000", True), ("10.000", True), ("100.500", True),
    ("00.000", False), ("-1.000", False), ("1.00", False), ("1", False), (1, False), (None, False),
])
def test_kg_quantities_must_be_positive_with_three_decimals(quantity: Any, fine: bool) -> None:
    data = {"from": "M-A", "to": "M-B", "quantity": quantity}
    problems = event_data_problems("transferred", data)
    assert (not problems) is fine, problems
