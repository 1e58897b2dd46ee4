"""Builders for receipts in tests: keys that really sign, warehouses, lots with signed assays, receipts.

Everything goes through the receipts services, so a test's receipt has a real, verifiable chain.
"""

from __future__ import annotations

import itertools
import uuid
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.utils import timezone

from members.models import Member
from members.services import signing_key_register
from receipts import services
from receipts.canonical import utc_stamp
from receipts.models import Lot, Receipt, Warehouse
from receipts.signing import b64url_encode, public_key_bytes, sign_document
from tests.factories.members import MemberFactory

_seq = itertools.count(1)


class Signer:
    """A member's registered Ed25519 key that signs documents for real."""

    def __init__(self, member: Member) -> None:
        self.member = member
        self.private = Ed25519PrivateKey.generate()
        self.key = signing_key_register(member=member, public_key=b64url_encode(public_key_bytes(
            self.private.public_key())), valid_from=timezone.now() - timedelta(days=400))

    def sign(self, document: dict[str, Any]) -> dict[str, str]:
        return sign_document(document, self.private, self.key.kid)


# A 6N gallium assay profile that meets GA-6N (O 2, C 1, metallic total 6 ppb).
GA_6N_IMPURITIES = [("O", "2", "ppb"), ("C", "1", "ppb"), ("Fe", "1", "ppb"), ("Cu", "1", "ppb"),
                    ("Zn", "2", "ppb"), ("Pb", "1", "ppb"), ("Sn", "1", "ppb")]


def assay_document(lot: Lot, lab: Member, *, purity: str = "99.99995", impurities: list[tuple[str, str, str]] | None = None,
                   issued_days_ago: int = 10) -> dict[str, Any]:
    issued = timezone.now() - timedelta(days=issued_days_ago)
    return {
        "type": "assay", "lot": lot.reference, "lab": lab.legal_id, "method": "GDMS",
        "sampledAt": utc_stamp(issued - timedelta(days=2)), "issuedAt": utc_stamp(issued),
        "purityPercent": purity,
        "impurities": [{"element": e, "value": v, "unit": u} for e, v, u in (impurities or GA_6N_IMPURITIES)],
    }


def carbon_footprint_document(lot: Lot, company: Member, *, pcf: str = "12.4", verified: bool = True,
                              created_days_ago: int = 9) -> dict[str, Any]:
    """A WBCSD PACT v3 ProductFootprint for the lot (names as PACT spells them; numbers as strings)."""
    created = timezone.now() - timedelta(days=created_days_ago)
    pcf_doc: dict[str, Any] = {
        "declaredUnitOfMeasurement": "kilogram", "declaredUnitAmount": "1", "productMassPerDeclaredUnit": "1",
        "referencePeriodStart": "2025-01-01T00:00:00Z", "referencePeriodEnd": "2026-01-01T00:00:00Z",
        "pcfExcludingBiogenicUptake": pcf, "pcfIncludingBiogenicUptake": pcf, "fossilGhgEmissions": pcf,
        "primaryDataShare": "64.5", "exemptedEmissionsPercent": "0.5", "ipccCharacterizationFactors": ["AR6"],
        "crossSectoralStandards": ["ISO14067", "PACT-3.0"], "geographyCountry": "CN",
        "boundaryProcessesDescription": "cradle to gate",
    }
    if verified:
        pcf_doc["verification"] = {"providerName": "Test Verifier GmbH", "completedAt": utc_stamp(created),
                                   "standardName": "ISO 14064-3"}
    return {
        "type": "carbon_footprint", "id": str(uuid.uuid4()), "specVersion": "3.0.0", "created": utc_stamp(created),
        "status": "Active", "companyName": company.name, "companyIds": [f"urn:ingot:member:{company.legal_id}"],
        "productIds": [f"urn:ingot:lot:{lot.reference}"], "productNameCompany": f"{lot.metal.symbol} {lot.form}",
        "productDescription": f"{lot.metal.name} {lot.form}, batch {lot.batch_number}", "pcf": pcf_doc,
    }


def recycled_content_document(lot: Lot, *, pre: str = "20.0", post: str = "15.5",
                              issued_days_ago: int = 9) -> dict[str, Any]:
    """Recycled content in the battery-passport shape (shares in %)."""
    issued = timezone.now() - timedelta(days=issued_days_ago)
    return {
        "type": "recycled_content", "lot": lot.reference, "issuedAt": utc_stamp(issued),
        "recycledMaterial": lot.metal.symbol, "preConsumerShare": pre, "postConsumerShare": post,
        "chainOfCustodyModel": "mass_balance",
        "verifier": {"name": "Test Verifier GmbH", "completedAt": utc_stamp(issued), "standardName": "ISO 22095"},
    }


def origin_document(lot: Lot, *, smelter_id: str = "CID900101", smelter_name: str = "Demo Gallium Refinery Shandong",
                    mine_country: str = "CN", issued_days_ago: int = 9) -> dict[str, Any]:
    """Origin: the smelter by its RMI id, the mine country and the due-diligence scheme."""
    return {
        "type": "origin", "lot": lot.reference, "issuedAt": utc_stamp(timezone.now() - timedelta(days=issued_days_ago)),
        "smelterId": smelter_id, "smelterName": smelter_name, "mineCountry": mine_country,
        "dueDiligenceScheme": "RMAP", "conformant": True,
    }


class ReceiptWorld:
    """A warehouse, its operator, an assay lab with a key (nominated for the assay of every lot `lot()`
    registers), ready to issue receipts."""

    def __init__(self, *, metal: str = "Ga", country: str = "CN", region: str = "CN") -> None:
        n = next(_seq)
        self.metal = metal
        self.operator = MemberFactory(roles=["warehouse"], country=country, name=f"Test Vault {n}")
        self.warehouse: Warehouse = services.warehouse_create(
            operator=self.operator, code=f"WH{n:04d}", name=f"Test Vault {n}", country=country, region=region,
            approved=True)
        self.lab = MemberFactory(roles=["assay_lab"], name=f"Test Lab {n}")
        self.lab_signer = Signer(self.lab)

    def lot(self, *, mass: str = "100.000", depositor: Member | None = None, form: str = "ingot",
            location: str = "A1", impurities: list[tuple[str, str, str]] | None = None,
            purity: str = "99.99995") -> Lot:
        depositor = depositor or MemberFactory(roles=["trader", "producer"])
        lot = services.lot_register(
            warehouse=self.warehouse, registered_by=self.operator, metal=self.metal, form=form,
            net_mass_kg=Decimal(mass), package_count=max(1, int(Decimal(mass))), brand="TESTBRAND",
            batch_number=f"B{next(_seq):06d}", production_date=date(2026, 1, 15), location=location,
            depositor=depositor, nominees=[(self.lab, ["assay"])])
        doc = assay_document(lot, self.lab, impurities=impurities, purity=purity)
        services.attestation_submit(lot=lot, kind="assay", document=doc, signature=self.lab_signer.sign(doc),
                                    submitted_by=self.lab)
        services.lot_grade(lot=lot, by=self.operator)
        lot.refresh_from_db()
        return lot

    def nominate(self, lot: Lot, member: Member, *kinds: str) -> None:
        """The operator nominates `member` to attest the lot for `kinds` (idempotent)."""
        services.lot_nominate(lot=lot, by=self.operator, member=member, kinds=list(kinds))

    def receipt(self, holder: Member | None = None, *, quantity: str = "100.000", **lot_kwargs: Any) -> Receipt:
        lot = self.lot(mass=lot_kwargs.pop("mass", quantity), depositor=holder, **lot_kwargs)
        return services.receipt_issue(lot=lot, holder=holder or lot.depositor, quantity_kg=Decimal(quantity),
                                      issued_by=self.operator)
