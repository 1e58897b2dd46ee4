"""Celery tasks of the compliance app: thin, idempotent, calling services."""

from __future__ import annotations

from celery import shared_task

from compliance.models import ScreeningList
from compliance.services import member_screen
from members.models import Member


@shared_task(name="compliance.tasks.members_screen_all")
def members_screen_all(screening_list_id: int | None = None) -> int:
    """Screen every member against the active list; returns how many hits are flagged now.

    Enqueued when a list load commits (with its id) and daily by beat (without). A stale id (a newer
    list replaced it) does nothing: the newer load enqueued its own run. Running twice is harmless:
    member_screen never flags the same listed party twice for a member.
    """
    active = ScreeningList.objects.filter(active=True).first()
    if active is None or (screening_list_id is not None and active.pk != screening_list_id):
        return 0
    hits = 0
    for member in Member.objects.order_by("pk").iterator(chunk_size=500):
        hits += len(member_screen(member=member))
    return hits


@shared_task(name="compliance.tasks.member_screen")
def member_screen_task(member_id: int) -> int:
    """Screen one member (e.g. after a refused transfer rolled its fresh flag back)."""
    member = Member.objects.filter(pk=member_id).first()
    return len(member_screen(member=member)) if member is not None else 0
