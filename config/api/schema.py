"""OpenAPI schema generation: every operation documents the error responses it can return."""

from __future__ import annotations

from typing import Any, Literal

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiParameter

from config.api.errors import ErrorSerializer


class IngotAutoSchema(AutoSchema):
    def _is_creating_post(self) -> bool:
        return self.method == "POST" and getattr(self.view, "idempotent", False)

    def get_override_parameters(self) -> list[Any]:
        params = list(super().get_override_parameters())
        if self._is_creating_post():
            params.append(OpenApiParameter(
                name="Idempotency-Key", location=OpenApiParameter.HEADER, required=True, type=str,
                description="Unique per member and operation; a replay returns the first response.",
            ))
        return params

    def get_operation(self, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        operation = super().get_operation(*args, **kwargs)
        # Every view reads an empty optional query parameter (`?status=`) as absent: DRF's form semantics
        # for serializer filters, and `.get(...) or default` for the others. Say so, so a client (and the
        # API fuzzer) knows `?status=` is accepted and filters nothing.
        for parameter in (operation or {}).get("parameters", []):
            if parameter.get("in") == "query" and not parameter.get("required"):
                parameter["allowEmptyValue"] = True
        return operation

    def _get_response_bodies(self, direction: Literal["request", "response"] = "response") -> dict[str, Any]:
        bodies = super()._get_response_bodies(direction)
        error_statuses = ["400", "401", "403", "404", "429"]
        if self.method in ("POST", "PUT", "PATCH", "DELETE"):
            # 415: a body in a content type the view does not parse (or that its parser cannot make sense of)
            error_statuses += ["409", "415", "422"]
        if self.view.__class__.__name__ == "HealthView":
            error_statuses = ["503"]
        for status in error_statuses:
            if status not in bodies:
                bodies[status] = self._get_response_for_code(ErrorSerializer, status, direction=direction)
        return bodies

    def get_serializer_name(self, serializer: Any, direction: Literal["request", "response"]) -> str:
        # Views nest InputSerializer / OutputSerializer (HackSoft style); name the component after
        # the view that owns it so two views' InputSerializers never collide.
        cls = serializer.__class__
        outer, _, inner = cls.__qualname__.rpartition(".")
        if outer:
            return outer.removesuffix("View") + inner.removesuffix("Serializer")
        return str(super().get_serializer_name(serializer, direction))
