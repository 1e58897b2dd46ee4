"""The per-lot ESG facts projection (compliance.models.EsgLotFacts), kept by triggers on receipts_attestation:
whatever writes the attestations (a submission, a bulk insert, an update or a delete by other means, two
transactions at once), the facts the sweep reads from it are the facts the attestations themselves give."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta

import psycopg
import pytest
from django.db import connection
from django.utils import timezone

from compliance.facts import receipt_proofs_bulk
from compliance.models import EsgLotFacts
from receipts.models import Attestation, Receipt
from tests.factories.compliance import EsgWorld, origin_doc, proofs_both_ways

pytestmark = pytest.mark.skipif(connection.vendor != "postgresql", reason="the projection is PostgreSQL's")


@pytest.mark.django_db
def test_updates_deletes_and_moves_by_other_means_keep_the_lot_facts(monkeypatch: pytest.MonkeyPatch) -> None:
    world = EsgWorld()
    goods = world.proven_receipt(smelter="CID900101")
    other = world.proven_receipt(smelter="CID900102")
    origin = Attestation.objects.get(lot=goods.lot, kind="origin")
    later = world.attest(goods.lot, "origin", origin_doc(goods.lot, smelter_id="CID123456", issued_days_ago=3))
    ids = [goods.pk, other.pk]
    assert [p.facts.origin_smelter_id for p in proofs_both_ways(ids, monkeypatch)] == ["CID123456", "CID900102"]

    # A bulk update() rewrites the document that counts.
    Attestation.objects.filter(pk=later.pk).update(document={**later.document, "smelterId": "CID654321"})
    assert [p.facts.origin_smelter_id for p in proofs_both_ways(ids, monkeypatch)] == ["CID654321", "CID900102"]

    # Deleted, the one before it counts again.
    Attestation.objects.filter(pk=later.pk).delete()
    [proof, _] = proofs_both_ways(ids, monkeypatch)
    assert (proof.facts.origin_smelter_id, proof.attestations["origin"]) == ("CID900101", origin.pk)

    # Moved to the other lot: both lots change.
    Attestation.objects.filter(pk=origin.pk).update(lot_id=other.lot_id, created_at=timezone.now())
    assert [p.facts.origin_smelter_id for p in proofs_both_ways(ids, monkeypatch)] == [None, "CID900101"]
    assert EsgLotFacts.objects.get(lot_id=goods.lot_id).origin_id is None


@pytest.mark.django_db
def test_one_statement_writing_many_lots_refreshes_each(monkeypatch: pytest.MonkeyPatch) -> None:
    world = EsgWorld()
    receipts = [world.proven_receipt(smelter="CID900101") for _ in range(3)]
    like = Attestation.objects.get(lot=receipts[0].lot, kind="carbon_footprint")
    rows = [Attestation(lot_id=r.lot_id, kind="carbon_footprint", canonical="{}", digest=f"bulk-{n}",
                        binding_hash="x", signature=like.signature, signing_key_id=like.signing_key_id,
                        signer_id=like.signer_id, submitted_by_id=like.submitted_by_id,
                        document={"pcf": {"pcfExcludingBiogenicUptake": f"{n + 1}.5",
                                          "declaredUnitOfMeasurement": "kilogram"}})
            for n, r in enumerate(receipts)]
    Attestation.objects.bulk_create(rows)  # one INSERT for the three lots
    proofs = proofs_both_ways([r.pk for r in receipts], monkeypatch)
    assert [str(p.facts.footprint_kgco2e_per_kg) for p in proofs] == ["1.5", "2.5", "3.5"]
    assert not any(p.facts.footprint_verified for p in proofs)


@pytest.mark.django_db
def test_every_attested_lot_has_its_row_and_a_lot_without_attestations_has_none() -> None:
    world = EsgWorld()
    goods = world.proven_receipt()
    bare_lot = world.lot()
    Attestation.objects.filter(lot=bare_lot).delete()
    assert set(Attestation.objects.values_list("lot_id", flat=True)) <= \
        set(EsgLotFacts.objects.values_list("lot_id", flat=True))
    facts = EsgLotFacts.objects.get(lot_id=goods.lot_id)
    assert facts.origin_smelter == "CID900101" and facts.footprint_pcf == "12.4"
    assert not EsgLotFacts.objects.filter(lot_id=bare_lot.pk).exclude(assay_id=None).exists()


@pytest.mark.django_db(transaction=True)
def test_two_transactions_attesting_one_lot_leave_the_latest_document_counting() -> None:
    """The later certificate is written first and its transaction stays open; the earlier one (older
    created_at) is written meanwhile and commits last. Had the second transaction recomputed the lot before
    waiting for the first (a plain upsert computed from its own snapshot), it would have written the older
    certificate's facts over the newer ones."""
    world = EsgWorld()
    goods = world.proven_receipt(smelter="CID900101")
    origin = Attestation.objects.get(lot=goods.lot, kind="origin")
    settings = connection.settings_dict
    dsn = dict(dbname=settings["NAME"], user=settings["USER"], host=settings["HOST"] or None,
               port=settings["PORT"] or None, password=settings["PASSWORD"] or None)
    now = timezone.now()
    insert = ("INSERT INTO receipts_attestation (lot_id, kind, document, canonical, digest, binding_hash, signature, "
              "signing_key_id, signer_id, submitted_by_id, created_at) SELECT lot_id, kind, %s::jsonb, '{}', %s, "
              "binding_hash, signature, signing_key_id, signer_id, submitted_by_id, %s FROM receipts_attestation "
              "WHERE id = %s")
    written = threading.Event()
    errors: list[BaseException] = []

    def older() -> None:
        try:
            written.wait(10)
            with psycopg.connect(**dsn) as conn:  # blocks in the trigger until the newer one commits
                conn.execute(insert, (json.dumps({**origin.document, "smelterId": "CID111111"}), "older",
                                      now - timedelta(hours=1), origin.pk))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    thread = threading.Thread(target=older)
    thread.start()
    with psycopg.connect(**dsn) as conn:
        conn.execute(insert, (json.dumps({**origin.document, "smelterId": "CID222222"}), "newer", now, origin.pk))
        written.set()
        time.sleep(1.0)  # the older one's trigger is waiting for this transaction now
    thread.join(20)
    assert not errors and not thread.is_alive()
    assert EsgLotFacts.objects.get(lot_id=goods.lot_id).origin_smelter == "CID222222"
    assert Receipt.objects.filter(pk=goods.pk).exists()
    [proof] = receipt_proofs_bulk([goods.pk])
    assert proof.facts.origin_smelter_id == "CID222222"
