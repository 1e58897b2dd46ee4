"""The fast paths of ESG evaluation on PostgreSQL agree with the plain ones: facts read in one SQL statement
(compliance.facts._facts_sql) give the same proofs as the ORM reads, the facts text written by hand is the
JSON of the snapshot, and results COPied straight into the table behave as the upsert does (races included)."""

from __future__ import annotations

import json
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.apps import apps
from django.db import connection, transaction
from django.utils import timezone
from hypothesis import given
from hypothesis import strategies as st

from compliance import services
from compliance.esg import ReceiptFacts
from compliance.facts import ReceiptProof, facts_snapshot, facts_snapshot_text, receipt_proofs_bulk
from compliance.models import EsgEvaluation, EsgRulePack, Flag, FlagKind
from compliance.services import esg_evaluate
from receipts import services as receipt_services
from receipts.models import Attestation, Receipt, StorageIncident
from tests.factories.compliance import EsgWorld, footprint_document, origin_doc, proofs_both_ways

# --- the facts text -----------------------------------------------------------------------------------

texts = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)
amounts = st.decimals(min_value=0, max_value=100, allow_nan=False, allow_infinity=False, places=3)


@st.composite
def proofs(draw: st.DrawFn) -> ReceiptProof:
    kinds = draw(st.sets(st.sampled_from(["assay", "carbon_footprint", "recycled_content", "origin"])))
    return ReceiptProof(
        receipt_id=1, holder_id=2, attestations={kind: draw(st.integers(1, 10**12)) for kind in sorted(kinds)},
        facts=ReceiptFacts(
            receipt_number="WR-1", metal=draw(texts), grade_code=draw(texts),
            quantity_kg=draw(st.decimals(min_value=Decimal("0.001"), max_value=10**6, places=3)),
            warehouse_country=draw(texts), assay_issued_on=draw(st.none() | st.dates(date(2000, 1, 1))),
            footprint_kgco2e_per_kg=draw(st.none() | amounts), footprint_verified=draw(st.booleans()),
            footprint_verification_standard=draw(st.none() | texts),
            recycled_pre_consumer_pct=draw(st.none() | amounts), recycled_post_consumer_pct=draw(st.none() | amounts),
            origin_smelter_id=draw(st.none() | texts), open_storage_incident=draw(st.booleans())))


@given(proofs())
def test_the_facts_text_is_the_json_of_the_snapshot(proof: ReceiptProof) -> None:
    # It is part of every stored digest: were it to differ, every stored result would be rewritten once.
    assert facts_snapshot_text(proof) == json.dumps(facts_snapshot(proof), sort_keys=True, separators=(",", ":"))


# --- facts: one SQL statement or the ORM --------------------------------------------------------------


def written_by_other_means(like: Attestation, document: Any) -> Attestation:
    """An attestation row that never went through attestation_submit (a repair, an import...)."""
    return Attestation.objects.create(
        lot=like.lot, kind=like.kind, document=document, canonical=json.dumps(document), digest=f"x{Attestation.objects.count()}",
        binding_hash="x", signature=like.signature, signing_key=like.signing_key, signer=like.signer,
        submitted_by=like.submitted_by)


@pytest.mark.django_db
def test_the_sql_read_gives_the_facts_the_orm_reads_give(monkeypatch: pytest.MonkeyPatch) -> None:
    world = EsgWorld()
    proven = world.proven_receipt()
    bare = world.receipt()
    replaced = world.proven_receipt(smelter="CID900101")
    world.attest(replaced.lot, "origin", origin_doc(replaced.lot, smelter_id="CID123456", issued_days_ago=8))
    world.attest(replaced.lot, "carbon_footprint",
                 footprint_document(replaced.lot, world.producer, pcf="99.0", status="Deprecated"))
    per_piece = world.proven_lot(footprint=None)
    world.attest(per_piece, "carbon_footprint",
                 footprint_document(per_piece, world.producer, pcf="25", unit="piece", mass_per_unit="2.5"))
    piece = receipt_services.receipt_issue(lot=per_piece, holder=per_piece.depositor, quantity_kg="10",
                                           issued_by=world.operator)
    hot = world.proven_receipt(location="VAULT-HOT")
    reading, _ = receipt_services.storage_reading_record(
        warehouse=world.warehouse, by=world.operator, location="VAULT-HOT",
        observed_at=timezone.now() - timedelta(minutes=1), temperature_c=Decimal("35.00"),
        humidity_pct=Decimal("20.00"), seal_intact=True)
    named = world.proven_receipt(location="B7")
    incident = StorageIncident.objects.create(warehouse=world.warehouse, location="elsewhere", reading=reading,
                                              breaches=[])
    incident.receipts.add(named)
    odd = world.proven_receipt()
    footprint = Attestation.objects.get(lot=odd.lot, kind="carbon_footprint")
    recycled = Attestation.objects.get(lot=odd.lot, kind="recycled_content")
    origin = Attestation.objects.get(lot=odd.lot, kind="origin")
    written_by_other_means(footprint, {"pcf": "12.4", "status": ["Active"]})  # pcf not an object
    written_by_other_means(recycled, {"preConsumerShare": 12, "postConsumerShare": "150"})  # a JSON number; > 100 %
    written_by_other_means(origin, ["CID900101"])  # not an object at all

    ids = [odd.pk, named.pk, hot.pk, piece.pk, replaced.pk, bare.pk, proven.pk, 10**12, proven.pk]
    got = {p.receipt_id: p.facts for p in proofs_both_ways(ids, monkeypatch)}
    assert list(got) == [odd.pk, named.pk, hot.pk, piece.pk, replaced.pk, bare.pk, proven.pk]
    assert got[proven.pk].footprint_kgco2e_per_kg == Decimal("12.4") and got[proven.pk].origin_smelter_id
    assert got[bare.pk].footprint_kgco2e_per_kg is None and got[bare.pk].assay_issued_on is not None
    assert (got[replaced.pk].origin_smelter_id, got[replaced.pk].footprint_kgco2e_per_kg) == \
        ("CID123456", Decimal("12.4"))
    assert got[piece.pk].footprint_kgco2e_per_kg == Decimal("10")
    assert got[hot.pk].open_storage_incident and got[named.pk].open_storage_incident
    assert not got[proven.pk].open_storage_incident
    assert got[odd.pk].footprint_kgco2e_per_kg is None and got[odd.pk].origin_smelter_id is None
    assert (got[odd.pk].recycled_pre_consumer_pct, got[odd.pk].recycled_post_consumer_pct) == (Decimal(12), None)


# --- storing: COPY straight into the table ----------------------------------------------------------------

def stored(receipts: list[Receipt]) -> list[tuple[Any, ...]]:
    rows = EsgEvaluation.objects.filter(receipt__in=receipts).order_by("pk")
    return [*rows.values_list("pk", "rule_pack_id", "outcome", "label", "rules", "facts", "cbam", "result_hash",
                              "evaluated_at"),
            *Flag.objects.order_by("pk").values_list("pk", "subject_key", "status"),
            apps.get_model("compliance", "EsgEvaluationAuditEvent").objects.count()]


@pytest.mark.django_db
def test_results_stored_meanwhile_by_another_worker_take_the_upsert(monkeypatch: pytest.MonkeyPatch) -> None:
    world = EsgWorld()
    goods, failing = world.proven_receipt(), world.proven_receipt(smelter=None)
    assert esg_evaluate(receipt_ids=[goods.pk, failing.pk]).written == 8
    before = stored([goods, failing])
    # As if the digests had been read before another worker stored the same results: the COPY meets the
    # unique constraint, rolls back to its savepoint, and the upsert finds nothing to change.
    monkeypatch.setattr(services, "_esg_stored_digests", lambda *args: {})
    run = esg_evaluate(receipt_ids=[goods.pk, failing.pk])
    assert (run.written, run.flags) == (0, 0)
    assert stored([goods, failing]) == before

    world.attest(goods.lot, "origin", origin_doc(goods.lot, smelter_id="CID123456"))  # now it fails too
    run = esg_evaluate(receipt_ids=[goods.pk, failing.pk])
    assert (run.written, run.flags) == (4, 2)
    assert EsgEvaluation.objects.filter(receipt=goods, outcome="fail").count() == 2


@pytest.mark.django_db
def test_a_flag_raised_meanwhile_is_not_raised_twice() -> None:
    world = EsgWorld()
    failing = world.proven_receipt(smelter=None)
    # An open flag on the same subject the receipt-scoped lookup does not see: the flags' COPY meets the
    # open-flag unique index and the insert falls back to skipping that one.
    Flag.objects.create(kind=FlagKind.ESG_FAILURE, member=failing.holder, subject_key=f"esg:{failing.number}:base:1")
    run = esg_evaluate(receipt_ids=[failing.pk])
    assert (run.written, run.flags) == (4, 1)
    assert Flag.objects.filter(kind=FlagKind.ESG_FAILURE, status="open").count() == 2
    assert EsgEvaluation.objects.filter(receipt=failing).count() == 4


@pytest.mark.django_db
def test_copied_rows_carry_the_audit_context() -> None:
    world = EsgWorld()
    failing = world.proven_receipt(smelter=None)
    esg_evaluate(receipt_ids=[failing.pk])
    events = apps.get_model("compliance", "EsgEvaluationAuditEvent").objects.filter(receipt_id=failing.pk)
    assert events.count() == 4
    assert {e.pgh_context.metadata["action"] for e in events.select_related("pgh_context")} == {"esg_evaluate"}
    flag_events = apps.get_model("compliance", "FlagAuditEvent").objects.filter(receipt_id=failing.pk)
    assert flag_events.count() == 2
    assert {e.pgh_context.metadata["action"] for e in flag_events.select_related("pgh_context")} == {"esg_evaluate"}


@pytest.mark.django_db
@pytest.mark.parametrize("by_copy", [True, False])
def test_any_text_survives_the_copy_and_a_rerun_writes_nothing(by_copy: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(services, "ESG_STORE_BY_COPY", by_copy)
    world = EsgWorld()
    goods = world.proven_receipt(standard='ISO 14067 \\ "édition"\t2\nβ\r')
    assert esg_evaluate(receipt_ids=[goods.pk]).written == 4
    [proof] = receipt_proofs_bulk([goods.pk])
    assert proof.facts.footprint_verification_standard == 'ISO 14067 \\ "édition"\t2\nβ\r'
    for row in EsgEvaluation.objects.filter(receipt=goods):
        assert row.facts == facts_snapshot(proof)
    assert esg_evaluate(receipt_ids=[goods.pk]).written == 0


@pytest.mark.django_db
def test_stored_digests_read_along_a_dense_span_or_probed_one_by_one_agree() -> None:
    world = EsgWorld()
    receipts = [world.proven_receipt() for _ in range(4)]
    esg_evaluate(receipt_ids=[r.pk for r in receipts[:3]])
    packs = list(EsgRulePack.objects.filter(active=True).values_list("pk", flat=True))
    asked = [receipts[0].pk, receipts[2].pk, receipts[3].pk]  # receipts[1] lies in the span and is not asked for
    dense = services._esg_stored_digests(asked, packs)
    sparse = services._esg_stored_digests([*asked, 10**12], packs)  # too wide a span: probed one by one
    assert dense == sparse
    expected = {(receipt_id, pack_id): digest for receipt_id, pack_id, digest in EsgEvaluation.objects.filter(
        receipt_id__in=asked).values_list("receipt_id", "rule_pack_id", "result_hash")}
    assert dense == expected and len(dense) == 2 * len(packs)


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL settings")
def test_only_the_service_s_own_transaction_commits_asynchronously(monkeypatch: pytest.MonkeyPatch) -> None:
    world = EsgWorld()
    goods = world.proven_receipt()
    seen: list[tuple[str, str]] = []
    store = services._esg_store

    def spy(*args: Any) -> Any:
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_setting('synchronous_commit'), current_setting('work_mem')")
            seen.append(cursor.fetchone())
        return store(*args)

    with connection.cursor() as cursor:
        cursor.execute("SHOW work_mem")
        [server_work_mem] = cursor.fetchone()
    monkeypatch.setattr(services, "_esg_store", spy)
    esg_evaluate(receipt_ids=[goods.pk])
    with transaction.atomic():  # a caller's transaction (say, one that moves title) keeps its durability
        EsgEvaluation.objects.filter(receipt=goods).delete()
        esg_evaluate(receipt_ids=[goods.pk])
        with connection.cursor() as cursor:
            cursor.execute("SHOW synchronous_commit")
            assert cursor.fetchone() == ("on",)
    assert seen == [("off", "32MB"), ("on", server_work_mem)]


@pytest.mark.django_db
def test_results_stored_with_rule_ids_are_rewritten_to_outcomes_by_the_migration() -> None:
    import importlib

    migration = importlib.import_module("compliance.migrations.0006_esg_rule_outcomes_compact")
    world = EsgWorld()
    failing = world.proven_receipt(smelter=None)
    esg_evaluate(receipt_ids=[failing.pk])
    row = EsgEvaluation.objects.select_related("rule_pack").get(receipt=failing, rule_pack__pack_id="base")
    rule_ids = services.esg_compiled_pack(row.rule_pack).rule_ids
    compact = row.rules
    assert "fail" in compact and len(compact) == len(rule_ids)
    EsgEvaluation.objects.filter(pk=row.pk).update(
        rules=[{"rule_id": r, "outcome": o} for r, o in zip(rule_ids, compact, strict=True)])  # as before 0006
    with connection.schema_editor() as editor:
        migration.to_outcomes(apps, editor)
    row.refresh_from_db()
    assert row.rules == compact
    assert row.rule_outcomes(rule_ids) == dict(zip(rule_ids, compact, strict=True))


@pytest.mark.django_db
def test_flags_copied_hold_what_the_orm_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    world = EsgWorld()
    written = {}
    for by_copy in (True, False):
        monkeypatch.setattr(services, "ESG_STORE_BY_COPY", by_copy)
        failing = world.proven_receipt(smelter=None, footprint="999", standard='odd \\ "std"\t1')
        esg_evaluate(receipt_ids=[failing.pk])
        written[by_copy] = [
            {**row, "receipt_id": row["receipt_id"] == failing.pk, "member_id": row["member_id"] == failing.holder_id,
             "reference": row["reference"].replace(failing.number, "N"),
             "subject_key": row["subject_key"].replace(failing.number, "N")}
            for row in Flag.objects.filter(receipt=failing).order_by("subject_key").values(
                "kind", "status", "member_id", "receipt_id", "reference", "subject_key", "details",
                "resolution_reason", "resolved_by_id", "resolved_at", "screening_entry_id")]
    assert written[True] == written[False] and len(written[True]) == 3  # three packs fail it
