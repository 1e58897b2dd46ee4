"""The one domain exception hierarchy: every refusal carries a stable code, a message and details.

Pure Python on purpose: the pure modules (grading, signing, engine adapters) raise these too.
The API maps them once (config.api.errors) and the portal shows `message` next to the field.
"""

from __future__ import annotations

from typing import Any


class ApplicationError(Exception):
    """A request the platform refuses, for a reason the caller can act on."""

    status = 400
    default_code = "invalid_request"

    def __init__(self, message: str, *, code: str | None = None, details: dict[str, Any] | None = None,
                 field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.details = dict(details or {})
        # The input field the error is about, so a form can show it next to that field.
        self.field = field
        if field and "field" not in self.details:
            self.details["field"] = field

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class ValidationFailed(ApplicationError):
    status = 400
    default_code = "invalid_input"


class NotAllowed(ApplicationError):
    status = 403
    default_code = "permission_denied"


class NotFound(ApplicationError):
    status = 404
    default_code = "not_found"


class Conflict(ApplicationError):
    status = 409
    default_code = "conflict"


class Unprocessable(ApplicationError):
    status = 422
    default_code = "unprocessable"


class IllegalTransition(Conflict):
    default_code = "illegal_transition"
