"""ReceiptFacts read set-based from real, signed attestations: which document counts, how a PACT footprint
becomes kgCO2e per kg, storage incidents, and a constant number of queries whatever the number of receipts."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from compliance.facts import (
    facts_from_snapshot,
    facts_snapshot,
    footprint_per_kg,
    receipt_facts_bulk,
    receipt_proofs_bulk,
)
from receipts import services as receipt_services
from receipts.models import Attestation
from tests.factories.compliance import EsgWorld, footprint_document, origin_doc

pytestmark = pytest.mark.django_db


def test_facts_come_from_the_lot_s_signed_attestations() -> None:
    world = EsgWorld()
    goods = world.proven_receipt(quantity="40.000", mass="100.000", footprint="12.4", recycled=("20.0", "15.5"))
    [facts] = receipt_facts_bulk([goods.pk])
    assay = Attestation.objects.get(lot=goods.lot, kind="assay")
    assert facts.receipt_number == goods.number
    assert (facts.metal, facts.grade_code, facts.quantity_kg, facts.warehouse_country) == \
        ("Ga", "GA-6N", Decimal("40.000"), "CN")
    assert facts.assay_issued_on.isoformat() == assay.document["issuedAt"][:10]
    assert facts.footprint_kgco2e_per_kg == Decimal("12.4")
    assert facts.footprint_verified and facts.footprint_verification_standard == "ISO 14067"
    assert (facts.recycled_pre_consumer_pct, facts.recycled_post_consumer_pct) == (Decimal("20.0"), Decimal("15.5"))
    assert facts.origin_smelter_id == "CID900101"
    assert facts.open_storage_incident is False

    [proof] = receipt_proofs_bulk([goods.pk])
    assert proof.holder_id == goods.holder_id
    assert proof.attestations == dict(Attestation.objects.filter(lot=goods.lot).values_list("kind", "pk"))
    assert facts_from_snapshot(goods.number, facts_snapshot(proof)) == facts


def test_a_lot_without_esg_attestations_has_only_its_assay() -> None:
    world = EsgWorld()
    bare = world.receipt()
    [facts] = receipt_facts_bulk([bare.pk])
    assert facts.assay_issued_on is not None
    assert facts.footprint_kgco2e_per_kg is None and not facts.footprint_verified
    assert facts.recycled_pre_consumer_pct is None and facts.recycled_post_consumer_pct is None
    assert facts.origin_smelter_id is None


def test_the_attestation_submitted_last_counts_and_a_deprecated_footprint_does_not() -> None:
    world = EsgWorld()
    goods = world.proven_receipt(footprint="12.4", smelter="CID900101")
    lot = goods.lot
    world.attest(lot, "origin", origin_doc(lot, smelter_id="CID123456", issued_days_ago=8))
    world.attest(lot, "carbon_footprint", footprint_document(lot, world.producer, pcf="99.0", status="Deprecated"))
    [facts] = receipt_facts_bulk([goods.pk])
    assert facts.origin_smelter_id == "CID123456"
    assert facts.footprint_kgco2e_per_kg == Decimal("12.4")  # the deprecated one is skipped

    world.attest(lot, "carbon_footprint", footprint_document(lot, world.producer, pcf="7.5", verified=False))
    [facts] = receipt_facts_bulk([goods.pk])
    assert facts.footprint_kgco2e_per_kg == Decimal("7.5") and not facts.footprint_verified
    assert facts.footprint_verification_standard is None


def test_a_footprint_per_piece_is_put_per_kilogram_by_the_mass_per_declared_unit() -> None:
    world = EsgWorld()
    lot = world.proven_lot(footprint=None)
    world.attest(lot, "carbon_footprint",
                 footprint_document(lot, world.producer, pcf="25", unit="piece", mass_per_unit="2.5"))
    goods = receipt_services.receipt_issue(lot=lot, holder=lot.depositor, quantity_kg="10", issued_by=world.operator)
    [facts] = receipt_facts_bulk([goods.pk])
    assert facts.footprint_kgco2e_per_kg == Decimal("10")


@pytest.mark.parametrize(("pcf", "unit", "mass", "expected"), [
    ("12.4", "kilogram", None, Decimal("12.4")),
    ("12.4", "kilogram", "3", Decimal("12.4")),  # already per kg
    ("30", "piece", "3", Decimal("10")),
    ("30", "piece", None, None),  # cannot be put per kg: not declared
    ("30", "liter", "0", None),
    ("-1", "kilogram", None, None),
    ("1e3", "kilogram", None, Decimal("1E+3")),
    (None, "kilogram", None, None),
    (12.4, "kilogram", None, None),  # a float never came through the validator
])
def test_footprint_per_kg(pcf: object, unit: str, mass: str | None, expected: Decimal | None) -> None:
    assert footprint_per_kg(pcf, unit, mass) == expected


def test_an_open_storage_incident_at_the_lot_s_location_is_a_fact_until_it_closes() -> None:
    world = EsgWorld()
    hot = world.proven_receipt(location="VAULT-HOT")
    cool = world.proven_receipt(location="VAULT-COOL")
    _, incident = receipt_services.storage_reading_record(
        warehouse=world.warehouse, by=world.operator, location="VAULT-HOT",
        observed_at=timezone.now() - timedelta(minutes=1), temperature_c=Decimal("35.00"),
        humidity_pct=Decimal("20.00"), seal_intact=True)
    assert incident is not None
    facts = {f.receipt_number: f for f in receipt_facts_bulk([hot.pk, cool.pk])}
    assert facts[hot.number].open_storage_incident and not facts[cool.number].open_storage_incident
    receipt_services.storage_incident_close(incident=incident, reason="sensor recalibrated, metal re-inspected")
    assert not receipt_facts_bulk([hot.pk])[0].open_storage_incident


def test_split_children_carry_the_lot_s_facts_and_the_order_given_is_kept() -> None:
    world = EsgWorld()
    goods = world.proven_receipt(quantity="100.000")
    first, second = receipt_services.receipt_split(receipt=goods, quantities=["60.000", "40.000"], by=goods.holder)
    facts = receipt_facts_bulk([second.pk, first.pk, second.pk, 10**12])
    assert [f.receipt_number for f in facts] == [second.number, first.number]
    assert [f.quantity_kg for f in facts] == [Decimal("40.000"), Decimal("60.000")]
    assert facts[0].footprint_kgco2e_per_kg == facts[1].footprint_kgco2e_per_kg == Decimal("12.4")


def test_the_number_of_queries_does_not_grow_with_the_receipts(django_assert_max_num_queries) -> None:
    world = EsgWorld()
    one = world.proven_receipt()
    many = [world.proven_receipt(quantity="10.000", smelter=None if i % 2 else "CID900102") for i in range(12)]
    with django_assert_max_num_queries(4):
        assert len(receipt_facts_bulk([one.pk])) == 1
    with django_assert_max_num_queries(4):
        assert len(receipt_facts_bulk([r.pk for r in [one, *many]])) == 13
    assert receipt_facts_bulk([]) == []
