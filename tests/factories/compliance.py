"""Factories and helpers for compliance tests: catalogue metals, a receipt in a warehouse, approved
declarations and licences, an officer's OTP-verified admin session, and receipts whose lots carry real,
signed ESG attestations (footprint, recycled content, origin)."""

from __future__ import annotations

import itertools
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from django.test import Client
from django.utils import timezone

from compliance.models import DeclarationStatus, EndUseDeclaration, ExportLicence, LicenceStatus
from compliance.services import (
    end_use_declaration_decide,
    end_use_declaration_submit,
    export_licence_decide,
    export_licence_submit,
)
from members.models import Member, User
from receipts import services as receipt_services
from receipts.catalogue import load_catalogue
from receipts.models import Attestation, Lot, Metal, Receipt, Warehouse
from tests.factories.members import MemberFactory, UserFactory
from tests.factories.receipts import (
    ReceiptWorld,
    Signer,
    carbon_footprint_document,
    origin_document,
    recycled_content_document,
)

_seq = itertools.count(1)


def metal(symbol: str = "Ga") -> Metal:
    """The catalogue's metal row (created from receipts/catalogue.json if missing)."""
    existing = Metal.objects.filter(symbol=symbol).first()
    if existing is not None:
        return existing
    spec = load_catalogue().metal(symbol)
    return Metal.objects.create(
        symbol=spec.symbol, name=spec.name, hs_code=spec.hs_code, export_controlled=spec.export_controlled,
        controlled_since=spec.controlled_since, control_reference=spec.control_reference or "",
        package_kg=spec.package_kg, forms=list(spec.forms), catalogue_version="test")


def warehouse(country: str = "CN") -> Warehouse:
    n = next(_seq)
    operator = MemberFactory(roles=["warehouse"], country=country)
    return Warehouse.objects.create(operator=operator, code=f"WH{n}", name=f"Test warehouse {n}", country=country,
                                    region=country, approved=True)


def receipt(*, symbol: str = "Ga", warehouse_country: str = "CN", holder: Member | None = None,
            quantity_kg: str = "100.000") -> Receipt:
    n = next(_seq)
    store = warehouse(warehouse_country)
    lot = Lot.objects.create(warehouse=store, metal=metal(symbol), form="ingot", net_mass_kg=Decimal(quantity_kg),
                             package_count=1, brand="TEST", batch_number=f"B{n}", production_date=date(2026, 1, 5),
                             location="vault-1", depositor=store.operator)
    return Receipt.objects.create(number=f"R-TEST-{n:06d}", lot=lot, quantity_kg=Decimal(quantity_kg),
                                  holder=holder or MemberFactory(), issued_at=timezone.now())


def validity(days_back: int = 10, days_ahead: int = 200) -> dict[str, date]:
    today = timezone.localdate()
    return {"valid_from": today - timedelta(days=days_back), "valid_to": today + timedelta(days=days_ahead)}


def declaration(member: Member, *, symbol: str = "Ga", approve: bool = True, **fields: Any) -> EndUseDeclaration:
    values: dict[str, Any] = {"end_user": "Test Displays GmbH", "end_use": "AMOLED backplanes",
                              "destination_country": "DE", **validity(), **fields}
    made = end_use_declaration_submit(member=member, metal=metal(symbol), **values)
    if approve:
        end_use_declaration_decide(declaration=made, status=DeclarationStatus.APPROVED, decided_by=None,
                                   reason="test approval")
    return made


def licence(exporter: Member, *, symbol: str = "Ga", cap: str = "100.000", destination: str = "DE",
            approve: bool = True, **fields: Any) -> ExportLicence:
    values: dict[str, Any] = {"licence_number": f"LIC-TEST-{next(_seq):06d}", "consignee": "Test Displays GmbH",
                              "end_user": "Test Displays GmbH", "end_use": "AMOLED backplanes",
                              "destination_country": destination, **validity(), **fields}
    made = export_licence_submit(exporter=exporter, metal=metal(symbol), quantity_cap_kg=cap, **values)
    if approve:
        export_licence_decide(licence=made, status=LicenceStatus.APPROVED, decided_by=None, reason="test approval")
    return made


def officer(username: str = "officer-test") -> User:
    return UserFactory(member=None, is_staff=True, is_superuser=True, username=username)


def officer_client(user: User | None = None) -> Client:
    """A Django test client logged in to the console with a verified TOTP code."""
    from django_otp.oath import totp
    from django_otp.plugins.otp_totp.models import TOTPDevice

    user = user or officer()
    device = TOTPDevice.objects.create(user=user, name="auth", confirmed=True)
    code = f"{totp(device.bin_key, step=device.step, t0=device.t0, digits=device.digits):06d}"
    client = Client()
    response = client.post("/admin/login/?next=/admin/", {
        "username": user.username, "password": "test-password-123", "otp_device": device.persistent_id,
        "otp_token": code}, REMOTE_ADDR="10.0.0.42")
    assert response.status_code == 302, response.content[:2000]
    client.user = user  # type: ignore[attr-defined]
    return client


# --- ESG: receipts whose lots carry real, signed ESG attestations ------------------------------------------

# A verification standard the EU pack recognises (the receipts factory's default, ISO 14064-3, is not one).
EU_STANDARD = "ISO 14067"
CONFORMANT_SMELTER = "CID900101"  # on compliance/rulepacks/conformant_smelters.csv (DEMO data)


def footprint_document(lot: Lot, company: Member, *, pcf: str = "12.4", verified: bool = True,
                       standard: str | None = EU_STANDARD, unit: str = "kilogram", mass_per_unit: str | None = None,
                       status: str = "Active", created_days_ago: int = 9) -> dict[str, Any]:
    """A WBCSD PACT v3 ProductFootprint of the lot (receipts factory shape) with the knobs the ESG rules read."""
    document = carbon_footprint_document(lot, company, pcf=pcf, verified=verified, created_days_ago=created_days_ago)
    document["status"] = status
    document["pcf"]["declaredUnitOfMeasurement"] = unit
    if mass_per_unit is None:
        document["pcf"].pop("productMassPerDeclaredUnit", None)
    else:
        document["pcf"]["productMassPerDeclaredUnit"] = mass_per_unit
    if verified and standard is not None:
        document["pcf"]["verification"]["standardName"] = standard
    return document


def recycled_document(lot: Lot, *, pre: str = "20.0", post: str = "15.5", issued_days_ago: int = 9) -> dict[str, Any]:
    return recycled_content_document(lot, pre=pre, post=post, issued_days_ago=issued_days_ago)


def origin_doc(lot: Lot, *, smelter_id: str = CONFORMANT_SMELTER, issued_days_ago: int = 9) -> dict[str, Any]:
    return origin_document(lot, smelter_id=smelter_id, issued_days_ago=issued_days_ago)


class EsgWorld(ReceiptWorld):
    """A ReceiptWorld plus a producer whose registered key signs footprint, recycled-content and origin
    documents, all submitted through receipts.services.attestation_submit (checked and verified there);
    `attest` nominates it for the kind first."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.producer = MemberFactory(roles=["producer"], name=f"Test Producer {next(_seq)}")
        self.producer_signer = Signer(self.producer)

    def attest(self, lot: Lot, kind: str, document: dict[str, Any]) -> Attestation:
        self.nominate(lot, self.producer, kind)  # not the lot's producer: the operator appoints it
        return receipt_services.attestation_submit(lot=lot, kind=kind, document=document,
                                                   signature=self.producer_signer.sign(document),
                                                   submitted_by=self.producer)

    def proven_lot(self, *, mass: str = "100.000", footprint: str | None = "12.4", verified: bool = True,
                   standard: str | None = EU_STANDARD, recycled: tuple[str, str] | None = ("20.0", "15.5"),
                   smelter: str | None = CONFORMANT_SMELTER, depositor: Member | None = None,
                   location: str = "A1") -> Lot:
        """A graded lot with an assay and whichever ESG attestations are asked for (None: left out)."""
        lot = self.lot(mass=mass, depositor=depositor, location=location)
        if footprint is not None:
            self.attest(lot, "carbon_footprint",
                        footprint_document(lot, self.producer, pcf=footprint, verified=verified, standard=standard))
        if recycled is not None:
            self.attest(lot, "recycled_content", recycled_document(lot, pre=recycled[0], post=recycled[1]))
        if smelter is not None:
            self.attest(lot, "origin", origin_doc(lot, smelter_id=smelter))
        return lot

    def proven_receipt(self, holder: Member | None = None, *, quantity: str = "100.000", **lot_kwargs: Any) -> Receipt:
        """A receipt issued on a proven lot: low-carbon gallium (12.4 kgCO2e/kg, verified) by default."""
        lot = self.proven_lot(mass=lot_kwargs.pop("mass", quantity), depositor=holder, **lot_kwargs)
        return receipt_services.receipt_issue(lot=lot, holder=holder or lot.depositor, quantity_kg=Decimal(quantity),
                                              issued_by=self.operator)


def proofs_both_ways(ids: list[int], monkeypatch: Any) -> list[Any]:
    """The receipts' proofs read by the one SQL statement (over the lot-facts projection) and by the ORM,
    after checking that the two reads agree, facts snapshot text included."""
    from compliance import facts as facts_module
    from compliance.facts import facts_snapshot_text, receipt_proofs_bulk

    monkeypatch.setattr(facts_module, "FACTS_BY_SQL", False)
    by_orm = receipt_proofs_bulk(ids)
    monkeypatch.setattr(facts_module, "FACTS_BY_SQL", True)
    by_sql = receipt_proofs_bulk(ids)
    assert by_sql == by_orm
    assert [facts_snapshot_text(p) for p in by_sql] == [facts_snapshot_text(p) for p in by_orm]
    return by_sql
