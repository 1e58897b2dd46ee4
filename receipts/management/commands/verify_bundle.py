"""`manage.py verify_bundle FILE [--jwks FILE]`: verify a receipt bundle offline and print every check.

Exit status: 0 when every check holds, 1 when any fails, 2 when the files cannot be read as JSON. Needs no
database: with `--jwks` (the platform's published /.well-known/jwks.json, saved to a file) signatures are
judged against those keys; without it only against the bundle's own keys, which proves integrity, not who
signed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from receipts.bundles import verify_bundle

EXIT_FAILED = 1
EXIT_UNREADABLE = 2


def _read_json(path: str, what: str) -> Any:
    try:
        return json.loads(Path(path).read_bytes())
    except OSError as exc:
        raise CommandError(f"cannot read {what} {path}: {exc.strerror or exc}", returncode=EXIT_UNREADABLE) from exc
    except (UnicodeDecodeError, ValueError) as exc:
        raise CommandError(f"{what} {path} is not JSON: {exc}", returncode=EXIT_UNREADABLE) from exc


class Command(BaseCommand):
    help = "Verify a receipt bundle (canonical form, signatures, hash chain, bindings, grade, conservation)."
    requires_system_checks: list[str] = []  # an offline tool: nothing it does depends on the project's state

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("bundle", help="Path to the bundle JSON file.")
        parser.add_argument("--jwks", help="Path to the platform's JWKS (trusted keys) JSON file.")

    def handle(self, *args: Any, **options: Any) -> None:
        bundle = _read_json(options["bundle"], "bundle")
        trusted: list[dict[str, Any]] | None = None
        if options.get("jwks"):
            jwks = _read_json(options["jwks"], "JWKS")
            if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
                raise CommandError('the JWKS file must be {"keys": [...]}', returncode=EXIT_UNREADABLE)
            trusted = jwks["keys"]
        if trusted is None:
            self.stderr.write("note: no --jwks given: signatures are checked against the keys inside the bundle, "
                              "which proves it is intact, not that the platform issued it")
        result = verify_bundle(bundle, trusted_keys=trusted)
        for check in result.checks:
            mark = self.style.SUCCESS("PASS") if check.ok else self.style.ERROR("FAIL")
            self.stdout.write(f"{mark}  {check.name}: {check.detail}")
        failed = len(result.failures)
        if failed:
            raise CommandError(f"bundle does NOT verify: {failed} of {len(result.checks)} checks failed",
                               returncode=EXIT_FAILED)
        number = bundle.get("receipt", {}).get("number") if isinstance(bundle, dict) else None
        self.stdout.write(self.style.SUCCESS(f"bundle of {number} verifies: all {len(result.checks)} checks hold"))
