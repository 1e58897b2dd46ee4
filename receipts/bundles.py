"""Receipt bundles: one canonical JSON document carrying a receipt, its lot, grade spec,
signed attestations, event chains and public keys, the pure function that assembles it,
and the offline verifier that re-checks every claim without our database.

Format and trust model: receipts/BUNDLE_FORMAT.md. In short, every byte is covered by a
signature: events by the platform's signatures and hash chain; lot, grade spec and
attestations by hashes in the root `issued` event; attestation documents by their
signers; ancestors by the child's `split_from` (parent event hash); and the bundle
header (format, export time, receipt header, keys) by the platform's `seal`, which also
signs the chain head and so the whole history.
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from operator import itemgetter
from typing import Any, NamedTuple

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from receipts.canonical import canonical_bytes, is_plain, parse_utc, plain_canonical_bytes
from receipts.catalogue import COUNTRIES, ELEMENT_SET, PROPERTY_NAME, Grade, parse_grade
from receipts.chain import (
    ATTESTATION_TYPES,
    ISSUED,
    SPLIT,
    SPLIT_FROM,
    TRANSFERRED,
    WITHDRAWN,
    ReceiptState,
    apply_event,
)
from receipts.errors import INVALID_BUNDLE, ProofError
from receipts.grading import AssayProfile, PropertyReading, grade_lot
from receipts.signing import (
    ALG,
    MEMBER,
    REVOKED_AT,
    ROLES,
    VALID_FROM,
    VALID_TO,
    b64url_decode,
    sign_bytes,
    signature_from_text,
    thumbprint_of_x,
)
from receipts.units import DECIMAL_PATTERN, KG_PATTERN, NON_NEGATIVE_DECIMAL_PATTERN, UNITS, is_mass_fraction

_PPB_EXPONENT: dict[str, int] = {symbol: unit.exponent for symbol, unit in UNITS.items() if is_mass_fraction(symbol)}

BUNDLE_FORMAT = "ingot-receipt-bundle/1"

PLATFORM_ROLE = "platform"
PLATFORM_ROLES = frozenset({PLATFORM_ROLE})

# Who may sign what. An assay only from an assay lab (ISO/IEC 17025 accredited, checked
# at membership); footprint and recycled-content claims from the producer or recycler
# that made the metal or a verifier that audited them; origin from the producer (who
# knows its smelter) or the warehouse that received the metal with its papers.
SIGNER_ROLES: dict[str, frozenset[str]] = {
    "assay": frozenset({"assay_lab"}),
    "carbon_footprint": frozenset({"producer", "recycler", "verifier"}),
    "recycled_content": frozenset({"producer", "recycler", "verifier"}),
    "origin": frozenset({"producer", "warehouse"}),
}

# The document time each attestation kind declares; key validity is judged at it.
DOCUMENT_TIME: dict[str, str] = {
    "assay": "issuedAt",
    "carbon_footprint": "created",
    "recycled_content": "issuedAt",
    "origin": "issuedAt",
}

RECEIPT_FIELDS = ("number", "metal", "grade", "form", "quantity", "warehouse", "lot", "holder", "status")
LOT_REQUIRED = ("ref", "metal", "form", "net_mass_kg", "warehouse")
_TOP_LEVEL = frozenset(
    {"format", "exported_at", "receipt", "lot", "grade_spec", "attestations", "chain", "ancestors", "keys", "seal"}
)
_HEX64 = re.compile(r"[0-9a-f]{64}")
_TOKEN = re.compile(r"[A-Za-z0-9_-]+")

LOT_URN_PREFIX = "urn:ingot:lot:"


# --- attestation documents ----------------------------------------------------------------

ASSAY_METHODS = frozenset({"GDMS", "ICP-MS", "HR-ICP-MS", "ICP-OES", "CGHE", "XRF", "LD"})
CHAIN_OF_CUSTODY_MODELS = frozenset(
    {"identity_preserved", "segregated", "controlled_blending", "mass_balance", "book_and_claim"}
)  # ISO 22095
DUE_DILIGENCE_SCHEMES = frozenset({"RMAP", "OECD-DDG", "CCCMC", "ITSCI", "RJC", "LBMA"})
PACT_DECLARED_UNITS = frozenset(
    {"liter", "kilogram", "cubic meter", "kilowatt hour", "megajoule", "ton kilometer", "square meter",
     "piece", "hour", "megabit second"}
)  # fmt: skip
PACT_STANDARDS = frozenset(
    {"ISO14067", "ISO14083", "ISO14040-44", "GHGP-Product", "PEF", "PACT-1.0", "PACT-2.0", "PACT-3.0"}
)
_PACT_STATUSES = frozenset({"Active", "Deprecated"})
SMELTER_ID = re.compile(r"CID[0-9]{6}")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_URN = re.compile(r"[uU][rR][nN]:[A-Za-z0-9][A-Za-z0-9-]{0,31}:\S+")
_SEMVER = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+(?:-[0-9]{8})?")
_IPCC = re.compile(r"AR[0-9]+")
_HUNDRED = Decimal(100)
_ZERO = Decimal(0)


class _DocCheck:
    """Accumulates problems with JSON-path-like locations."""

    __slots__ = ("errors", "doc", "profile")

    def __init__(self, doc: Mapping[str, Any]) -> None:
        self.doc = doc
        self.errors: list[str] = []
        # An assay that validates cleanly leaves its parsed profile here, so the bundle
        # verifier re-grades without parsing the impurity table a second time.
        self.profile: AssayProfile | None = None

    def text(self, where: str, value: Any, *, required: bool = True) -> str | None:
        if value is None and not required:
            return None
        if not isinstance(value, str) or not value.strip():
            self.errors.append(f"{where}: must be a non-empty string")
            return None
        return value

    def stamp(self, where: str, value: Any, *, required: bool = True) -> datetime | None:
        if value is None and not required:
            return None
        moment = parse_utc(value)
        if moment is None:
            self.errors.append(f"{where}: must be an ISO 8601 UTC time like 2026-01-05T09:30:00Z")
        return moment

    def decimal(
        self,
        where: str,
        value: Any,
        *,
        required: bool = True,
        low: Decimal | None = None,
        high: Decimal | None = None,
        positive: bool = False,
    ) -> Decimal | None:
        if value is None and not required:
            return None
        if not isinstance(value, str) or not DECIMAL_PATTERN.fullmatch(value):
            self.errors.append(f"{where}: must be a decimal string like \"12.5\" (no floats, no exponent)")
            return None
        amount = Decimal(value)
        if low is not None and amount < low:
            self.errors.append(f"{where}: {value} is below {low}")
        if high is not None and amount > high:
            self.errors.append(f"{where}: {value} is above {high}")
        if positive and amount <= 0:
            self.errors.append(f"{where}: must be greater than 0")
        return amount

    def choice(self, where: str, value: Any, allowed: frozenset[str], *, required: bool = True) -> str | None:
        if value is None and not required:
            return None
        if type(value) is not str or value not in allowed:  # lists/objects are unhashable
            self.errors.append(f"{where}: {value!r} is not one of {', '.join(sorted(allowed))}")
            return None
        return value  # type: ignore[no-any-return]

    def country(self, where: str, value: Any, *, required: bool = True) -> None:
        if value is None and not required:
            return
        if type(value) is not str or value not in COUNTRIES:
            self.errors.append(f"{where}: {value!r} is not an ISO 3166-1 alpha-2 country code")

    def string_list(self, where: str, value: Any, pattern: re.Pattern[str] | None, *, required: bool = True) -> list[str]:
        if value is None and not required:
            return []
        if not isinstance(value, list) or not value:
            self.errors.append(f"{where}: must be a non-empty list")
            return []
        try:
            duplicated = len(set(value)) != len(value)
        except TypeError:  # unhashable members; reported as invalid below
            duplicated = False
        if duplicated:
            self.errors.append(f"{where}: has duplicates")
        for i, item in enumerate(value):
            if not isinstance(item, str) or (pattern is not None and not pattern.fullmatch(item)):
                self.errors.append(f"{where}[{i}]: {item!r} is not valid")
        return [v for v in value if isinstance(v, str)]


def _validate_assay(check: _DocCheck, doc: Mapping[str, Any]) -> None:
    errors = check.errors
    check.text("lot", doc.get("lot"))
    check.text("lab", doc.get("lab"))
    check.choice("method", doc.get("method"), ASSAY_METHODS)
    sampled = check.stamp("sampledAt", doc.get("sampledAt"))
    issued = check.stamp("issuedAt", doc.get("issuedAt"))
    if sampled and issued and issued < sampled:
        errors.append("issuedAt: a certificate cannot be issued before its sample was taken")
    purity = check.decimal("purityPercent", doc.get("purityPercent"), low=_ZERO, high=_HUNDRED)
    impurities = doc.get("impurities")
    if not isinstance(impurities, list):
        errors.append("impurities: must be a list of {element, value, unit}")
        impurities = []
    ppb: dict[str, Decimal] = {}
    for i, row in enumerate(impurities):
        if type(row) is not dict:
            errors.append(f"impurities[{i}]: must be an object")
            continue
        element, value, unit = row.get("element"), row.get("value"), row.get("unit")
        if type(element) is not str or element not in ELEMENT_SET:
            errors.append(f"impurities[{i}].element: {element!r} is not an element symbol")
            element = None
        elif element in ppb:
            errors.append(f"impurities[{i}].element: {element} is reported twice")
            element = None
        exponent = _PPB_EXPONENT.get(unit) if type(unit) is str else None
        if exponent is None:
            errors.append(f"impurities[{i}].unit: {unit!r} is not a mass-fraction unit (ppb, ppm, wt%)")
        if type(value) is not str or not NON_NEGATIVE_DECIMAL_PATTERN.fullmatch(value):
            errors.append(f"impurities[{i}].value: must be a non-negative decimal string")
        elif element is not None and exponent is not None:
            amount = Decimal(value)
            ppb[element] = amount.scaleb(exponent) if exponent else amount
    properties = doc.get("properties", [])
    if not isinstance(properties, list):
        errors.append("properties: must be a list of {name, value, unit}")
        properties = []
    readings: dict[str, PropertyReading] = {}
    for i, row in enumerate(properties):
        where = f"properties[{i}]"
        if not isinstance(row, dict):
            errors.append(f"{where}: must be an object")
            continue
        name = row.get("name")
        if not isinstance(name, str) or not PROPERTY_NAME.fullmatch(name):
            errors.append(f"{where}.name: must be lower_snake_case like 'd90'")
            name = None
        elif name in readings:
            errors.append(f"{where}.name: {name} is reported twice")
            name = None
        reading = check.decimal(f"{where}.value", row.get("value"), low=_ZERO)
        unit = row.get("unit")
        if type(unit) is not str or unit not in UNITS:
            errors.append(f"{where}.unit: {unit!r} is not a known unit")
        elif name is not None and reading is not None:
            readings[name] = PropertyReading(reading, UNITS[unit].symbol)
    if not errors and purity is not None:
        check.profile = AssayProfile(purity_percent=purity, impurities_ppb=ppb, properties=readings)


def _validate_carbon_footprint(check: _DocCheck, doc: Mapping[str, Any]) -> None:
    # WBCSD PACT v3 ProductFootprint names; numbers are decimal strings as in PACT.
    if not isinstance(doc.get("id"), str) or not _UUID.fullmatch(doc["id"]):
        check.errors.append("id: must be a lowercase UUID")
    if not isinstance(doc.get("specVersion"), str) or not _SEMVER.fullmatch(doc["specVersion"]):
        check.errors.append("specVersion: must be a version like 3.0.0")
    check.stamp("created", doc.get("created"))
    check.choice("status", doc.get("status"), _PACT_STATUSES)
    check.text("companyName", doc.get("companyName"))
    check.string_list("companyIds", doc.get("companyIds"), _URN)
    check.string_list("productIds", doc.get("productIds"), _URN)
    check.text("productNameCompany", doc.get("productNameCompany"), required=False)
    if "productDescription" in doc and not isinstance(doc["productDescription"], str):
        check.errors.append("productDescription: must be a string")
    preceding = doc.get("precedingPfIds")
    if preceding is not None:
        check.string_list("precedingPfIds", preceding, _UUID)
    start = check.stamp("validityPeriodStart", doc.get("validityPeriodStart"), required=False)
    end = check.stamp("validityPeriodEnd", doc.get("validityPeriodEnd"), required=False)
    if start and end and end <= start:
        check.errors.append("validityPeriodEnd: must be after validityPeriodStart")
    pcf = doc.get("pcf")
    if not isinstance(pcf, dict):
        check.errors.append("pcf: must be an object")
        return
    check.choice("pcf.declaredUnitOfMeasurement", pcf.get("declaredUnitOfMeasurement"), PACT_DECLARED_UNITS)
    check.decimal("pcf.declaredUnitAmount", pcf.get("declaredUnitAmount"), positive=True)
    check.decimal("pcf.productMassPerDeclaredUnit", pcf.get("productMassPerDeclaredUnit"), required=False, low=_ZERO)
    period_start = check.stamp("pcf.referencePeriodStart", pcf.get("referencePeriodStart"))
    period_end = check.stamp("pcf.referencePeriodEnd", pcf.get("referencePeriodEnd"))
    if period_start and period_end and period_end <= period_start:
        check.errors.append("pcf.referencePeriodEnd: must be after referencePeriodStart")
    check.decimal("pcf.pcfExcludingBiogenicUptake", pcf.get("pcfExcludingBiogenicUptake"))
    check.decimal("pcf.pcfIncludingBiogenicUptake", pcf.get("pcfIncludingBiogenicUptake"), required=False)
    check.decimal("pcf.fossilGhgEmissions", pcf.get("fossilGhgEmissions"), required=False, low=_ZERO)
    check.decimal("pcf.fossilCarbonContent", pcf.get("fossilCarbonContent"), required=False, low=_ZERO)
    check.decimal(
        "pcf.exemptedEmissionsPercent", pcf.get("exemptedEmissionsPercent"), required=False, low=_ZERO, high=_HUNDRED
    )
    check.decimal("pcf.primaryDataShare", pcf.get("primaryDataShare"), required=False, low=_ZERO, high=_HUNDRED)
    check.string_list("pcf.ipccCharacterizationFactors", pcf.get("ipccCharacterizationFactors"), _IPCC)
    standards = check.string_list("pcf.crossSectoralStandards", pcf.get("crossSectoralStandards"), None)
    for standard in standards:
        if standard not in PACT_STANDARDS:
            check.errors.append(f"pcf.crossSectoralStandards: {standard!r} is not a PACT v3 standard")
    check.country("pcf.geographyCountry", pcf.get("geographyCountry"), required=False)
    if "boundaryProcessesDescription" in pcf and not isinstance(pcf["boundaryProcessesDescription"], str):
        check.errors.append("pcf.boundaryProcessesDescription: must be a string")
    verification = pcf.get("verification")
    if verification is not None:
        if not isinstance(verification, dict):
            check.errors.append("pcf.verification: must be an object")
        else:
            check.text("pcf.verification.providerName", verification.get("providerName"))
            check.stamp("pcf.verification.completedAt", verification.get("completedAt"))
            check.text("pcf.verification.standardName", verification.get("standardName"))


def _validate_recycled_content(check: _DocCheck, doc: Mapping[str, Any]) -> None:
    # Battery-passport shape (recycledMaterial, preConsumerShare, postConsumerShare in %).
    check.text("lot", doc.get("lot"))
    check.stamp("issuedAt", doc.get("issuedAt"))
    material = doc.get("recycledMaterial")
    if type(material) is not str or material not in ELEMENT_SET:
        check.errors.append(f"recycledMaterial: {doc.get('recycledMaterial')!r} is not an element symbol")
    pre = check.decimal("preConsumerShare", doc.get("preConsumerShare"), low=_ZERO, high=_HUNDRED)
    post = check.decimal("postConsumerShare", doc.get("postConsumerShare"), low=_ZERO, high=_HUNDRED)
    if pre is not None and post is not None and pre + post > _HUNDRED:
        check.errors.append("preConsumerShare + postConsumerShare: exceeds 100 %")
    check.choice("chainOfCustodyModel", doc.get("chainOfCustodyModel"), CHAIN_OF_CUSTODY_MODELS)
    verifier = doc.get("verifier")
    if not isinstance(verifier, dict):
        check.errors.append("verifier: must be an object {name, completedAt, standardName}")
    else:
        check.text("verifier.name", verifier.get("name"))
        check.stamp("verifier.completedAt", verifier.get("completedAt"), required=False)
        check.text("verifier.standardName", verifier.get("standardName"), required=False)


def _validate_origin(check: _DocCheck, doc: Mapping[str, Any]) -> None:
    check.text("lot", doc.get("lot"))
    check.stamp("issuedAt", doc.get("issuedAt"))
    smelter = doc.get("smelterId")
    if not isinstance(smelter, str) or not SMELTER_ID.fullmatch(smelter):
        check.errors.append(f"smelterId: {smelter!r} is not an RMI smelter id like CID002315")
    check.text("smelterName", doc.get("smelterName"))
    check.country("mineCountry", doc.get("mineCountry"))
    check.choice("dueDiligenceScheme", doc.get("dueDiligenceScheme"), DUE_DILIGENCE_SCHEMES)
    if "conformant" in doc and not isinstance(doc["conformant"], bool):
        check.errors.append("conformant: must be true or false")


_VALIDATORS = {
    "assay": _validate_assay,
    "carbon_footprint": _validate_carbon_footprint,
    "recycled_content": _validate_recycled_content,
    "origin": _validate_origin,
}


def validate_attestation(kind: str, doc: Any) -> list[str]:
    """Everything wrong with an attestation document of `kind` (assay, carbon_footprint,
    recycled_content, origin): required fields, types (decimal strings, UTC stamps, ISO
    country codes, RMI smelter ids), ranges and known elements and units. Empty when
    the document is acceptable. Extra members are allowed (they are signed too)."""
    return _validated(kind, doc).errors


def _validated(kind: str, doc: Any) -> _DocCheck:
    validator = _VALIDATORS.get(kind)
    if validator is None:
        check = _DocCheck({})
        check.errors.append(f"type: unknown attestation type {kind!r}; known: {', '.join(ATTESTATION_TYPES)}")
        return check
    if not isinstance(doc, dict):
        check = _DocCheck({})
        check.errors.append("document: must be a JSON object")
        return check
    check = _DocCheck(doc)
    if doc.get("type") != kind:
        check.errors.append(f"type: must be {kind!r}")
    validator(check, doc)
    return check


def attestation_lot_matches(kind: str, doc: Mapping[str, Any], lot_ref: str) -> bool:
    """Whether an attestation is about this lot: by its `lot` member, or for a PACT
    footprint by a product id 'urn:ingot:lot:<ref>'."""
    if kind == "carbon_footprint":
        ids = doc.get("productIds")
        return isinstance(ids, list) and (LOT_URN_PREFIX + lot_ref) in ids
    return doc.get("lot") == lot_ref


# --- building -------------------------------------------------------------------------------


def seal_payload(bundle: Mapping[str, Any]) -> dict[str, Any]:
    """What the platform's seal signs: the bundle header and the head of the receipt's
    chain (which commits to its history, ancestors, lot, grade spec and attestations)."""
    chain = bundle["chain"]
    return {
        "format": bundle["format"],
        "exported_at": bundle["exported_at"],
        "receipt": bundle["receipt"],
        "keys": bundle["keys"],
        "head": chain[-1]["hash"],
    }


def _used_kids(attestations: Iterable[Mapping[str, Any]], chains: Iterable[Iterable[Mapping[str, Any]]]) -> set[str]:
    kids = {a["signature"]["kid"] for a in attestations}
    for chain in chains:
        kids.update(sealed["sig"]["kid"] for sealed in chain)
    return kids


def build_bundle(
    *,
    receipt: Mapping[str, Any],
    lot: Mapping[str, Any],
    grade_spec: Mapping[str, Any] | None,
    attestations: Iterable[Mapping[str, Any]],
    chain: Iterable[Mapping[str, Any]],
    ancestors: Iterable[Mapping[str, Any]] = (),
    keys: Iterable[Mapping[str, Any]],
    exported_at: str,
    platform_key: Ed25519PrivateKey,
    platform_kid: str,
) -> dict[str, Any]:
    """Assemble and seal one bundle from plain dicts (shapes in BUNDLE_FORMAT.md):
    `receipt` header, `lot`, `grade_spec` (None for a non-standard receipt),
    `attestations` [{type, document, signature}], `chain` [sealed events], `ancestors`
    [{receipt, chain}] root first, each chain up to and including its split, and `keys`
    (registered JWKs; may be the whole JWKS, only the keys that signed something here are
    kept). Pure and deterministic; it does not verify. Call `verify_bundle` for that."""
    attestation_list = [
        {"type": a["type"], "document": copy.deepcopy(a["document"]), "signature": dict(a["signature"])}
        for a in attestations
    ]
    chain_list = [copy.deepcopy(dict(sealed)) for sealed in chain]
    ancestor_list = [
        {"receipt": a["receipt"], "chain": [copy.deepcopy(dict(s)) for s in a["chain"]]} for a in ancestors
    ]
    if not chain_list:
        raise ProofError(INVALID_BUNDLE, "a bundle needs the receipt's event chain", {})
    used = _used_kids(attestation_list, [chain_list, *(a["chain"] for a in ancestor_list)]) | {platform_kid}
    by_kid = {k.get("kid"): k for k in keys}
    missing = sorted(kid for kid in used if kid not in by_kid)
    if missing:
        raise ProofError(INVALID_BUNDLE, f"no public key given for kid(s) {', '.join(missing)}", {"kids": missing})
    bundle: dict[str, Any] = {
        "format": BUNDLE_FORMAT,
        "exported_at": exported_at,
        "receipt": {name: receipt[name] for name in RECEIPT_FIELDS},
        "lot": copy.deepcopy(dict(lot)),
        "grade_spec": copy.deepcopy(dict(grade_spec)) if grade_spec is not None else None,
        "attestations": attestation_list,
        "chain": chain_list,
        "ancestors": ancestor_list,
        "keys": [copy.deepcopy(dict(by_kid[kid])) for kid in sorted(used)],
    }
    if parse_utc(exported_at) is None:
        raise ProofError(INVALID_BUNDLE, "exported_at must be an ISO 8601 UTC stamp", {})
    bundle["seal"] = sign_bytes(canonical_bytes(seal_payload(bundle)), platform_key, platform_kid)
    return bundle


def bundle_bytes(bundle: Mapping[str, Any]) -> bytes:
    """The bundle as exported (file download, API body): its RFC 8785 canonical bytes, so
    the same receipt state always exports to the same bytes."""
    return canonical_bytes(bundle)


# --- verification ---------------------------------------------------------------------------


class Check(NamedTuple):
    """One named verification step, for a UI to list: what was checked, did it hold,
    and the evidence or the reason."""

    name: str
    ok: bool
    detail: str


_new_check = tuple.__new__


@dataclass(frozen=True, slots=True)
class VerificationResult:
    ok: bool
    checks: tuple[Check, ...]

    @property
    def failures(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.ok)

    def check(self, name: str) -> Check:
        for item in self.checks:
            if item.name == name:
                return item
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks]}


@dataclass(slots=True)
class _Key:
    kid: str
    public_key: Ed25519PublicKey
    member: str
    roles: frozenset[str]
    valid_from: datetime
    valid_to: datetime | None
    revoked_at: datetime | None
    trusted: bool


@lru_cache(maxsize=4096)
def _public_key_of(x: str) -> tuple[Ed25519PublicKey, str] | None:
    """Public key and RFC 7638 thumbprint for a JWK `x`, memoised by `x` itself (the key
    is a pure function of those 43 characters). A verifier checking many bundles meets
    the same platform, lab and producer keys again and again."""
    try:
        raw = b64url_decode(x)
        if len(raw) != 32:
            return None
        return Ed25519PublicKey.from_public_bytes(raw), thumbprint_of_x(x)
    except ValueError:
        return None


def _parse_key(jwk: Any) -> tuple[_Key | None, str | None]:
    """A registered JWK with Ingot's members; (None, reason) when anything is off."""
    if not isinstance(jwk, dict):
        return None, "not a JSON object"
    kid = jwk.get("kid")
    if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
        return None, f"{kid}: kty/crv must be OKP/Ed25519"
    if "d" in jwk:
        return None, f"{kid}: carries a private key"
    x = jwk.get("x")
    loaded = _public_key_of(x) if type(x) is str else None
    if loaded is None:
        return None, f"{kid}: x is not a base64url Ed25519 public key"
    public_key, thumbprint = loaded
    if kid != thumbprint:
        return None, f"{kid}: kid is not the RFC 7638 thumbprint of x"
    member, roles = jwk.get(MEMBER), jwk.get(ROLES)
    if not isinstance(member, str) or not member:
        return None, f"{kid}: {MEMBER} must name the member"
    if type(roles) is not list:
        return None, f"{kid}: {ROLES} must be a list of roles"
    for role in roles:
        if type(role) is not str or not role:
            return None, f"{kid}: {ROLES} must be a list of roles"
    valid_from = parse_utc(jwk.get(VALID_FROM))
    if valid_from is None:
        return None, f"{kid}: {VALID_FROM} must be a UTC stamp"
    text = jwk.get(VALID_TO)
    valid_to = None if text is None else parse_utc(text)
    if text is not None and valid_to is None:
        return None, f"{kid}: {VALID_TO} must be a UTC stamp or null"
    text = jwk.get(REVOKED_AT)
    revoked_at = None if text is None else parse_utc(text)
    if text is not None and revoked_at is None:
        return None, f"{kid}: {REVOKED_AT} must be a UTC stamp or null"
    if valid_to is not None and valid_to <= valid_from:
        return None, f"{kid}: {VALID_TO} must be after {VALID_FROM}"
    return _Key(kid, public_key, member, frozenset(roles), valid_from, valid_to, revoked_at, True), None  # type: ignore[arg-type]


def _validity_problem(key: _Key, signed_at: datetime, anchored_at: datetime) -> str | None:
    """Why `key` could not have made a signature dated `signed_at` and known to exist by
    `anchored_at` (equal for platform signatures). Validity is half-open
    [validFrom, validTo): a rotation sets the old key's validTo to the new key's
    validFrom, and signatures made before it keep verifying. A revocation voids every
    signature not provably made before it, judged at the anchor time."""
    if signed_at < key.valid_from:
        return f"signed {signed_at.isoformat()} before the key's validity ({key.valid_from.isoformat()})"
    if key.valid_to is not None and signed_at >= key.valid_to:
        return f"signed {signed_at.isoformat()} after the key expired ({key.valid_to.isoformat()})"
    if key.revoked_at is not None and key.revoked_at <= anchored_at:
        return f"key revoked {key.revoked_at.isoformat()}, before {anchored_at.isoformat()}"
    return None


_ENTRY_KEYS = frozenset({"event", "hash", "sig"})
_SIG_KEYS = frozenset({"alg", "kid", "sig"})
_ATTESTATION_KEYS = frozenset({"type", "document", "signature"})
_ANCESTOR_KEYS = frozenset({"receipt", "chain"})
_RECEIPT_KEYS = frozenset(RECEIPT_FIELDS)
_CHECK_OK = itemgetter(1)

# An Ed25519 verification cleared to run: (check index, check name, public key, raw
# signature, message, kid).
_Pending = tuple[int, str, Ed25519PublicKey, bytes, bytes, str]


class _Verifier:
    """One run of `verify_bundle`; collects every check in order.

    Signatures: `_signature` makes every check a signature needs (canonical message, alg,
    kid among the keys, trust, role, validity window, a well-formed 64-byte signature)
    and the check is listed on that basis; the Ed25519 verifications themselves run
    back to back in `verify_signatures`, after the parsing and replay, and any that fails
    turns its check into "does not verify" (which is what it would have said had the
    signature been checked first: the other conditions on a signature check only matter
    once it verifies). Running them together keeps the cryptography's code and tables
    warm instead of interleaving them with the JSON work."""

    def __init__(self, bundle: Any, trusted_keys: list[dict[str, Any]] | None) -> None:
        self.bundle = bundle
        self.trusted_keys = trusted_keys
        self.checks: list[Check] = []
        self.pending: list[_Pending] = []
        self.keys: dict[str, _Key] = {}
        self.attestation_digests: list[str | None] = []
        self.assay_profiles: dict[int, AssayProfile] = {}
        self.grade_spec_hash: str | None = None
        self.plain = False  # the whole bundle passed the structural check once: parts skip it

    def canonical(self, obj: Any) -> bytes:
        """Canonical bytes of a part of the bundle (ProofError if it has none)."""
        return plain_canonical_bytes(obj) if self.plain else canonical_bytes(obj)

    def add(self, name: str, ok: bool, detail: str) -> bool:
        self.checks.append(_new_check(Check, (name, ok, detail)))  # NamedTuple without its Python-level __new__
        return ok

    def add_signed(self, name: str, ok: bool, detail: str, cleared: tuple[Ed25519PublicKey, bytes, bytes, str] | None) -> None:
        """A signature check, listed now; its Ed25519 verification (if `_signature` cleared
        one) runs in `verify_signatures`."""
        if cleared is not None:
            self.pending.append((len(self.checks), name, *cleared))
        self.checks.append(_new_check(Check, (name, ok, detail)))

    def verify_signatures(self) -> None:
        """Every Ed25519 verification the listed checks rely on, in one run; one that does
        not verify fails its check."""
        checks = self.checks
        for index, name, public_key, signature, message, kid in self.pending:
            try:
                public_key.verify(signature, message)
            except Exception:  # InvalidSignature; anything else fails the check just the same
                checks[index] = _new_check(Check, (name, False, f"signature by {kid} does not verify"))
        self.pending.clear()

    # -- structure ---------------------------------------------------------------------

    def _structure_problems(self) -> list[str]:
        # Member sets are compared as dict key views against frozensets: no set is built
        # unless something is wrong.
        bundle = self.bundle
        if not isinstance(bundle, dict):
            return ["the bundle is not a JSON object"]
        problems: list[str] = []
        if bundle.get("format") != BUNDLE_FORMAT:
            problems.append(f"format is {bundle.get('format')!r}, this verifier reads {BUNDLE_FORMAT!r}")
        if bundle.keys() != _TOP_LEVEL:
            missing, extra = _TOP_LEVEL - set(bundle), set(bundle) - _TOP_LEVEL
            if missing:
                problems.append(f"missing members {sorted(missing)}")
            if extra:
                problems.append(f"unknown members {sorted(extra)} (nothing unsigned may ride along)")
            return problems
        if parse_utc(bundle["exported_at"]) is None:
            problems.append("exported_at is not a UTC stamp")
        receipt = bundle["receipt"]
        if not isinstance(receipt, dict) or receipt.keys() != _RECEIPT_KEYS:
            problems.append(f"receipt must have exactly {', '.join(RECEIPT_FIELDS)}")
        lot = bundle["lot"]
        lot_ok = isinstance(lot, dict)
        if lot_ok:
            for name in LOT_REQUIRED:
                if not isinstance(lot.get(name), str):
                    lot_ok = False
                    break
        if not lot_ok:
            problems.append(f"lot must be an object with string {', '.join(LOT_REQUIRED)}")
        if bundle["grade_spec"] is not None and not isinstance(bundle["grade_spec"], dict):
            problems.append("grade_spec must be an object or null")
        attestations = bundle["attestations"]
        well_formed = isinstance(attestations, list)
        if well_formed:
            for a in attestations:
                if not (
                    isinstance(a, dict)
                    and a.keys() == _ATTESTATION_KEYS
                    and type(a["type"]) is str
                    and a["type"] in SIGNER_ROLES
                    and isinstance(a["document"], dict)
                    and isinstance(a["signature"], dict)
                    and a["signature"].keys() == _SIG_KEYS
                ):
                    well_formed = False
                    break
        if not well_formed:
            problems.append("attestations must be [{type, document, signature: {alg, kid, sig}}] of known types")
        chains = [("chain", bundle["chain"])]
        ancestors = bundle["ancestors"]
        if not isinstance(ancestors, list) or (
            ancestors
            and not all(
                isinstance(a, dict) and a.keys() == _ANCESTOR_KEYS and isinstance(a["receipt"], str) for a in ancestors
            )
        ):
            problems.append("ancestors must be [{receipt, chain}]")
        elif ancestors:
            chains.extend((f"ancestors[{i}].chain", a["chain"]) for i, a in enumerate(ancestors))
        for where, chain in chains:
            if not isinstance(chain, list) or not chain:
                problems.append(f"{where} must be a non-empty list of sealed events")
                continue
            for i, sealed in enumerate(chain):
                if (
                    not isinstance(sealed, dict)
                    or sealed.keys() != _ENTRY_KEYS
                    or not isinstance(sealed["event"], dict)
                    or not isinstance(sealed["sig"], dict)
                    or sealed["sig"].keys() != _SIG_KEYS
                ):
                    problems.append(f"{where}[{i}] must be {{event, hash, sig: {{alg, kid, sig}}}}")
        keys = bundle["keys"]
        keys_ok = isinstance(keys, list)
        if keys_ok:
            for jwk in keys:
                if not isinstance(jwk, dict):
                    keys_ok = False
                    break
        if not keys_ok:
            problems.append("keys must be a list of JWKs")
        seal = bundle["seal"]
        if not isinstance(seal, dict) or seal.keys() != _SIG_KEYS:
            problems.append("seal must be {alg, kid, sig}")
        return problems

    # -- keys ----------------------------------------------------------------------------

    def _load_keys(self) -> None:
        problems: list[str] = []
        for jwk in self.bundle["keys"]:
            key, problem = _parse_key(jwk)
            if key is None:
                problems.append(problem or "malformed key")
            elif key.kid in self.keys:
                problems.append(f"{key.kid}: listed twice")
            else:
                self.keys[key.kid] = key
        self.add(
            "public keys",
            not problems,
            "; ".join(problems) if problems else f"{len(self.keys)} Ed25519 keys, kids are RFC 7638 thumbprints",
        )
        if self.trusted_keys is None:
            self.add(
                "trust anchors",
                True,
                "no trusted keys supplied: the bundle's own keys were used, which proves integrity, not provenance",
            )
            return
        trusted: dict[str, _Key] = {}
        bad: list[str] = []
        for jwk in self.trusted_keys:
            key, problem = _parse_key(jwk)
            if key is None:
                bad.append(problem or "malformed key")
            else:
                trusted[key.kid] = key
        # The trusted registry is the authority on a key's holder, roles and validity: a
        # key rotated or revoked after this bundle was exported is judged as it stands now.
        for kid, key in self.keys.items():
            anchor = trusted.get(kid)
            if anchor is None:
                key.trusted = False
            else:
                self.keys[kid] = anchor
        untrusted = sorted(kid for kid, key in self.keys.items() if not key.trusted)
        detail = f"{len(self.keys) - len(untrusted)} of {len(self.keys)} bundle keys are in the trusted set"
        if untrusted:
            detail += f"; not trusted: {', '.join(untrusted)}"
        if bad:
            detail += f"; unreadable trusted keys: {'; '.join(bad)}"
        self.add("trust anchors", not bad, detail)

    def _signature(
        self,
        message: bytes | None,
        signature: Mapping[str, Any],
        *,
        roles: frozenset[str],
        signed_at: datetime | None,
        anchored_at: datetime | None = None,
    ) -> tuple[bool, str, _Key | None, tuple[Ed25519PublicKey, bytes, bytes, str] | None]:
        """(ok, detail, key, cleared): every condition on a signature but the Ed25519
        equation itself, which `cleared` (key, signature bytes, message, kid) hands to
        `add_signed` for `verify_signatures`."""
        if message is None:
            return False, "the signed document is not canonicalisable", None, None
        if signature.get("alg") != ALG:
            return False, f"alg must be {ALG}", None, None
        kid = signature.get("kid")
        key = self.keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            return False, f"kid {kid!r} is not among the bundle's keys", None, None
        if not key.trusted:
            return False, f"key {kid} is not in the trusted set", key, None
        if roles.isdisjoint(key.roles):
            return False, f"key {kid} of {key.member} has roles {sorted(key.roles)}, needs one of {sorted(roles)}", key, None
        if signed_at is None:
            return False, "no valid signing time", key, None
        problem = _validity_problem(key, signed_at, anchored_at or signed_at)
        if problem is not None:
            return False, f"key {kid}: {problem}", key, None
        text = signature.get("sig")  # alg and kid are settled above
        raw = signature_from_text(text) if type(text) is str else None
        if raw is None:
            return False, f"signature by {kid} does not verify", key, None
        return True, f"EdDSA by {kid} ({key.member})", key, (key.public_key, raw, message, key.kid)

    # -- run -------------------------------------------------------------------------------

    def run(self) -> None:
        problems = self._structure_problems()
        if not self.add("format", not problems, "; ".join(problems) or BUNDLE_FORMAT):
            return
        bundle = self.bundle
        self.plain = is_plain(bundle)
        self._load_keys()

        # Chains, root first: ancestors then the receipt's own chain.
        chains: list[tuple[str, list[dict[str, Any]]]] = [(a["receipt"], a["chain"]) for a in bundle["ancestors"]]
        own_number = bundle["receipt"].get("number")
        chains.append((own_number, bundle["chain"]))

        states = self._check_chains(chains)
        self._check_conservation(chains)
        root_issued = chains[0][1][0]["event"]
        anchored_at = parse_utc(root_issued.get("at"))
        self._check_attestations(anchored_at, _attesters(root_issued))
        self._check_bindings(root_issued)
        own_state = states[-1] if len(states) == len(chains) and states[-1].number == own_number else None
        self._check_receipt(own_state)
        self._check_lot(own_state, root_issued)
        self._check_grade(own_state)
        self._check_seal(own_state)

    def _check_chains(self, chains: list[tuple[str, list[dict[str, Any]]]]) -> list[ReceiptState]:
        states: list[ReceiptState] = []
        parent: ReceiptState | None = None
        sha256 = hashlib.sha256
        for position, (number, chain) in enumerate(chains):
            is_root, is_own = position == 0, position == len(chains) - 1
            link_problems: list[str] = []
            previous: str | None = None
            for index, sealed in enumerate(chain, start=1):
                event = sealed["event"]
                try:
                    message: bytes | None = self.canonical(event)
                except ProofError:
                    message = None
                seq = event.get("seq")
                if event.get("receipt") != number:
                    link_problems.append(f"event {index} belongs to {event.get('receipt')!r}")
                if seq != index:
                    link_problems.append(f"position {index} holds seq {seq!r} (missing, inserted or reordered)")
                stated = sealed["hash"]
                if message is None:
                    link_problems.append(f"seq {seq}: event is not canonicalisable")
                elif stated != sha256(message).hexdigest():
                    link_problems.append(f"seq {seq}: hash does not match the event's canonical bytes")
                if event.get("prev_hash") != previous:
                    link_problems.append(f"seq {seq}: prev_hash does not link to the previous event")
                previous = stated if isinstance(stated, str) else None
                ok, detail, _, cleared = self._signature(
                    message, sealed["sig"], roles=PLATFORM_ROLES, signed_at=parse_utc(event.get("at"))
                )
                self.add_signed(f"event {number}#{seq} {event.get('kind')}: platform signature", ok, detail, cleared)
            first_kind = chain[0]["event"].get("kind")
            expected = ISSUED if is_root else SPLIT_FROM
            if first_kind != expected:
                link_problems.append(f"the chain opens with {first_kind!r}, expected {expected!r}")
            if not is_own and chain[-1]["event"].get("kind") != SPLIT:
                link_problems.append("an ancestor's chain must end with its split")
            self.add(
                f"chain {number}: hashes and links",
                not link_problems,
                "; ".join(link_problems) or f"{len(chain)} events, seq 1..{len(chain)}, each linked to the previous hash",
            )
            if not is_root:
                self._check_ancestry(chains[position - 1], number, chain[0]["event"])
            try:
                state: ReceiptState | None = None
                for sealed in chain:
                    state = apply_event(state, sealed["event"], hash=sealed["hash"], parent=parent)
                assert state is not None
                states.append(state)
                parent = state
                self.add(f"chain {number}: lifecycle", True, f"legal transitions, now {state.status}")
            except ProofError as exc:
                self.add(f"chain {number}: lifecycle", False, f"{exc.code}: {exc.message}")
                parent = None  # later chains cannot open from a parent that did not replay
        return states

    def _check_ancestry(self, parent_chain: tuple[str, list[dict[str, Any]]], number: str, opening: Mapping[str, Any]) -> None:
        parent_number, chain = parent_chain
        split_entry = chain[-1]
        opening_data = opening.get("data")
        data: dict[str, Any] = opening_data if isinstance(opening_data, dict) else {}
        split_data = split_entry["event"].get("data")
        children = split_data.get("children") if isinstance(split_data, dict) else None
        if not isinstance(children, list):
            children = []
        problems = []
        if data.get("parent") != parent_number:
            problems.append(f"split_from names {data.get('parent')!r}, the ancestor is {parent_number!r}")
        if data.get("parent_event_hash") != split_entry["hash"]:
            problems.append("parent_event_hash is not the hash of the parent's split event")
        listed = [c for c in children if isinstance(c, dict) and c.get("receipt") == number]
        if len(listed) != 1:
            problems.append(f"the parent's split does not list {number}")
        elif listed[0].get("quantity") != data.get("quantity") or listed[0].get("holder") != data.get("holder"):
            problems.append("the child's opening quantity/holder differ from the split's listing")
        self.add(
            f"ancestry {parent_number} -> {number}",
            not problems,
            "; ".join(problems) or f"{number} opens from {parent_number}'s split event",
        )

    def _check_conservation(self, chains: list[tuple[str, list[dict[str, Any]]]]) -> None:
        # Quantities alone, independent of statuses: what a customs officer or auditor
        # most wants to know is that no metal was created on the way.
        problems: list[str] = []
        splits = 0
        for number, chain in chains:
            quantity: Decimal | None = None
            for sealed in chain:
                event = sealed["event"]
                data = event.get("data")
                if not isinstance(data, dict):
                    continue
                kind = event.get("kind")
                try:
                    if kind in (ISSUED, SPLIT_FROM):
                        quantity = _kg(data.get("quantity"))
                    elif kind in (TRANSFERRED, WITHDRAWN) and _kg(data.get("quantity")) != quantity:
                        problems.append(f"{number}#{event.get('seq')} {kind} moves {data.get('quantity')} of {quantity}")
                    elif kind == SPLIT:
                        splits += 1
                        children = data.get("children")
                        total = sum((_kg(c.get("quantity")) for c in children), Decimal(0))  # type: ignore[union-attr]
                        if total != quantity:
                            problems.append(
                                f"{number}#{event.get('seq')} split: children sum to {total} kg, the receipt held {quantity} kg"
                            )
                except (ValueError, TypeError, AttributeError):
                    problems.append(f"{number}#{event.get('seq')} {kind}: quantities are not kg decimal strings")
        self.add(
            "quantities conserve",
            not problems,
            "; ".join(problems) or f"{splits} split(s); children sum exactly to their parent; transfers move whole receipts",
        )

    def _check_attestations(self, anchored_at: datetime | None, attesters: Mapping[str, frozenset[str]] | None) -> None:
        lot_ref = self.bundle["lot"].get("ref")
        for index, entry in enumerate(self.bundle["attestations"]):
            kind, doc = entry["type"], entry["document"]
            label = f"attestation {index + 1} ({kind})"
            validated = _validated(kind, doc)
            errors = validated.errors
            if validated.profile is not None:
                self.assay_profiles[id(doc)] = validated.profile
            self.add(f"{label}: document", not errors, "; ".join(errors) or "well-formed")
            try:
                message: bytes | None = self.canonical(doc)
            except ProofError:
                message = None
            signed_at = parse_utc(doc.get(DOCUMENT_TIME[kind]))
            ok, detail, key, cleared = self._signature(
                message, entry["signature"], roles=SIGNER_ROLES[kind], signed_at=signed_at, anchored_at=anchored_at
            )
            # A cleared signature has alg EdDSA, a registered kid and a base64url sig.
            self.attestation_digests.append(_attestation_digest(entry, message, plain_signature=cleared is not None))
            if ok and anchored_at is not None and signed_at is not None and signed_at > anchored_at:
                ok, detail = False, "dated after the receipt was issued on it"
            if ok and kind == "assay" and key is not None and doc.get("lab") != key.member:
                ok, detail = False, f"signed by {key.member}, but the certificate names lab {doc.get('lab')!r}"
            if ok and attesters is not None and key is not None and key.member not in attesters.get(kind, ()):
                ok, detail = False, (
                    f"signed by {key.member}, who is neither the lot's warehouse operator, its producer nor "
                    f"nominated for {kind} in the issued event" if attesters else
                    "the issued event's attesters are malformed"
                )
            self.add_signed(f"{label}: signature", ok, detail, cleared)
            matches = isinstance(lot_ref, str) and attestation_lot_matches(kind, doc, lot_ref)
            self.add(f"{label}: lot", matches, f"about lot {lot_ref}" if matches else f"not about lot {lot_ref}")

    def _check_bindings(self, root_issued: Mapping[str, Any]) -> None:
        data = root_issued.get("data")
        if not isinstance(data, dict) or root_issued.get("kind") != ISSUED:
            self.add("bindings", False, "the root chain does not open with an issued event")
            return
        bundle = self.bundle
        lot_hash = self._hash_or_none(bundle["lot"])
        self.add(
            "binding: lot",
            lot_hash is not None and data.get("lot_hash") == lot_hash,
            "the issued event binds this lot's canonical hash" if data.get("lot_hash") == lot_hash else
            "the lot differs from the one bound at issue",
        )
        spec = bundle["grade_spec"]
        spec_hash = self.grade_spec_hash = None if spec is None else self._hash_or_none(spec)
        ok = data.get("grade_spec_hash") == spec_hash and (spec is None or spec_hash is not None)
        self.add(
            "binding: grade spec",
            ok,
            ("the issued event binds this grade spec" if spec is not None else "non-standard receipt: no grade spec")
            if ok else "the grade spec differs from the one bound at issue",
        )
        bound = data.get("attestations")
        # (type, hash) pairs in order: the order is bound too
        present = [
            (entry["type"], digest) for entry, digest in zip(bundle["attestations"], self.attestation_digests, strict=True)
        ]
        ok = (
            isinstance(bound, list)
            and len(present) == len(bound)
            and all(isinstance(b, dict) for b in bound)
            and present == [(b.get("type"), b.get("hash")) for b in bound]
        )
        self.add(
            "binding: attestations",
            ok,
            f"{len(present)} attestations, each bound by hash at issue"
            if ok
            else "attestations differ from those bound at issue (changed, missing or added)",
        )

    def _hash_or_none(self, obj: Any) -> str | None:
        try:
            return hashlib.sha256(self.canonical(obj)).hexdigest()
        except ProofError:
            return None

    def _check_receipt(self, state: ReceiptState | None) -> None:
        if state is None:
            self.add("receipt matches its chain", False, "the chain could not be replayed")
            return
        expected = state.header()
        actual = self.bundle["receipt"]
        differing = sorted(k for k in RECEIPT_FIELDS if actual.get(k) != expected[k])
        self.add(
            "receipt matches its chain",
            not differing,
            "; ".join(f"{k}: header says {actual.get(k)!r}, chain says {expected[k]!r}" for k in differing)
            or f"{state.number}: {expected['quantity']} kg {state.metal} {state.grade or 'non-standard'}, "
            f"held by {state.holder}, {state.status}",
        )

    def _check_lot(self, state: ReceiptState | None, root_issued: Mapping[str, Any]) -> None:
        lot = self.bundle["lot"]
        if state is None:
            self.add("lot matches receipt", False, "the chain could not be replayed")
            return
        problems = [
            f"{field}: lot says {lot.get(name)!r}, receipt {value!r}"
            for field, name, value in (
                ("ref", "ref", state.lot),
                ("metal", "metal", state.metal),
                ("form", "form", state.form),
                ("warehouse", "warehouse", state.warehouse),
            )
            if lot.get(name) != value
        ]
        data = root_issued.get("data") or {}
        try:
            if _kg(data.get("quantity")) > _kg(lot.get("net_mass_kg")):
                problems.append(f"issued {data.get('quantity')} kg against a {lot.get('net_mass_kg')} kg lot")
        except (ValueError, TypeError):
            problems.append("net_mass_kg is not a kg decimal string")
        self.add("lot matches receipt", not problems, "; ".join(problems) or f"lot {lot.get('ref')} in {state.warehouse}")

    def _check_grade(self, state: ReceiptState | None) -> None:
        if state is None:
            self.add("grade supported by assay", False, "the chain could not be replayed")
            return
        spec = self.bundle["grade_spec"]
        if state.grade is None:
            self.add("grade supported by assay", spec is None, "non-standard receipt: no grade claimed")
            return
        if spec is None:
            self.add("grade supported by assay", False, f"claims {state.grade} but carries no grade spec")
            return
        try:
            grade = _grade_from_spec(spec, self.grade_spec_hash)
        except ProofError as exc:
            self.add("grade supported by assay", False, f"grade spec unreadable: {exc.message}")
            return
        if grade.code != state.grade or grade.metal != state.metal:
            self.add("grade supported by assay", False, f"spec is {grade.code} for {grade.metal}, receipt claims {state.grade}")
            return
        assays = [a["document"] for a in self.bundle["attestations"] if a["type"] == "assay"]
        if not assays:
            self.add("grade supported by assay", False, f"claims {state.grade} without an assay")
            return
        for doc in assays:
            try:
                profile = self.assay_profiles.get(id(doc)) or AssayProfile.from_document(doc)
                result = grade_lot(state.metal, state.form, profile, (grade,))
            except ProofError as exc:
                self.add("grade supported by assay", False, f"assay unreadable: {exc.message}")
                return
            if result.grade != grade.code:
                failures = ", ".join(
                    f"{f.rule} (measured {f.to_dict()['measured'] or 'not measured'})" for f in result.evaluations[0].failures
                )
                self.add("grade supported by assay", False, f"assay {doc.get('id', '')} fails {grade.code}: {failures}")
                return
        self.add("grade supported by assay", True, f"re-graded: {len(assays)} assay(s) meet {grade.code}")

    def _check_seal(self, state: ReceiptState | None) -> None:
        bundle = self.bundle
        exported_at = parse_utc(bundle["exported_at"])
        try:
            message: bytes | None = self.canonical(seal_payload(bundle))
        except ProofError:
            message = None
        ok, detail, _, cleared = self._signature(message, bundle["seal"], roles=PLATFORM_ROLES, signed_at=exported_at)
        if ok and state is not None and exported_at is not None and exported_at < state.moment:
            ok, detail = False, "exported before the receipt's last event"
        self.add_signed("bundle seal", ok, detail, cleared)


def _attesters(root_issued: Mapping[str, Any]) -> dict[str, frozenset[str]] | None:
    """Who may sign each kind of attestation, from the root `issued` event's `attesters`
    (platform-signed). None when the event names none (a receipt issued before nominations
    existed): then only roles are checked."""
    data = root_issued.get("data")
    if not isinstance(data, dict) or "attesters" not in data:
        return None
    return allowed_attesters(data["attesters"])


def allowed_attesters(attesters: Any) -> dict[str, frozenset[str]]:
    """The rule of who may attest a lot, per attestation kind: its warehouse operator, its producer
    and the members nominated for that kind, by legal id, from `attesters` as an `issued` event
    binds them ({operator, producer, nominated: {kind: [member]}}). Empty when they are malformed,
    so every attestation fails. The platform judges submissions and issues by the same function."""
    if not isinstance(attesters, dict):
        return {}
    operator, producer, nominated = attesters.get("operator"), attesters.get("producer"), attesters.get("nominated")
    if type(operator) is not str or not (producer is None or type(producer) is str) or type(nominated) is not dict:
        return {}
    always = {operator} if producer is None else {operator, producer}
    allowed: dict[str, frozenset[str]] = {}
    for kind in SIGNER_ROLES:
        members = nominated.get(kind, [])
        if type(members) is not list or not all(type(m) is str for m in members):
            return {}
        allowed[kind] = frozenset(always.union(members))
    return allowed


def _kg(value: Any) -> Decimal:
    if not isinstance(value, str) or not KG_PATTERN.fullmatch(value):
        raise ValueError("not a kg quantity")
    return Decimal(value)




def _attestation_digest(
    entry: Mapping[str, Any], document_bytes: bytes | None, *, plain_signature: bool = False
) -> str | None:
    """`chain.attestation_hash(entry)` without canonicalising the document a second time:
    RFC 8785 bytes of an object are its members' canonical bytes in sorted key order,
    and "document" < "signature" < "type". `plain_signature`: the caller has already
    established that the signature is {alg: EdDSA, kid, sig} with base64url strings."""
    if document_bytes is None:
        return None
    sig = entry["signature"]
    alg, kid, value = sig.get("alg"), sig.get("kid"), sig.get("sig")
    if plain_signature or (
        alg == ALG and type(kid) is str and type(value) is str and _TOKEN.fullmatch(kid) and _TOKEN.fullmatch(value)
    ):
        # base64url tokens need no escaping: write their canonical form directly
        signature = b'{"alg":"EdDSA","kid":"' + kid.encode() + b'","sig":"' + value.encode() + b'"}'
    else:
        try:
            signature = canonical_bytes(sig)
        except ProofError:
            return None
    kind = entry["type"].encode("ascii")  # one of ATTESTATION_TYPES: plain identifiers
    digest = hashlib.sha256(b'{"document":')
    digest.update(document_bytes)  # hashed where it lies, not copied into a new message
    digest.update(b',"signature":' + signature + b',"type":"' + kind + b'"}')
    return digest.hexdigest()


_GRADE_CACHE: dict[str, Grade] = {}
_GRADE_CACHE_SIZE = 256


def _grade_from_spec(spec: Mapping[str, Any], spec_hash: str | None) -> Grade:
    """Parse a grade spec, memoised by its content hash: every receipt of a grade embeds
    the same spec, so a verifier working through many bundles parses each grade once.
    Keyed by the SHA-256 of the canonical bytes, so a changed byte is a different entry."""
    if spec_hash is None:
        return parse_grade(spec)
    grade = _GRADE_CACHE.get(spec_hash)
    if grade is None:
        grade = parse_grade(spec)
        if len(_GRADE_CACHE) >= _GRADE_CACHE_SIZE:
            _GRADE_CACHE.clear()
        _GRADE_CACHE[spec_hash] = grade
    return grade


def verify_bundle(bundle: Any, trusted_keys: list[dict[str, Any]] | None = None) -> VerificationResult:
    """Every check of a bundle, in order, with `ok` true only if all hold. Never raises
    for a bad bundle: a failure is a check with ok false and the reason in `detail`.
    With `trusted_keys` (the platform's published JWKS), every signature must come from
    a trusted key, and trusted metadata (roles, validity, revocation) overrides the
    bundle's copy."""
    verifier = _Verifier(bundle, trusted_keys)
    try:
        verifier.run()
    except Exception as exc:  # a malformed bundle must yield a failed check, never a crash
        verifier.add("verification completed", False, f"stopped on malformed input: {type(exc).__name__}: {exc}")
    verifier.verify_signatures()  # the signatures of the checks listed so far, also after a stop
    checks = tuple(verifier.checks)
    return VerificationResult(ok=all(map(_CHECK_OK, checks)), checks=checks)
