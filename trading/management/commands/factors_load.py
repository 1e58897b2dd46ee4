"""Load an external factor CSV (factor, observed_at, value, unit, source) all or nothing."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from config.errors import ApplicationError
from trading.pricing_services import factors_load_csv


class Command(BaseCommand):
    help = ("Load factor observations from a CSV file, all or nothing: any error (unknown factor, wrong unit, "
            "future date, negative value, duplicate timestamp, ...) is listed with its row and nothing is stored.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", help="CSV with the header factor,observed_at,value,unit,source")
        parser.add_argument("--skip-existing", action="store_true",
                            help="Skip rows identical to stored observations, so re-loading a file is a no-op.")
        parser.add_argument("--backfill", action="store_true",
                            help="Record each value as known from its own timestamp (historical series); by "
                                 "default a value counts from the moment it is loaded.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            report = factors_load_csv(file=options["path"], skip_existing=options["skip_existing"],
                                      backfill=options["backfill"])
        except FileNotFoundError as exc:
            raise CommandError(f"no such file: {options['path']}") from exc
        except ApplicationError as exc:
            lines = [f"  row {i.get('row', '-')}: {i['code']}: {i['message']}" for i in exc.details.get("issues", [])]
            raise CommandError("\n".join([f"{exc.code}: {exc.message}", *lines])) from exc
        for warning in report.warnings:
            self.stderr.write(f"warning: row {warning.get('row', '-')}: {warning['code']}: {warning['message']}")
        self.stdout.write(self.style.SUCCESS(f"{report.created} observation(s) loaded, {report.skipped} already "
                                             "stored and skipped."))
