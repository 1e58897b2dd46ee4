"""`manage.py catalogue_load`: bring the Metal and Grade tables in line with receipts/catalogue.json.

Every `migrate` does this too (post_migrate); run it after editing the catalogue file without a migration.
Inserts and updates, never deletes: lots and receipts keep pointing at the grades they were issued under.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from receipts.catalogue import load_catalogue
from receipts.services import catalogue_sync


class Command(BaseCommand):
    help = "Load receipts/catalogue.json (metals, grades) into the database."

    def handle(self, *args: Any, **options: Any) -> None:
        metals, grades = catalogue_sync()
        version = load_catalogue().version
        self.stdout.write(self.style.SUCCESS(f"catalogue {version}: {metals} metals, {grades} grades loaded"))
