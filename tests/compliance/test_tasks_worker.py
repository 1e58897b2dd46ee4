"""A list load, once committed, has a real Celery worker screen every member against it."""

from __future__ import annotations

from typing import Any

import pytest

from compliance.models import Flag, FlagKind
from compliance.services import screening_list_load
from tests.compliance.conftest import DEMO_LIST
from tests.conftest import wait_for
from tests.factories.members import MemberFactory


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_loading_a_list_rescreens_members_in_the_worker(celery_worker: Any) -> None:
    baltic = MemberFactory(name="Baltic Rare Metals Trading OÜ (demo)", country="EE")
    MemberFactory(name="Lumen Displays GmbH (demo)", country="DE")
    screening_list_load(source=DEMO_LIST)
    flag = wait_for(lambda: Flag.objects.filter(kind=FlagKind.SANCTIONS_HIT).first(), timeout=30)
    assert flag.member == baltic
    assert Flag.objects.count() == 1
