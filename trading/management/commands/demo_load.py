"""Load the DEMO market (every app's demo data, in dependency order). Re-running adds nothing twice."""

from typing import Any

from django.core.management.base import BaseCommand

from members import demo as members_demo


class Command(BaseCommand):
    help = "Load the demo market: members, users, officer (labelled demo). Idempotent."

    def handle(self, *args: Any, **options: Any) -> None:
        lines = members_demo.load()
        self.stdout.write(self.style.SUCCESS("Demo market loaded (DEMO data, not real parties)."))
        self.stdout.write("")
        self.stdout.write("Ingot is starting at http://127.0.0.1:8000  (API docs /api/docs/, console /admin/, /healthz)")
        self.stdout.write("Demo logins:")
        for line in lines:
            self.stdout.write(line)
