"""URL path converter for receipt numbers (`WR-GA-2026-000123`, receipts/numbering.py).

Registered as `receipt` in config/urls.py before any URLconf is included. Constraining the segment keeps
`receipts/verify` (the POST-only bundle verifier) from being read as a receipt number, and drf-spectacular
publishes the converter's regex as the `number` parameter's `pattern` in the OpenAPI schema.
"""

from __future__ import annotations


class ReceiptNumberConverter:
    regex = r"WR-[A-Z]{1,3}-[0-9]{4}-[0-9]{6,9}"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value
