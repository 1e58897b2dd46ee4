"""GET /api/v1/compliance/receipts/{number}/esg: the receipt's current labels and the rule results behind
them, for its holder and its warehouse operator; anyone else gets a 404."""

from __future__ import annotations

import pytest

from compliance.services import esg_evaluate
from tests.conftest import client_for
from tests.factories.compliance import EsgWorld
from tests.factories.members import MemberFactory, UserFactory

pytestmark = pytest.mark.django_db


def url(number: str) -> str:
    return f"/api/v1/compliance/receipts/{number}/esg"


def test_the_holder_sees_labels_and_every_rule_measured_against_required() -> None:
    world = EsgWorld()
    goods = world.proven_receipt(footprint="12.4")
    holder = client_for(UserFactory(member=goods.holder))

    pending = holder.get(url(goods.number))
    assert pending.status_code == 200, pending.content
    assert pending.json()["labels"] == [] and {p["status"] for p in pending.json()["packs"]} == {"pending"}

    esg_evaluate(receipt_ids=[goods.pk])
    body = holder.get(url(goods.number)).json()
    assert body["receipt"] == goods.number
    assert body["labels"] == ["EU", "LC", "US"] and body["cleared"] is True and body["blocked"] is False
    packs = {p["pack"]: p for p in body["packs"]}
    assert list(packs) == ["base", "eu-market", "low-carbon", "us-ira"]
    lc = packs["low-carbon"]
    assert (lc["version"], lc["label"], lc["gate"], lc["status"], lc["outcome"], lc["label_earned"]) == \
        ("1", "LC", False, "evaluated", "pass", True)
    assert lc["evaluated_at"] is not None
    assert [r["rule_id"] for r in lc["rules"]] == ["lc-footprint-verified", "lc-carbon-intensity"]
    assert lc["rules"][1]["measured"] == "12.4 kgCO2e/kg"
    assert lc["rules"][1]["required"] == "<= 119.9 kgCO2e/kg for Ga"
    assert lc["rules"][0]["measured"] == "12.4 kgCO2e/kg, verified (ISO 14067)"
    assert {r["rule_id"]: r["outcome"] for r in packs["base"]["rules"]} == {
        "assay-fresh": "pass", "storage-no-open-incident": "pass", "smelter-conformant": "pass"}
    assert packs["eu-market"]["cbam"] == {"eur_low": "0.00", "eur_high": "0.00", "certified": True,
                                          "basis": "recognised carbon certification: no CBAM cost expected"}
    assert packs["base"]["label"] is None and packs["base"]["gate"] is True


def test_a_failing_receipt_shows_why_and_its_cbam_estimate() -> None:
    world = EsgWorld()
    goods = world.proven_receipt(quantity="250.000", footprint="300.0", standard="Internal review", smelter=None)
    esg_evaluate(receipt_ids=[goods.pk])
    body = client_for(UserFactory(member=goods.holder)).get(url(goods.number)).json()
    assert body["labels"] == [] and body["cleared"] is False and body["blocked"] is True
    packs = {p["pack"]: p for p in body["packs"]}
    smelter = packs["base"]["rules"][2]
    assert (smelter["rule_id"], smelter["outcome"], smelter["measured"]) == \
        ("smelter-conformant", "fail", "not declared")
    assert smelter["required"].startswith("on the conformant smelter list")
    assert packs["eu-market"]["cbam"]["certified"] is False
    assert (packs["eu-market"]["cbam"]["eur_low"], packs["eu-market"]["cbam"]["eur_high"]) == ("20.00", "30.00")


def test_the_warehouse_operator_sees_it_and_nobody_else_does() -> None:
    world = EsgWorld()
    goods = world.proven_receipt()
    esg_evaluate(receipt_ids=[goods.pk])
    operator = client_for(UserFactory(member=world.operator))
    assert operator.get(url(goods.number)).json()["labels"] == ["EU", "LC", "US"]
    stranger = client_for(UserFactory(member=MemberFactory(roles=["trader"])))
    for number in (goods.number, "WR-GA-2099-999999"):
        response = stranger.get(url(number))
        assert response.status_code == 404 and response.json()["code"] == "not_found"
    assert client_for(UserFactory(member=goods.holder)).get(url("WR-GA-2099-999999")).status_code == 404
