"""Every row lock the members app takes, in primary-key order."""

from django.db.models import QuerySet

from members.models import Member, SigningKey


def members_for_update(*pks: int) -> QuerySet[Member]:
    return Member.objects.select_for_update().filter(pk__in=pks).order_by("pk")


def signing_key_for_update(*, member: Member, kid: str) -> QuerySet[SigningKey]:
    return SigningKey.objects.select_for_update().filter(member=member, kid=kid).order_by("pk")
