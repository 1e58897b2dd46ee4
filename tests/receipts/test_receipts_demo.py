"""The receipts demo: loads on top of the members demo, twice without duplicating, and every demo receipt
carries a bundle that verifies against the platform's published keys."""

from __future__ import annotations

import pytest

from members import demo as members_demo
from members.models import SigningKey
from receipts import demo
from receipts.bundles import verify_bundle
from receipts.models import Attestation, Lot, Receipt, Warehouse
from receipts.selectors import jwks, receipt_bundle

pytestmark = pytest.mark.django_db


def test_demo_loads_once_and_every_receipt_verifies() -> None:
    members_demo.load()
    lines = demo.load()
    assert "receipts:" in lines[0]
    counts = (Warehouse.objects.count(), Lot.objects.count(), Receipt.objects.count(), Attestation.objects.count(),
              SigningKey.objects.count())
    assert demo.load() and (Warehouse.objects.count(), Lot.objects.count(), Receipt.objects.count(),
                            Attestation.objects.count(), SigningKey.objects.count()) == counts

    assert set(Warehouse.objects.filter(approved=True).values_list("code", "region")) == {
        ("SHA-01", "CN"), ("GZ-01", "CN"), ("RTM-01", "EU")}
    grades = set(Lot.objects.values_list("grade__code", flat=True))
    assert {"GA-6N", "GA-7N", "GE-6N", "IN-5N5", "W-4N", "RE-5N5", None} <= grades
    assert all("(demo)" in brand for brand in Lot.objects.values_list("brand", flat=True))
    assert Attestation.objects.filter(kind="recycled_content").count() >= 2
    assert Attestation.objects.filter(kind="carbon_footprint").exists()
    assert set(Attestation.objects.filter(kind="origin").values_list("document__smelterId", flat=True)) <= {
        f"CID90{n}" for n in ("0101", "0102", "0103", "0201", "0301", "0302", "0401", "0402", "0501", "0601",
                              "0701", "0801")}
    holders = set(Receipt.objects.values_list("holder__users__username", flat=True))
    assert holders == {"sgc", "gtw", "nir", "lumen", "mm"}
    assert Receipt.objects.filter(grade=None).count() == 1  # the off-spec tungsten

    trusted = jwks()["keys"]
    for receipt in Receipt.objects.all():
        result = verify_bundle(receipt_bundle(receipt), trusted_keys=trusted)
        assert result.ok, (receipt.number, [c for c in result.checks if not c.ok])
