"""ESG rule packs as loaded versions: one active version per pack, a silent edit refused, a broken file
loads nothing, and the stored canonical form rebuilds the very pack that was loaded."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from compliance.models import EsgRulePack
from compliance.rulepack_loader import RULEPACK_DIR, load_rulepack, pack_from_canonical
from compliance.services import esg_compiled_pack, esg_rule_packs_sync
from config.errors import ValidationFailed


def pack_dir(tmp_path: Path) -> Path:
    target = tmp_path / "packs"
    shutil.copytree(RULEPACK_DIR, target)
    return target


@pytest.fixture
def no_packs(db: None) -> None:
    """migrate synced the repo's packs (compliance.apps): start these tests from none."""
    EsgRulePack.objects.all().delete()


@pytest.mark.django_db
def test_migrate_synced_the_repo_packs() -> None:
    active = dict(EsgRulePack.objects.filter(active=True).values_list("pack_id", "label"))
    assert active == {"base": "", "eu-market": "EU", "low-carbon": "LC", "us-ira": "US"}
    assert esg_rule_packs_sync() == []


def test_sync_activates_each_pack_once(tmp_path: Path, no_packs: None) -> None:
    directory = pack_dir(tmp_path)
    activated = esg_rule_packs_sync(directory=directory, reevaluate=False)
    assert sorted(p.pack_id for p in activated) == ["base", "eu-market", "low-carbon", "us-ira"]
    assert esg_rule_packs_sync(directory=directory) == []
    assert EsgRulePack.objects.filter(active=True).count() == 4


def test_a_new_version_supersedes_and_a_silent_edit_is_refused(tmp_path: Path, no_packs: None) -> None:
    directory = pack_dir(tmp_path)
    esg_rule_packs_sync(directory=directory)
    base = directory / "base.yaml"
    text = base.read_text(encoding="utf-8")
    base.write_text(text.replace("months: 12", "months: 9"), encoding="utf-8")
    with pytest.raises(ValidationFailed) as caught:
        esg_rule_packs_sync(directory=directory)
    assert caught.value.code == "rulepack_version_reused"
    assert EsgRulePack.objects.filter(pack_id="base").count() == 1

    base.write_text(text.replace("months: 12", "months: 9").replace("version: 1", "version: 2"), encoding="utf-8")
    [activated] = esg_rule_packs_sync(directory=directory)
    assert (activated.pack_id, activated.version, activated.active) == ("base", "2", True)
    assert list(EsgRulePack.objects.filter(pack_id="base").order_by("version").values_list("active", flat=True)) \
        == [False, True]


def test_a_broken_pack_file_loads_nothing(tmp_path: Path, no_packs: None) -> None:
    directory = pack_dir(tmp_path)
    (directory / "zz-broken.yaml").write_text("id: zz-broken\nversion: [\n", encoding="utf-8")
    with pytest.raises(ValidationFailed) as caught:
        esg_rule_packs_sync(directory=directory)
    assert caught.value.code == "rulepack_invalid"
    assert not EsgRulePack.objects.exists()


@pytest.mark.django_db
def test_a_stored_version_compiles_to_the_pack_that_was_loaded() -> None:
    for row in EsgRulePack.objects.filter(active=True):
        loaded = load_rulepack(RULEPACK_DIR / f"{row.pack_id}.yaml")
        rebuilt = pack_from_canonical(row.canonical)
        assert rebuilt.content_hash == loaded.content_hash == row.content_hash
        assert esg_compiled_pack(row).rule_ids == tuple(r.id for r in loaded.rules)


@pytest.mark.django_db
def test_a_stored_version_whose_canonical_form_was_tampered_with_is_refused() -> None:
    row = EsgRulePack.objects.get(pack_id="low-carbon", active=True)
    row.canonical["rules"][1]["params"]["thresholds"]["Ga"] = "999"
    row.pk = None  # a fresh cache key: the same content hash, different meaning
    row.id = 10**9
    with pytest.raises(ValidationFailed) as caught:
        esg_compiled_pack(row)
    assert caught.value.code == "rulepack_invalid"
