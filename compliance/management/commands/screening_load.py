"""`manage.py screening_load FILE`: load a sanctions / denied-party list CSV, all or nothing."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from compliance.services import screening_list_load
from config.errors import ApplicationError


class Command(BaseCommand):
    help = ("Load a screening list CSV (columns name, aliases, country, source) and make it the active list; "
            "members are rescreened by a task. A malformed file loads nothing.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="Path to the CSV file.")
        parser.add_argument("--no-rescreen", action="store_true", help="Do not enqueue the rescreen of members.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            loaded = screening_list_load(source=options["file"], rescreen=not options["no_rescreen"])
        except ApplicationError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(self.style.SUCCESS(
            f"Active screening list: {loaded.source_name} ({loaded.entry_count} entries, sha256 {loaded.content_hash[:12]})"))
