"""Domain errors raised by the pure proof modules of `receipts` (units, catalogue,
grading, canonical form, signing, event chain, bundles)."""

from __future__ import annotations

from typing import Any

# Stable codes: API clients and the lead's ApplicationError mapping key on these, so a
# code is never renamed once released; add new ones instead.
UNKNOWN_UNIT = "unknown_unit"
INCOMPATIBLE_UNIT = "incompatible_unit"
UNKNOWN_ELEMENT = "unknown_element"
NEGATIVE_VALUE = "negative_value"
INVALID_DECIMAL = "invalid_decimal"
INVALID_QUANTITY = "invalid_quantity"
INVALID_TIMESTAMP = "invalid_timestamp"
INVALID_ASSAY = "invalid_assay"
INVALID_CATALOGUE = "invalid_catalogue"
UNKNOWN_GRADE = "unknown_grade"
UNKNOWN_METAL = "unknown_metal"
MALFORMED_KEY = "malformed_key"
MALFORMED_SIGNATURE = "malformed_signature"
WEAK_SECRET = "weak_secret"  # noqa: S105 - an error code, not a secret
UNDECRYPTABLE_KEY = "undecryptable_key"
FLOAT_IN_SIGNED_DOCUMENT = "float_in_signed_document"
NOT_CANONICALISABLE = "not_canonicalisable"
INVALID_ATTESTATION = "invalid_attestation"
INVALID_EVENT = "invalid_event"
ILLEGAL_TRANSITION = "illegal_transition"
QUANTITY_NOT_CONSERVED = "quantity_not_conserved"
INVALID_BUNDLE = "invalid_bundle"


class ProofError(Exception):
    """A domain error with a stable machine `code`, a human `message` and optional
    `details` (JSON-safe values only, so the API layer can render it as is)."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details: dict[str, Any] = dict(details) if details else {}

    def __repr__(self) -> str:
        return f"ProofError(code={self.code!r}, message={self.message!r}, details={self.details!r})"

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}
