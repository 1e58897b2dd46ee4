"""Load the DEMO market (every app's demo data, in dependency order). Re-running adds nothing twice."""

from importlib import import_module
from importlib.util import find_spec
from typing import Any

from django.core.management.base import BaseCommand

# members <- receipts <- compliance <- trading: each app's demo builds on the one before.
DEMO_MODULES = ["members.demo", "receipts.demo", "compliance.demo", "trading.demo"]


class Command(BaseCommand):
    help = "Load the demo market: members, warehouses, signed lots and receipts, compliance cases, a market."

    def handle(self, *args: Any, **options: Any) -> None:
        lines: list[str] = []
        for name in DEMO_MODULES:
            if find_spec(name) is not None:
                lines += import_module(name).load()
        self.stdout.write(self.style.SUCCESS("Demo market loaded (DEMO data, not real parties)."))
        self.stdout.write("")
        self.stdout.write("Ingot is starting at http://127.0.0.1:8000  (portal /, API docs /api/docs/, "
                          "console /admin/, /healthz)")
        self.stdout.write("Demo logins and data:")
        for line in lines:
            self.stdout.write(line)
