"""Receipt services: splits conserve quantity and keep their proof, the open receipts of a lot never exceed
it, grading reads every assay, and a platform key rotation leaves old bundles verifying."""

from __future__ import annotations

import json
import random
from decimal import Decimal

import pytest

from config.errors import ApplicationError
from receipts import services
from receipts.bundles import verify_bundle
from receipts.models import OPEN_STATUSES, Lot, Receipt, ReceiptEvent, ReceiptStatus
from receipts.platform_keys import platform_key_rotate, platform_signer
from receipts.selectors import jwks, lot_quantities, receipt_bundle
from tests.factories.members import MemberFactory
from tests.factories.receipts import ReceiptWorld, assay_document
from tests.invariants import assert_value_invariants

pytestmark = pytest.mark.django_db


def verifies(receipt: Receipt) -> dict[str, object]:
    """The receipt's bundle, verified against the platform's JWKS as an outside auditor would."""
    bundle = json.loads(json.dumps(receipt_bundle(receipt)))  # through JSON, as it travels
    result = verify_bundle(bundle, trusted_keys=jwks()["keys"])
    assert result.ok, [c for c in result.checks if not c.ok]
    return bundle


def assert_lot_invariant(lot: Lot) -> None:
    """Open receipts of a lot never exceed it; with what was withdrawn, never more than the lot either."""
    quantities = lot_quantities(lot)
    assert quantities["open_kg"] + quantities["withdrawn_kg"] <= lot.net_mass_kg
    assert quantities["available_kg"] >= 0
    for receipt in Receipt.objects.filter(lot=lot, status__in=OPEN_STATUSES):
        assert receipt.holder_id is not None and receipt.closed_at is None


def test_split_children_sum_to_the_parent_and_keep_the_proof() -> None:
    world = ReceiptWorld()
    parent = world.receipt(quantity="100.000")
    children = services.receipt_split(receipt=parent, quantities=["30", "25.5", "44.5"], by=parent.holder)
    parent.refresh_from_db()
    assert parent.status == ReceiptStatus.SPLIT and parent.closed_at is not None
    assert sum(c.quantity_kg for c in children) == parent.quantity_kg == Decimal("100.000")
    assert {c.parent_id for c in children} == {parent.pk} and {c.grade_id for c in children} == {parent.grade_id}
    for child in children:
        bundle = verifies(child)
        assert bundle["ancestors"][0]["receipt"] == parent.number
        assert [a["type"] for a in bundle["attestations"]] == ["assay"]  # the lot's proof travels with the part
    # A part of a part still traces back to the root and still conserves.
    grandchildren = services.receipt_split(receipt=children[0], quantities=["10", "20"], by=parent.holder)
    bundle = verifies(grandchildren[1])
    assert [a["receipt"] for a in bundle["ancestors"]] == [parent.number, children[0].number]
    result = verify_bundle(bundle)
    assert result.check("quantities conserve").ok
    assert_lot_invariant(parent.lot)
    assert_value_invariants()


def test_a_split_that_does_not_conserve_is_refused_and_changes_nothing() -> None:
    world = ReceiptWorld()
    parent = world.receipt(quantity="100.000")
    events = ReceiptEvent.objects.count()
    for parts in (["30", "60"], ["100"], ["50", "50.001"], ["100", "0"]):
        with pytest.raises(ApplicationError) as refused:
            services.receipt_split(receipt=parent, quantities=parts, by=parent.holder)
        assert refused.value.code in {"quantity_not_conserved", "invalid_quantity"}
    stranger = MemberFactory()
    with pytest.raises(ApplicationError) as refused:
        services.receipt_split(receipt=parent, quantities=["50", "50"], by=stranger)
    assert refused.value.code == "not_found"
    parent.refresh_from_db()
    assert parent.status == ReceiptStatus.ACTIVE and ReceiptEvent.objects.count() == events
    assert Receipt.objects.count() == 1


def test_open_receipts_never_exceed_the_lot_through_any_sequence_of_operations() -> None:
    """Issue, split, withdraw and over-issue attempts in a seeded random order: the invariant holds after
    every step, and an over-issue is refused with nothing written."""
    world = ReceiptWorld()
    lot = world.lot(mass="50.000")
    holder = lot.depositor
    rng = random.Random(20260105)  # noqa: S311 - reproducible test data, not cryptography
    for _ in range(25):
        open_receipts = list(Receipt.objects.filter(lot=lot, status=ReceiptStatus.ACTIVE))
        action = rng.choice(["issue", "issue", "split", "withdraw"])
        try:
            if action == "issue":
                grams = rng.randint(1, 20_000)
                services.receipt_issue(lot=lot, holder=holder, quantity_kg=Decimal(grams) / 1000,
                                       issued_by=world.operator)
            elif action == "split" and open_receipts:
                receipt = rng.choice(open_receipts)
                grams = int(receipt.quantity_kg * 1000)
                if grams >= 2:
                    cut = Decimal(rng.randint(1, grams - 1)) / 1000
                    services.receipt_split(receipt=receipt, quantities=[cut, receipt.quantity_kg - cut], by=holder)
            elif action == "withdraw" and open_receipts:
                receipt = rng.choice(open_receipts)
                services.receipt_withdrawal_request(receipt=receipt, by=holder, withdrawal_ref=f"W-{receipt.pk}")
                services.receipt_withdrawal_complete(receipt=receipt, by=world.operator)
        except ApplicationError as exc:
            assert exc.code == "lot_over_issued", exc
        assert_lot_invariant(lot)
    # The lot ends (nearly) fully receipted, and never beyond; the suite-wide value invariants hold too.
    assert lot_quantities(lot)["available_kg"] < Decimal("20.000")
    assert_value_invariants()


def test_grading_reads_every_assay_of_the_lot() -> None:
    """A second, weaker assay pulls the grade down: the receipt binds both and its bundle re-grades both."""
    world = ReceiptWorld()
    lot = world.lot(mass="10.000", purity="99.999995",
                    impurities=[("O", "1", "ppb"), ("C", "1", "ppb"), ("Fe", "1", "ppb"), ("Cu", "1", "ppb")])
    assert lot.grade.code == "GA-7N"
    weaker = assay_document(lot, world.lab, purity="99.99995", issued_days_ago=2)
    services.attestation_submit(lot=lot, kind="assay", document=weaker, signature=world.lab_signer.sign(weaker),
                                submitted_by=world.lab)
    result = services.lot_grade(lot=lot, by=world.operator)
    assert result.grade == "GA-6N"
    assert any(f.subject == "purity" for f in result.failures_for("GA-7N"))
    receipt = services.receipt_issue(lot=lot, holder=lot.depositor, quantity_kg="10", issued_by=world.operator)
    assert receipt.grade.code == "GA-6N"
    bundle = verifies(receipt)
    assert [a["type"] for a in bundle["attestations"]] == ["assay", "assay"]


def test_non_standard_lot_issues_a_receipt_without_grade_that_still_verifies() -> None:
    world = ReceiptWorld()
    lot = world.lot(mass="10.000", purity="99.9", impurities=[("Fe", "500", "ppm")])
    assert lot.grade is None and lot.grading["grade"] is None
    failures = {e["code"]: e["failures"] for e in lot.grading["evaluations"]}
    assert any(f["subject"] == "Fe" and f["measured"] == "500" for f in failures["GA-4N"])
    receipt = services.receipt_issue(lot=lot, holder=lot.depositor, quantity_kg="10", issued_by=world.operator)
    assert receipt.grade is None and not receipt.is_standard
    verifies(receipt)


def test_key_rotation_keeps_old_bundles_verifying_and_new_events_use_the_new_key() -> None:
    world = ReceiptWorld()
    before = world.receipt(quantity="10.000")
    _, old_kid = platform_signer()
    exported_before = json.loads(json.dumps(receipt_bundle(before)))

    new_key = platform_key_rotate()
    assert platform_signer()[1] == new_key.kid != old_kid

    # The bundle exported before the rotation still verifies against today's JWKS...
    assert verify_bundle(exported_before, trusted_keys=jwks()["keys"]).ok
    # ...and so does a fresh export of the untouched receipt, now sealed by the new key.
    fresh = verifies(before)
    assert fresh["seal"]["kid"] == new_key.kid and fresh["chain"][0]["sig"]["kid"] == old_kid

    frozen = services.receipt_freeze(receipt=before, reason="rotation test")
    kinds = list(ReceiptEvent.objects.filter(receipt=frozen).order_by("seq").values_list("kind", "signature"))
    assert [k for k, _ in kinds] == ["issued", "frozen"]
    assert kinds[0][1]["kid"] == old_kid and kinds[1][1]["kid"] == new_key.kid
    bundle = verifies(frozen)
    assert {k["kid"] for k in bundle["keys"]} >= {old_kid, new_key.kid}

    after = world.receipt(quantity="5.000")
    assert ReceiptEvent.objects.get(receipt=after, seq=1).signature["kid"] == new_key.kid
    verifies(after)


def test_freeze_and_unfreeze_return_to_the_status_before() -> None:
    world = ReceiptWorld()
    receipt = world.receipt(quantity="10.000")
    services.receipt_withdrawal_request(receipt=receipt, by=receipt.holder, withdrawal_ref="W-3")
    frozen = services.receipt_freeze(receipt=receipt, reason="export licence review")
    assert frozen.status == ReceiptStatus.FROZEN
    with pytest.raises(ApplicationError):
        services.receipt_freeze(receipt=receipt, reason="twice")
    thawed = services.receipt_unfreeze(receipt=receipt, reason="licence approved")
    assert thawed.status == ReceiptStatus.WITHDRAWAL_REQUESTED
    verifies(thawed)
