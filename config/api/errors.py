"""Maps every error the API can raise to one JSON shape: {"code", "message", "details"}."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DataError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import exceptions, serializers
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from config.errors import ApplicationError
from receipts.errors import ProofError

# DRF's exception classes -> our stable codes. Anything not listed keeps DRF's default_code.
_DRF_CODES: dict[type[exceptions.APIException], str] = {
    exceptions.ParseError: "malformed_json",
    exceptions.AuthenticationFailed: "authentication_failed",
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.PermissionDenied: "permission_denied",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.Throttled: "throttled",
    exceptions.ValidationError: "invalid_input",
}


class ErrorSerializer(serializers.Serializer):
    """The body of every error response."""

    code = serializers.CharField(help_text="Stable, machine-readable error code.")
    message = serializers.CharField(help_text="Human-readable explanation.")
    details = serializers.DictField(required=False, help_text="Field errors or facts about the refusal.")


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "details": details or {}}


def _flatten_message(detail: Any) -> str:
    if isinstance(detail, dict):
        for key, value in detail.items():
            inner = _flatten_message(value)
            return inner if key == "non_field_errors" else f"{key}: {inner}"
        return "Invalid input."
    if isinstance(detail, list) and detail:
        return _flatten_message(detail[0])
    return str(detail)


def _is_nul_in_query(exc: Exception) -> bool:
    """Django (DataError) or psycopg (ValueError) refuses a string with a NUL character before it reaches
    PostgreSQL, whose text cannot hold one. Our code never makes one, so it came from the request: a path or
    query value used in a lookup (`/api/v1/receipts/%00`). Bad input, not a server error."""
    return isinstance(exc, (DataError, ValueError)) and "NUL (0x00)" in str(exc)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if _is_nul_in_query(exc):
        return Response(error_body("invalid_input", "Null characters are not allowed."), status=400)
    if isinstance(exc, ApplicationError):
        return Response(error_body(exc.code, exc.message, exc.details), status=exc.status)
    if isinstance(exc, ProofError):  # the pure proof modules' errors are bad input too
        return Response(error_body(exc.code, exc.message, exc.details), status=400)
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(exc.message_dict if hasattr(exc, "error_dict") else exc.messages)
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()

    response = drf_exception_handler(exc, context)
    if response is None or not isinstance(exc, exceptions.APIException):
        return response
    code = next((c for cls, c in _DRF_CODES.items() if isinstance(exc, cls)), None) or str(exc.default_code)
    raised_code = getattr(exc.detail, "code", None)
    if isinstance(raised_code, str) and raised_code != exc.default_code:
        code = raised_code  # a view raised it with a more precise code (e.g. throttled -> locked_out)
    if isinstance(exc, exceptions.ValidationError):
        response.data = error_body(code, _flatten_message(exc.detail), {"fields": exc.detail})
    else:
        details: dict[str, Any] = {}
        wait = getattr(exc, "wait", None)  # Throttled's seconds to wait (not in the stubs)
        if isinstance(exc, exceptions.Throttled) and wait is not None:
            details["retry_after_seconds"] = int(wait)
        response.data = error_body(code, str(exc.detail), details)
    return response


# --- Django-level errors under /api/: the same JSON shape ---------------------------------------------
# A request that never reaches a DRF view (a path whose converter does not match, e.g. /api/v1/orders/abc,
# or an exception outside DRF's handler) would otherwise get Django's HTML page, which no API client and
# not the schema expects. Everything outside /api/ keeps Django's own pages.

API_PREFIX = "/api/"


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith(API_PREFIX)


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """handler404 (config.urls): JSON for the API, Django's page elsewhere."""
    if _is_api(request):
        return JsonResponse(error_body("not_found", "Not found."), status=404)
    return defaults.page_not_found(request, exception)  # type: ignore[arg-type]


def server_error(request: HttpRequest) -> HttpResponse:
    """handler500 (config.urls): JSON for the API, with no detail (the request id in the log finds the
    traceback); Django's page elsewhere."""
    if _is_api(request):
        return JsonResponse(error_body("server_error", "The server failed to handle this request."), status=500)
    return defaults.server_error(request)
