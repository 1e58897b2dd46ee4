"""What the ESG rules look at, read from the database set-based: `ReceiptFacts` for many receipts at once.

One chunk of receipts costs four queries whatever its size: the receipts with their lot, metal, grade and
warehouse; the attestations of their lots, with only the few document members the rules use pulled out of
the JSON by the database; the open storage incidents at their lots' locations; and the open incidents
that name a receipt directly. Nothing is read per receipt.

Which document counts: for each lot and kind, the attestation submitted last (highest `created_at`, then
pk) — a new certificate replaces the old one, which is why submitting an attestation re-evaluates the
lot's open receipts. A PACT footprint whose `status` is `Deprecated` is skipped (the one before it
counts). Signatures are not checked here: `receipts.services.attestation_submit` verified each one on
the way in, and the bundle verifier re-checks them offline.

How document members become facts:

- assay: `issuedAt` (a UTC stamp) -> `assay_issued_on`, its UTC date;
- carbon_footprint (WBCSD PACT v3): `pcf.pcfExcludingBiogenicUptake` is kgCO2e per declared unit. With
  `declaredUnitOfMeasurement` "kilogram" it is already per kg; with another unit (piece, liter, ...) it is
  divided by `pcf.productMassPerDeclaredUnit` (kg per declared unit) when that is present and > 0;
  otherwise the footprint cannot be put per kg and counts as not declared. A negative figure counts as
  not declared. `pcf.verification` present (with a provider) -> third-party verified, and its
  `standardName` is the verification standard;
- recycled_content: `preConsumerShare`, `postConsumerShare` (percent);
- origin: `smelterId`;
- storage: an open incident (closed_at NULL) at the lot's warehouse and location, or one that lists the
  receipt, -> `open_storage_incident`.

A member with the wrong shape (it cannot happen for documents the service validated, but rows can be
written by other means) becomes "not declared" for that fact rather than failing the whole chunk.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from django.db import connection
from django.db.models import Case, TextField, When
from django.db.models.expressions import RawSQL
from django.db.models.fields.json import KT

from compliance.esg import HUNDRED, ReceiptFacts
from receipts.canonical import parse_utc
from receipts.models import Attestation, AttestationKind, Receipt, StorageIncident

KILOGRAM: Final = "kilogram"
DEPRECATED: Final = "Deprecated"

# The document members the rules use, per kind, pulled out by the database (->> / #>> on PostgreSQL,
# JSON_EXTRACT on SQLite). Each is wrapped in CASE on the kind so a row only pays for its own members: a
# document is usually stored out of line (TOAST), and every extraction fetches it again.
_MEMBERS: Final = (
    (AttestationKind.ASSAY, "document__issuedAt"),
    (AttestationKind.CARBON_FOOTPRINT, "document__status"),
    (AttestationKind.CARBON_FOOTPRINT, "document__pcf__pcfExcludingBiogenicUptake"),
    (AttestationKind.CARBON_FOOTPRINT, "document__pcf__declaredUnitOfMeasurement"),
    (AttestationKind.CARBON_FOOTPRINT, "document__pcf__productMassPerDeclaredUnit"),
    (AttestationKind.CARBON_FOOTPRINT, "document__pcf__verification__providerName"),
    (AttestationKind.CARBON_FOOTPRINT, "document__pcf__verification__standardName"),
    (AttestationKind.RECYCLED_CONTENT, "document__preConsumerShare"),
    (AttestationKind.RECYCLED_CONTENT, "document__postConsumerShare"),
    (AttestationKind.ORIGIN, "document__smelterId"),
)
_DOCUMENT_MEMBERS: Final = [Case(When(kind=kind, then=KT(path)), default=None, output_field=TextField())
                            for kind, path in _MEMBERS]


@dataclass(frozen=True, slots=True)
class ReceiptProof:
    """A receipt's facts plus what the storing side needs: ids, holder, and which attestation rows
    (kind -> Attestation pk) the facts were read from."""

    receipt_id: int
    holder_id: int
    facts: ReceiptFacts
    attestations: dict[str, int]


def ids_in(ids: Sequence[int]) -> Any:
    """The right-hand side of an `__in` lookup on ids: one array parameter on PostgreSQL, whatever the count
    (5,000 placeholders cost more to build, bind and parse than the query itself), a plain list elsewhere."""
    if connection.vendor == "postgresql":
        return RawSQL("SELECT unnest(%s::bigint[])", (list(ids),))
    return list(ids)


def _decimal(value: Any) -> Decimal | None:
    if type(value) is not str:
        return None
    try:
        number = Decimal(value)
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _share(value: Any) -> Decimal | None:
    share = _decimal(value)
    return share if share is not None and 0 <= share <= HUNDRED else None


def _assay_date(value: Any) -> date | None:
    moment = parse_utc(value)
    return moment.date() if moment is not None else None


def footprint_per_kg(pcf: Any, unit: Any, mass_per_unit: Any) -> Decimal | None:
    """kgCO2e per kg of metal from a PACT pcf figure and its declared unit; None when it cannot be said."""
    amount = _decimal(pcf)
    if amount is None or amount < 0:
        return None
    if unit == KILOGRAM:
        return amount
    mass = _decimal(mass_per_unit)
    if mass is None or mass <= 0:
        return None
    return amount / mass


def _latest_attestations(lot_ids: Iterable[int]) -> dict[tuple[int, str], tuple[Any, ...]]:
    """(lot id, kind) -> the row of the attestation that counts, with the extracted members."""
    rows = (Attestation.objects.filter(lot_id__in=ids_in(sorted(lot_ids)))
            .order_by("lot_id", "kind", "created_at", "pk")
            .values_list("pk", "lot_id", "kind", *_DOCUMENT_MEMBERS))
    latest: dict[tuple[int, str], tuple[Any, ...]] = {}
    for row in rows:
        kind = row[2]
        if kind == AttestationKind.CARBON_FOOTPRINT and row[4] == DEPRECATED:
            continue
        latest[(row[1], kind)] = row  # ordered by time: the last one wins
    return latest


def receipt_proofs_bulk(receipt_ids: Iterable[int]) -> list[ReceiptProof]:
    """Facts for every receipt id that exists, in the order given (duplicates once), in four queries."""
    wanted = list(dict.fromkeys(receipt_ids))
    if not wanted:
        return []
    receipts = {row[0]: row for row in Receipt.objects.filter(pk__in=ids_in(wanted)).values_list(
        "pk", "number", "holder_id", "lot_id", "quantity_kg", "grade__code", "lot__metal__symbol",
        "lot__warehouse__country", "lot__warehouse_id", "lot__location")}
    if not receipts:
        return []
    lot_ids = {row[3] for row in receipts.values()}
    latest = _latest_attestations(lot_ids)
    warehouses = {row[8] for row in receipts.values()}
    open_locations = set(StorageIncident.objects.filter(closed_at__isnull=True, warehouse_id__in=warehouses)
                         .values_list("warehouse_id", "location"))
    named = set(StorageIncident.receipts.through.objects
                .filter(receipt_id__in=ids_in(list(receipts)), storageincident__closed_at__isnull=True)
                .values_list("receipt_id", flat=True))

    proofs: list[ReceiptProof] = []
    for receipt_id in wanted:
        row = receipts.get(receipt_id)
        if row is None:
            continue
        pk, number, holder_id, lot_id, quantity, grade, metal, country, warehouse_id, location = row
        used: dict[str, int] = {}
        assay = latest.get((lot_id, AttestationKind.ASSAY))
        footprint = latest.get((lot_id, AttestationKind.CARBON_FOOTPRINT))
        recycled = latest.get((lot_id, AttestationKind.RECYCLED_CONTENT))
        origin = latest.get((lot_id, AttestationKind.ORIGIN))
        for kind, found in ((AttestationKind.ASSAY, assay), (AttestationKind.CARBON_FOOTPRINT, footprint),
                            (AttestationKind.RECYCLED_CONTENT, recycled), (AttestationKind.ORIGIN, origin)):
            if found is not None:
                used[str(kind)] = found[0]
        per_kg = verifier = standard = None
        if footprint is not None:
            per_kg = footprint_per_kg(footprint[5], footprint[6], footprint[7])
            verifier, standard = footprint[8], footprint[9]
        smelter = origin[12] if origin is not None else None
        proofs.append(ReceiptProof(
            receipt_id=pk, holder_id=holder_id, attestations=used,
            facts=ReceiptFacts(
                receipt_number=number,
                metal=metal,
                grade_code=grade or "",
                quantity_kg=quantity,
                warehouse_country=str(country),
                assay_issued_on=_assay_date(assay[3]) if assay is not None else None,
                footprint_kgco2e_per_kg=per_kg,
                footprint_verified=per_kg is not None and type(verifier) is str and bool(verifier.strip()),
                footprint_verification_standard=standard if type(standard) is str else None,
                recycled_pre_consumer_pct=_share(recycled[10]) if recycled is not None else None,
                recycled_post_consumer_pct=_share(recycled[11]) if recycled is not None else None,
                origin_smelter_id=smelter if type(smelter) is str else None,
                open_storage_incident=(warehouse_id, location) in open_locations or pk in named,
            )))
    return proofs


def receipt_facts_bulk(receipt_ids: Sequence[int]) -> list[ReceiptFacts]:
    """`ReceiptFacts` for the receipts (unknown ids skipped), built set-based: see the module docstring."""
    return [proof.facts for proof in receipt_proofs_bulk(receipt_ids)]


# --- the facts as stored with an evaluation --------------------------------------------------------------


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def facts_snapshot(proof: ReceiptProof) -> dict[str, Any]:
    """The facts as JSON, stored with each evaluation: with the pack version they reproduce every rule's
    measured and required values exactly as they were judged (`facts_from_snapshot` + `esg.evaluate`)."""
    f = proof.facts
    return {
        "metal": f.metal, "grade": f.grade_code, "quantity_kg": str(f.quantity_kg),
        "warehouse_country": f.warehouse_country,
        "assay_issued_on": f.assay_issued_on.isoformat() if f.assay_issued_on is not None else None,
        "footprint_kgco2e_per_kg": _text(f.footprint_kgco2e_per_kg), "footprint_verified": f.footprint_verified,
        "footprint_verification_standard": f.footprint_verification_standard,
        "recycled_pre_consumer_pct": _text(f.recycled_pre_consumer_pct),
        "recycled_post_consumer_pct": _text(f.recycled_post_consumer_pct),
        "origin_smelter_id": f.origin_smelter_id, "open_storage_incident": f.open_storage_incident,
        "attestations": proof.attestations,
    }


def facts_from_snapshot(receipt_number: str, snapshot: dict[str, Any]) -> ReceiptFacts:
    def dec(name: str) -> Decimal | None:
        value = snapshot.get(name)
        return None if value is None else Decimal(value)

    issued = snapshot.get("assay_issued_on")
    return ReceiptFacts(
        receipt_number=receipt_number, metal=snapshot["metal"], grade_code=snapshot.get("grade") or "",
        quantity_kg=Decimal(snapshot["quantity_kg"]), warehouse_country=snapshot["warehouse_country"],
        assay_issued_on=date.fromisoformat(issued) if issued else None,
        footprint_kgco2e_per_kg=dec("footprint_kgco2e_per_kg"),
        footprint_verified=bool(snapshot.get("footprint_verified")),
        footprint_verification_standard=snapshot.get("footprint_verification_standard"),
        recycled_pre_consumer_pct=dec("recycled_pre_consumer_pct"),
        recycled_post_consumer_pct=dec("recycled_post_consumer_pct"),
        origin_smelter_id=snapshot.get("origin_smelter_id"),
        open_storage_incident=bool(snapshot.get("open_storage_incident")),
    )
