"""Pricing API: external factor observations (posted by the platform or a reserve agency), reference
prices with their components, OHLC candles, the daily spot index and its published methodology."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, cast

from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.errors import NotFound, ValidationFailed
from members.idempotency import idempotent
from members.models import User
from members.selectors import member_of
from receipts.models import Grade
from trading import pricing, pricing_selectors
from trading.factors import parse_timestamp
from trading.models import Instrument
from trading.pricing_config import default_pricing_config
from trading.pricing_models import CANDLE_INTERVALS, Candle, FactorObservation, IndexValue, ReferencePrice
from trading.pricing_services import factor_observation_create, factor_poster_require

MAX_ROWS = 1000


def _limit(request: Request, default: int) -> int:
    raw = request.query_params.get("limit")
    if raw in (None, ""):
        return default
    try:
        return max(1, min(MAX_ROWS, int(raw)))
    except ValueError as exc:
        raise ValidationFailed("limit must be a whole number.", code="invalid_limit", field="limit") from exc


def _moment(request: Request, name: str) -> datetime | None:
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return None
    moment = parse_timestamp(str(raw))
    if moment is None:
        raise ValidationFailed(f"{name} must be an ISO date or a datetime with a UTC offset.",
                               code="invalid_timestamp", field=name)
    return moment


def _day(request: Request, name: str) -> date | None:
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return None
    try:
        return date.fromisoformat(str(raw))
    except ValueError as exc:
        raise ValidationFailed(f"{name} must be an ISO date (YYYY-MM-DD).", code="invalid_date",
                               field=name) from exc


_RANGE = [OpenApiParameter("since", OpenApiTypes.DATETIME, required=False, description="Inclusive lower bound."),
          OpenApiParameter("until", OpenApiTypes.DATETIME, required=False, description="Inclusive upper bound."),
          OpenApiParameter("limit", int, required=False, description=f"At most this many rows (≤ {MAX_ROWS}).")]


# --- factor observations --------------------------------------------------------------------------------


class FactorObservationSerializer(serializers.ModelSerializer):
    class Meta:
        model = FactorObservation
        fields = ["factor", "observed_at", "value", "unit", "source", "recorded_at"]


class FactorObservationCreateView(APIView):
    """Post one observation of an external factor series.

    Allowed for staff users of a member and for approved members with the `platform` or `reserve_agency`
    role; anyone else gets 403 `factor_poster_not_authorised`. Validated against
    trading/pricing_config.yaml; refused with nothing stored: `unknown_factor`, `wrong_unit`,
    `factor_in_future`, `negative_value`, `invalid_value`, `invalid_timestamp`, `missing_field` (400) and
    `duplicate_observation` (409). A gap since the previous observation is accepted with a warning.
    """

    idempotent = True

    class InputSerializer(serializers.Serializer):
        factor = serializers.CharField(max_length=64, help_text="Factor id, e.g. aluminium_price.")
        observed_at = serializers.CharField(help_text="ISO date (midnight UTC) or ISO datetime with an offset.")
        value = serializers.CharField(help_text="Decimal number as a string, in the factor's unit.")
        unit = serializers.CharField(max_length=20, help_text="Must equal the factor's unit, e.g. USD/t.")
        # The field is named like the observation's column; DRF's metaclass moves it off the class.
        source = serializers.CharField(max_length=300, help_text="Who published the figure.")  # type: ignore[assignment]

    class OutputSerializer(serializers.Serializer):
        observation = FactorObservationSerializer()
        warnings = serializers.ListField(child=serializers.DictField())

    @extend_schema(request=InputSerializer, responses={201: OutputSerializer}, operation_id="factors_observation_post")
    def post(self, request: Request) -> Any:
        factor_poster_require(user=request.user)
        poster = cast(User, request.user)  # authenticated: factor_poster_require found its member

        def work() -> tuple[int, Any]:
            data = self.InputSerializer(data=request.data)
            data.is_valid(raise_exception=True)
            created = factor_observation_create(**data.validated_data, recorded_by=poster)
            return 201, {"observation": FactorObservationSerializer(created.observation).data,
                         "warnings": created.warnings}

        return idempotent(request, member_of(request.user), work)


class FactorObservationListView(APIView):
    permission_classes = [AllowAny]

    @extend_schema(responses={200: FactorObservationSerializer(many=True)}, operation_id="factors_observations",
                   parameters=_RANGE)
    def get(self, request: Request, factor: str) -> Response:
        if factor not in default_pricing_config().factors:
            raise NotFound(f"Unknown factor {factor!r}.", code="unknown_factor",
                           details={"known": sorted(default_pricing_config().factors)})
        rows = pricing_selectors.factor_observations_of(factor, since=_moment(request, "since"),
                                                        until=_moment(request, "until"))
        return Response(FactorObservationSerializer(rows[:_limit(request, MAX_ROWS)], many=True).data)


# --- reference price ------------------------------------------------------------------------------------


class ReferencePriceSerializer(serializers.ModelSerializer):
    instrument = serializers.CharField(source="instrument.code")

    class Meta:
        model = ReferencePrice
        fields = ["instrument", "window_start", "window_end", "value", "band_low", "band_high", "band_pct", "vol",
                  "forward_curve", "components", "method_version", "computed_at"]


class ReferencePriceView(APIView):
    """The instrument's latest reference price, its band and forward curve, and every component that made
    it (values, configured and used weights, omitted components and stale factors with their reasons)."""

    permission_classes = [AllowAny]

    @extend_schema(responses={200: ReferencePriceSerializer}, operation_id="instruments_reference")
    def get(self, request: Request, code: str) -> Response:
        instrument = get_object_or_404(Instrument, code=code)
        reference = pricing_selectors.latest_reference(instrument)
        if reference is None:
            raise NotFound(f"No reference price has been computed for {code} yet.", code="no_reference")
        return Response(ReferencePriceSerializer(reference).data)


# --- candles --------------------------------------------------------------------------------------------


class CandleSerializer(serializers.ModelSerializer):
    class Meta:
        model = Candle
        fields = ["bucket_start", "open", "high", "low", "close", "volume", "turnover", "trade_count"]


class CandlesView(APIView):
    permission_classes = [AllowAny]

    @extend_schema(responses={200: CandleSerializer(many=True)}, operation_id="instruments_candles",
                   parameters=[OpenApiParameter("interval", str, enum=list(CANDLE_INTERVALS), required=False,
                                                description="Bucket size (default 1h); buckets start in UTC."),
                               *_RANGE])
    def get(self, request: Request, code: str) -> Response:
        instrument = get_object_or_404(Instrument, code=code)
        interval = request.query_params.get("interval") or "1h"
        if interval not in CANDLE_INTERVALS:
            raise ValidationFailed(f"interval must be one of {', '.join(CANDLE_INTERVALS)}.",
                                   code="invalid_interval", field="interval")
        candles = pricing_selectors.candles_of(instrument, interval, since=_moment(request, "since"),
                                               until=_moment(request, "until"), limit=_limit(request, 500))
        return Response(CandleSerializer(candles, many=True).data)


# --- spot index -----------------------------------------------------------------------------------------


class IndexValueSerializer(serializers.ModelSerializer):
    grade = serializers.CharField(source="grade.code")

    class Meta:
        model = IndexValue
        fields = ["grade", "region", "day", "value", "status", "trade_count", "seller_count", "volume", "considered",
                  "median", "excluded", "assessed_reference", "assessed_from", "instruments", "reason",
                  "window_start", "window_end", "method_version", "published_at"]


class IndexHistoryView(APIView):
    """The published daily spot index of a grade, oldest first (status `traded` or `assessed`): its index over
    every delivery region, or with `region` its regional values there (METHODOLOGY §1.6)."""

    permission_classes = [AllowAny]

    @extend_schema(responses={200: IndexValueSerializer(many=True)}, operation_id="index_history",
                   parameters=[OpenApiParameter("region", str, required=False,
                                                description="A delivery region of the grade (e.g. CN, EU): its "
                                                            "regional values. Omitted: the grade's index."),
                               OpenApiParameter("since", OpenApiTypes.DATE, required=False),
                               OpenApiParameter("until", OpenApiTypes.DATE, required=False),
                               OpenApiParameter("limit", int, required=False)])
    def get(self, request: Request, grade: str) -> Response:
        found = get_object_or_404(Grade, code=grade)
        region = request.query_params.get("region", "")
        if region:
            known = pricing_selectors.index_regions_known(found)
            if region not in known:
                listed = ", ".join(known) or "none: it trades in one region, so its index is the only value"
                raise ValidationFailed(f"{found.code} has no regional index for {region!r}; its regions: {listed}.",
                                       code="invalid_region", field="region")
        rows = pricing_selectors.index_history(found, region=region, since=_day(request, "since"),
                                               until=_day(request, "until"), limit=_limit(request, 366))
        return Response(IndexValueSerializer(rows, many=True).data)


class MethodologyView(APIView):
    """The published pricing methodology (trading/METHODOLOGY.md) and the method versions in force."""

    permission_classes = [AllowAny]

    class OutputSerializer(serializers.Serializer):
        index_method_version = serializers.CharField()
        reference_method_version = serializers.CharField()
        content_type = serializers.CharField()
        text = serializers.CharField()

    @extend_schema(responses={200: OutputSerializer}, operation_id="index_methodology")
    def get(self, request: Request) -> Response:
        return Response({"index_method_version": default_pricing_config().index.version,
                         "reference_method_version": pricing.REFERENCE_METHOD_VERSION,
                         "content_type": "text/markdown", "text": pricing_selectors.methodology_text()})
