"""What the ESG rules look at, read from the database set-based: `ReceiptFacts` for many receipts at once.

One chunk of receipts costs one query on PostgreSQL whatever its size (`_facts_sql`): the receipts with their
lot, metal, grade and warehouse, the lot's row of `EsgLotFacts` (the attestation that counts per kind and the
few document members the rules use, kept by the database from the attestations in the same transaction as
every write to them), and whether an open storage incident covers the receipt. Elsewhere (SQLite) the same
rows take four ORM queries that read the attestations themselves. Nothing is read per receipt.

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

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from functools import cache
from typing import Any, Final

from django.db import connection
from django.db.models import Case, TextField, When
from django.db.models.expressions import RawSQL
from django.db.models.fields.json import KT

from compliance.esg import HUNDRED, ReceiptFacts
from compliance.models import EsgLotFacts
from receipts.canonical import parse_utc
from receipts.models import (
    Attestation,
    AttestationKind,
    Grade,
    Lot,
    Metal,
    Receipt,
    StorageIncident,
    Warehouse,
)

KILOGRAM: Final = "kilogram"
DEPRECATED: Final = "Deprecated"
# On PostgreSQL a chunk's facts are one statement (_facts_sql); set to False to read them through the ORM
# there too (the path every other database takes), e.g. to compare the two.
FACTS_BY_SQL = True

_ASSAY: Final = str(AttestationKind.ASSAY)
_FOOTPRINT: Final = str(AttestationKind.CARBON_FOOTPRINT)
_RECYCLED: Final = str(AttestationKind.RECYCLED_CONTENT)
_ORIGIN: Final = str(AttestationKind.ORIGIN)

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


# One row per receipt, whichever way it was read:
# (pk, number, holder_id, quantity_kg, grade code, metal symbol, warehouse country, open storage incident,
#  assay id, assay issuedAt,
#  footprint id, pcfExcludingBiogenicUptake, declaredUnitOfMeasurement, productMassPerDeclaredUnit,
#      verification providerName, verification standardName,
#  recycled id, preConsumerShare, postConsumerShare,
#  origin id, smelterId)
_FactRow = tuple[Any, ...]


def _fact_rows_orm(wanted: list[int]) -> list[_FactRow]:
    """The fact rows in four ORM queries (any database)."""
    receipts = list(Receipt.objects.filter(pk__in=ids_in(wanted)).values_list(
        "pk", "number", "holder_id", "lot_id", "quantity_kg", "grade__code", "lot__metal__symbol",
        "lot__warehouse__country", "lot__warehouse_id", "lot__location"))
    if not receipts:
        return []
    latest = _latest_attestations({row[3] for row in receipts})
    open_locations = set(StorageIncident.objects.filter(closed_at__isnull=True,
                                                        warehouse_id__in={row[8] for row in receipts})
                         .values_list("warehouse_id", "location"))
    named = set(StorageIncident.receipts.through.objects
                .filter(receipt_id__in=ids_in([row[0] for row in receipts]), storageincident__closed_at__isnull=True)
                .values_list("receipt_id", flat=True))
    none = (None,) * 13
    rows: list[_FactRow] = []
    for pk, number, holder_id, lot_id, quantity, grade, metal, country, warehouse_id, location in receipts:
        assay = latest.get((lot_id, AttestationKind.ASSAY)) or none
        footprint = latest.get((lot_id, AttestationKind.CARBON_FOOTPRINT)) or none
        recycled = latest.get((lot_id, AttestationKind.RECYCLED_CONTENT)) or none
        origin = latest.get((lot_id, AttestationKind.ORIGIN)) or none
        rows.append((pk, number, holder_id, quantity, grade, metal, country,
                     (warehouse_id, location) in open_locations or pk in named,
                     assay[0], assay[3], footprint[0], *footprint[5:10], recycled[0], recycled[10], recycled[11],
                     origin[0], origin[12]))
    return rows


@cache
def _facts_sql() -> str:
    """The fact rows of a chunk of receipts in one PostgreSQL statement (parameter: the receipt ids, as the
    text of an array).

    The attestation members come from `EsgLotFacts`, the per-lot projection the database keeps in step with
    the attestations (migration 0005): a few narrow rows instead of every document (a sweep read ~20,000
    documents per 5,000 receipts out of a ~500 MB table, and that was most of its database time). What it
    holds is exactly what the ORM read (`_fact_rows_orm`) picks from the attestations themselves.
    """
    q = connection.ops.quote_name
    receipt, lot, metal, grade, warehouse = (m._meta.db_table for m in (Receipt, Lot, Metal, Grade, Warehouse))
    incident, lot_facts = StorageIncident._meta.db_table, EsgLotFacts._meta.db_table
    named = StorageIncident.receipts.through._meta.db_table
    # Identifiers from model meta; the one value (the ids) is a parameter.
    return f"""
SELECT r.id, r.number, r.holder_id, r.quantity_kg, g.code, m.symbol, w.country,
       EXISTS (SELECT 1 FROM {q(incident)} i
               WHERE i.closed_at IS NULL AND i.warehouse_id = l.warehouse_id AND i.location = l.location)
       OR EXISTS (SELECT 1 FROM {q(named)} n JOIN {q(incident)} i ON i.id = n.storageincident_id
                  WHERE n.receipt_id = r.id AND i.closed_at IS NULL),
       f.assay_id, f.assay_issued_at, f.footprint_id, f.footprint_pcf, f.footprint_unit, f.footprint_mass_per_unit,
       f.footprint_verifier, f.footprint_standard, f.recycled_id, f.recycled_pre_consumer, f.recycled_post_consumer,
       f.origin_id, f.origin_smelter
FROM (SELECT DISTINCT unnest(%s::bigint[]) AS id) wanted
JOIN {q(receipt)} r ON r.id = wanted.id
JOIN {q(lot)} l ON l.id = r.lot_id
JOIN {q(metal)} m ON m.id = l.metal_id
JOIN {q(warehouse)} w ON w.id = l.warehouse_id
LEFT JOIN {q(grade)} g ON g.id = r.grade_id
LEFT JOIN {q(lot_facts)} f ON f.lot_id = r.lot_id
"""  # noqa: S608  # nosec B608


def pg_bigint_array(ids: Iterable[int]) -> str:
    """Ids as the text of a PostgreSQL array, for a `%s::bigint[]` parameter: psycopg adapting a list of 5,000
    ints element by element cost more than the statement's planning."""
    return "{" + ",".join(map(str, map(int, ids))) + "}"


def _fact_rows_sql(wanted: list[int]) -> list[_FactRow]:
    with connection.cursor() as cursor:
        cursor.execute(_facts_sql(), (pg_bigint_array(wanted),))
        return cursor.fetchall()


def receipt_fact_rows(receipt_ids: Sequence[int]) -> dict[int, tuple[Any, ...]]:
    """receipt id -> its fact row (`_FactRow`), for the ids that exist: one query on PostgreSQL, four elsewhere.
    `receipt_proofs` turns them into proofs."""
    wanted = list(dict.fromkeys(receipt_ids))
    if not wanted:
        return {}
    by_sql = connection.vendor == "postgresql" and FACTS_BY_SQL
    return {row[0]: row for row in (_fact_rows_sql(wanted) if by_sql else _fact_rows_orm(wanted))}


def receipt_proofs_bulk(receipt_ids: Iterable[int]) -> list[ReceiptProof]:
    """Facts for every receipt id that exists, in the order given (duplicates once)."""
    wanted = list(dict.fromkeys(receipt_ids))
    return list(receipt_proofs(wanted, receipt_fact_rows(wanted)))


def receipt_proofs(wanted: Iterable[int], rows: dict[int, tuple[Any, ...]]) -> Iterator[ReceiptProof]:
    """The proofs of the receipts in `wanted` that have a fact row, in that order, built lazily."""
    # A chunk repeats the same few shares and figures: convert each distinct one once.
    shares: dict[Any, Decimal | None] = {}
    footprints: dict[tuple[Any, Any, Any], Decimal | None] = {}
    for receipt_id in wanted:
        row = rows.get(receipt_id)
        if row is None:
            continue
        (pk, number, holder_id, quantity, grade, metal, country, incident, assay_id, issued, footprint_id, pcf, unit,
         mass, verifier, standard, recycled_id, pre, post, origin_id, smelter) = row
        used: dict[str, int] = {}
        if assay_id is not None:
            used[_ASSAY] = assay_id
        per_kg = None
        if footprint_id is not None:
            used[_FOOTPRINT] = footprint_id
            key = (pcf, unit, mass)
            if key in footprints:
                per_kg = footprints[key]
            else:
                per_kg = footprints[key] = footprint_per_kg(pcf, unit, mass)
        if recycled_id is not None:
            used[_RECYCLED] = recycled_id
        if origin_id is not None:
            used[_ORIGIN] = origin_id
        if pre in shares:
            pre_pct = shares[pre]
        else:
            pre_pct = shares[pre] = _share(pre)
        if post in shares:
            post_pct = shares[post]
        else:
            post_pct = shares[post] = _share(post)
        yield ReceiptProof(
            receipt_id=pk, holder_id=holder_id, attestations=used,
            facts=ReceiptFacts(
                receipt_number=number,
                metal=metal,
                grade_code=grade or "",
                quantity_kg=quantity,
                warehouse_country=str(country),
                assay_issued_on=_assay_date(issued),
                footprint_kgco2e_per_kg=per_kg,
                footprint_verified=per_kg is not None and type(verifier) is str and bool(verifier.strip()),
                footprint_verification_standard=standard if type(standard) is str else None,
                recycled_pre_consumer_pct=pre_pct,
                recycled_post_consumer_pct=post_pct,
                origin_smelter_id=smelter if type(smelter) is str else None,
                open_storage_incident=bool(incident),
            ))


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


_json_string = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]  # what json.dumps uses
_ATTESTATION_KEYS: Final = tuple(sorted((_ASSAY, _FOOTPRINT, _RECYCLED, _ORIGIN)))


def _json_text(value: str | None) -> str:
    return "null" if value is None else _json_string(value)


def facts_snapshot_text(proof: ReceiptProof) -> str:
    """`json.dumps(facts_snapshot(proof), sort_keys=True, separators=(",", ":"))`, written out directly (the
    keys below are in sorted order): the text is part of each result's digest, so it must not change, and
    json.dumps of the dict cost more per receipt than evaluating every rule."""
    f = proof.facts
    used = proof.attestations
    if len(used) == 4:  # the usual case: every kind, keys in sorted order
        ids = (f'"{_ASSAY}":{used[_ASSAY]:d},"{_FOOTPRINT}":{used[_FOOTPRINT]:d},"{_ORIGIN}":{used[_ORIGIN]:d},'
               f'"{_RECYCLED}":{used[_RECYCLED]:d}')
    else:
        ids = ",".join([f'"{kind}":{used[kind]:d}' for kind in _ATTESTATION_KEYS if kind in used])
    issued = "null" if f.assay_issued_on is None else '"' + f.assay_issued_on.isoformat() + '"'
    # A Decimal's str is digits, sign, point and exponent: nothing to escape. str(), not an f-string: format()
    # of a Decimal costs four times as much.
    per_kg = "null" if f.footprint_kgco2e_per_kg is None else '"' + str(f.footprint_kgco2e_per_kg) + '"'
    pre = "null" if f.recycled_pre_consumer_pct is None else '"' + str(f.recycled_pre_consumer_pct) + '"'
    post = "null" if f.recycled_post_consumer_pct is None else '"' + str(f.recycled_post_consumer_pct) + '"'
    quantity = str(f.quantity_kg)
    return (
        f'{{"assay_issued_on":{issued},"attestations":{{{ids}}},"footprint_kgco2e_per_kg":{per_kg},'
        f'"footprint_verification_standard":{_json_text(f.footprint_verification_standard)},'
        f'"footprint_verified":{"true" if f.footprint_verified else "false"},'
        f'"grade":{_json_string(f.grade_code)},"metal":{_json_string(f.metal)},'
        f'"open_storage_incident":{"true" if f.open_storage_incident else "false"},'
        f'"origin_smelter_id":{_json_text(f.origin_smelter_id)},"quantity_kg":"{quantity}",'
        f'"recycled_post_consumer_pct":{post},"recycled_pre_consumer_pct":{pre},'
        f'"warehouse_country":{_json_string(f.warehouse_country)}}}'
    )


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
