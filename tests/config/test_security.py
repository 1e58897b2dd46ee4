"""Security baseline: deploy checks pass in production settings, the console needs a second factor, lockout works."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client

from tests.factories.members import UserFactory

ROOT = Path(__file__).resolve().parents[2]


def test_check_deploy_passes_with_production_settings() -> None:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"}  # set by browser tests
    env = {**env, "DJANGO_SETTINGS_MODULE": "config.settings.production",
           "DJANGO_SECRET_KEY": "x" * 30 + "ProdLikeSecret-0123456789abcdefghij",
           "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/postgres", "REDIS_URL": "redis://127.0.0.1:6379/15"}
    result = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.django_db
def test_staff_without_second_factor_gets_no_admin() -> None:
    staff = UserFactory(member=None, is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(staff)
    response = client.get("/admin/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    assert client.get("/admin/members/member/").status_code == 302


@pytest.mark.django_db
def test_staff_with_verified_otp_gets_in() -> None:
    from django_otp.oath import totp
    from django_otp.plugins.otp_totp.models import TOTPDevice

    staff = UserFactory(member=None, is_staff=True, is_superuser=True, username="officer1")
    device = TOTPDevice.objects.create(user=staff, name="auth", confirmed=True)
    code = f"{totp(device.bin_key, step=device.step, t0=device.t0, digits=device.digits):06d}"
    client = Client()
    response = client.post("/admin/login/?next=/admin/", {
        "username": "officer1", "password": "test-password-123", "otp_device": device.persistent_id,
        "otp_token": code}, REMOTE_ADDR="10.0.0.9")
    assert response.status_code == 302, response.content[:2000]
    assert client.get("/admin/").status_code == 200


@pytest.mark.django_db
def test_login_lockout_after_repeated_failures() -> None:
    from axes.models import AccessAttempt

    UserFactory(member=None, is_staff=True, username="victim")
    client = Client()
    for _ in range(5):
        client.post("/admin/login/", {"username": "victim", "password": "wrong", "otp_token": "000000"},
                    REMOTE_ADDR="10.0.0.7")
    response = client.post("/admin/login/", {"username": "victim", "password": "test-password-123",
                                             "otp_token": "000000"}, REMOTE_ADDR="10.0.0.7")
    assert response.status_code == 429
    assert AccessAttempt.objects.filter(username="victim").exists()


def test_platform_folder_is_not_a_package() -> None:
    assert not (ROOT / "platform" / "__init__.py").exists()
    importable = [p for p in (ROOT / "platform").glob("*.py") if "." not in p.stem]
    assert importable == []
    import platform

    assert platform.system()  # the standard library module, not our folder
