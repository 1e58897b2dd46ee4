"""DEMO data for the receipts app: three approved warehouses, demo signing keys for the labs, producers,
the recycler and the warehouses, and signed lots with receipts (Ga 6N / 7N, Ge 6N, In 5N5, W 4N, Re
powder 5N5 and a non-standard W lot), some recycled, with PACT footprints and RMI-style origins.

Each lot's warehouse nominates the demo labs and verifiers that attest it when it registers the lot (the
producer and the operator need no nomination). Everything goes through the services, so every receipt
carries a real, verifiable bundle. Idempotent: a lot already registered (warehouse + batch number) is left
as it is; keys and warehouses are reused.
Run after members.demo.load().

The demo keys are derived from a PUBLISHED seed (sha256("ingot-demo:" + username)), so re-runs find the
same key instead of registering another — and so anyone can sign as a demo party. Demo data only.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.db import transaction
from django.utils import timezone

from members.models import Member, SigningKey, User
from members.services import signing_key_register
from receipts import services
from receipts.canonical import parse_utc, utc_stamp
from receipts.models import Lot, Metal, Receipt, Warehouse
from receipts.signing import b64url_encode, key_id, public_key_bytes, sign_document

DEMO_SEED = b"ingot-demo:"
DEMO_KEY_VALID_FROM = "2025-01-01T00:00:00Z"

# (code, operator username, name, country, region)
WAREHOUSES: list[tuple[str, str, str, str, str]] = [
    ("SHA-01", "sbw", "Shanghai Waigaoqiao bonded vault (demo)", "CN", "CN"),
    ("GZ-01", "gzd", "Ganzhou strategic metals depot (demo)", "CN", "CN"),
    ("RTM-01", "rms", "Rotterdam Waalhaven metals store (demo)", "NL", "EU"),
]

# Who signs with a demo key: labs (assays), producers and the recycler (footprints, recycled content,
# origin), warehouses (origin papers received with the metal, stock statements).
SIGNERS = ["sinoassay", "euroassay", "sgc", "gtw", "nir", "sbw", "gzd", "rms"]

GA_6N = [("O", "2", "ppb"), ("C", "1", "ppb"), ("N", "1", "ppb"), ("Fe", "1.5", "ppb"), ("Cu", "1", "ppb"),
         ("Zn", "1.5", "ppb"), ("Pb", "0.8", "ppb"), ("Sn", "0.6", "ppb"), ("Ni", "0.4", "ppb")]
GA_7N = [("O", "1", "ppb"), ("C", "1", "ppb"), ("Fe", "0.8", "ppb"), ("Cu", "0.5", "ppb"), ("Zn", "0.6", "ppb"),
         ("Pb", "0.3", "ppb"), ("Sn", "0.3", "ppb"), ("Ni", "0.2", "ppb")]
GE_6N = [("O", "4", "ppb"), ("Fe", "2", "ppb"), ("Cu", "1", "ppb"), ("Zn", "1", "ppb"), ("Ni", "0.8", "ppb"),
         ("Pb", "0.7", "ppb"), ("Al", "1", "ppb"), ("As", "0.5", "ppb")]
IN_5N5 = [("Na", "0.5", "ppb"), ("K", "0.4", "ppb"), ("Fe", "0.8", "ppb"), ("Sn", "800", "ppb"),
          ("Pb", "600", "ppb"), ("Cu", "300", "ppb"), ("Tl", "400", "ppb"), ("Cd", "200", "ppb")]
W_4N = [("Mo", "12", "ppm"), ("Fe", "5", "ppm"), ("O", "300", "ppm"), ("Ni", "3", "ppm"), ("Cr", "2", "ppm")]
W_OFF_SPEC = [("Mo", "310", "ppm"), ("Fe", "18", "ppm"), ("O", "650", "ppm"), ("Ni", "6", "ppm")]
RE_5N5 = [("O", "30", "ppm"), ("H", "4", "ppm"), ("Mo", "1", "ppm"), ("W", "1", "ppm"), ("Fe", "0.5", "ppm")]
RE_POWDER = [("d90", "12.5", "µm"), ("sphericity", "0.95", "1")]


@dataclass
class DemoLot:
    warehouse: str
    batch: str
    metal: str
    form: str
    mass: str
    brand: str
    depositor: str
    location: str
    lab: str
    purity: str
    impurities: list[tuple[str, str, str]]
    receipts: list[tuple[str, str]]  # (holder username, kg)
    producer: str | None = None
    properties: list[tuple[str, str, str]] = field(default_factory=list)
    footprint: tuple[str, str] | None = None  # (signer username, kgCO2e per kg)
    recycled: tuple[str, str, str] | None = None  # (signer username, pre-consumer %, post-consumer %)
    origin: tuple[str, str, str, str] | None = None  # (signer username, smelter id, smelter name, mine country)


LOTS: list[DemoLot] = [
    DemoLot("SHA-01", "DEMO-GA6N-2026-001", "Ga", "ingot", "600.000", "SGC 6N (demo)", "sgc", "V1-A",
            "sinoassay", "99.99995", GA_6N, [("sgc", "250"), ("sgc", "150"), ("mm", "100"), ("lumen", "50")],
            producer="sgc", footprint=("sgc", "186.0"),
            origin=("sgc", "CID900101", "Demo Gallium Refinery Shandong", "CN")),
    DemoLot("SHA-01", "DEMO-GA7N-2026-001", "Ga", "ingot", "120.000", "SGC 7N (demo)", "sgc", "V1-B",
            "euroassay", "99.999995", GA_7N, [("sgc", "60"), ("mm", "40")], producer="sgc",
            footprint=("sgc", "198.5"), origin=("sgc", "CID900102", "Demo Gallium Refinery Guangxi", "CN")),
    DemoLot("RTM-01", "DEMO-GA6N-R-2026-001", "Ga", "ingot", "200.000", "Hamburg Recovered Ga 6N (demo)", "mm",
            "R2-04", "euroassay", "99.99995", GA_6N, [("mm", "120"), ("lumen", "80")],
            footprint=("euroassay", "34.8"), recycled=("euroassay", "35.0", "45.0"),
            origin=("rms", "CID900103", "Demo Gallium Recovery Hamburg", "DE")),
    DemoLot("SHA-01", "DEMO-GE6N-2026-001", "Ge", "ingot", "80.000", "Yunnan Ge 6N (demo)", "mm", "V2-A",
            "sinoassay", "99.99996", GE_6N, [("mm", "50"), ("sgc", "30")],
            origin=("sbw", "CID900201", "Demo Germanium Works Yunnan", "CN")),
    DemoLot("RTM-01", "DEMO-IN5N5-R-2026-001", "In", "ingot", "300.000", "NIR Recycled In 5N5 (demo)", "nir",
            "R1-02", "euroassay", "99.9997", IN_5N5, [("nir", "200"), ("lumen", "100")], producer="nir",
            footprint=("nir", "21.5"), recycled=("nir", "10.0", "70.0"),
            origin=("rms", "CID900302", "Demo Indium Recycling Ulsan", "KR")),
    DemoLot("GZ-01", "DEMO-W4N-2026-001", "W", "powder", "2000.000", "GTW APT-reduced W 4N (demo)", "gtw", "G3",
            "sinoassay", "99.995", W_4N, [("gtw", "1500"), ("mm", "500")], producer="gtw",
            footprint=("gtw", "11.6"), origin=("gtw", "CID900401", "Demo Tungsten Smelter Jiangxi", "CN")),
    DemoLot("RTM-01", "DEMO-RE5N5-2026-001", "Re", "powder", "50.000", "Spherical Re 5N5 (demo)", "mm", "R3-01",
            "euroassay", "99.9997", RE_5N5, [("mm", "30"), ("lumen", "20")], properties=RE_POWDER),
    # Off-spec: Mo 310 ppm fails even W-3N5 (Mo <= 100 ppm), so its receipt is non-standard.
    DemoLot("GZ-01", "DEMO-W-OFFSPEC-2026-001", "W", "powder", "500.000", "GTW off-spec W (demo)", "gtw", "G4",
            "sinoassay", "99.96", W_OFF_SPEC, [("gtw", "500")], producer="gtw"),
]


class _Keys:
    """The demo parties' deterministic keys, registered once."""

    def __init__(self, members: dict[str, Member]) -> None:
        self.private: dict[str, Ed25519PrivateKey] = {}
        self.kid: dict[str, str] = {}
        for username in SIGNERS:
            private = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(DEMO_SEED + username.encode()).digest())
            kid = key_id(private.public_key())
            if not SigningKey.objects.filter(kid=kid).exists():
                signing_key_register(member=members[username], label="DEMO key (published seed)",
                                     public_key=b64url_encode(public_key_bytes(private.public_key())),
                                     valid_from=parse_utc(DEMO_KEY_VALID_FROM))
            self.private[username], self.kid[username] = private, kid

    def sign(self, username: str, document: dict[str, Any]) -> dict[str, str]:
        return sign_document(document, self.private[username], self.kid[username])


def _assay(lot: Lot, spec: DemoLot, lab: Member, at: datetime) -> dict[str, Any]:
    document: dict[str, Any] = {
        "type": "assay", "id": f"COA-{spec.batch}", "lot": lot.reference, "lab": lab.legal_id,
        "method": "GDMS" if spec.metal in {"Ga", "Ge", "In"} else "ICP-MS",
        "sampledAt": utc_stamp(at - timedelta(days=3)), "issuedAt": utc_stamp(at), "purityPercent": spec.purity,
        "impurities": [{"element": e, "value": v, "unit": u} for e, v, u in spec.impurities],
    }
    if spec.properties:
        document["properties"] = [{"name": n, "value": v, "unit": u} for n, v, u in spec.properties]
    return document


def _footprint(lot: Lot, spec: DemoLot, company: Member, pcf: str, at: datetime) -> dict[str, Any]:
    """A PACT v3 ProductFootprint; the id is derived from the batch so the document is reproducible."""
    return {
        "type": "carbon_footprint", "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"ingot-demo:pcf:{spec.batch}")),
        "specVersion": "3.0.0", "created": utc_stamp(at), "status": "Active", "companyName": company.name,
        "companyIds": [f"urn:ingot:member:{company.legal_id}"], "productIds": [f"urn:ingot:lot:{lot.reference}"],
        "productNameCompany": spec.brand, "productDescription": f"{lot.metal.name} {spec.form}, batch {spec.batch}",
        "pcf": {
            "declaredUnitOfMeasurement": "kilogram", "declaredUnitAmount": "1", "productMassPerDeclaredUnit": "1",
            "referencePeriodStart": "2025-01-01T00:00:00Z", "referencePeriodEnd": "2026-01-01T00:00:00Z",
            "pcfExcludingBiogenicUptake": pcf, "pcfIncludingBiogenicUptake": pcf, "fossilGhgEmissions": pcf,
            "primaryDataShare": "72.0", "exemptedEmissionsPercent": "0.8", "ipccCharacterizationFactors": ["AR6"],
            "crossSectoralStandards": ["ISO14067", "PACT-3.0"], "geographyCountry": lot.warehouse.country.code,  # type: ignore[attr-defined]
            "boundaryProcessesDescription": "cradle to gate (demo figures)",
            "verification": {"providerName": "EuroAssay Analytik GmbH (demo)", "completedAt": utc_stamp(at),
                             "standardName": "ISO 14064-3"},
        },
    }


def _recycled(lot: Lot, pre: str, post: str, at: datetime) -> dict[str, Any]:
    return {
        "type": "recycled_content", "lot": lot.reference, "issuedAt": utc_stamp(at),
        "recycledMaterial": lot.metal.symbol, "preConsumerShare": pre, "postConsumerShare": post,
        "chainOfCustodyModel": "mass_balance",
        "verifier": {"name": "EuroAssay Analytik GmbH (demo)", "completedAt": utc_stamp(at),
                     "standardName": "ISO 22095"},
    }


def _origin(lot: Lot, smelter_id: str, smelter_name: str, country: str, at: datetime) -> dict[str, Any]:
    return {"type": "origin", "lot": lot.reference, "issuedAt": utc_stamp(at), "smelterId": smelter_id,
            "smelterName": f"{smelter_name} (demo)", "mineCountry": country, "dueDiligenceScheme": "RMAP",
            "conformant": True}


def _nominees(spec: DemoLot, warehouse: Warehouse, members: dict[str, Member]) -> list[tuple[Member, list[str]]]:
    """The demo lot's labs and verifiers, nominated by its warehouse at registration: every signer that is
    neither the operator nor the lot's producer (those need no nomination)."""
    signers: dict[str, list[str]] = {spec.lab: ["assay"]}
    for kind, attested in (("carbon_footprint", spec.footprint), ("recycled_content", spec.recycled),
                           ("origin", spec.origin)):
        if attested:
            signers.setdefault(attested[0], []).append(kind)
    exempt = {warehouse.operator_id, members[spec.producer].pk if spec.producer else None}
    return [(members[username], kinds) for username, kinds in signers.items() if members[username].pk not in exempt]


def _load_lot(spec: DemoLot, warehouse: Warehouse, members: dict[str, Member], keys: _Keys,
              now: datetime) -> int:
    """Register, attest, grade and issue one demo lot; returns how many receipts were issued."""
    operator = warehouse.operator
    lot = services.lot_register(
        warehouse=warehouse, registered_by=operator, metal=spec.metal, form=spec.form,
        net_mass_kg=Decimal(spec.mass), package_count=max(1, int(Decimal(spec.mass) / Metal.objects.get(symbol=spec.metal).package_kg)),
        brand=spec.brand, batch_number=spec.batch, production_date=(now - timedelta(days=45)).date(),
        location=spec.location, depositor=members[spec.depositor],
        producer=members[spec.producer] if spec.producer else None,
        seal_numbers=[f"{spec.batch}-S{i}" for i in (1, 2)],
        nominees=_nominees(spec, warehouse, members))
    at = now - timedelta(days=20)
    attestations: list[tuple[str, str, dict[str, Any]]] = [
        ("assay", spec.lab, _assay(lot, spec, members[spec.lab], at))]
    if spec.footprint:
        signer, pcf = spec.footprint
        attestations.append(("carbon_footprint", signer, _footprint(lot, spec, members[signer], pcf, at)))
    if spec.recycled:
        signer, pre, post = spec.recycled
        attestations.append(("recycled_content", signer, _recycled(lot, pre, post, at)))
    if spec.origin:
        signer, smelter_id, smelter_name, country = spec.origin
        attestations.append(("origin", signer, _origin(lot, smelter_id, smelter_name, country, at)))
    for kind, signer, document in attestations:
        services.attestation_submit(lot=lot, kind=kind, document=document, signature=keys.sign(signer, document),
                                    submitted_by=operator)
    services.lot_grade(lot=lot, by=operator)
    for holder, kg in spec.receipts:
        services.receipt_issue(lot=lot, holder=members[holder], quantity_kg=kg, issued_by=operator)
    return len(spec.receipts)


def load() -> list[str]:
    """Create the demo warehouses, keys, lots and receipts if missing; return the lines to print."""
    usernames = {u for _, u, *_ in WAREHOUSES} | set(SIGNERS) | {"lumen", "mm"}
    members = {u.username: u.member for u in User.objects.filter(username__in=usernames).select_related("member")
               if u.member is not None}
    missing = sorted(usernames - set(members))
    if missing:
        return [f"  receipts:   skipped (demo members missing: {', '.join(missing)}; load members.demo first)"]
    services.catalogue_sync()
    now = timezone.now()
    lots_made = receipts_made = 0
    with transaction.atomic():
        warehouses: dict[str, Warehouse] = {}
        for code, username, name, country, region in WAREHOUSES:
            warehouse = Warehouse.objects.filter(code=code).first()
            if warehouse is None:
                warehouse = services.warehouse_create(operator=members[username], code=code, name=name,
                                                      country=country, region=region, approved=True)
            warehouses[code] = warehouse
        keys = _Keys(members)
        for spec in LOTS:
            if Lot.objects.filter(warehouse=warehouses[spec.warehouse], batch_number=spec.batch).exists():
                continue
            receipts_made += _load_lot(spec, warehouses[spec.warehouse], members, keys, now)
            lots_made += 1
    demo_receipts = Receipt.objects.filter(lot__batch_number__startswith="DEMO-")
    example = demo_receipts.filter(grade__code="GA-6N").order_by("number").first()
    lines = [
        f"  receipts:   warehouses {', '.join(c for c, *_ in WAREHOUSES)}; {len(LOTS)} signed demo lots, "
        f"{demo_receipts.count()} receipts ({lots_made} lots / {receipts_made} receipts new this run)",
    ]
    if example is not None:
        lines.append(f"              bundle: GET /api/v1/receipts/{example.number}/bundle (as {example.holder.name}); "
                     "verify: POST /api/v1/receipts/verify")
    return lines
