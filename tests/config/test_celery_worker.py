"""A real Celery worker on real Redis runs a task enqueued on commit, and its effect lands in the database."""

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from config.celery import app as celery_app
from members.models import IdempotencyRecord
from members.tasks import idempotency_keys_purge
from tests.conftest import wait_for
from tests.factories.members import MemberFactory

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def test_celery_settings_are_safe() -> None:
    conf = celery_app.conf
    assert conf.task_serializer == "json" and conf.accept_content == ["json"]
    assert conf.task_acks_late is True and conf.task_reject_on_worker_lost is True
    assert conf.broker_url.startswith("redis://")


def test_worker_runs_task_enqueued_on_commit(celery_worker) -> None:
    member = MemberFactory()
    old = IdempotencyRecord.objects.create(member=member, key="old", request_hash="h", method="POST", path="/x")
    IdempotencyRecord.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=3))
    fresh = IdempotencyRecord.objects.create(member=member, key="fresh", request_hash="h", method="POST", path="/x")

    with transaction.atomic():
        transaction.on_commit(idempotency_keys_purge.delay)

    wait_for(lambda: not IdempotencyRecord.objects.filter(pk=old.pk).exists(), timeout=30)
    assert IdempotencyRecord.objects.filter(pk=fresh.pk).exists()
