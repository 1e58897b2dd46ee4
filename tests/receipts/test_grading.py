"""The catalogue (metals, grades, the report's thresholds) and grading of assayed lots,
including property tests: lowering an impurity never costs a grade, and raising one
impurity past its limit fails that rule (plus only the aggregates that contain it)."""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from receipts.catalogue import (
    CATALOGUE_PATH,
    COUNTRIES,
    ELEMENTS,
    NON_METALS,
    TOTAL_IMPURITIES,
    TOTAL_METALLIC,
    Grade,
    load_catalogue,
    parse_catalogue,
    parse_grade,
)
from receipts.errors import ProofError
from receipts.grading import (
    BELOW_MIN,
    EXCEEDS_MAX,
    FORM_NOT_ACCEPTED,
    INCOMPATIBLE_UNIT,
    NOT_MEASURED,
    PURITY_BY_DIFFERENCE_RULE,
    AssayProfile,
    evaluate_grade,
    grade_lot,
)
from receipts.units import to_ppb

CATALOGUE = load_catalogue()
GRADES = tuple(CATALOGUE.grades.values())


def raw_catalogue() -> dict[str, Any]:
    with open(CATALOGUE_PATH, encoding="utf-8") as handle:
        return json.load(handle)  # type: ignore[no-any-return]


# --- the catalogue ---------------------------------------------------------------------------


def test_catalogue_is_versioned_and_lists_the_twelve_metals() -> None:
    assert isinstance(raw_catalogue()["version"], int)
    assert set(CATALOGUE.metals) >= {"Ga", "Ge", "In", "Sb", "Bi", "W", "Mo", "Re", "Hf", "Ta", "Nb", "Te"}
    for symbol in CATALOGUE.metals:
        assert CATALOGUE.grades_for(symbol), f"{symbol} has no grade"


@pytest.mark.parametrize(("symbol", "hs_code"), [
    ("Ga", "8112.92"), ("Ge", "8112.92"), ("In", "8112.92"), ("Sb", "8110.10"), ("Bi", "8106.10"),
    ("W", "8101.94"), ("Mo", "8102.94"), ("Re", "8112.41"), ("Hf", "8112.31"), ("Ta", "8103.20"),
    ("Nb", "8112.92"), ("Te", "2804.50"),
])
def test_hs_codes(symbol: str, hs_code: str) -> None:
    assert CATALOGUE.metal(symbol).hs_code == hs_code


def test_powders_have_their_own_heading() -> None:
    assert CATALOGUE.metal("W").hs_code_for("powder") == "8101.10"
    assert CATALOGUE.metal("W").hs_code_for("bar") == "8101.94"


@pytest.mark.parametrize(("symbol", "since"), [
    ("Ga", 2023), ("Ge", 2023), ("Sb", 2024), ("W", 2025), ("Te", 2025), ("Bi", 2025), ("Mo", 2025), ("In", 2025),
])
def test_export_controls(symbol: str, since: int) -> None:
    metal = CATALOGUE.metal(symbol)
    assert metal.export_controlled and metal.controlled_since == since and metal.control_reference


def test_uncontrolled_metals_carry_no_control_data() -> None:
    for symbol in ("Re", "Hf", "Ta", "Nb"):
        metal = CATALOGUE.metal(symbol)
        assert not metal.export_controlled and metal.controlled_since is None and metal.control_reference is None


def test_gallium_is_kept_well_below_its_melting_point() -> None:
    storage = CATALOGUE.metal("Ga").storage
    assert storage.max_temp_c == Decimal(25) < Decimal("29.76")
    assert storage.breaches(temperature_c=Decimal("26.0"), humidity_pct=Decimal(40)) == [
        "temperature 26.0 C above 25 C"
    ]
    assert storage.breaches(temperature_c=Decimal("20"), humidity_pct=Decimal(40)) == []


def rules(code: str) -> set[str]:
    return {t.rule for t in CATALOGUE.grade(code).thresholds}


def test_report_figures_are_in_the_catalogue() -> None:
    assert CATALOGUE.grade("GA-6N").purity_min == Decimal("99.9999")
    assert rules("GA-6N") == {"O <= 5 ppb", "C <= 3 ppb", "total_metallic <= 10 ppb"}
    assert CATALOGUE.grade("GA-7N").purity_min == Decimal("99.99999")
    assert rules("GA-7N") == {"total_metallic <= 8 ppb", "O <= 3 ppb", "C <= 2 ppb"}
    assert CATALOGUE.grade("IN-5N5").purity_min == Decimal("99.9995")
    assert rules("IN-5N5") == {"Na <= 1 ppb", "K <= 1 ppb", "Fe <= 1 ppb"}
    assert CATALOGUE.grade("IN-6N").purity_min == Decimal("99.9999")
    assert rules("IN-6N") == {"total_impurities < 1 ppm"}
    assert rules("GE-6N") == {"total_metallic <= 10 ppb"}
    assert rules("RE-6N") == {"O <= 50 ppm", "H <= 10 ppm", "d90 <= 15 µm", "sphericity >= 0.92 1"}
    assert CATALOGUE.grade("RE-6N").forms == ("powder",)


def test_ranks_order_each_metal() -> None:
    assert [g.code for g in CATALOGUE.grades_for("Ga")] == ["GA-7N", "GA-6N", "GA-5N", "GA-4N"]


def test_grade_spec_round_trips() -> None:
    for grade in GRADES:
        spec = CATALOGUE.grade_spec(grade.code)
        assert spec["catalogue_version"] == CATALOGUE.version
        assert parse_grade(spec) == grade
        assert parse_grade(json.loads(json.dumps(spec))) == grade


def test_reference_tables() -> None:
    assert len(ELEMENTS) == len(set(ELEMENTS)) == 118
    assert NON_METALS.issubset(ELEMENTS)
    assert {"O", "C", "N", "H", "S", "P", "F", "Cl"} <= NON_METALS
    assert not {"Si", "B", "As", "Ge", "Sb", "Te"} & NON_METALS  # metalloids count as metallic
    assert len(COUNTRIES) == 249 and {"CN", "DE", "US", "CD"} <= COUNTRIES


def test_invalid_catalogue_lists_every_problem() -> None:
    data = raw_catalogue()
    broken = copy.deepcopy(data)
    ga6 = next(g for g in broken["grades"] if g["code"] == "GA-6N")
    ga6["thresholds"].append({"element": "Xx", "limit": "max", "value": "1", "unit": "ppb"})
    ga6["thresholds"].append({"element": "Ga", "limit": "max", "value": "1", "unit": "ppb"})
    ga6["thresholds"].append({"element": "Fe", "limit": "max", "value": "1", "unit": "%"})
    ga6["thresholds"].append({"property": "d90", "limit": "most", "value": "1", "unit": "µm"})
    ga6["rank"] = 20  # GA-5N's rank
    broken["metals"][0]["storage"]["max_temp_c"] = "-50"
    with pytest.raises(ProofError) as caught:
        parse_catalogue(broken)
    problems = "\n".join(caught.value.details["problems"])
    assert caught.value.code == "invalid_catalogue"
    for fragment in ("unknown element 'Xx'", "matrix metal", "alias", "limit must be", "rank 20", "min_temp_c"):
        assert fragment in problems, fragment


def test_parse_grade_refuses_strays() -> None:
    spec = CATALOGUE.grade_spec("GA-6N")
    with pytest.raises(ProofError):
        parse_grade(dict(spec, bonus="x"))
    with pytest.raises(ProofError):
        parse_grade(dict(spec, purity_min=99.9999))


# --- grading ---------------------------------------------------------------------------------

GOOD_GA = [("O", "2", "ppb"), ("C", "1", "ppb"), ("Fe", "3", "ppb"), ("Cu", "2", "ppb"), ("Pb", "0.5", "ppb"),
           ("Zn", "0.5", "ppb")]


def ga(purity: str = "99.99995", **changes: str) -> AssayProfile:
    rows = [(e, changes.pop(e, v), u) for e, v, u in GOOD_GA]
    rows += [(e, v, "ppb") for e, v in changes.items()]
    return AssayProfile.build(purity_percent=purity, impurities=[r for r in rows if r[1] != "-"])


def failures(result: Any, code: str) -> dict[str, Any]:
    return {f.rule: f for f in result.failures_for(code)}


def test_best_grade_met_with_reasons_for_better_ones() -> None:
    result = grade_lot("Ga", "ingot", ga(), GRADES)
    assert result.grade == "GA-6N" and result.met
    assert [e.code for e in result.evaluations] == ["GA-7N", "GA-6N", "GA-5N", "GA-4N"]
    seven = failures(result, "GA-7N")
    assert set(seven) == {"purity >= 99.99999 %"}
    assert seven["purity >= 99.99999 %"].measured == Decimal("99.99995")
    assert result.to_dict()["evaluations"][1]["met"] is True


def test_seven_nines_lot() -> None:
    profile = ga("99.999995", O="1", C="1", Fe="2", Cu="1")
    assert grade_lot("Ga", "pellet", profile, GRADES).grade == "GA-7N"


def test_failed_threshold_reports_measured_and_allowed_in_its_unit() -> None:
    result = grade_lot("Ga", "ingot", ga(O="6"), GRADES)
    assert result.grade == "GA-5N"
    oxygen = failures(result, "GA-6N")["O <= 5 ppb"]
    assert (oxygen.reason, oxygen.measured, oxygen.allowed, oxygen.unit) == (EXCEEDS_MAX, Decimal(6), Decimal(5), "ppb")
    # GA-5N's limits are in ppm; a miss there is reported in ppm
    result = grade_lot("Ga", "ingot", ga("99.9991", Fe="2500"), GRADES)
    iron = failures(result, "GA-5N")["Fe <= 1 ppm"]
    assert (iron.measured, iron.unit) == (Decimal("2.5"), "ppm")


def test_missing_measurement_fails_as_not_measured() -> None:
    result = grade_lot("Ga", "ingot", ga(O="-"), GRADES)
    oxygen = failures(result, "GA-6N")["O <= 5 ppb"]
    assert oxygen.reason == NOT_MEASURED and oxygen.measured is None
    assert result.grade == "GA-5N"


def test_aggregate_with_nothing_to_sum_is_not_measured() -> None:
    profile = AssayProfile.build(purity_percent="99.9999", impurities=[("O", "1", "ppb")])
    result = grade_lot("Ge", "ingot", profile, GRADES)
    assert failures(result, "GE-6N")["total_metallic <= 10 ppb"].reason == NOT_MEASURED


def test_total_metallic_leaves_out_non_metals() -> None:
    # 4 ppb O would break GA-6N's O limit; but it never counts towards total metallic
    profile = AssayProfile.build(purity_percent="99.9999", impurities=[("O", "4000", "ppb"), ("Fe", "9", "ppb")])
    result = grade_lot("Ge", "ingot", profile, GRADES)
    assert result.grade == "GE-6N"
    profile = AssayProfile.build(purity_percent="99.9999", impurities=[("Si", "6", "ppb"), ("Fe", "5", "ppb")])
    assert failures(grade_lot("Ge", "ingot", profile, GRADES), "GE-6N")["total_metallic <= 10 ppb"].measured == 11


def test_strict_limit_for_oled_indium() -> None:
    at_limit = AssayProfile.build(purity_percent="99.9999", impurities=[("Sn", "0.6", "ppm"), ("O", "400", "ppb")])
    result = grade_lot("In", "ingot", at_limit, GRADES)
    assert failures(result, "IN-6N")["total_impurities < 1 ppm"].reason == EXCEEDS_MAX
    below = AssayProfile.build(purity_percent="99.9999", impurities=[("Sn", "0.6", "ppm"), ("O", "399", "ppb")])
    assert evaluate_grade(CATALOGUE.grade("IN-6N"), "ingot", below).met


def test_amoled_indium_alkali_limits() -> None:
    rows = [("Na", "0.5", "ppb"), ("K", "1", "ppb"), ("Fe", "1", "ppb"), ("Sn", "2", "ppm")]
    assert evaluate_grade(CATALOGUE.grade("IN-5N5"), "ingot", AssayProfile.build(purity_percent="99.9996",
                                                                                impurities=rows)).met
    rows[0] = ("Na", "2", "ppb")
    failed = evaluate_grade(CATALOGUE.grade("IN-5N5"), "ingot", AssayProfile.build(purity_percent="99.9996",
                                                                                  impurities=rows))
    assert [f.rule for f in failed.failures] == ["Na <= 1 ppb"]


def rhenium(**properties: tuple[str, str]) -> AssayProfile:
    base = {"d90": ("12.4", "µm"), "sphericity": ("0.95", "1")}
    base.update(properties)
    return AssayProfile.build(
        purity_percent="99.99995",
        impurities=[("O", "30", "ppm"), ("H", "4", "ppm"), ("W", "200", "ppb"), ("Mo", "100", "ppb")],
        properties=[(name, value, unit) for name, (value, unit) in base.items() if value != "-"],
    )


def test_rhenium_powder_physical_properties() -> None:
    assert grade_lot("Re", "powder", rhenium(), GRADES).grade == "RE-6N"
    assert grade_lot("Re", "powder", rhenium(d90=("14900", "nm")), GRADES).grade == "RE-6N"
    result = grade_lot("Re", "powder", rhenium(sphericity=("0.91", "1"), d90=("16", "um")), GRADES)
    six = failures(result, "RE-6N")
    assert six["sphericity >= 0.92 1"].reason == BELOW_MIN
    assert six["d90 <= 15 µm"].reason == EXCEEDS_MAX
    assert result.grade == "RE-4N"
    assert failures(grade_lot("Re", "powder", rhenium(d90=("-", "µm")), GRADES), "RE-6N")["d90 <= 15 µm"].reason == (
        NOT_MEASURED
    )
    assert failures(grade_lot("Re", "powder", rhenium(d90=("12", "ppm")), GRADES), "RE-6N")["d90 <= 15 µm"].reason == (
        INCOMPATIBLE_UNIT
    )


def test_form_must_be_accepted() -> None:
    result = grade_lot("Re", "pellet", rhenium(), GRADES)
    assert failures(result, "RE-6N")["form"].reason == FORM_NOT_ACCEPTED
    assert result.grade == "RE-4N"


def test_purity_must_agree_with_the_impurity_table() -> None:
    # the certificate claims 6N, but its own metallic impurities add up to 2 ppm
    profile = AssayProfile.build(purity_percent="99.9999", impurities=[("Fe", "1.5", "ppm"), ("Cu", "0.5", "ppm")])
    evaluation = evaluate_grade(CATALOGUE.grade("GE-5N"), "ingot", profile)
    assert evaluation.met
    evaluation = evaluate_grade(CATALOGUE.grade("GE-6N"), "ingot", profile)
    assert PURITY_BY_DIFFERENCE_RULE in {f.subject for f in evaluation.failures}


def test_no_grades_for_the_metal_means_no_grade() -> None:
    profile = AssayProfile.build(purity_percent="99.99", impurities=[("Fe", "1", "ppm")])
    result = grade_lot("Cu", "ingot", profile, GRADES)
    assert result.grade is None and result.evaluations == ()


@pytest.mark.parametrize(("impurities", "code"), [
    ([("Xx", "1", "ppb")], "unknown_element"),
    ([("FE", "1", "ppb")], "unknown_element"),
    ([("Fe", "1", "furlongs")], "unknown_unit"),
    ([("Fe", "-1", "ppb")], "negative_value"),
    ([("Fe", "1", "ppb"), ("Fe", "2", "ppb")], "invalid_assay"),
    ([("Fe", 1.5, "ppb")], "invalid_decimal"),
])
def test_bad_assays_are_refused(impurities: list[tuple[str, Any, str]], code: str) -> None:
    with pytest.raises(ProofError) as caught:
        AssayProfile.build(purity_percent="99.9999", impurities=impurities)
    assert caught.value.code == code


def test_matrix_metal_is_not_an_impurity() -> None:
    profile = AssayProfile.build(purity_percent="99.9999", impurities=[("Ga", "1", "ppb")])
    with pytest.raises(ProofError) as caught:
        grade_lot("Ga", "ingot", profile, GRADES)
    assert caught.value.code == "invalid_assay"
    with pytest.raises(ProofError) as caught:
        grade_lot("Gx", "ingot", profile, GRADES)
    assert caught.value.code == "unknown_element"


def test_profile_from_assay_document() -> None:
    doc = {"purityPercent": "99.9999", "impurities": [{"element": "O", "value": "0.004", "unit": "ppm"}],
           "properties": [{"name": "d90", "value": "12", "unit": "um"}]}
    profile = AssayProfile.from_document(doc)
    assert profile.impurities_ppb == {"O": Decimal(4)}
    assert profile.properties["d90"].unit == "µm"
    with pytest.raises(ProofError):
        AssayProfile.from_document({"impurities": []})


# --- properties ------------------------------------------------------------------------------------

POOL = ["O", "C", "N", "H", "S", "Fe", "Cu", "Pb", "Zn", "Si", "Ni", "Na", "K", "Sn", "Cd", "Se", "As", "Al"]
ppb_values = st.decimals(min_value=0, max_value=40, places=3, allow_nan=False, allow_infinity=False)


@st.composite
def assays(draw: st.DrawFn) -> AssayProfile:
    chosen = draw(st.lists(st.sampled_from(POOL), min_size=1, max_size=len(POOL), unique=True))
    values = {e: draw(ppb_values) for e in chosen}
    purity = draw(st.sampled_from(["99.99", "99.999", "99.9995", "99.9999", "99.99995", "99.99999", "99.999999"]))
    return AssayProfile.build(purity_percent=purity, impurities=[(e, v, "ppb") for e, v in values.items()])


def with_impurity(profile: AssayProfile, element: str, ppb: Decimal) -> AssayProfile:
    rows = dict(profile.impurities_ppb)
    rows[element] = ppb
    return AssayProfile.build(purity_percent=profile.purity_percent, impurities=[(e, v, "ppb") for e, v in rows.items()])


@settings(max_examples=150, deadline=None)
@given(assays(), st.sampled_from(["Ga", "In", "Ge", "Sb", "Te"]), st.data())
def test_lowering_any_impurity_never_loses_a_grade(profile: AssayProfile, metal: str, data: st.DataObject) -> None:
    result = grade_lot(metal, CATALOGUE.metal(metal).forms[0], profile, GRADES)
    element = data.draw(st.sampled_from(sorted(profile.impurities_ppb)))
    fraction = data.draw(st.decimals(min_value=0, max_value=1, places=3))
    lowered = with_impurity(profile, element, (profile.impurities_ppb[element] * fraction).quantize(Decimal("0.001")))
    again = grade_lot(metal, CATALOGUE.metal(metal).forms[0], lowered, GRADES)
    for before, after in zip(result.evaluations, again.evaluations, strict=True):
        if before.met:
            assert after.met, f"lowering {element} lost {before.code}: {after.failures}"
        assert {f.rule for f in after.failures} <= {f.rule for f in before.failures}


def element_rules(grade: Grade) -> list[Any]:
    return [t for t in grade.thresholds if t.kind == "element" and t.limit == "max"]


def meeting_profile(grade: Grade) -> AssayProfile:
    """A lot that meets `grade` with room to spare: every element limit at a tenth, small
    enough that the aggregates hold too."""
    rows = {t.subject: to_ppb(t.value, t.unit) / 10 for t in element_rules(grade)}
    rows.setdefault("Fe", Decimal("0.1"))  # something metallic, so aggregates are measured
    return AssayProfile.build(purity_percent="99.999999", impurities=[(e, v, "ppb") for e, v in rows.items()])


GRADES_WITH_ELEMENT_LIMITS = [g for g in GRADES if element_rules(g) and not any(t.kind == "property" for t in g.thresholds)]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(GRADES_WITH_ELEMENT_LIMITS), st.data())
def test_raising_one_impurity_past_its_limit_fails_that_rule(grade: Grade, data: st.DataObject) -> None:
    profile = meeting_profile(grade)
    form = grade.forms[0]
    assume(evaluate_grade(grade, form, profile).met)
    rule = data.draw(st.sampled_from(element_rules(grade)))
    limit = to_ppb(rule.value, rule.unit)
    excess = data.draw(st.decimals(min_value=Decimal("0.001"), max_value=limit * 3 + 1, places=3))
    raised = with_impurity(profile, rule.subject, limit + excess)
    failed = {f.rule: f for f in evaluate_grade(grade, form, raised).failures}
    assert rule.rule in failed and failed[rule.rule].reason == EXCEEDS_MAX
    # Anything else that fails must be an aggregate the raised element belongs to.
    allowed = {rule.rule}
    for threshold in grade.thresholds:
        if threshold.subject == TOTAL_IMPURITIES or (
            threshold.subject == TOTAL_METALLIC and rule.subject not in NON_METALS
        ):
            allowed.add(threshold.rule)
    if rule.subject not in NON_METALS:
        allowed.add(f"purity by difference >= {format(grade.purity_min, 'f')} %")
    assert set(failed) <= allowed, set(failed) - allowed


@settings(max_examples=100, deadline=None)
@given(st.sampled_from([g for g in GRADES if any(t.subject == TOTAL_METALLIC for t in g.thresholds)]),
       st.decimals(min_value=0, max_value=10**6, places=3))
def test_non_metals_never_move_total_metallic(grade: Grade, amount: Decimal) -> None:
    profile = meeting_profile(grade)
    before = {f.rule for f in evaluate_grade(grade, grade.forms[0], profile).failures}
    raised = with_impurity(profile, "S", amount)  # sulphur: thresholded by no grade, not metallic
    after = {f.rule for f in evaluate_grade(grade, grade.forms[0], raised).failures}
    assert not any(r.startswith("total_metallic") for r in after - before)
