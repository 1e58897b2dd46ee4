"""Receipt bundles: a full bundle (4 attestations, a split parent, a child with its own
history) verifies, and every kind of tampering is caught by the check that names it."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from receipts.bundles import (
    BUNDLE_FORMAT,
    build_bundle,
    bundle_bytes,
    seal_payload,
    validate_attestation,
    verify_bundle,
)
from receipts.canonical import canonical_bytes
from receipts.catalogue import load_catalogue
from receipts.chain import issued_data, new_event, seal
from receipts.errors import ProofError
from receipts.signing import key_id, registered_key_jwk, sign_bytes, sign_document

LOT_REF = "SH01/GA-2026-0001"
PARENT, CHILD, SIBLING = "R-GA-0001", "R-GA-0002", "R-GA-0003"
ROTATION = "2026-03-01T00:00:00Z"


class Party:
    """A key holder: member, roles, key pair, and its registered JWK."""

    def __init__(self, member: str, roles: list[str], *, valid_from: str = "2025-01-01T00:00:00Z",
                 valid_to: str | None = None, revoked_at: str | None = None) -> None:
        self.member = member
        self.private_key = Ed25519PrivateKey.generate()
        self.kid = key_id(self.private_key.public_key())
        self.roles = roles
        self.jwk = registered_key_jwk(self.private_key.public_key(), member=member, roles=roles,
                                      valid_from=valid_from, valid_to=valid_to, revoked_at=revoked_at)

    def sign(self, doc: dict[str, Any]) -> dict[str, str]:
        return sign_document(doc, self.private_key, self.kid)


def assay_doc(*, purity: str = "99.99995", oxygen: str = "2") -> dict[str, Any]:
    return {
        "type": "assay", "id": "COA-2026-0042", "lot": LOT_REF, "lab": "M-LAB", "method": "GDMS",
        "sampledAt": "2026-01-05T08:00:00Z", "issuedAt": "2026-01-06T12:00:00Z", "purityPercent": purity,
        "impurities": [
            {"element": "O", "value": oxygen, "unit": "ppb"},
            {"element": "C", "value": "1", "unit": "ppb"},
            {"element": "Fe", "value": "3", "unit": "ppb"},
            {"element": "Cu", "value": "2", "unit": "ppb"},
            {"element": "Pb", "value": "0.5", "unit": "ppb"},
            {"element": "Zn", "value": "0.5", "unit": "ppb"},
        ],
        "properties": [],
    }


def footprint_doc() -> dict[str, Any]:
    return {
        "type": "carbon_footprint", "id": "3893bb5d-da16-4dc1-9185-11d97476c254", "specVersion": "3.0.0",
        "created": "2026-01-04T00:00:00Z", "status": "Active", "companyName": "Demo Gallium Co",
        "companyIds": ["urn:ingot:member:M-PROD"], "productDescription": "6N gallium ingots",
        "productIds": [f"urn:ingot:lot:{LOT_REF}"], "productNameCompany": "Ga 6N ingot",
        "precedingPfIds": ["9c5b94b1-35ad-49bb-b118-8e8fc24abf88"],
        "pcf": {
            "declaredUnitOfMeasurement": "kilogram", "declaredUnitAmount": "1", "productMassPerDeclaredUnit": "1",
            "referencePeriodStart": "2025-01-01T00:00:00Z", "referencePeriodEnd": "2026-01-01T00:00:00Z",
            "pcfExcludingBiogenicUptake": "12.4", "pcfIncludingBiogenicUptake": "12.4", "fossilGhgEmissions": "12.1",
            "fossilCarbonContent": "0", "ipccCharacterizationFactors": ["AR6"],
            "crossSectoralStandards": ["ISO14067", "PACT-3.0"], "exemptedEmissionsPercent": "0.5",
            "primaryDataShare": "64.5", "geographyCountry": "CN", "boundaryProcessesDescription": "cradle-to-gate",
            "verification": {"providerName": "Demo Verifier GmbH", "completedAt": "2026-01-03T00:00:00Z",
                             "standardName": "ISO 14064-3"},
        },
    }


def recycled_doc() -> dict[str, Any]:
    return {
        "type": "recycled_content", "lot": LOT_REF, "issuedAt": "2026-01-04T10:00:00Z", "recycledMaterial": "Ga",
        "preConsumerShare": "20.0", "postConsumerShare": "15.5", "chainOfCustodyModel": "mass_balance",
        "verifier": {"name": "Demo Verifier GmbH", "completedAt": "2026-01-03T00:00:00Z", "standardName": "ISO 22095"},
    }


def origin_doc() -> dict[str, Any]:
    return {
        "type": "origin", "lot": LOT_REF, "issuedAt": "2026-01-03T09:00:00Z", "smelterId": "CID003027",
        "smelterName": "Demo Smelter", "mineCountry": "CN", "dueDiligenceScheme": "RMAP", "conformant": True,
    }


LOT = {
    "ref": LOT_REF, "metal": "Ga", "form": "ingot", "net_mass_kg": "1000.000", "warehouse": "SH01",
    "producer": "M-PROD", "brand": "Demo", "batch_number": "GA-2026-0001", "seal_numbers": ["S-1", "S-2"],
    "package_count": 1000,
}


class World:
    """Keys and documents for one market, plus helpers to build chains and bundles."""

    def __init__(self) -> None:
        self.platform = Party("M-INGOT", ["platform"])
        self.lab = Party("M-LAB", ["assay_lab"])
        self.producer = Party("M-PROD", ["producer"])
        self.verifier = Party("M-VER", ["verifier"])
        self.warehouse = Party("M-WH", ["warehouse"])
        self.grade_spec = load_catalogue().grade_spec("GA-6N")

    @property
    def parties(self) -> list[Party]:
        return [self.platform, self.lab, self.producer, self.verifier, self.warehouse]

    @property
    def jwks(self) -> list[dict[str, Any]]:
        return [p.jwk for p in self.parties]

    def attestations(self) -> list[dict[str, Any]]:
        pairs = [("assay", assay_doc(), self.lab), ("carbon_footprint", footprint_doc(), self.verifier),
                 ("recycled_content", recycled_doc(), self.producer), ("origin", origin_doc(), self.warehouse)]
        return [{"type": kind, "document": doc, "signature": party.sign(doc)} for kind, doc, party in pairs]


def chain_of(receipt: str, steps: list[tuple[str, str, dict[str, Any]]], signer: Party | list[Party]) -> list[Any]:
    """Sealed events for (kind, at, data) steps; `signer` may vary per step."""
    sealed: list[Any] = []
    for index, (kind, at, data) in enumerate(steps):
        party = signer[index] if isinstance(signer, list) else signer
        event = new_event(receipt=receipt, seq=index + 1, kind=kind, at=at, data=data,
                          prev_hash=sealed[-1]["hash"] if sealed else None)
        sealed.append(seal(event, party.private_key, party.kid))
    return sealed


def parent_chain(world: World, attestations: list[dict[str, Any]], *, grade: str = "GA-6N",
                 grade_spec: dict[str, Any] | None = None, children: list[dict[str, Any]] | None = None,
                 attesters: Any = None) -> list[Any]:
    """The parent's chain; with `attesters`, its issued event names who may attest the lot (without, it is
    issued as before nominations existed)."""
    spec = world.grade_spec if grade_spec is None else grade_spec
    issued = issued_data(metal="Ga", grade=grade, form="ingot", quantity="1000.000", warehouse="SH01",
                         holder="M-TRADER-A", lot=LOT, grade_spec=spec, attestations=attestations,
                         attesters=attesters)
    children = children or [
        {"receipt": CHILD, "quantity": "400.000", "holder": "M-TRADER-B"},
        {"receipt": SIBLING, "quantity": "600.000", "holder": "M-TRADER-A"},
    ]
    return chain_of(PARENT, [
        ("issued", "2026-01-10T09:00:00Z", issued),
        ("encumbered", "2026-01-11T10:00:00Z", {"order": "O-1"}),
        ("split", "2026-01-11T10:00:05Z", {"children": children, "trade": "T-1"}),
    ], world.platform)


def child_chain(world: World, parent: list[Any], *, signer: Party | list[Party] | None = None,
                times: list[str] | None = None) -> list[Any]:
    times = times or ["2026-01-11T10:00:05Z", "2026-01-15T08:00:00Z", "2026-01-16T08:00:00Z",
                      "2026-01-17T08:00:00Z", "2026-01-18T08:00:00Z", "2026-01-20T08:00:00Z"]
    steps = [
        ("split_from", {"parent": PARENT, "parent_event_hash": parent[-1]["hash"], "quantity": "400.000",
                        "holder": "M-TRADER-B"}),
        ("pledged", {"lender": "M-BANK", "loan": "L-1"}),
        ("unpledged", {"lender": "M-BANK", "loan": "L-1"}),
        ("frozen", {"reason": "sanctions screening hit under review"}),
        ("unfrozen", {"reason": "false positive"}),
        ("transferred", {"from": "M-TRADER-B", "to": "M-TRADER-C", "quantity": "400.000", "trade": "T-7"}),
    ]
    return chain_of(CHILD, [(k, t, d) for (k, d), t in zip(steps, times, strict=True)], signer or world.platform)


CHILD_HEADER = {"number": CHILD, "metal": "Ga", "grade": "GA-6N", "form": "ingot", "quantity": "400.000",
                "warehouse": "SH01", "lot": LOT_REF, "holder": "M-TRADER-C", "status": "active"}


def child_bundle(world: World, **overrides: Any) -> dict[str, Any]:
    attestations = overrides.pop("attestations", None) or world.attestations()
    parent = overrides.pop("parent", None) or parent_chain(world, attestations)
    chain = overrides.pop("chain", None) or child_chain(world, parent)
    args: dict[str, Any] = {
        "receipt": CHILD_HEADER, "lot": LOT, "grade_spec": world.grade_spec, "attestations": attestations,
        "chain": chain, "ancestors": [{"receipt": PARENT, "chain": parent}], "keys": world.jwks,
        "exported_at": "2026-02-01T00:00:00Z", "platform_key": world.platform.private_key,
        "platform_kid": world.platform.kid,
    }
    args.update(overrides)
    return build_bundle(**args)


def reseal(bundle: dict[str, Any], party: Party) -> dict[str, Any]:
    """Re-sign the header as the platform would: isolates the deeper check under test."""
    bundle["seal"] = sign_bytes(canonical_bytes(seal_payload(bundle)), party.private_key, party.kid)
    return bundle


def failed(result: Any) -> set[str]:
    return {c.name for c in result.checks if not c.ok}


@pytest.fixture(scope="module")
def world() -> World:
    return World()


@pytest.fixture(scope="module")
def bundle(world: World) -> dict[str, Any]:
    return child_bundle(world)


# --- the good case ---------------------------------------------------------------------------


def test_full_bundle_verifies_and_lists_every_check(world: World, bundle: dict[str, Any]) -> None:
    result = verify_bundle(bundle)
    assert result.ok, result.failures
    names = [c.name for c in result.checks]
    assert names[0] == "format"
    for expected in ("public keys", "trust anchors", "chain R-GA-0001: hashes and links", "chain R-GA-0002: lifecycle",
                     "ancestry R-GA-0001 -> R-GA-0002", "quantities conserve", "binding: lot", "binding: grade spec",
                     "binding: attestations", "receipt matches its chain", "lot matches receipt",
                     "grade supported by assay", "bundle seal", "attestation 1 (assay): signature",
                     "attestation 4 (origin): lot", "event R-GA-0002#6 transferred: platform signature"):
        assert expected in names
    # 3 parent + 6 child events, 4 attestations, the seal: 14 signatures, each its own check
    assert sum(1 for n in names if n.endswith("platform signature")) == 9
    assert bundle["format"] == BUNDLE_FORMAT
    assert {k["kid"] for k in bundle["keys"]} == {p.kid for p in world.parties}
    assert result.to_dict()["ok"] is True


def test_bundle_verifies_against_the_trusted_jwks(world: World, bundle: dict[str, Any]) -> None:
    assert verify_bundle(bundle, trusted_keys=world.jwks).ok


def test_root_receipt_without_ancestors_verifies(world: World) -> None:
    attestations = world.attestations()
    issued = issued_data(metal="Ga", grade="GA-6N", form="ingot", quantity="1000.000", warehouse="SH01",
                         holder="M-TRADER-A", lot=LOT, grade_spec=world.grade_spec, attestations=attestations)
    chain = chain_of(PARENT, [("issued", "2026-01-10T09:00:00Z", issued),
                              ("encumbered", "2026-01-11T10:00:00Z", {"order": "O-1"}),
                              ("released", "2026-01-12T10:00:00Z", {"order": "O-1"})], world.platform)
    header = dict(CHILD_HEADER, number=PARENT, quantity="1000.000", holder="M-TRADER-A")
    bundle = child_bundle(world, receipt=header, chain=chain, ancestors=[], attestations=attestations)
    assert verify_bundle(bundle).ok, verify_bundle(bundle).failures


def test_build_bundle_keeps_only_keys_that_signed_and_refuses_missing_ones(world: World) -> None:
    extra = Party("M-OTHER", ["trader"])
    bundle = child_bundle(world, keys=[*world.jwks, extra.jwk])
    assert extra.kid not in {k["kid"] for k in bundle["keys"]}
    with pytest.raises(ProofError) as caught:
        child_bundle(world, keys=[p.jwk for p in world.parties if p is not world.lab])
    assert caught.value.code == "invalid_bundle"


# --- any changed byte ------------------------------------------------------------------------


def leaves(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from leaves(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from leaves(value, (*path, index))
    else:
        yield path, node


def containers(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], dict[str, Any]]]:
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from containers(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from containers(value, (*path, index))


def at(node: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        node = node[step]
    return node


def mutations(value: Any) -> list[Any]:
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, int):
        return [value + 1]
    if value is None:
        return ["x"]
    assert isinstance(value, str)
    if not value:
        return ["x"]
    last = "B" if value[-1] != "B" else "C"
    first = "1" if value[0] != "1" else "2"
    return [value[:-1] + last, first + value[1:]]


def test_every_leaf_changed_one_at_a_time_is_rejected(bundle: dict[str, Any]) -> None:
    tried = 0
    for path, value in leaves(bundle):
        for changed in mutations(value):
            tampered = copy.deepcopy(bundle)
            parent = at(tampered, path[:-1])
            parent[path[-1]] = changed
            result = verify_bundle(tampered)
            assert not result.ok, f"change at {path} from {value!r} to {changed!r} was not caught"
            tried += 1
    assert tried > 400


def test_every_member_removed_or_added_is_rejected(bundle: dict[str, Any]) -> None:
    for path, node in containers(bundle):
        tampered = copy.deepcopy(bundle)
        at(tampered, path)["ingot:extra"] = "x"
        assert not verify_bundle(tampered).ok, f"member added at {path} was not caught"
        for key in node:
            tampered = copy.deepcopy(bundle)
            del at(tampered, path)[key]
            assert not verify_bundle(tampered).ok, f"removing {path + (key,)} was not caught"


def test_any_node_replaced_by_junk_fails_as_a_named_check(bundle: dict[str, Any]) -> None:
    """Every value swapped for a value of another JSON type: rejected, and by a real check,
    not by the verifier's last-resort guard (which would mean an unhandled input)."""
    paths = [path for path, _ in leaves(bundle)] + [path for path, _ in containers(bundle) if path]
    for path in paths:
        for junk in (None, 1.5, 2**60, [], {}, [1], {"a": 1}, "x"):
            tampered = copy.deepcopy(bundle)
            parent = at(tampered, path[:-1])
            if parent[path[-1]] == junk:
                continue
            parent[path[-1]] = junk
            result = verify_bundle(tampered)
            assert not result.ok, f"{junk!r} at {path} was not caught"
            assert "verification completed" not in failed(result), (path, junk, result.failures)


def test_malformed_bundles_fail_cleanly_without_raising(bundle: dict[str, Any]) -> None:
    for junk in (None, [], "bundle", {}, {"format": BUNDLE_FORMAT}, dict(bundle, chain=[]),
                 dict(bundle, chain=[{"event": 1, "hash": 2, "sig": 3}]), dict(bundle, keys=[{"kty": "OKP"}]),
                 dict(bundle, attestations=[{"type": "assay", "document": [], "signature": {}}])):
        result = verify_bundle(junk)
        assert not result.ok
        assert result.checks


# --- the chain ----------------------------------------------------------------------------------


def test_removed_event_is_rejected(world: World, bundle: dict[str, Any]) -> None:
    tampered = copy.deepcopy(bundle)
    del tampered["chain"][2]
    reseal(tampered, world.platform)
    assert "chain R-GA-0002: hashes and links" in failed(verify_bundle(tampered))


def test_removed_last_event_is_rejected_by_the_header_check(world: World, bundle: dict[str, Any]) -> None:
    tampered = copy.deepcopy(bundle)
    del tampered["chain"][-1]
    reseal(tampered, world.platform)  # chain is intact, but the header says M-TRADER-C holds it
    assert failed(verify_bundle(tampered)) == {"receipt matches its chain"}


def test_reordered_events_are_rejected(world: World, bundle: dict[str, Any]) -> None:
    tampered = copy.deepcopy(bundle)
    tampered["chain"][2], tampered["chain"][3] = tampered["chain"][3], tampered["chain"][2]
    reseal(tampered, world.platform)
    assert "chain R-GA-0002: hashes and links" in failed(verify_bundle(tampered))


def test_inserted_event_is_rejected_even_if_signed_by_the_platform(world: World, bundle: dict[str, Any]) -> None:
    tampered = copy.deepcopy(bundle)
    rogue = new_event(receipt=CHILD, seq=3, kind="frozen", at="2026-01-15T09:00:00Z",
                      data={"reason": "x"}, prev_hash=tampered["chain"][1]["hash"])
    tampered["chain"].insert(2, seal(rogue, world.platform.private_key, world.platform.kid))
    reseal(tampered, world.platform)
    assert "chain R-GA-0002: hashes and links" in failed(verify_bundle(tampered))


def test_removed_ancestor_event_is_rejected(world: World, bundle: dict[str, Any]) -> None:
    tampered = copy.deepcopy(bundle)
    del tampered["ancestors"][0]["chain"][1]
    reseal(tampered, world.platform)
    assert "chain R-GA-0001: hashes and links" in failed(verify_bundle(tampered))


def test_missing_ancestors_are_rejected(world: World, bundle: dict[str, Any]) -> None:
    tampered = copy.deepcopy(bundle)
    tampered["ancestors"] = []
    reseal(tampered, world.platform)
    assert "chain R-GA-0002: hashes and links" in failed(verify_bundle(tampered))


def test_broken_hash_link_is_rejected(world: World, bundle: dict[str, Any]) -> None:
    tampered = copy.deepcopy(bundle)
    tampered["chain"][3]["hash"] = "0" * 64
    reseal(tampered, world.platform)
    assert "chain R-GA-0002: hashes and links" in failed(verify_bundle(tampered))


def test_non_conserving_split_is_rejected(world: World) -> None:
    attestations = world.attestations()
    parent = parent_chain(world, attestations, children=[
        {"receipt": CHILD, "quantity": "400.000", "holder": "M-TRADER-B"},
        {"receipt": SIBLING, "quantity": "600.001", "holder": "M-TRADER-A"},  # a gram made out of nothing
    ])
    result = verify_bundle(child_bundle(world, attestations=attestations, parent=parent))
    assert "quantities conserve" in failed(result)
    assert "chain R-GA-0001: lifecycle" in failed(result)
    assert "600.001" in result.check("quantities conserve").detail or "1000.001" in result.check("quantities conserve").detail


def test_child_claiming_more_than_the_split_gave_it_is_rejected(world: World) -> None:
    attestations = world.attestations()
    parent = parent_chain(world, attestations)
    chain = chain_of(CHILD, [("split_from", "2026-01-11T10:00:05Z", {
        "parent": PARENT, "parent_event_hash": parent[-1]["hash"], "quantity": "500.000", "holder": "M-TRADER-B"})],
        world.platform)
    header = dict(CHILD_HEADER, quantity="500.000", holder="M-TRADER-B")
    result = verify_bundle(child_bundle(world, attestations=attestations, parent=parent, chain=chain, receipt=header))
    assert f"ancestry {PARENT} -> {CHILD}" in failed(result)
    assert f"chain {CHILD}: lifecycle" in failed(result)


def test_illegal_transition_is_rejected(world: World) -> None:
    attestations = world.attestations()
    parent = parent_chain(world, attestations)
    chain = chain_of(CHILD, [
        ("split_from", "2026-01-11T10:00:05Z", {"parent": PARENT, "parent_event_hash": parent[-1]["hash"],
                                                 "quantity": "400.000", "holder": "M-TRADER-B"}),
        ("frozen", "2026-01-12T00:00:00Z", {"reason": "hold"}),
        ("transferred", "2026-01-13T00:00:00Z", {"from": "M-TRADER-B", "to": "M-TRADER-C", "quantity": "400.000"}),
    ], world.platform)
    result = verify_bundle(child_bundle(world, attestations=attestations, parent=parent, chain=chain))
    assert f"chain {CHILD}: lifecycle" in failed(result)
    assert "frozen" in result.check(f"chain {CHILD}: lifecycle").detail


# --- keys, roles, trust -------------------------------------------------------------------------


def test_signature_by_a_key_not_in_the_bundle_is_rejected(world: World, bundle: dict[str, Any]) -> None:
    tampered = copy.deepcopy(bundle)
    tampered["keys"] = [k for k in tampered["keys"] if k["kid"] != world.lab.kid]
    reseal(tampered, world.platform)
    result = verify_bundle(tampered)
    assert failed(result) == {"attestation 1 (assay): signature"}
    assert "not among the bundle's keys" in result.check("attestation 1 (assay): signature").detail


def test_signature_by_an_untrusted_key_is_rejected(world: World, bundle: dict[str, Any]) -> None:
    trusted = [p.jwk for p in world.parties if p is not world.verifier]
    result = verify_bundle(bundle, trusted_keys=trusted)
    assert failed(result) == {"attestation 2 (carbon_footprint): signature"}


def test_impostor_platform_is_rejected_by_trusted_keys(world: World) -> None:
    impostor = World()  # a complete, self-consistent market with its own keys
    forged = child_bundle(impostor)
    assert verify_bundle(forged).ok  # integrity alone holds...
    result = verify_bundle(forged, trusted_keys=world.jwks)  # ...provenance does not
    assert not result.ok
    assert "bundle seal" in failed(result)


def test_wrong_role_is_rejected(world: World) -> None:
    attestations = world.attestations()
    attestations[0]["signature"] = world.producer.sign(attestations[0]["document"])  # a producer's own assay
    result = verify_bundle(child_bundle(world, attestations=attestations))
    assert failed(result) == {"attestation 1 (assay): signature"}
    assert "needs one of ['assay_lab']" in result.check("attestation 1 (assay): signature").detail


def test_origin_signed_by_a_trader_is_rejected(world: World) -> None:
    trader = Party("M-TRADER-A", ["trader"])
    attestations = world.attestations()
    attestations[3]["signature"] = trader.sign(attestations[3]["document"])
    result = verify_bundle(child_bundle(world, attestations=attestations, keys=[*world.jwks, trader.jwk]))
    assert failed(result) == {"attestation 4 (origin): signature"}


def test_assay_signed_by_another_lab_than_it_names_is_rejected(world: World) -> None:
    other_lab = Party("M-LAB-2", ["assay_lab"])
    attestations = world.attestations()
    attestations[0]["signature"] = other_lab.sign(attestations[0]["document"])
    result = verify_bundle(child_bundle(world, attestations=attestations, keys=[*world.jwks, other_lab.jwk]))
    assert failed(result) == {"attestation 1 (assay): signature"}


def test_key_revoked_before_issue_is_rejected(world: World, bundle: dict[str, Any]) -> None:
    revoked = dict(world.lab.jwk, **{"ingot:revokedAt": "2026-01-08T00:00:00Z"})  # after signing, before issue
    trusted = [revoked if p is world.lab else p.jwk for p in world.parties]
    result = verify_bundle(bundle, trusted_keys=trusted)
    assert failed(result) == {"attestation 1 (assay): signature"}
    assert "revoked" in result.check("attestation 1 (assay): signature").detail


def test_key_revoked_after_issue_keeps_its_bound_attestation(world: World, bundle: dict[str, Any]) -> None:
    revoked = dict(world.lab.jwk, **{"ingot:revokedAt": "2026-01-20T00:00:00Z"})
    trusted = [revoked if p is world.lab else p.jwk for p in world.parties]
    assert verify_bundle(bundle, trusted_keys=trusted).ok


def test_revoked_platform_key_voids_later_events(world: World, bundle: dict[str, Any]) -> None:
    revoked = dict(world.platform.jwk, **{"ingot:revokedAt": "2026-01-16T12:00:00Z"})
    trusted = [revoked if p is world.platform else p.jwk for p in world.parties]
    bad = failed(verify_bundle(bundle, trusted_keys=trusted))
    assert "event R-GA-0002#4 frozen: platform signature" in bad
    assert "event R-GA-0002#3 unpledged: platform signature" not in bad
    assert "bundle seal" in bad


def test_signature_outside_key_validity_is_rejected(world: World) -> None:
    late_lab = Party("M-LAB", ["assay_lab"], valid_from="2026-01-07T00:00:00Z")  # registered after the certificate
    attestations = world.attestations()
    attestations[0]["signature"] = late_lab.sign(attestations[0]["document"])
    result = verify_bundle(child_bundle(world, attestations=attestations, keys=[*world.jwks, late_lab.jwk]))
    assert failed(result) == {"attestation 1 (assay): signature"}


def test_rotation_keeps_old_signatures_valid(world: World) -> None:
    old = Party("M-INGOT", ["platform"], valid_to=ROTATION)
    new = Party("M-INGOT", ["platform"], valid_from=ROTATION)
    keys = [p.jwk for p in world.parties if p is not world.platform] + [old.jwk, new.jwk]
    attestations = world.attestations()
    issued = issued_data(metal="Ga", grade="GA-6N", form="ingot", quantity="1000.000", warehouse="SH01",
                         holder="M-TRADER-A", lot=LOT, grade_spec=world.grade_spec, attestations=attestations)
    chain = chain_of(PARENT, [
        ("issued", "2026-01-10T09:00:00Z", issued),
        ("pledged", "2026-02-10T09:00:00Z", {"lender": "M-BANK", "loan": "L-9"}),
        ("unpledged", "2026-03-10T09:00:00Z", {"lender": "M-BANK", "loan": "L-9"}),
    ], [old, old, new])
    header = dict(CHILD_HEADER, number=PARENT, quantity="1000.000", holder="M-TRADER-A")
    common = {"receipt": header, "chain": chain, "ancestors": [], "attestations": attestations, "keys": keys}
    after = child_bundle(world, **common, exported_at="2026-03-11T00:00:00Z", platform_key=new.private_key,
                         platform_kid=new.kid)
    assert verify_bundle(after).ok, verify_bundle(after).failures
    assert verify_bundle(after, trusted_keys=keys).ok

    # exported before the rotation (old key still open-ended in the bundle), verified with today's JWKS
    before_keys = [p.jwk for p in world.parties if p is not world.platform] + [dict(old.jwk, **{"ingot:validTo": None})]
    before = child_bundle(world, receipt=header, chain=chain[:2], ancestors=[], attestations=attestations,
                          keys=before_keys, exported_at="2026-02-11T00:00:00Z", platform_key=old.private_key,
                          platform_kid=old.kid)
    header_before = before["receipt"]
    assert header_before["status"] == "active"  # the header says active, but the chain says pledged
    before["receipt"] = dict(header_before, status="pledged")
    reseal(before, old)
    assert verify_bundle(before, trusted_keys=keys).ok

    # the old key signing after the rotation is refused
    late = chain_of(PARENT, [
        ("issued", "2026-01-10T09:00:00Z", issued),
        ("pledged", "2026-03-02T09:00:00Z", {"lender": "M-BANK", "loan": "L-9"}),
    ], old)
    stale = child_bundle(world, receipt=dict(header, status="pledged"), chain=late, ancestors=[],
                         attestations=attestations, keys=keys, exported_at="2026-03-11T00:00:00Z",
                         platform_key=new.private_key, platform_kid=new.kid)
    assert failed(verify_bundle(stale)) == {"event R-GA-0001#2 pledged: platform signature"}


# --- bindings and grade ----------------------------------------------------------------------------


def test_changed_header_is_rejected_even_when_resealed(world: World, bundle: dict[str, Any]) -> None:
    for name, value in (("holder", "M-TRADER-X"), ("quantity", "4000.000"), ("status", "pledged"), ("grade", "GA-7N")):
        tampered = copy.deepcopy(bundle)
        tampered["receipt"][name] = value
        reseal(tampered, world.platform)
        assert "receipt matches its chain" in failed(verify_bundle(tampered)), name


def test_changed_lot_is_rejected_even_when_resealed(world: World, bundle: dict[str, Any]) -> None:
    tampered = copy.deepcopy(bundle)
    tampered["lot"]["net_mass_kg"] = "2000.000"
    reseal(tampered, world.platform)
    assert failed(verify_bundle(tampered)) == {"binding: lot"}


def test_resigned_attestation_is_rejected_by_its_binding(world: World, bundle: dict[str, Any]) -> None:
    tampered = copy.deepcopy(bundle)
    doc = tampered["attestations"][0]["document"]
    doc["impurities"][0]["value"] = "1"  # a friendlier oxygen figure, properly signed by the same lab
    tampered["attestations"][0]["signature"] = world.lab.sign(doc)
    assert failed(verify_bundle(tampered)) == {"binding: attestations"}


def test_dropped_attestation_is_rejected(world: World, bundle: dict[str, Any]) -> None:
    tampered = copy.deepcopy(bundle)
    del tampered["attestations"][1]
    assert failed(verify_bundle(tampered)) == {"binding: attestations"}


def test_grade_spec_swapped_is_rejected(world: World, bundle: dict[str, Any]) -> None:
    tampered = copy.deepcopy(bundle)
    tampered["grade_spec"] = load_catalogue().grade_spec("GA-5N")
    assert "binding: grade spec" in failed(verify_bundle(tampered))


def test_grade_the_assay_does_not_support_is_rejected(world: World) -> None:
    attestations = world.attestations()
    spec = load_catalogue().grade_spec("GA-7N")  # the assay is 6N-good but 7N-short
    parent = parent_chain(world, attestations, grade="GA-7N", grade_spec=spec)
    header = dict(CHILD_HEADER, grade="GA-7N")
    result = verify_bundle(child_bundle(world, attestations=attestations, parent=parent, grade_spec=spec,
                                        receipt=header))
    assert failed(result) == {"grade supported by assay"}
    assert "purity >= 99.99999 %" in result.check("grade supported by assay").detail


def test_failing_assay_is_rejected(world: World) -> None:
    attestations = world.attestations()
    doc = assay_doc(oxygen="7")  # O <= 5 ppb fails
    attestations[0] = {"type": "assay", "document": doc, "signature": world.lab.sign(doc)}
    result = verify_bundle(child_bundle(world, attestations=attestations))
    assert failed(result) == {"grade supported by assay"}
    assert "O <= 5 ppb" in result.check("grade supported by assay").detail


def test_non_standard_receipt_without_grade(world: World) -> None:
    attestations = world.attestations()
    issued = issued_data(metal="Ga", grade=None, form="ingot", quantity="1000.000", warehouse="SH01",
                         holder="M-TRADER-A", lot=LOT, grade_spec=None, attestations=attestations)
    parent = chain_of(PARENT, [("issued", "2026-01-10T09:00:00Z", issued)], world.platform)
    header = dict(CHILD_HEADER, number=PARENT, grade=None, quantity="1000.000", holder="M-TRADER-A")
    result = verify_bundle(child_bundle(world, attestations=attestations, chain=parent, ancestors=[],
                                        grade_spec=None, receipt=header))
    assert result.ok, result.failures


def test_exported_before_last_event_is_rejected(world: World) -> None:
    result = verify_bundle(child_bundle(world, exported_at="2026-01-19T00:00:00Z"))
    assert failed(result) == {"bundle seal"}


def test_attestation_about_another_lot_is_rejected(world: World) -> None:
    attestations = world.attestations()
    doc = dict(origin_doc(), lot="SH01/OTHER")
    attestations[3] = {"type": "origin", "document": doc, "signature": world.warehouse.sign(doc)}
    result = verify_bundle(child_bundle(world, attestations=attestations))
    assert failed(result) == {"attestation 4 (origin): lot"}


# --- attestation documents -----------------------------------------------------------------------


@pytest.mark.parametrize("maker", [assay_doc, footprint_doc, recycled_doc, origin_doc])
def test_example_documents_are_valid(maker: Any) -> None:
    doc = maker()
    assert validate_attestation(doc["type"], doc) == []


@pytest.mark.parametrize(
    ("maker", "change", "complaint"),
    [
        (assay_doc, {"purityPercent": "100.1"}, "purityPercent"),
        (assay_doc, {"purityPercent": 99.9999}, "purityPercent"),
        (assay_doc, {"method": "guesswork"}, "method"),
        (assay_doc, {"sampledAt": "2026-01-05"}, "sampledAt"),
        (assay_doc, {"issuedAt": "2026-01-01T00:00:00Z"}, "issuedAt"),
        (assay_doc, {"impurities": [{"element": "Xx", "value": "1", "unit": "ppb"}]}, "impurities[0].element"),
        (assay_doc, {"impurities": [{"element": "O", "value": "-1", "unit": "ppb"}]}, "impurities[0].value"),
        (assay_doc, {"impurities": [{"element": "O", "value": "1", "unit": "furlong"}]}, "impurities[0].unit"),
        (assay_doc, {"impurities": [{"element": "O", "value": "1", "unit": "ppb"},
                                    {"element": "O", "value": "2", "unit": "ppb"}]}, "twice"),
        (assay_doc, {"properties": [{"name": "D90", "value": "1", "unit": "µm"}]}, "properties[0].name"),
        (assay_doc, {"type": "origin"}, "type"),
        (footprint_doc, {"id": "not-a-uuid"}, "id"),
        (footprint_doc, {"productIds": []}, "productIds"),
        (footprint_doc, {"productIds": ["lot-1"]}, "productIds[0]"),
        (footprint_doc, {"status": "Draft"}, "status"),
        (recycled_doc, {"preConsumerShare": "60", "postConsumerShare": "50"}, "exceeds 100"),
        (recycled_doc, {"postConsumerShare": "101"}, "postConsumerShare"),
        (recycled_doc, {"chainOfCustodyModel": "trust_me"}, "chainOfCustodyModel"),
        (recycled_doc, {"recycledMaterial": "Unobtainium"}, "recycledMaterial"),
        (origin_doc, {"smelterId": "CID12"}, "smelterId"),
        (origin_doc, {"mineCountry": "XX"}, "mineCountry"),
        (origin_doc, {"mineCountry": "cn"}, "mineCountry"),
        (origin_doc, {"dueDiligenceScheme": None}, "dueDiligenceScheme"),
    ],
)
def test_invalid_documents_are_reported(maker: Any, change: dict[str, Any], complaint: str) -> None:
    doc = maker()
    kind = doc["type"]
    doc.update(change)
    errors = validate_attestation(kind, doc)
    assert any(complaint in e for e in errors), errors


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"pcfExcludingBiogenicUptake": "12,4"}, "pcf.pcfExcludingBiogenicUptake"),
        ({"declaredUnitOfMeasurement": "tonne"}, "pcf.declaredUnitOfMeasurement"),
        ({"declaredUnitAmount": "0"}, "pcf.declaredUnitAmount"),
        ({"referencePeriodEnd": "2024-01-01T00:00:00Z"}, "pcf.referencePeriodEnd"),
        ({"primaryDataShare": "120"}, "pcf.primaryDataShare"),
        ({"crossSectoralStandards": ["made-up"]}, "pcf.crossSectoralStandards"),
        ({"geographyCountry": "ZZ"}, "pcf.geographyCountry"),
        ({"verification": {"providerName": "", "completedAt": "yesterday", "standardName": "x"}},
         "pcf.verification.providerName"),
    ],
)
def test_invalid_footprints_are_reported(change: dict[str, Any], complaint: str) -> None:
    doc = footprint_doc()
    doc["pcf"].update(change)
    errors = validate_attestation("carbon_footprint", doc)
    assert any(complaint in e for e in errors), errors


def test_unknown_attestation_type_is_reported() -> None:
    assert validate_attestation("horoscope", {"type": "horoscope"})
    assert validate_attestation("assay", ["not", "an", "object"]) == ["document: must be a JSON object"]


# --- who may attest: the attesters bound in the issued event ----------------------------------------

# The operator (M-WH, origin) and the producer (M-PROD, recycled content) need no nomination; the lab and
# the verifier are nominated for what they signed.
ATTESTERS = {"operator": "M-WH", "producer": "M-PROD",
             "nominated": {"assay": ["M-LAB"], "carbon_footprint": ["M-VER"]}}


def _attested_bundle(world: World, attesters: Any) -> dict[str, Any]:
    attestations = world.attestations()
    return child_bundle(world, attestations=attestations,
                        parent=parent_chain(world, attestations, attesters=attesters))


def _signature_checks(result: Any) -> dict[str, tuple[bool, str]]:
    return {c.name: (c.ok, c.detail) for c in result.checks if c.name.startswith("attestation ")
            and c.name.endswith(": signature")}


def test_attestations_by_the_operator_the_producer_and_nominees_verify(world: World) -> None:
    result = verify_bundle(_attested_bundle(world, ATTESTERS), trusted_keys=world.jwks)
    assert result.ok, result.failures
    assert len(_signature_checks(result)) == 4


def test_bundle_issued_before_nominations_still_verifies(world: World, bundle: dict[str, Any]) -> None:
    """No attesters in the issued event (a receipt issued before nominations): roles alone are checked."""
    assert "attesters" not in bundle["ancestors"][0]["chain"][0]["event"]["data"]
    assert verify_bundle(bundle, trusted_keys=world.jwks).ok


def test_assay_by_a_lab_the_operator_did_not_nominate_is_rejected(world: World) -> None:
    attesters = {**ATTESTERS, "nominated": {"carbon_footprint": ["M-VER"]}}
    result = verify_bundle(_attested_bundle(world, attesters), trusted_keys=world.jwks)
    assert failed(result) == {"attestation 1 (assay): signature"}
    ok, detail = _signature_checks(result)["attestation 1 (assay): signature"]
    assert not ok and "M-LAB" in detail and "nominated for assay" in detail


def test_a_nomination_for_another_kind_does_not_count(world: World) -> None:
    """The verifier is nominated for recycled content, not for the footprint it signed."""
    attesters = {**ATTESTERS, "nominated": {"assay": ["M-LAB"], "recycled_content": ["M-VER"]}}
    result = verify_bundle(_attested_bundle(world, attesters), trusted_keys=world.jwks)
    assert failed(result) == {"attestation 2 (carbon_footprint): signature"}


def test_without_the_producer_its_attestation_needs_a_nomination(world: World) -> None:
    result = verify_bundle(_attested_bundle(world, {**ATTESTERS, "producer": None}), trusted_keys=world.jwks)
    assert failed(result) == {"attestation 3 (recycled_content): signature"}


@pytest.mark.parametrize("attesters", [
    "M-WH", {"producer": "M-PROD", "nominated": {}}, {"operator": "M-WH", "producer": 7, "nominated": {}},
    {**ATTESTERS, "nominated": ["M-LAB"]}, {**ATTESTERS, "nominated": {"assay": "M-LAB"}},
    {**ATTESTERS, "nominated": {"assay": [["M-LAB"]]}},
])
def test_malformed_attesters_fail_every_attestation(world: World, attesters: Any) -> None:
    result = verify_bundle(_attested_bundle(world, attesters), trusted_keys=world.jwks)
    checks = _signature_checks(result)
    assert failed(result) == set(checks) and len(checks) == 4
    assert all("malformed" in detail for _, detail in checks.values())


def test_attesters_widened_after_issue_break_the_chain(world: World) -> None:
    """Nominating the lab into an exported bundle (and resealing it) changes the platform-signed event."""
    attesters = {**ATTESTERS, "nominated": {"carbon_footprint": ["M-VER"]}}
    bundle = _attested_bundle(world, attesters)
    bundle["ancestors"][0]["chain"][0]["event"]["data"]["attesters"] = ATTESTERS
    result = verify_bundle(reseal(bundle, world.platform), trusted_keys=world.jwks)
    assert {"chain R-GA-0001: hashes and links", "event R-GA-0001#1 issued: platform signature"} <= failed(result)


def test_exported_bytes_round_trip(bundle: dict[str, Any]) -> None:
    exported = bundle_bytes(bundle)
    assert exported == bundle_bytes(json.loads(exported))
    assert verify_bundle(json.loads(exported)).ok
    floated = exported.replace(b'"purityPercent":"99.99995"', b'"purityPercent":99.99995')
    result = verify_bundle(json.loads(floated))
    assert not result.ok
