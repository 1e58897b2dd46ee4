"""Reads in the members app that are more than a one-line query."""

from __future__ import annotations

from django.db.models import QuerySet

from members.models import Member, SigningKey, User


def member_of(user: User | object) -> Member | None:
    return getattr(user, "member", None) if getattr(user, "is_authenticated", False) else None


def signing_keys_of(member: Member) -> QuerySet[SigningKey]:
    return SigningKey.objects.filter(member=member).order_by("valid_from", "pk")
