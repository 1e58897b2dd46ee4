"""Print the current one-time code of the demo compliance officer's TOTP device (demo only)."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice


class Command(BaseCommand):
    help = "Print the demo officer's current TOTP code."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--user", default="officer")

    def handle(self, *args: Any, **options: Any) -> None:
        device = TOTPDevice.objects.filter(user__username=options["user"]).first()
        if device is None:
            raise CommandError("No TOTP device for that user; run `make run` (demo_load) first.")
        code = totp(device.bin_key, step=device.step, t0=device.t0, digits=device.digits, drift=device.drift)
        self.stdout.write(f"{code:0{device.digits}d}")
