"""Rule-pack loading: the shipped packs load; malformed files are refused with file:line."""

from __future__ import annotations

import textwrap
from decimal import Decimal
from pathlib import Path

import pytest

from compliance.esg import CarbonIntensityMax, RecycledContentMin, SmelterConformant
from compliance.rulepack_loader import (
    RULEPACK_DIR,
    RulePackError,
    load_conformant_smelters,
    load_rulepack,
    load_rulepacks,
    parse_rulepack,
)


def test_shipped_packs_load() -> None:
    packs = load_rulepacks()
    assert {"base", "eu-market", "low-carbon", "us-ira"} <= set(packs)
    assert packs["low-carbon"].label == "LC"
    assert packs["eu-market"].label == "EU"
    assert packs["eu-market"].cbam is not None
    assert packs["eu-market"].cbam.eur_per_tonne_low == Decimal("80")
    assert packs["eu-market"].cbam.eur_per_tonne_high == Decimal("120")
    assert {r.severity for r in packs["us-ira"].rules} == {"warn"}
    for pack in packs.values():
        assert len(pack.content_hash) == 64
        assert pack.description and all(r.description for r in pack.rules)


def test_low_carbon_thresholds_follow_the_report_ratios() -> None:
    params = load_rulepacks()["low-carbon"].rules[1].params
    assert isinstance(params, CarbonIntensityMax)
    primary = {"Ga": Decimal("205"), "In": Decimal("102"), "W": Decimal("12.6")}
    recycled_ratio = {"Ga": Decimal("0.17"), "In": Decimal("0.22"), "W": Decimal("0.29")}
    for metal, limit in params.thresholds:
        expected = primary[metal] * (1 + recycled_ratio[metal]) / 2
        assert abs(limit - expected) <= Decimal("0.05"), metal
    assert params.default is None


def test_demo_smelter_list_loads() -> None:
    ids = load_conformant_smelters(RULEPACK_DIR / "conformant_smelters.csv")
    assert "CID900101" in ids
    assert all(i.startswith("CID9") for i in ids)  # demo ids stay out of RMI's range


def test_decimals_are_read_from_the_text_not_a_float() -> None:
    pack = parse_rulepack(
        "id: p\nversion: 1\ntitle: t\nmarket: ALL\nlabel: null\nrules:\n"
        "  - {id: r, kind: recycled_content_min, description: d, severity: warn, params: {min_percent: 0.1}}\n"
    )
    params = pack.rules[0].params
    assert isinstance(params, RecycledContentMin)
    assert params.min_percent == Decimal("0.1")


def test_inline_conformant_ids() -> None:
    pack = parse_rulepack(
        "id: p\nversion: 1\ntitle: t\nmarket: ALL\nlabel: null\nrules:\n"
        "  - id: s\n    kind: smelter_conformant\n    description: d\n    severity: block\n"
        "    params: {conformant: [CID000001, CID000002]}\n"
    )
    params = pack.rules[0].params
    assert isinstance(params, SmelterConformant)
    assert params.conformant == frozenset({"CID000001", "CID000002"})


GOOD = """\
id: sample
version: 1
title: Sample pack
market: ALL
label: SP
rules:
  - id: assay
    kind: assay_max_age
    description: fresh assay
    severity: block
    params:
      months: 12
  - id: storage
    kind: no_open_storage_incident
    description: no incident
    severity: warn
"""


def write(tmp_path: Path, text: str, name: str = "sample.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_good_sample_loads(tmp_path: Path) -> None:
    pack = load_rulepack(write(tmp_path, GOOD))
    assert [r.id for r in pack.rules] == ["assay", "storage"]
    assert pack.source.endswith("sample.yaml")


# (description, text, line the error must name, fragment of the message)
MALFORMED = [
    (
        "bad YAML",
        GOOD.replace("    params:\n      months: 12", "    params: {months: 12\n"),
        13,
        "YAML syntax error",
    ),
    (
        "tab indentation",
        GOOD.replace("      months: 12", "\tmonths: 12"),
        12,
        "YAML syntax error",
    ),
    ("unknown kind", GOOD.replace("kind: no_open_storage_incident", "kind: no_open_fire"), 14, "unknown rule kind"),
    ("missing param", GOOD.replace("      months: 12", "      {}"), 12, "missing required key(s): months"),
    (
        "params missing altogether",
        GOOD.replace("    params:\n      months: 12\n", ""),
        7,
        "missing params: months",
    ),
    ("unknown param", GOOD.replace("months: 12", "monthz: 12"), 12, "unknown key 'monthz'"),
    ("param of wrong type", GOOD.replace("months: 12", "months: twelve"), 12, "must be an integer, got a string"),
    ("param out of range", GOOD.replace("months: 12", "months: 0"), 12, "between 1 and 120"),
    ("duplicate rule id", GOOD.replace("id: storage", "id: assay"), 13, "duplicate rule id 'assay' (first at line 7)"),
    ("duplicate key", GOOD.replace("    severity: warn\n", "    severity: warn\n    severity: block\n"), 17, "duplicate key"),
    ("bad severity", GOOD.replace("severity: warn", "severity: fatal"), 16, "severity must be one of block, warn"),
    ("missing top-level key", GOOD.replace("market: ALL\n", ""), 1, "missing required key(s): market"),
    ("unknown top-level key", GOOD + "colour: blue\n", 17, "unknown key 'colour'"),
    ("float version", GOOD.replace("version: 1", "version: 1.2"), 2, "version must be an integer or a semver"),
    ("lowercase label", GOOD.replace("label: SP", "label: sp"), 5, "label 'sp' must match"),
    ("rules not a list", GOOD.split("rules:")[0] + "rules: all\n", 6, "rules must be a list"),
    ("params for a kind without params", GOOD + "    params: {x: 1}\n", 17, "takes no params"),
    ("merge key", GOOD.replace("    params:\n      months: 12", "    params:\n      <<: {months: 12}"), 12, "merge keys"),
]


@pytest.mark.parametrize(("case", "text", "line", "fragment"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_pack_names_file_and_line(tmp_path: Path, case: str, text: str, line: int, fragment: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(RulePackError) as caught:
        load_rulepack(path)
    error = caught.value
    assert error.source == str(path)
    assert error.line == line, str(error)
    assert str(error).startswith(f"{path}:{line}: ")
    assert fragment in str(error)


def test_bad_decimal_params(tmp_path: Path) -> None:
    text = GOOD.replace(
        "kind: assay_max_age",
        "kind: recycled_content_min",
    ).replace("months: 12", 'min_percent: "16"')
    with pytest.raises(RulePackError, match=r"sample\.yaml:12: .*min_percent must be a number, got a string"):
        load_rulepack(write(tmp_path, text))
    with pytest.raises(RulePackError, match=r":12: .*between 0 and 100"):
        load_rulepack(write(tmp_path, text.replace('"16"', "101")))
    with pytest.raises(RulePackError, match=r":12: .*must be a plain decimal number, got '\.inf'"):
        load_rulepack(write(tmp_path, text.replace('"16"', ".inf")))


def test_bad_threshold_metal(tmp_path: Path) -> None:
    text = GOOD.replace("kind: assay_max_age", "kind: carbon_intensity_max").replace(
        "months: 12", "thresholds:\n        Gallium: 100"
    )
    with pytest.raises(RulePackError, match=r":13: .*'Gallium' is not an element symbol"):
        load_rulepack(write(tmp_path, text))


def test_empty_file(tmp_path: Path) -> None:
    with pytest.raises(RulePackError, match="file is empty"):
        load_rulepack(write(tmp_path, "# nothing\n"))


def test_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(RulePackError, match="nope.yaml: cannot read file"):
        load_rulepack(tmp_path / "nope.yaml")


def test_not_utf8_names_line(tmp_path: Path) -> None:
    path = tmp_path / "sample.yaml"
    path.write_bytes(GOOD.encode().replace(b"fresh assay", b"fresh \xff assay"))
    with pytest.raises(RulePackError, match=r"sample\.yaml:9: file is not valid UTF-8"):
        load_rulepack(path)


def test_id_must_match_file_name(tmp_path: Path) -> None:
    with pytest.raises(RulePackError, match=r"other\.yaml:1: pack id 'sample' does not match"):
        load_rulepack(write(tmp_path, GOOD, name="other.yaml"))


SMELTER_PACK = GOOD.replace("kind: assay_max_age", "kind: smelter_conformant").replace(
    "months: 12", "conformant_list: smelters.csv"
)


def test_missing_smelter_list_names_the_csv(tmp_path: Path) -> None:
    with pytest.raises(RulePackError, match=r"smelters\.csv: cannot read file"):
        load_rulepack(write(tmp_path, SMELTER_PACK))


@pytest.mark.parametrize(
    ("csv_text", "pattern"),
    [
        ("# demo\nsmelter_id,name\nCID000001,A\nCID12345,B\n", r"smelters\.csv:4: 'CID12345' is not an RMI"),
        ("smelter_id,name\nCID000001,A\nCID000001,B\n", r"smelters\.csv:3: duplicate smelter id CID000001 \(first at line 2\)"),
        ("id,name\nCID000001,A\n", r"smelters\.csv:1: missing required column: smelter_id"),
        ("smelter_id,name\nCID000001,A,extra\n", r"smelters\.csv:2: row has 3 fields"),
        ("smelter_id,name\n", r"smelters\.csv: no smelter ids"),
    ],
)
def test_bad_smelter_list_names_csv_and_line(tmp_path: Path, csv_text: str, pattern: str) -> None:
    (tmp_path / "smelters.csv").write_text(csv_text, encoding="utf-8")
    with pytest.raises(RulePackError, match=pattern):
        load_rulepack(write(tmp_path, SMELTER_PACK))


def test_string_pack_cannot_name_a_list_file() -> None:
    with pytest.raises(RulePackError, match=r"<string>:12: .*needs the pack to be read from a file"):
        parse_rulepack(SMELTER_PACK.replace("id: sample", "id: s"))
