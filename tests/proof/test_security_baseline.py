"""Security baseline: bandit over our code, login lockout on the API as on the console, the console's second
factor against a correct password alone, and (make proof) the deploy check with production settings.

tests/config/test_security.py holds the original checks (deploy check, OTP, console lockout); these add what
they did not cover and put the baseline in the proof table. Admin pages per role are covered page by page
in test_authz_matrix.test_admin_urls_need_a_verified_second_factor.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client

from tests.factories.members import UserFactory
from tests.proof.record import record

ROOT = Path(__file__).resolve().parents[2]
OUR_CODE = ["members", "receipts", "compliance", "trading", "config"]


def bandit_report() -> dict[str, object]:
    result = subprocess.run(
        [sys.executable, "-m", "bandit", "-r", *OUR_CODE, "--severity-level", "medium", "--confidence-level", "low",
         "-f", "json", "-q"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.stdout, result.stderr
    report: dict[str, object] = json.loads(result.stdout)
    return report


# Findings reported to their owner and not yet justified inline (BUG-10; reproducer below, xfail strict):
# (file, bandit test, a piece of the flagged code). Anything else medium or high fails the gate.
PENDING: list[tuple[str, str, str]] = []  # BUG-10 justified inline (nosec B608 with the reason)


def _pending(issue: dict[str, object]) -> bool:
    return any(issue["filename"] == f and issue["test_id"] == t and piece in str(issue["code"])
               for f, t, piece in PENDING)


def _describe(issues: list[dict[str, object]]) -> str:
    return "\n".join(f"{i['filename']}:{i['line_number']} {i['test_id']} {i['issue_severity']}: {i['issue_text']}"
                     for i in issues)


def test_bandit_finds_no_medium_or_high_issue_in_our_code() -> None:
    """Medium or high severity, any confidence. A justified exception is written inline as
    `# nosec Bxxx - reason` and shows in the count of skipped lines."""
    report = bandit_report()
    issues = report["results"]
    assert isinstance(issues, list)
    new = [i for i in issues if not _pending(i)]
    totals = report["metrics"]["_totals"]  # type: ignore[index]
    files = [name for name in report["metrics"] if name != "_totals"]  # type: ignore[union-attr]
    record("bandit (medium+high, our code)", runs=len(files), failures=len(issues), figures={
        "packages": " ".join(OUR_CODE), "files": len(files), "lines scanned": totals["loc"],
        "medium": totals["SEVERITY.MEDIUM"], "high": totals["SEVERITY.HIGH"],
        "pending justification (BUG-10)": len(issues) - len(new),
        "low (not gated)": totals["SEVERITY.LOW"], "nosec lines": totals["nosec"]})
    assert not new, _describe(new)


def test_bug10_pending_bandit_findings_are_justified_inline() -> None:
    pending = [i for i in bandit_report()["results"] if _pending(i)]  # type: ignore[union-attr]
    assert not pending, _describe(pending)


@pytest.mark.django_db
def test_api_token_login_locks_out_after_five_failures() -> None:
    """django-axes guards POST /api/v1/auth/token as it guards the console: after five failures for a
    username, even the right password gets no token (from any address) until the cool-off; other users
    are unaffected."""
    from axes.models import AccessAttempt

    UserFactory(member=None, username="api-victim")
    UserFactory(member=None, username="api-bystander")
    client = Client()
    for _ in range(5):
        response = client.post("/api/v1/auth/token", {"username": "api-victim", "password": "wrong-password"},
                               content_type="application/json", REMOTE_ADDR="10.8.0.1")
        assert response.status_code == 400 and "token" not in response.json()
    for address in ("10.8.0.1", "10.8.0.2"):
        response = client.post("/api/v1/auth/token", {"username": "api-victim", "password": "test-password-123"},
                               content_type="application/json", REMOTE_ADDR=address)
        assert response.status_code in (400, 403, 429) and "token" not in response.json(), response.content
    assert AccessAttempt.objects.filter(username="api-victim").exists()
    bystander = client.post("/api/v1/auth/token", {"username": "api-bystander", "password": "test-password-123"},
                            content_type="application/json", REMOTE_ADDR="10.8.0.3")
    assert bystander.status_code == 200 and len(bystander.json()["token"]) == 40
    record("login lockout (API token and console)", runs=8, failures=0, figures={
        "failures before lockout": 5, "right password after lockout": "refused (every address)",
        "other users": "unaffected"})


@pytest.mark.django_db
def test_right_password_without_a_second_factor_opens_no_console() -> None:
    """An officer's correct password, without an OTP token (and with a wrong one): no console session."""
    from django_otp.plugins.otp_totp.models import TOTPDevice

    staff = UserFactory(member=None, is_staff=True, is_superuser=True, username="officer-no-otp")
    device = TOTPDevice.objects.create(user=staff, name="auth", confirmed=True)
    for token in ("", "000000"):
        client = Client()
        response = client.post("/admin/login/?next=/admin/", {
            "username": staff.username, "password": "test-password-123", "otp_device": device.persistent_id,
            "otp_token": token}, REMOTE_ADDR="10.8.1.1")
        assert response.status_code == 200  # the form again, with its error
        follow = client.get("/admin/")
        assert follow.status_code == 302 and "/admin/login/" in follow["Location"]


@pytest.mark.proof
def test_deploy_check_passes_with_production_settings() -> None:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"}
    env |= {"DJANGO_SETTINGS_MODULE": "config.settings.production",
            "DJANGO_SECRET_KEY": "proof-" + "k" * 50, "INGOT_KEY_SECRET": "proof-key-secret",
            "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/postgres", "REDIS_URL": "redis://127.0.0.1:6379/15"}
    result = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    record("check --deploy --fail-level WARNING (production settings)", runs=1,
           failures=0 if result.returncode == 0 else 1,
           figures={"exit": result.returncode, "output": (result.stdout + result.stderr).strip()[-200:]})
    assert result.returncode == 0, result.stdout + result.stderr
