"""Export-control data and the end-use declaration / export licence decisions."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from compliance.export_control import (
    ExportControlDataError,
    default_export_controls,
    end_use_declaration_decision,
    export_licence_decision,
    is_export_controlled,
    load_export_controls,
    needs_end_use_declaration,
    needs_export_licence,
)


@pytest.mark.parametrize(
    ("metal", "reference", "since"),
    [
        ("Ga", "MOFCOM/GAC Announcement No. 23 of 2023", date(2023, 8, 1)),
        ("Ge", "MOFCOM/GAC Announcement No. 23 of 2023", date(2023, 8, 1)),
        ("Sb", "MOFCOM/GAC Announcement No. 33 of 2024", date(2024, 9, 15)),
        ("W", "MOFCOM/GAC Announcement No. 10 of 2025", date(2025, 2, 4)),
        ("Te", "MOFCOM/GAC Announcement No. 10 of 2025", date(2025, 2, 4)),
        ("Bi", "MOFCOM/GAC Announcement No. 10 of 2025", date(2025, 2, 4)),
        ("Mo", "MOFCOM/GAC Announcement No. 10 of 2025", date(2025, 2, 4)),
        ("In", "MOFCOM/GAC Announcement No. 10 of 2025", date(2025, 2, 4)),
    ],
)
def test_controlled_metals_data(metal: str, reference: str, since: date) -> None:
    entry = default_export_controls().for_metal(metal)
    assert entry is not None and entry.export_controlled
    assert [(c.jurisdiction, c.reference, c.since) for c in entry.controls] == [("CN", reference, since)]
    assert is_export_controlled(metal)


@pytest.mark.parametrize("metal", ["Re", "Hf", "Ta", "Nb", "Cu", "Xx"])
def test_uncontrolled_metals(metal: str) -> None:
    assert not is_export_controlled(metal)
    assert not needs_end_use_declaration(metal, "DE", "CN")
    assert not needs_export_licence(metal, "CN", "DE")


def test_foreign_buyer_of_controlled_metal_needs_end_use_declaration() -> None:
    decision = end_use_declaration_decision("Ga", "DE", "CN")
    assert decision
    assert decision.required
    assert "Announcement No. 23 of 2023" in decision.reason
    assert decision.references == ("MOFCOM/GAC Announcement No. 23 of 2023",)
    assert needs_end_use_declaration("ga", "de", " cn ")  # spelling does not matter


def test_domestic_buyer_needs_no_declaration() -> None:
    decision = end_use_declaration_decision("In", "CN", "CN")
    assert not decision
    assert "both in CN" in decision.reason


def test_cross_border_withdrawal_needs_licence() -> None:
    assert needs_export_licence("W", "CN", "US")
    assert not needs_export_licence("W", "CN", "CN")
    decision = export_licence_decision("Sb", "CN", "JP")
    assert decision.required and "CN to JP" in decision.reason


def test_platform_enforces_in_every_warehouse_country_by_default() -> None:
    # DESIGN §4: the flag on the metal decides, wherever the warehouse is.
    assert needs_end_use_declaration("Ga", "US", "NL")
    assert needs_export_licence("Ga", "NL", "US")


def test_control_not_yet_in_force() -> None:
    before = date(2024, 9, 14)
    decision = export_licence_decision("Sb", "CN", "DE", on=before)
    assert not decision
    assert "2024-09-15" in decision.reason
    assert needs_export_licence("Sb", "CN", "DE", on=date(2024, 9, 15))
    assert not is_export_controlled("In", on=date(2025, 1, 1))


def test_bad_country_code() -> None:
    with pytest.raises(ValueError, match="buyer_country 'Germany'"):
        needs_end_use_declaration("Ga", "Germany", "CN")
    with pytest.raises(ValueError, match="to_country"):
        needs_export_licence("Ga", "CN", "")


CONTROLS = """\
version: 1
enforce_in: [CN]
metals:
  Ga:
    name: gallium
    export_controlled: true
    controls:
      - {jurisdiction: CN, reference: Ref A, since: 2023-08-01}
"""


def test_enforcement_limited_to_listed_countries(tmp_path: Path) -> None:
    path = tmp_path / "controls.yaml"
    path.write_text(CONTROLS, encoding="utf-8")
    controls = load_export_controls(path)
    assert needs_export_licence("Ga", "CN", "NL", controls=controls)
    decision = export_licence_decision("Ga", "NL", "US", controls=controls)
    assert not decision
    assert "not enforced for warehouses in NL" in decision.reason
    assert not needs_end_use_declaration("Ga", "US", "NL", controls=controls)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (CONTROLS.replace("since: 2023-08-01", "since: soon"), "metals.Ga.controls[0].since"),
        (CONTROLS.replace("jurisdiction: CN", "jurisdiction: China"), "jurisdiction"),
        (CONTROLS.replace("export_controlled: true", "export_controlled: maybe"), "export_controlled"),
        (CONTROLS.replace("enforce_in: [CN]", "enforce_in: everywhere"), "enforce_in"),
        (CONTROLS.replace("    controls:\n      - {jurisdiction: CN, reference: Ref A, since: 2023-08-01}\n", ""),
         "at least one control"),
        (CONTROLS.replace("metals:", "metals: [\n"), "YAML syntax error"),
    ],
)
def test_malformed_data_file_is_refused(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "controls.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ExportControlDataError) as caught:
        load_export_controls(path)
    assert str(path) in str(caught.value)
    assert fragment in str(caught.value)
