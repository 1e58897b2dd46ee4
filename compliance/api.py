"""Compliance API for members: submit and read their own end-use declarations and export licences, and
read a receipt's ESG labels with the rule results behind them.

Officers decide in the admin console; nothing here approves anything. Views parse, call a service,
render. Another member's declaration, licence or receipt is a 404, never a 403.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from compliance.models import DeclarationStatus, EndUseDeclaration, EsgOutcome, ExportLicence, LicenceStatus
from compliance.selectors import (
    end_use_declaration_of,
    end_use_declarations_of,
    export_licence_of,
    export_licences_of,
    receipt_esg_report,
)
from compliance.services import end_use_declaration_submit, export_licence_submit
from config.api.pagination import StrictLimitOffsetPagination as LimitOffsetPagination
from config.errors import NotFound, ValidationFailed
from members.api import require_member
from members.idempotency import idempotent
from members.models import User
from receipts.selectors import receipts_visible_to


def _user(request: Request) -> User | None:
    return request.user if isinstance(request.user, User) else None


def _page_of(item: type[serializers.Serializer], name: str) -> type[serializers.Serializer]:
    """The schema of a LimitOffset page of `item`."""
    return type(name, (serializers.Serializer,), {
        "count": serializers.IntegerField(),
        "next": serializers.URLField(allow_null=True),
        "previous": serializers.URLField(allow_null=True),
        "results": item(many=True),
    })


def _paginated(request: Request, view: APIView, queryset: Any, output: type[serializers.Serializer]) -> Response:
    paginator = LimitOffsetPagination()
    page: list[Any] | None = paginator.paginate_queryset(queryset, request, view=view)
    return paginator.get_paginated_response(output(page, many=True).data)


def _status_filter(request: Request, statuses: list[str]) -> str | None:
    """The optional ?status filter, refused with 400 when it names no status (empty means "not given")."""
    status = request.query_params.get("status") or None
    if status is not None and status not in statuses:
        raise ValidationFailed(f"status must be one of {', '.join(statuses)}.", code="invalid_input", field="status")
    return status


def _filters(statuses: list[str]) -> list[OpenApiParameter]:
    return [
        OpenApiParameter("status", OpenApiTypes.STR, enum=statuses, description="Only this status."),
        OpenApiParameter("metal", OpenApiTypes.STR, description="Only this metal (symbol, e.g. Ga)."),
    ]


class EndUseDeclarationOutputSerializer(serializers.ModelSerializer):
    metal = serializers.CharField(source="metal.symbol")
    destination_country = serializers.CharField(source="destination_country.code")

    class Meta:
        model = EndUseDeclaration
        fields = ["id", "metal", "end_user", "end_use", "destination_country", "valid_from", "valid_to", "status",
                  "reason", "submitted_at", "decided_at"]


class ExportLicenceOutputSerializer(serializers.ModelSerializer):
    metal = serializers.CharField(source="metal.symbol")
    destination_country = serializers.CharField(source="destination_country.code")
    remaining_kg = serializers.DecimalField(max_digits=18, decimal_places=3, read_only=True)

    class Meta:
        model = ExportLicence
        fields = ["id", "licence_number", "metal", "quantity_cap_kg", "drawn_kg", "remaining_kg", "consignee",
                  "end_user", "end_use", "destination_country", "valid_from", "valid_to", "status", "reason",
                  "submitted_at", "decided_at"]


EndUseDeclarationPage = _page_of(EndUseDeclarationOutputSerializer, "EndUseDeclarationPage")
ExportLicencePage = _page_of(ExportLicenceOutputSerializer, "ExportLicencePage")


class EndUseDeclarationListCreateView(APIView):
    idempotent = True

    class InputSerializer(serializers.Serializer):
        metal = serializers.CharField(max_length=3, help_text="Metal symbol, e.g. Ga.")
        end_user = serializers.CharField(max_length=200)
        end_use = serializers.CharField(max_length=5000)
        destination_country = serializers.CharField(max_length=2, help_text="ISO 3166 alpha-2.")
        valid_from = serializers.DateField()
        valid_to = serializers.DateField(help_text="Last day of validity (inclusive), after valid_from.")

    @extend_schema(parameters=_filters(DeclarationStatus.values), responses={200: EndUseDeclarationPage},
                   operation_id="compliance_end_use_declarations_list")
    def get(self, request: Request) -> Response:
        declarations = end_use_declarations_of(require_member(request),
                                               status=_status_filter(request, DeclarationStatus.values),
                                               metal=request.query_params.get("metal"))
        return _paginated(request, self, declarations, EndUseDeclarationOutputSerializer)

    @extend_schema(request=InputSerializer, responses={201: EndUseDeclarationOutputSerializer},
                   operation_id="compliance_end_use_declarations_submit")
    def post(self, request: Request) -> Any:
        member = require_member(request)

        def work() -> tuple[int, Any]:
            data = self.InputSerializer(data=request.data)
            data.is_valid(raise_exception=True)
            declaration = end_use_declaration_submit(member=member, submitted_by=_user(request),
                                                     **data.validated_data)
            return 201, EndUseDeclarationOutputSerializer(declaration).data

        return idempotent(request, member, work)


class EndUseDeclarationDetailView(APIView):
    @extend_schema(responses={200: EndUseDeclarationOutputSerializer},
                   operation_id="compliance_end_use_declarations_read")
    def get(self, request: Request, pk: int) -> Response:
        declaration = end_use_declaration_of(require_member(request), pk)
        return Response(EndUseDeclarationOutputSerializer(declaration).data)


class ExportLicenceListCreateView(APIView):
    idempotent = True

    class InputSerializer(serializers.Serializer):
        licence_number = serializers.CharField(max_length=64, help_text="As issued by the export authority.")
        metal = serializers.CharField(max_length=3, help_text="Metal symbol, e.g. Ga.")
        quantity_cap_kg = serializers.CharField(max_length=32, help_text='Decimal kg, e.g. "500.000".')
        consignee = serializers.CharField(max_length=200)
        end_user = serializers.CharField(max_length=200)
        end_use = serializers.CharField(max_length=5000)
        destination_country = serializers.CharField(max_length=2, help_text="ISO 3166 alpha-2.")
        valid_from = serializers.DateField()
        valid_to = serializers.DateField(help_text="Last day of validity (inclusive), after valid_from.")

    @extend_schema(parameters=_filters(LicenceStatus.values), responses={200: ExportLicencePage},
                   operation_id="compliance_export_licences_list")
    def get(self, request: Request) -> Response:
        licences = export_licences_of(require_member(request), status=_status_filter(request, LicenceStatus.values),
                                      metal=request.query_params.get("metal"))
        return _paginated(request, self, licences, ExportLicenceOutputSerializer)

    @extend_schema(request=InputSerializer, responses={201: ExportLicenceOutputSerializer},
                   operation_id="compliance_export_licences_submit")
    def post(self, request: Request) -> Any:
        member = require_member(request)

        def work() -> tuple[int, Any]:
            data = self.InputSerializer(data=request.data)
            data.is_valid(raise_exception=True)
            licence = export_licence_submit(exporter=member, submitted_by=_user(request), **data.validated_data)
            return 201, ExportLicenceOutputSerializer(licence).data

        return idempotent(request, member, work)


class ExportLicenceDetailView(APIView):
    @extend_schema(responses={200: ExportLicenceOutputSerializer}, operation_id="compliance_export_licences_read")
    def get(self, request: Request, pk: int) -> Response:
        licence = export_licence_of(require_member(request), pk)
        return Response(ExportLicenceOutputSerializer(licence).data)


# --- ESG: a receipt's labels and the rule results behind them --------------------------------------------


class EsgRuleResultSerializer(serializers.Serializer):
    rule_id = serializers.CharField()
    kind = serializers.CharField()
    severity = serializers.ChoiceField(choices=["block", "warn"])
    outcome = serializers.ChoiceField(choices=["pass", "fail", "not_applicable"])
    measured = serializers.CharField(help_text="What the receipt's proof shows.")
    # Named like Field.required / Field.label: DRF's metaclass moves declared fields off the class, no clash.
    required = serializers.CharField(help_text="What the rule asks for.")  # type: ignore[assignment]
    message = serializers.CharField()


class EsgCbamSerializer(serializers.Serializer):
    eur_low = serializers.CharField()
    eur_high = serializers.CharField()
    certified = serializers.BooleanField()
    basis = serializers.CharField()


class EsgPackResultSerializer(serializers.Serializer):
    pack = serializers.CharField()
    version = serializers.CharField()
    title = serializers.CharField()
    market = serializers.CharField()
    label = serializers.CharField(allow_null=True,  # type: ignore[assignment]
                                  help_text="The label the pack grants; null for a gate.")
    gate = serializers.BooleanField(help_text="A gate (no label) must not fail for the receipt to hold any label.")
    status = serializers.ChoiceField(choices=["evaluated", "pending"])
    outcome = serializers.ChoiceField(choices=EsgOutcome.values, allow_null=True)
    label_earned = serializers.BooleanField()
    evaluated_at = serializers.DateTimeField(allow_null=True)
    cbam = EsgCbamSerializer(allow_null=True)
    rules = EsgRuleResultSerializer(many=True)


class ReceiptEsgSerializer(serializers.Serializer):
    receipt = serializers.CharField()
    labels = serializers.ListField(child=serializers.CharField(),
                                   help_text='ESG classes held now, e.g. ["LC"]: the instruments it may back.')
    cleared = serializers.BooleanField(help_text="Every gate pack evaluated and none failed.")
    blocked = serializers.BooleanField(help_text="A blocking rule of an active pack fails.")
    packs = EsgPackResultSerializer(many=True)


class ReceiptEsgView(APIView):
    """The receipt's current ESG labels and, per active rule-pack version, every rule's outcome with what
    was measured against what is required. Visible to the holder and the warehouse operator."""

    @extend_schema(responses={200: ReceiptEsgSerializer}, operation_id="compliance_receipt_esg")
    def get(self, request: Request, number: str) -> Response:
        receipt = receipts_visible_to(require_member(request)).filter(number=number).first()
        if receipt is None:
            raise NotFound("No such receipt.")
        return Response(ReceiptEsgSerializer(receipt_esg_report(receipt)).data)
