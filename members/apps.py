from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _sync_officer_group(sender: AppConfig, **kwargs: Any) -> None:
    from members.services import officer_group_sync

    officer_group_sync(using=kwargs.get("using", "default"))


class MembersConfig(AppConfig):
    name = "members"
    verbose_name = "Members"

    def ready(self) -> None:
        # After every migrate (permissions exist only then), keep the officers' group complete.
        post_migrate.connect(_sync_officer_group, sender=self, dispatch_uid="members.officer_group_sync")
