"""Warehouse API: warehouses, lots, attestations, grading, receipts, bundles and their verification,
storage readings and stock statements, and the published signing keys.

Views parse, look the object up among what the member may see (anything else is a 404), call one
service and render. Creating POSTs run inside `members.idempotency.idempotent`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import ROUND_HALF_UP
from typing import IO, Any

from django.db.models import QuerySet
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_field, inline_serializer
from rest_framework import serializers
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.api.pagination import StrictLimitOffsetPagination as LimitOffsetPagination
from config.errors import NotAllowed, NotFound, ValidationFailed
from members.api import require_member
from members.idempotency import idempotent
from members.models import Member
from receipts import selectors, services
from receipts.bundles import verify_bundle
from receipts.canonical import canonical_bytes
from receipts.models import (
    Attestation,
    AttestationKind,
    Lot,
    LotNomination,
    Receipt,
    ReceiptStatus,
    StockStatement,
    StorageIncident,
    StorageReading,
    Warehouse,
)
from receipts.units import format_kg

# A bundle of a receipt with a long history is tens of kB; anything near this is not a bundle, and the
# verify endpoint is open to anyone.
MAX_BUNDLE_BYTES = 2 * 1024 * 1024

KG_HELP = 'Kilograms as a decimal string, at most three decimals (gram resolution), e.g. "125.500".'


# --- lookups: what the member may see, else 404 ------------------------------------------------------

def _own_warehouse(member: Member, code: str) -> Warehouse:
    warehouse = selectors.warehouses_of(member).filter(code=code).first()
    if warehouse is None:
        raise NotFound("No such warehouse.")
    return warehouse


def _visible_lot(member: Member, pk: int) -> Lot:
    lot = selectors.lots_visible_to(member).filter(pk=pk).first()
    if lot is None:
        raise NotFound("No such lot.")
    return lot


def _visible_receipt(member: Member, number: str) -> Receipt:
    receipt = selectors.receipts_visible_to(member).filter(number=number).first()
    if receipt is None:
        raise NotFound("No such receipt.")
    return receipt


def _require_operator_of(member: Member, warehouse: Warehouse) -> None:
    """For members who may see an object (a depositor, a holder) but may not act as its warehouse."""
    if warehouse.operator_id != member.pk:
        raise NotAllowed("Only the warehouse operator can do this.", code="not_warehouse_operator")


def _member_by_legal_id(legal_id: str, field: str) -> Member:
    member = Member.objects.filter(legal_id=legal_id).first()
    if member is None:
        raise ValidationFailed(f"No member with legal id {legal_id!r}.", code="unknown_member", field=field)
    return member


def _paginate(request: Request, view: APIView, queryset: QuerySet[Any],
              serializer: type[serializers.BaseSerializer[Any]]) -> Response:
    paginator = LimitOffsetPagination()
    page = paginator.paginate_queryset(queryset, request, view=view)
    return paginator.get_paginated_response(serializer(page, many=True).data)


# --- output shapes shared by several views -----------------------------------------------------------

class KgField(serializers.DecimalField):
    """Mass out as "125.500": the same three-decimal string the signed documents use."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_digits=18, decimal_places=3, coerce_to_string=True, **kwargs)


class WarehouseOutputSerializer(serializers.ModelSerializer):
    country = serializers.CharField(source="country.code")
    open_incidents = serializers.SerializerMethodField()

    class Meta:
        model = Warehouse
        fields = ["code", "name", "country", "region", "approved", "open_incidents"]

    def get_open_incidents(self, warehouse: Warehouse) -> int:
        return warehouse.incidents.filter(closed_at__isnull=True).count()


class AttestationOutputSerializer(serializers.ModelSerializer):
    signer = serializers.CharField(source="signer.legal_id")
    submitted_by = serializers.CharField(source="submitted_by.legal_id")
    kid = serializers.CharField(source="signing_key.kid")
    document = serializers.JSONField()
    signature = serializers.JSONField()

    class Meta:
        model = Attestation
        fields = ["id", "lot", "kind", "document", "signature", "digest", "signer", "kid", "submitted_by",
                  "created_at"]


class LotNominationOutputSerializer(serializers.ModelSerializer):
    member = serializers.CharField(source="member.legal_id", help_text="Legal id of the nominated member.")
    member_name = serializers.CharField(source="member.name")
    kind = serializers.CharField(help_text="Attestation kind: " + ", ".join(AttestationKind.values) + ".")
    nominated_by = serializers.CharField(source="nominated_by.legal_id")
    withdrawn_by = serializers.CharField(source="withdrawn_by.legal_id", allow_null=True, default=None)
    live = serializers.BooleanField(source="is_live", help_text="False once withdrawn (the row stays as history).")

    class Meta:
        model = LotNomination
        fields = ["id", "member", "member_name", "kind", "live", "nominated_by", "nominated_at", "withdrawn_by",
                  "withdrawn_at"]


def _nominations(lot: Lot) -> list[dict[str, Any]]:
    return list(LotNominationOutputSerializer(selectors.nominations_of(lot), many=True).data)


class NomineeInputSerializer(serializers.Serializer):
    member = serializers.CharField(max_length=64, help_text="Legal id of the member nominated to attest the lot "
                                                            "(an assay lab, a verifier, a recycler...).")
    kinds = serializers.ListField(
        child=serializers.ChoiceField(choices=AttestationKind.choices), min_length=1, max_length=4,
        help_text="The attestation kinds it may sign for this lot; the member needs a role that may sign each.")


def _nominee(fields: Mapping[str, Any], prefix: str = "") -> tuple[Member, list[str]]:
    return _member_by_legal_id(fields["member"], f"{prefix}member"), list(fields["kinds"])


class LotOutputSerializer(serializers.ModelSerializer):
    reference = serializers.CharField()
    warehouse = serializers.CharField(source="warehouse.code")
    metal = serializers.CharField(source="metal.symbol")
    net_mass_kg = KgField()
    producer = serializers.CharField(source="producer.legal_id", allow_null=True, default=None)
    depositor = serializers.CharField(source="depositor.legal_id")
    grade = serializers.CharField(source="grade.code", allow_null=True, default=None)
    grading = serializers.JSONField(allow_null=True, help_text="The last grading result (see POST .../grade).")
    seal_numbers = serializers.ListField(child=serializers.CharField())

    class Meta:
        model = Lot
        fields = ["id", "reference", "warehouse", "metal", "form", "net_mass_kg", "package_count", "brand",
                  "batch_number", "seal_numbers", "production_date", "location", "producer", "depositor",
                  "grade", "grading", "graded_at", "created_at"]


class LotQuantitiesSerializer(serializers.Serializer):
    open_kg = serializers.CharField(help_text="Under open receipts.")
    withdrawn_kg = serializers.CharField(help_text="Delivered out of the warehouse.")
    available_kg = serializers.CharField(help_text="May still be receipted.")


class LotDetailOutputSerializer(LotOutputSerializer):
    quantities = serializers.SerializerMethodField()
    attestations = serializers.SerializerMethodField()
    nominations = serializers.SerializerMethodField()

    class Meta(LotOutputSerializer.Meta):
        fields = [*LotOutputSerializer.Meta.fields, "quantities", "attestations", "nominations"]

    @extend_schema_field(LotQuantitiesSerializer)
    def get_quantities(self, lot: Lot) -> dict[str, str]:
        return {name: format_kg(value) for name, value in selectors.lot_quantities(lot).items()}

    @extend_schema_field(AttestationOutputSerializer(many=True))
    def get_attestations(self, lot: Lot) -> list[dict[str, Any]]:
        rows = lot.attestations.select_related("signer", "submitted_by", "signing_key").order_by("created_at", "pk")
        return list(AttestationOutputSerializer(rows, many=True).data)

    @extend_schema_field(LotNominationOutputSerializer(
        many=True, help_text="Who the operator nominated to attest the lot, withdrawn ones included; the operator "
                             "and the producer may attest it without a nomination."))
    def get_nominations(self, lot: Lot) -> list[dict[str, Any]]:
        return _nominations(lot)


class ReceiptOutputSerializer(serializers.ModelSerializer):
    metal = serializers.CharField(source="lot.metal.symbol")
    grade = serializers.CharField(source="grade.code", allow_null=True, default=None,
                                  help_text="Null for a non-standard receipt (meets no grade).")
    form = serializers.CharField(source="lot.form")
    quantity_kg = KgField()
    holder = serializers.CharField(source="holder.legal_id")
    warehouse = serializers.CharField(source="lot.warehouse.code")
    lot = serializers.IntegerField(source="lot_id")
    lot_reference = serializers.CharField(source="lot.reference")
    # Named like BaseSerializer.parent; DRF's metaclass moves declared fields off the class, so no clash.
    parent = serializers.SerializerMethodField()  # type: ignore[assignment]
    standard = serializers.BooleanField(source="is_standard")
    # A plain string in the schema: the status enum is trading's Holding component's too, and one choice set
    # named "status" in several components makes drf-spectacular invent a hashed enum name (a deploy-check
    # warning). The values are receipts.models.ReceiptStatus.
    status = serializers.CharField(help_text="One of: " + ", ".join(ReceiptStatus.values) + ".")

    class Meta:
        model = Receipt
        fields = ["number", "metal", "grade", "form", "quantity_kg", "status", "holder", "warehouse", "lot",
                  "lot_reference", "parent", "standard", "issued_at", "closed_at"]

    def get_parent(self, receipt: Receipt) -> str | None:
        return receipt.parent.number if receipt.parent_id else None  # type: ignore[union-attr]


class IncidentOutputSerializer(serializers.ModelSerializer):
    breaches = serializers.JSONField()
    receipts = serializers.SlugRelatedField[Receipt](slug_field="number", many=True, read_only=True)

    class Meta:
        model = StorageIncident
        fields = ["id", "location", "breaches", "receipts", "opened_at", "closed_at", "closed_reason"]


class ReceiptEventSummarySerializer(serializers.Serializer):
    seq = serializers.IntegerField()
    kind = serializers.CharField()
    at = serializers.CharField(source="event.at")
    hash = serializers.CharField()


class ReceiptDetailOutputSerializer(ReceiptOutputSerializer):
    storage_incidents_open = serializers.SerializerMethodField()
    events = serializers.SerializerMethodField()

    class Meta(ReceiptOutputSerializer.Meta):
        fields = [*ReceiptOutputSerializer.Meta.fields, "encumbrance_ref", "last_event_hash",
                  "storage_incidents_open", "events"]

    @extend_schema_field(IncidentOutputSerializer(many=True))
    def get_storage_incidents_open(self, receipt: Receipt) -> list[dict[str, Any]]:
        return list(IncidentOutputSerializer(selectors.open_incidents_of(receipt), many=True).data)

    @extend_schema_field(ReceiptEventSummarySerializer(many=True))
    def get_events(self, receipt: Receipt) -> list[dict[str, Any]]:
        return list(ReceiptEventSummarySerializer(receipt.events.order_by("seq"), many=True).data)


def _receipt_detail(receipt: Receipt) -> dict[str, Any]:
    """The detail of a receipt as it stands after a service changed it (re-read with what it renders)."""
    fresh = Receipt.objects.select_related("lot__warehouse", "lot__metal", "grade", "holder", "parent").get(
        pk=receipt.pk)
    return dict(ReceiptDetailOutputSerializer(fresh).data)


# --- warehouses ---------------------------------------------------------------------------------------

class WarehouseListView(APIView):
    """The warehouses the member operates."""

    @extend_schema(responses={200: WarehouseOutputSerializer(many=True)}, tags=["receipts"], operation_id="warehouses_list")
    def get(self, request: Request) -> Response:
        warehouses = selectors.warehouses_of(require_member(request)).order_by("code")
        return Response(WarehouseOutputSerializer(warehouses, many=True).data)


class LotRegisterView(APIView):
    """The warehouse registers a deposited lot."""

    idempotent = True

    class InputSerializer(serializers.Serializer):
        metal = serializers.CharField(max_length=3, help_text="Element symbol from the catalogue, e.g. Ga.")
        form = serializers.CharField(max_length=30, help_text="One of the metal's catalogue forms, e.g. ingot.")
        net_mass_kg = serializers.CharField(max_length=40, help_text=KG_HELP)
        package_count = serializers.IntegerField()
        brand = serializers.CharField(max_length=100)
        batch_number = serializers.CharField(max_length=64)
        seal_numbers = serializers.ListField(child=serializers.CharField(max_length=64), required=False,
                                             default=list, max_length=1000)
        production_date = serializers.DateField()
        location = serializers.CharField(max_length=50, help_text="Vault / bay, as the storage sensors name it.")
        depositor = serializers.CharField(max_length=64, help_text="Legal id of the member that deposited it.")
        producer = serializers.CharField(max_length=64, required=False, allow_null=True, default=None,
                                         help_text="Legal id of the producing member, if it is one.")
        # max_length reaches the ListSerializer that many=True makes (DRF >= 3.14); the stubs predate it.
        nominees = NomineeInputSerializer(  # type: ignore[call-arg]
            many=True, required=False, default=list, max_length=50,
            help_text="Members nominated to attest the lot (besides the operator and the producer), as "
                      "POST /lots/{id}/nominations takes them.")

    @extend_schema(request=InputSerializer, responses={201: LotDetailOutputSerializer}, tags=["receipts"], operation_id="lots_register")
    def post(self, request: Request, code: str) -> HttpResponse:
        member = require_member(request)

        def work() -> tuple[int, Any]:
            warehouse = _own_warehouse(member, code)
            data = self.InputSerializer(data=request.data)
            data.is_valid(raise_exception=True)
            fields = dict(data.validated_data)
            depositor = _member_by_legal_id(fields.pop("depositor"), "depositor")
            producer_id = fields.pop("producer")
            producer = _member_by_legal_id(producer_id, "producer") if producer_id else None
            nominees = [_nominee(n, f"nominees[{i}].") for i, n in enumerate(fields.pop("nominees"))]
            lot = services.lot_register(warehouse=warehouse, registered_by=member, depositor=depositor,
                                        producer=producer, nominees=nominees, **fields)
            return 201, LotDetailOutputSerializer(lot).data

        return idempotent(request, member, work)


class StorageReadingView(APIView):
    """A storage sensor reading; a breach opens an incident that flags the receipts at that location."""

    idempotent = True

    class InputSerializer(serializers.Serializer):
        location = serializers.CharField(max_length=50)
        observed_at = serializers.DateTimeField()
        temperature_c = serializers.DecimalField(max_digits=6, decimal_places=2, min_value=-100, max_value=200,
                                                 rounding=ROUND_HALF_UP)
        humidity_pct = serializers.DecimalField(max_digits=5, decimal_places=2, min_value=0, max_value=100,
                                                rounding=ROUND_HALF_UP)
        seal_intact = serializers.BooleanField()

    class OutputSerializer(serializers.ModelSerializer):
        class Meta:
            model = StorageReading
            fields = ["id", "location", "observed_at", "temperature_c", "humidity_pct", "seal_intact"]

    @extend_schema(request=InputSerializer,
                   responses={201: inline_serializer("StorageReadingRecorded", {
                       "reading": OutputSerializer(),
                       "incident": IncidentOutputSerializer(allow_null=True,
                                                            help_text="Opened or joined by this reading."),
                   })},
                   tags=["receipts"], operation_id="storage_readings_record")
    def post(self, request: Request, code: str) -> HttpResponse:
        member = require_member(request)

        def work() -> tuple[int, Any]:
            warehouse = _own_warehouse(member, code)
            data = self.InputSerializer(data=request.data)
            data.is_valid(raise_exception=True)
            reading, incident = services.storage_reading_record(warehouse=warehouse, by=member,
                                                                **data.validated_data)
            return 201, {"reading": self.OutputSerializer(reading).data,
                         "incident": IncidentOutputSerializer(incident).data if incident else None}

        return idempotent(request, member, work)


class StockStatementView(APIView):
    """The warehouse's signed statements of what it holds; each is reconciled against live receipts by a
    background task, and lots receipted beyond the stated stock come back as `gaps`."""

    idempotent = True

    class InputSerializer(serializers.Serializer):
        document = serializers.JSONField(help_text='{"type": "stock_statement", "warehouse": code, "asOf": '
                                                   '"2026-03-01T00:00:00Z", "lots": [{"lot": ref, "quantity": kg}]}')
        signature = serializers.JSONField(help_text='Detached EdDSA over the RFC 8785 bytes of `document`: '
                                                    '{"alg": "EdDSA", "kid", "sig"}, by a key of the operator.')

    class OutputSerializer(serializers.ModelSerializer):
        warehouse = serializers.CharField(source="warehouse.code")
        kid = serializers.CharField(source="signing_key.kid")
        document = serializers.JSONField()
        gaps = serializers.JSONField(allow_null=True, help_text="Null until reconciled; then the lots in deficit.")

        class Meta:
            model = StockStatement
            fields = ["id", "warehouse", "as_of", "document", "kid", "received_at", "reconciled_at", "gaps"]

    @extend_schema(responses={200: OutputSerializer(many=True)}, tags=["receipts"], operation_id="stock_statements_list")
    def get(self, request: Request, code: str) -> Response:
        warehouse = _own_warehouse(require_member(request), code)
        statements = warehouse.stock_statements.select_related("warehouse", "signing_key").order_by("-as_of", "-pk")
        return _paginate(request, self, statements, self.OutputSerializer)

    pagination_class = LimitOffsetPagination

    @extend_schema(request=InputSerializer, responses={201: OutputSerializer}, tags=["receipts"], operation_id="stock_statements_submit")
    def post(self, request: Request, code: str) -> HttpResponse:
        member = require_member(request)

        def work() -> tuple[int, Any]:
            warehouse = _own_warehouse(member, code)
            data = self.InputSerializer(data=request.data)
            data.is_valid(raise_exception=True)
            statement = services.stock_statement_submit(warehouse=warehouse, by=member, **data.validated_data)
            return 201, self.OutputSerializer(statement).data

        return idempotent(request, member, work)


# --- lots ---------------------------------------------------------------------------------------------

class LotListView(APIView):
    """Lots the member operates, deposited or holds receipts on."""

    pagination_class = LimitOffsetPagination

    class FilterSerializer(serializers.Serializer):
        metal = serializers.CharField(required=False, help_text="Element symbol, e.g. Ga.")
        warehouse = serializers.CharField(required=False, help_text="Warehouse code.")
        grade = serializers.CharField(required=False, help_text='Grade code, or "none" for non-standard lots.')

    @extend_schema(parameters=[FilterSerializer], responses={200: LotOutputSerializer(many=True)},
                   tags=["receipts"], operation_id="lots_list")
    def get(self, request: Request) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        lots = selectors.lots_visible_to(require_member(request)).order_by("-created_at", "-pk")
        wanted = filters.validated_data
        if "metal" in wanted:
            lots = lots.filter(metal__symbol=wanted["metal"])
        if "warehouse" in wanted:
            lots = lots.filter(warehouse__code=wanted["warehouse"])
        if "grade" in wanted:
            lots = lots.filter(grade__isnull=True) if wanted["grade"] == "none" else lots.filter(
                grade__code=wanted["grade"])
        return _paginate(request, self, lots, LotOutputSerializer)


class LotDetailView(APIView):
    @extend_schema(responses={200: LotDetailOutputSerializer}, tags=["receipts"], operation_id="lots_retrieve")
    def get(self, request: Request, pk: int) -> Response:
        return Response(LotDetailOutputSerializer(_visible_lot(require_member(request), pk)).data)


class AttestationSubmitView(APIView):
    """Attach a signed attestation (assay, carbon footprint, recycled content, origin) to a lot. Submitted
    by the lot's warehouse operator, or by the member whose registered key signed it."""

    idempotent = True

    class InputSerializer(serializers.Serializer):
        kind = serializers.ChoiceField(choices=AttestationKind.choices)
        document = serializers.JSONField(help_text="The attestation document (shapes in receipts/BUNDLE_FORMAT.md)."
                                                   " Decimal values are strings; times are UTC 'Z' stamps.")
        signature = serializers.JSONField(help_text='{"alg": "EdDSA", "kid": RFC 7638 thumbprint, "sig": '
                                                    'base64url} over the RFC 8785 canonical bytes of `document`.')

    @extend_schema(request=InputSerializer, responses={201: AttestationOutputSerializer},
                   tags=["receipts"], operation_id="attestations_submit")
    def post(self, request: Request, pk: int) -> HttpResponse:
        member = require_member(request)

        def work() -> tuple[int, Any]:
            # Any lot by id: whether this member may attach to it depends on who signed the document,
            # which the service decides (and answers 404 to anyone else).
            lot = Lot.objects.select_related("warehouse").filter(pk=pk).first()
            if lot is None:
                raise NotFound("No such lot.")
            data = self.InputSerializer(data=request.data)
            data.is_valid(raise_exception=True)
            attestation = services.attestation_submit(lot=lot, submitted_by=member, **data.validated_data)
            return 201, AttestationOutputSerializer(attestation).data

        return idempotent(request, member, work)


def _operated_lot(member: Member, pk: int) -> Lot:
    """A lot the member may see and operates: 404 if it cannot see it, 403 if it sees it (a depositor, a
    holder) but does not run its warehouse."""
    lot = _visible_lot(member, pk)
    _require_operator_of(member, lot.warehouse)
    return lot


class LotNominationsView(APIView):
    """Who may attest a lot. Besides the lot's warehouse operator and its producer, only members the operator
    nominates (per attestation kind) may sign its attestations."""

    idempotent = True

    @extend_schema(responses={200: LotNominationOutputSerializer(many=True)}, tags=["receipts"],
                   operation_id="lots_nominations_list")
    def get(self, request: Request, pk: int) -> Response:
        return Response(_nominations(_visible_lot(require_member(request), pk)))

    @extend_schema(request=NomineeInputSerializer, responses={201: LotNominationOutputSerializer(many=True)},
                   tags=["receipts"], operation_id="lots_nominate",
                   description="The lot's warehouse operator nominates a member to attest the lot for the kinds "
                               "given. Idempotent: a kind the member is already nominated for keeps its "
                               "nomination. Answers the member's live nominations for those kinds. Errors: "
                               "unknown_member, nominee_role_not_allowed (400); not_warehouse_operator (403) "
                               "for a depositor or holder; 404 for anyone who cannot see the lot.")
    def post(self, request: Request, pk: int) -> HttpResponse:
        member = require_member(request)

        def work() -> tuple[int, Any]:
            lot = _operated_lot(member, pk)
            data = NomineeInputSerializer(data=request.data)
            data.is_valid(raise_exception=True)
            nominee, kinds = _nominee(data.validated_data)
            rows = services.lot_nominate(lot=lot, by=member, member=nominee, kinds=kinds)
            return 201, LotNominationOutputSerializer(rows, many=True).data

        return idempotent(request, member, work)


class LotNominationWithdrawView(APIView):
    """The operator withdraws a member's nominations for the kinds given (all or none). Refused with
    nomination_in_use (409) for a kind the member has already attested the lot for; nomination_not_found (404)
    for a kind it is not nominated for. The nominations stay listed, marked withdrawn."""

    @extend_schema(request=NomineeInputSerializer, responses={200: LotNominationOutputSerializer(many=True)},
                   tags=["receipts"], operation_id="lots_nominations_withdraw")
    def post(self, request: Request, pk: int) -> Response:
        member = require_member(request)
        lot = _operated_lot(member, pk)
        data = NomineeInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        nominee, kinds = _nominee(data.validated_data)
        rows = services.lot_nomination_withdraw(lot=lot, by=member, member=nominee, kinds=kinds)
        return Response(LotNominationOutputSerializer(rows, many=True).data)


class FailureSerializer(serializers.Serializer):
    rule = serializers.CharField()
    subject = serializers.CharField()
    reason = serializers.CharField(help_text="exceeds_max, below_min, not_measured, form_not_accepted, ...")
    measured = serializers.CharField(allow_null=True)
    allowed = serializers.CharField(allow_null=True)
    unit = serializers.CharField(allow_null=True)


class GradeEvaluationSerializer(serializers.Serializer):
    code = serializers.CharField()
    rank = serializers.IntegerField()
    met = serializers.BooleanField()
    failures = FailureSerializer(many=True)


class LotGradeView(APIView):
    """Grade the lot from its assays: the best grade met, and for every grade of the metal what failed
    (measured vs allowed)."""

    class OutputSerializer(serializers.Serializer):
        lot = serializers.IntegerField()
        metal = serializers.CharField()
        form = serializers.CharField()
        grade = serializers.CharField(allow_null=True, help_text="Best grade met; null = non-standard lot.")
        met = serializers.BooleanField()
        evaluations = GradeEvaluationSerializer(many=True, help_text="Every grade of the metal, best first.")

    @extend_schema(request=None, responses={200: OutputSerializer}, tags=["receipts"], operation_id="lots_grade")
    def post(self, request: Request, pk: int) -> Response:
        member = require_member(request)
        lot = _visible_lot(member, pk)
        _require_operator_of(member, lot.warehouse)
        result = services.lot_grade(lot=lot, by=member)
        return Response(self.OutputSerializer({"lot": lot.pk, "met": result.met, **result.to_dict()}).data)


class ReceiptIssueView(APIView):
    """The warehouse issues a receipt for (part of) a graded lot."""

    idempotent = True

    class InputSerializer(serializers.Serializer):
        holder = serializers.CharField(max_length=64, help_text="Legal id of the member that will hold it.")
        quantity_kg = serializers.CharField(max_length=40, help_text=KG_HELP)

    @extend_schema(request=InputSerializer, responses={201: ReceiptDetailOutputSerializer},
                   tags=["receipts"], operation_id="receipts_issue")
    def post(self, request: Request, pk: int) -> HttpResponse:
        member = require_member(request)

        def work() -> tuple[int, Any]:
            lot = _visible_lot(member, pk)
            _require_operator_of(member, lot.warehouse)
            data = self.InputSerializer(data=request.data)
            data.is_valid(raise_exception=True)
            holder = _member_by_legal_id(data.validated_data["holder"], "holder")
            receipt = services.receipt_issue(lot=lot, holder=holder, quantity_kg=data.validated_data["quantity_kg"],
                                             issued_by=member)
            return 201, _receipt_detail(receipt)

        return idempotent(request, member, work)


# --- receipts -----------------------------------------------------------------------------------------

class ReceiptListView(APIView):
    """Receipts the member holds, and those issued by its warehouses."""

    pagination_class = LimitOffsetPagination

    class FilterSerializer(serializers.Serializer):
        status = serializers.ChoiceField(choices=ReceiptStatus.choices, required=False)
        metal = serializers.CharField(required=False, help_text="Element symbol, e.g. Ga.")
        open = serializers.BooleanField(required=False, allow_null=True, default=None,
                                        help_text="Only open (true) or only closed (false) receipts.")

    @extend_schema(parameters=[FilterSerializer], responses={200: ReceiptOutputSerializer(many=True)},
                   tags=["receipts"], operation_id="receipts_list")
    def get(self, request: Request) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        wanted = filters.validated_data
        receipts = selectors.receipts_visible_to(require_member(request)).select_related("parent").order_by("number")
        if wanted.get("status"):
            receipts = receipts.filter(status=wanted["status"])
        if wanted.get("metal"):
            receipts = receipts.filter(lot__metal__symbol=wanted["metal"])
        if wanted.get("open") is not None:
            receipts = receipts.filter(closed_at__isnull=wanted["open"])
        return _paginate(request, self, receipts, ReceiptOutputSerializer)


class ReceiptDetailView(APIView):
    @extend_schema(responses={200: ReceiptDetailOutputSerializer}, tags=["receipts"], operation_id="receipts_retrieve")
    def get(self, request: Request, number: str) -> Response:
        return Response(_receipt_detail(_visible_receipt(require_member(request), number)))


class ReceiptBundleView(APIView):
    """The receipt as one canonical (RFC 8785), sealed JSON bundle that anyone can verify offline."""

    @extend_schema(responses={200: OpenApiTypes.OBJECT}, tags=["receipts"], operation_id="receipts_bundle")
    def get(self, request: Request, number: str) -> HttpResponse:
        receipt = _visible_receipt(require_member(request), number)
        response = HttpResponse(canonical_bytes(selectors.receipt_bundle(receipt)), content_type="application/json")
        response["Content-Disposition"] = f'inline; filename="{receipt.number}.bundle.json"'
        return response


class WithdrawalCompleteView(APIView):
    """The warehouse has delivered the metal of a receipt whose holder asked to withdraw it: the receipt
    closes for good."""

    @extend_schema(request=None, responses={200: ReceiptDetailOutputSerializer},
                   tags=["receipts"], operation_id="receipts_withdrawal_complete")
    def post(self, request: Request, number: str) -> Response:
        member = require_member(request)
        receipt = _visible_receipt(member, number)
        _require_operator_of(member, receipt.lot.warehouse)
        return Response(_receipt_detail(services.receipt_withdrawal_complete(receipt=receipt, by=member)))


# --- verification and keys: public --------------------------------------------------------------------

class BundleParser(JSONParser):
    """Reads the body as JSON whatever the Content-Type says (a bundle is often posted as a raw file), and
    refuses bodies too large to be a bundle before parsing them."""

    media_type = "*/*"

    def parse(self, stream: IO[bytes] | None, media_type: str | None = None,
              parser_context: Mapping[str, Any] | None = None) -> Any:
        if stream is None:
            raise ValidationFailed("The body is empty; post a bundle.", code="invalid_bundle")
        raw = stream.read(MAX_BUNDLE_BYTES + 1)
        if len(raw) > MAX_BUNDLE_BYTES:
            raise ValidationFailed(f"A bundle is at most {MAX_BUNDLE_BYTES} bytes.", code="bundle_too_large")
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise ParseError(f"The body is not JSON: {exc}") from exc


class BundleVerifyView(APIView):
    """Verify a receipt bundle: canonical form, every signature, the hash chains, the bindings, the grade
    against the assays and conservation across splits. Open to anyone, no authentication. Signatures are
    judged against the platform's published keys (the JWKS), so a bundle signed by anyone else fails.
    200 with `ok: false` and the failing checks for a bundle that does not verify."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]
    parser_classes = [BundleParser]

    class OutputSerializer(serializers.Serializer):
        ok = serializers.BooleanField()
        checks = inline_serializer("BundleCheck", {
            "name": serializers.CharField(), "ok": serializers.BooleanField(), "detail": serializers.CharField(),
        }, many=True)

    @extend_schema(request={"application/json": OpenApiTypes.OBJECT}, responses={200: OutputSerializer},
                   tags=["receipts"], operation_id="receipts_verify", auth=[])
    def post(self, request: Request) -> Response:
        bundle = request.data
        if not isinstance(bundle, dict) or not bundle:
            raise ValidationFailed("The body must be a bundle: a JSON object.", code="invalid_bundle")
        # Only the keys this bundle names: the verifier consults the trusted set for those and no others.
        listed = bundle.get("keys")
        kids = [k["kid"] for k in listed if isinstance(k, dict) and isinstance(k.get("kid"), str)] \
            if isinstance(listed, list) else []
        result = verify_bundle(bundle, trusted_keys=selectors.jwks(kids)["keys"])
        return Response(self.OutputSerializer(result.to_dict()).data)


class JwksView(APIView):
    """Every public key registered on the platform (members' attestation keys and the platform's event
    keys), with holder, roles and validity. Old and revoked keys stay, so old signatures can be judged."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]

    @extend_schema(responses={200: OpenApiTypes.OBJECT}, tags=["receipts"], operation_id="jwks", auth=[])
    def get(self, request: Request) -> Response:
        response = Response(selectors.jwks())
        # Verifiers may cache it briefly; a rotation or revocation shows within five minutes.
        response["Cache-Control"] = "public, max-age=300"
        return response
