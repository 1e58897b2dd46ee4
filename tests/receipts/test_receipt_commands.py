"""`manage.py verify_bundle` prints every check and exits 0 / 1 (fails) / 2 (unreadable);
`manage.py catalogue_load` loads the catalogue and says how much."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from receipts.canonical import canonical_bytes
from receipts.models import Grade, Metal
from receipts.selectors import jwks, receipt_bundle
from tests.conftest import ROOT
from tests.factories.receipts import ReceiptWorld

pytestmark = pytest.mark.django_db


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    receipt = ReceiptWorld().receipt(quantity="12.500")
    raw = canonical_bytes(receipt_bundle(receipt))
    paths = {name: tmp_path / f"{name}.json" for name in ("bundle", "tampered", "jwks", "other_jwks", "junk")}
    paths["bundle"].write_bytes(raw)
    at = raw.rindex(b'"quantity":"12.500"') + len(b'"quantity":"1')
    paths["tampered"].write_bytes(raw[:at] + b"3" + raw[at + 1:])  # 12.500 -> 13.500 in the header
    paths["jwks"].write_text(json.dumps(jwks()))
    paths["other_jwks"].write_text(json.dumps({"keys": []}))
    paths["junk"].write_text("not json at all")
    return paths


def run(*args: str) -> tuple[str, int]:
    out = StringIO()
    try:
        call_command("verify_bundle", *args, stdout=out, no_color=True)
    except CommandError as exc:
        return out.getvalue() + str(exc), exc.returncode
    return out.getvalue(), 0


def test_a_good_bundle_verifies_with_and_without_the_jwks(files: dict[str, Path]) -> None:
    output, code = run(str(files["bundle"]))
    assert code == 0 and "all" in output and "checks hold" in output
    assert "PASS  bundle seal" in output and "FAIL" not in output
    output, code = run(str(files["bundle"]), "--jwks", str(files["jwks"]))
    assert code == 0 and "PASS  trust anchors" in output and "not trusted" not in output


def test_a_tampered_bundle_fails_with_exit_1(files: dict[str, Path]) -> None:
    output, code = run(str(files["tampered"]))
    assert code == 1
    assert "FAIL  bundle seal" in output and "does NOT verify" in output


def test_keys_not_in_the_given_jwks_fail(files: dict[str, Path]) -> None:
    output, code = run(str(files["bundle"]), "--jwks", str(files["other_jwks"]))
    assert code == 1 and "not in the trusted set" in output


@pytest.mark.parametrize("name", ["junk", "missing"])
def test_unreadable_input_exits_2(files: dict[str, Path], tmp_path: Path, name: str) -> None:
    path = files.get(name, tmp_path / "missing.json")
    output, code = run(str(path))
    assert code == 2 and ("not JSON" in output or "cannot read" in output)
    output, code = run(str(files["bundle"]), "--jwks", str(files["junk"]))
    assert code == 2


def test_the_real_process_exit_status(files: dict[str, Path]) -> None:
    """As an auditor runs it: a separate process, no database needed."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test"}
    ok = subprocess.run([sys.executable, "manage.py", "verify_bundle", str(files["bundle"])], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run([sys.executable, "manage.py", "verify_bundle", str(files["tampered"])], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "does NOT verify" in bad.stderr and "FAIL" in bad.stdout


def test_catalogue_load_prints_counts_and_is_repeatable() -> None:
    out = StringIO()
    call_command("catalogue_load", stdout=out)
    call_command("catalogue_load", stdout=out)
    assert f"{Metal.objects.count()} metals, {Grade.objects.count()} grades loaded" in out.getvalue()
    assert Metal.objects.filter(symbol="Ga", max_temp_c=25).exists()
