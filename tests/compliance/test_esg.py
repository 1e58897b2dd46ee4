"""Pure ESG evaluation: each rule kind, overall outcome, labels, CBAM, bulk path == single path."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compliance.esg import (
    FAIL,
    NOT_APPLICABLE,
    PASS,
    WARN,
    CompactResult,
    ReceiptFacts,
    RulePack,
    compile_pack,
    evaluate,
    evaluate_many,
)
from compliance.rulepack_loader import load_rulepack, load_rulepacks, parse_rulepack

NOW = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


@pytest.fixture(scope="module")
def packs() -> dict[str, RulePack]:
    return load_rulepacks()


def facts(**overrides: object) -> ReceiptFacts:
    """A receipt that passes every shipped pack; tests change one thing at a time."""
    values: dict[str, object] = {
        "receipt_number": "R-0001",
        "metal": "Ga",
        "grade_code": "GA-6N",
        "quantity_kg": Decimal("1000"),
        "warehouse_country": "CN",
        "assay_issued_on": date(2025, 12, 1),
        "footprint_kgco2e_per_kg": Decimal("80"),
        "footprint_verified": True,
        "footprint_verification_standard": "ISO 14067:2018",
        "recycled_pre_consumer_pct": Decimal("10"),
        "recycled_post_consumer_pct": Decimal("10"),
        "origin_smelter_id": "CID900101",
        "open_storage_incident": False,
    }
    values.update(overrides)
    return ReceiptFacts(**values)  # type: ignore[arg-type]


def rule(result_rules: tuple, rule_id: str):  # type: ignore[no-untyped-def]
    return next(r for r in result_rules if r.rule_id == rule_id)


# --------------------------------------------------------------------------- shipped packs


def test_good_receipt_passes_every_shipped_pack_and_earns_labels(packs: dict[str, RulePack]) -> None:
    results = {pid: evaluate(facts(), pack, now=NOW) for pid, pack in packs.items()}
    assert {pid: r.outcome for pid, r in results.items()} == dict.fromkeys(packs, PASS)
    assert results["base"].label is None  # a gate, not a class
    assert results["eu-market"].label == "EU"
    assert results["low-carbon"].label == "LC"
    assert results["us-ira"].label == "US"
    for result in results.values():
        assert result.pack_hash == packs[result.pack_id].content_hash
        assert all(r.message and r.required for r in result.rules)


# --------------------------------------------------------------------------- assay_max_age


@pytest.mark.parametrize(
    ("issued", "expected"),
    [
        (date(2025, 3, 1), PASS),  # exactly 12 months
        (date(2025, 2, 28), FAIL),  # a day older
        (date(2026, 3, 1), PASS),  # today
        (date(2026, 3, 2), PASS),  # lab a time zone ahead
        (date(2026, 3, 3), FAIL),  # in the future
        (None, FAIL),
    ],
)
def test_assay_age(packs: dict[str, RulePack], issued: date | None, expected: str) -> None:
    result = evaluate(facts(assay_issued_on=issued), packs["base"], now=NOW)
    assert rule(result.rules, "assay-fresh").outcome == expected
    assert result.outcome == expected


def test_assay_age_clamps_month_end(packs: dict[str, RulePack]) -> None:
    leap_day = datetime(2024, 2, 29, tzinfo=UTC)
    result = evaluate(facts(assay_issued_on=date(2023, 2, 28)), packs["base"], now=leap_day)
    assert rule(result.rules, "assay-fresh").outcome == PASS
    result = evaluate(facts(assay_issued_on=date(2023, 2, 27)), packs["base"], now=leap_day)
    assert rule(result.rules, "assay-fresh").outcome == FAIL


def test_assay_messages(packs: dict[str, RulePack]) -> None:
    old = rule(evaluate(facts(assay_issued_on=date(2024, 1, 5)), packs["base"], now=NOW).rules, "assay-fresh")
    assert "older than 12 months" in old.message
    assert old.measured.startswith("issued 2024-01-05 (25 months old)")
    assert "2025-03-01" in old.required
    missing = rule(evaluate(facts(assay_issued_on=None), packs["base"], now=NOW).rules, "assay-fresh")
    assert missing.measured == "no assay"


# --------------------------------------------------------------------------- storage, smelter


def test_open_storage_incident_blocks(packs: dict[str, RulePack]) -> None:
    result = evaluate(facts(open_storage_incident=True), packs["base"], now=NOW)
    assert result.outcome == FAIL
    assert [r.rule_id for r in result.failed_rules] == ["storage-no-open-incident"]


@pytest.mark.parametrize(
    ("smelter", "message"),
    [
        (None, "no origin smelter is declared"),
        ("CID90010", "is not an RMI id"),
        ("cid900101", "is not an RMI id"),
        ("CID999999", "is not on the conformant list"),
    ],
)
def test_smelter_not_conformant(packs: dict[str, RulePack], smelter: str | None, message: str) -> None:
    result = evaluate(facts(origin_smelter_id=smelter), packs["base"], now=NOW)
    smelter_rule = rule(result.rules, "smelter-conformant")
    assert smelter_rule.outcome == FAIL
    assert message in smelter_rule.message
    assert result.outcome == FAIL


# --------------------------------------------------------------------------- EU pack


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"footprint_kgco2e_per_kg": None}, "no carbon footprint is declared"),
        ({"footprint_verified": False}, "declared but not verified"),
        ({"footprint_verification_standard": "Supplier self-assessment"}, "not recognised"),
        ({"footprint_verification_standard": None}, "not recognised"),
    ],
)
def test_eu_footprint_must_be_verified_under_recognised_standard(
    packs: dict[str, RulePack], overrides: dict[str, object], message: str
) -> None:
    result = evaluate(facts(**overrides), packs["eu-market"], now=NOW)
    footprint = rule(result.rules, "eu-footprint-verified")
    assert footprint.outcome == FAIL
    assert message in footprint.message
    assert result.outcome == FAIL
    assert result.label is None


def test_eu_recognised_standard_ignores_case_spacing_and_edition(packs: dict[str, RulePack]) -> None:
    for name in ("ISO 14067", "iso  14067", "ISO 14067:2018", "pact methodology"):
        result = evaluate(facts(footprint_verification_standard=name), packs["eu-market"], now=NOW)
        assert rule(result.rules, "eu-footprint-verified").outcome == PASS, name


@pytest.mark.parametrize(
    ("pre", "post", "expected"),
    [
        (Decimal("8"), Decimal("8"), PASS),  # pre + post = 16
        (Decimal("8"), Decimal("7.99"), FAIL),
        (None, Decimal("16"), PASS),  # undeclared share counts as zero
        (Decimal("16.0"), None, PASS),
        (None, None, FAIL),
    ],
)
def test_eu_recycled_content_counts_pre_and_post(
    packs: dict[str, RulePack], pre: Decimal | None, post: Decimal | None, expected: str
) -> None:
    result = evaluate(
        facts(recycled_pre_consumer_pct=pre, recycled_post_consumer_pct=post), packs["eu-market"], now=NOW
    )
    assert rule(result.rules, "eu-recycled-content").outcome == expected


def test_cbam_estimate_without_recognised_certification(packs: dict[str, RulePack]) -> None:
    result = evaluate(facts(quantity_kg=Decimal("2500"), footprint_verified=False), packs["eu-market"], now=NOW)
    assert result.cbam is not None
    assert (result.cbam.eur_low, result.cbam.eur_high) == (Decimal("200.00"), Decimal("300.00"))
    assert not result.cbam.certified
    assert "80-120 EUR/t x 2.5 t" in result.cbam.basis

    small = evaluate(facts(quantity_kg=Decimal("1.5"), footprint_kgco2e_per_kg=None), packs["eu-market"], now=NOW)
    assert small.cbam is not None
    assert (small.cbam.eur_low, small.cbam.eur_high) == (Decimal("0.12"), Decimal("0.18"))


def test_cbam_zero_with_recognised_certification(packs: dict[str, RulePack]) -> None:
    result = evaluate(facts(quantity_kg=Decimal("2500")), packs["eu-market"], now=NOW)
    assert result.cbam is not None
    assert result.cbam.certified
    assert (result.cbam.eur_low, result.cbam.eur_high) == (Decimal("0"), Decimal("0"))


def test_packs_without_cbam_give_no_estimate(packs: dict[str, RulePack]) -> None:
    assert evaluate(facts(), packs["base"], now=NOW).cbam is None


# --------------------------------------------------------------------------- low-carbon pack


@pytest.mark.parametrize(
    ("metal", "footprint", "expected", "label"),
    [
        ("Ga", Decimal("119.9"), PASS, "LC"),
        ("Ga", Decimal("119.91"), FAIL, None),
        ("In", Decimal("62.2"), PASS, "LC"),
        ("In", Decimal("62.3"), FAIL, None),
        ("W", Decimal("8.1"), PASS, "LC"),
        ("W", Decimal("12.6"), FAIL, None),  # primary tungsten is not low-carbon
        ("GA", Decimal("100"), PASS, "LC"),  # symbol spelling does not matter
    ],
)
def test_low_carbon_threshold_per_metal(
    packs: dict[str, RulePack], metal: str, footprint: Decimal, expected: str, label: str | None
) -> None:
    result = evaluate(facts(metal=metal, footprint_kgco2e_per_kg=footprint), packs["low-carbon"], now=NOW)
    assert rule(result.rules, "lc-carbon-intensity").outcome == expected
    assert result.label == label


def test_low_carbon_metal_without_threshold_is_not_applicable_and_earns_no_label(
    packs: dict[str, RulePack],
) -> None:
    result = evaluate(facts(metal="Ge", footprint_kgco2e_per_kg=Decimal("1")), packs["low-carbon"], now=NOW)
    intensity = rule(result.rules, "lc-carbon-intensity")
    assert intensity.outcome == NOT_APPLICABLE
    assert "no carbon-intensity threshold for Ge" in intensity.message
    assert result.outcome == PASS  # not_applicable fails nothing
    assert result.label is None  # ... and proves nothing


def test_low_carbon_needs_a_declared_footprint(packs: dict[str, RulePack]) -> None:
    result = evaluate(facts(footprint_kgco2e_per_kg=None), packs["low-carbon"], now=NOW)
    assert rule(result.rules, "lc-carbon-intensity").outcome == FAIL
    assert result.outcome == FAIL


# --------------------------------------------------------------------------- severities


def test_warn_rules_warn_and_withhold_the_label(packs: dict[str, RulePack]) -> None:
    result = evaluate(facts(origin_smelter_id=None), packs["us-ira"], now=NOW)
    assert result.outcome == WARN
    assert result.label is None
    assert [r.severity for r in result.failed_rules] == ["warn"]


MIXED = """
id: mixed
version: "2.1.0"
title: Mixed severities
market: ALL
label: MX
rules:
  - {id: storage, kind: no_open_storage_incident, description: d, severity: block}
  - {id: recycled, kind: recycled_content_min, description: d, severity: warn, params: {min_percent: 50}}
"""


def test_block_failure_wins_over_warn() -> None:
    pack = parse_rulepack(MIXED)
    assert pack.version == "2.1.0"
    assert evaluate(facts(), pack, now=NOW).outcome == WARN
    assert evaluate(facts(open_storage_incident=True), pack, now=NOW).outcome == FAIL
    both_ok = facts(recycled_pre_consumer_pct=Decimal("50"), recycled_post_consumer_pct=None)
    assert evaluate(both_ok, pack, now=NOW).label == "MX"


# --------------------------------------------------------------------------- inputs


def test_facts_refuse_float_mass_and_datetime_assay() -> None:
    with pytest.raises(TypeError, match="quantity_kg"):
        facts(quantity_kg=1000.0)
    with pytest.raises(ValueError, match="quantity_kg"):
        facts(quantity_kg=Decimal("0"))
    with pytest.raises(TypeError, match="assay_issued_on"):
        facts(assay_issued_on=datetime(2025, 12, 1, tzinfo=UTC))
    with pytest.raises(TypeError, match="recycled_pre_consumer_pct"):
        facts(recycled_pre_consumer_pct=Decimal("101"))
    with pytest.raises(TypeError, match="footprint"):
        facts(footprint_kgco2e_per_kg=Decimal("NaN"))


def test_now_must_be_timezone_aware(packs: dict[str, RulePack]) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        evaluate(facts(), packs["base"], now=datetime(2026, 3, 1))


# --------------------------------------------------------------------------- content hash


def test_hash_ignores_layout_and_number_spelling_but_not_meaning() -> None:
    relaid = MIXED.replace("min_percent: 50", "min_percent: 50.0") + "\n# a comment\n"
    assert parse_rulepack(relaid).content_hash == parse_rulepack(MIXED).content_hash
    changed = MIXED.replace("min_percent: 50", "min_percent: 51")
    assert parse_rulepack(changed).content_hash != parse_rulepack(MIXED).content_hash


def test_hash_follows_the_smelter_list_file(tmp_path: Path) -> None:
    (tmp_path / "smelters.csv").write_text("smelter_id,name\nCID000001,A\n", encoding="utf-8")
    pack_file = tmp_path / "gate.yaml"
    pack_file.write_text(
        "id: gate\nversion: 1\ntitle: t\nmarket: ALL\nlabel: null\nrules:\n"
        "  - id: s\n    kind: smelter_conformant\n    description: d\n    severity: block\n"
        "    params: {conformant_list: smelters.csv}\n",
        encoding="utf-8",
    )
    before = load_rulepack(pack_file)
    (tmp_path / "smelters.csv").write_text("smelter_id,name\nCID000001,A\nCID000002,B\n", encoding="utf-8")
    after = load_rulepack(pack_file)
    assert before.content_hash != after.content_hash
    assert evaluate(facts(origin_smelter_id="CID000002"), after, now=NOW).outcome == PASS


# --------------------------------------------------------------------------- bulk path


SIX_RULES = """
id: six
version: 1
title: Six rules
market: EU
label: SX
cbam: {eur_per_tonne_low: 80, eur_per_tonne_high: 120, recognised_standards: [ISO 14067]}
rules:
  - {id: assay, kind: assay_max_age, description: d, severity: block, params: {months: 12}}
  - {id: storage, kind: no_open_storage_incident, description: d, severity: block}
  - {id: smelter, kind: smelter_conformant, description: d, severity: block, params: {conformant: [CID000001]}}
  - id: footprint
    kind: footprint_declared_verified
    description: d
    severity: warn
    params: {recognised_standards: [ISO 14067]}
  - {id: recycled, kind: recycled_content_min, description: d, severity: warn, params: {min_percent: 16}}
  - id: intensity
    kind: carbon_intensity_max
    description: d
    severity: block
    params: {thresholds: {Ga: 119.9, In: 62.2}, default: null}
"""

percentages = st.one_of(st.none(), st.decimals(min_value=0, max_value=60, places=2))
receipts = st.builds(
    ReceiptFacts,
    receipt_number=st.text(min_size=1, max_size=8),
    metal=st.sampled_from(["Ga", "In", "W", "Ge"]),
    grade_code=st.just("X"),
    quantity_kg=st.decimals(min_value=Decimal("0.001"), max_value=100_000, places=3),
    warehouse_country=st.just("CN"),
    assay_issued_on=st.one_of(st.none(), st.dates(date(2024, 1, 1), date(2026, 4, 1))),
    footprint_kgco2e_per_kg=st.one_of(st.none(), st.decimals(min_value=0, max_value=300, places=1)),
    footprint_verified=st.booleans(),
    footprint_verification_standard=st.sampled_from([None, "ISO 14067", "ISO 14067:2018", "other"]),
    recycled_pre_consumer_pct=percentages,
    recycled_post_consumer_pct=percentages,
    origin_smelter_id=st.sampled_from([None, "CID000001", "CID000002", "bad"]),
    open_storage_incident=st.booleans(),
)


@settings(max_examples=300, deadline=None)
@given(batch=st.lists(receipts, max_size=20))
def test_evaluate_many_agrees_with_evaluate(batch: list[ReceiptFacts]) -> None:
    pack = parse_rulepack(SIX_RULES)
    compiled = compile_pack(pack)
    compact = list(evaluate_many(iter(batch), compiled, NOW))
    assert len(compact) == len(batch)
    for receipt, bulk in zip(batch, compact, strict=True):
        single = evaluate(receipt, compiled, now=NOW)
        assert isinstance(bulk, CompactResult)
        assert bulk.receipt_number == receipt.receipt_number
        assert bulk.outcome == single.outcome
        assert bulk.rule_outcomes == tuple(r.outcome for r in single.rules)
        assert bulk.label == single.label
        assert single.cbam is not None
        assert (bulk.cbam_eur_low, bulk.cbam_eur_high) == (single.cbam.eur_low, single.cbam.eur_high)
        # The label is earned exactly when every rule passed.
        assert (single.label == "SX") == all(r.outcome == PASS for r in single.rules)


def test_evaluate_many_is_lazy_and_binds_now_once() -> None:
    compiled = compile_pack(parse_rulepack(SIX_RULES))
    stream = evaluate_many((facts(receipt_number=f"R{i}") for i in range(3)), compiled, NOW)
    assert next(stream).receipt_number == "R0"
    later = NOW + timedelta(days=400)
    stale = next(evaluate_many([facts()], compiled, later))
    assert stale.rule_outcomes[0] == FAIL  # the assay is now too old


def test_result_is_immutable(packs: dict[str, RulePack]) -> None:
    result = evaluate(facts(), packs["base"], now=NOW)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.outcome = FAIL  # type: ignore[misc]
