"""Limit/offset pagination that refuses what the schema does not allow.

DRF's LimitOffsetPagination serves the default page when `limit` or `offset` is not an integer (`?limit=abc`,
`?offset=-3`), although the schema documents integers: a client with a bug never learns of it. This one
answers 400 `invalid_input` instead, and caps `limit` at max_limit; an empty value (`?limit=`) still means "not given", as for every
optional query parameter (config.api.schema documents allowEmptyValue).
"""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import ValidationError
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request


class StrictLimitOffsetPagination(LimitOffsetPagination):
    # Without a cap, ?limit=9223372036854775808 reaches PostgreSQL's LIMIT (a bigint) and fails there: a 500.
    max_limit = 1000

    def _integer(self, request: Request, name: str, *, minimum: int) -> int | None:
        raw = request.query_params.get(name, "")
        if raw == "":
            return None
        try:
            value = int(raw)
        except ValueError:
            value = None
        if value is None or value < minimum or not raw.strip().lstrip("-").isdigit():
            raise ValidationError({name: [f"A whole number of at least {minimum} is required."]})
        return value

    def get_limit(self, request: Request) -> int | None:
        value = self._integer(request, self.limit_query_param, minimum=1)
        if value is None:
            return self.default_limit
        return min(value, self.max_limit) if self.max_limit else value

    def get_offset(self, request: Request) -> int:
        value = self._integer(request, self.offset_query_param, minimum=0)
        return value or 0

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            parameter["schema"]["minimum"] = 1 if parameter["name"] == self.limit_query_param else 0
        return parameters
