"""Trading API: instruments and market data (public), orders, cancels, balances, holdings, withdrawals."""

from __future__ import annotations

from typing import Any

from django.http import Http404
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.errors import ValidationFailed
from members.api import require_member
from members.idempotency import idempotent, idempotent_request
from receipts.models import Receipt
from trading import selectors
from trading.batching import place_batched
from trading.models import Account, Instrument, Order, Trade
from trading.selectors import OrderInstrument
from trading.services import order_cancel, order_place, withdrawal_request


class InstrumentSerializer(serializers.ModelSerializer):
    grade = serializers.CharField(source="grade.code")
    metal = serializers.CharField(source="grade.metal.symbol")

    class Meta:
        model = Instrument
        fields = ["code", "grade", "metal", "region", "esg_class", "currency", "tick_size", "lot_size_kg",
                  "band_pct", "reference_price", "band_low", "band_high", "maker_fee_bps", "taker_fee_bps", "status"]


class TradeSerializer(serializers.ModelSerializer):
    instrument = serializers.CharField(source="instrument.code")

    class Meta:
        model = Trade
        fields = ["id", "instrument", "price", "quantity_kg", "aggressor", "executed_at"]


class OwnTradeSerializer(TradeSerializer):
    class Meta(TradeSerializer.Meta):
        fields = [*TradeSerializer.Meta.fields, "buy_order", "sell_order", "notional", "buyer_fee", "seller_fee"]


class OrderSerializer(serializers.ModelSerializer):
    instrument = serializers.CharField(source="instrument.code")
    remaining_kg = serializers.DecimalField(max_digits=18, decimal_places=3, read_only=True)

    class Meta:
        model = Order
        fields = ["id", "client_order_id", "instrument", "side", "order_type", "tif", "price", "quantity_kg",
                  "filled_kg", "remaining_kg", "status", "held_amount", "created_at", "closed_at", "cancel_reason"]


# The order response is rendered by one serializer of each kind made once per process: a ModelSerializer
# builds its fields from the model on every construction (a third of the cost of rendering one order), and
# `to_representation` reads nothing from the serializer but those fields. Same output as `.data`.
_ORDER_OUT = OrderSerializer()
_OWN_TRADE_OUT = OwnTradeSerializer()


class InstrumentListView(APIView):
    permission_classes = [AllowAny]

    @extend_schema(responses={200: InstrumentSerializer(many=True)}, operation_id="instruments_list")
    def get(self, request: Request) -> Response:
        instruments = Instrument.objects.select_related("grade__metal").order_by("code")
        return Response(InstrumentSerializer(instruments, many=True).data)


class InstrumentDetailView(APIView):
    permission_classes = [AllowAny]

    @extend_schema(responses={200: InstrumentSerializer}, operation_id="instruments_detail")
    def get(self, request: Request, code: str) -> Response:
        return Response(InstrumentSerializer(get_object_or_404(Instrument, code=code)).data)


class DepthView(APIView):
    permission_classes = [AllowAny]

    class OutputSerializer(serializers.Serializer):
        bids = serializers.ListField(child=serializers.DictField())
        asks = serializers.ListField(child=serializers.DictField())

    @extend_schema(responses={200: OutputSerializer}, operation_id="instruments_depth",
                   parameters=[OpenApiParameter("levels", int, required=False, description="1 to 50 (default 10)")])
    def get(self, request: Request, code: str) -> Response:
        instrument = get_object_or_404(Instrument, code=code)
        raw = request.query_params.get("levels") or "10"
        if not raw.isdigit() or not 1 <= int(raw) <= 50:
            raise ValidationFailed("levels must be a whole number from 1 to 50.", code="invalid_input",
                                   field="levels")
        levels = int(raw)
        return Response(selectors.depth(instrument, levels))


class InstrumentTradesView(APIView):
    permission_classes = [AllowAny]

    @extend_schema(responses={200: TradeSerializer(many=True)}, operation_id="instruments_trades")
    def get(self, request: Request, code: str) -> Response:
        instrument = get_object_or_404(Instrument, code=code)
        return Response(TradeSerializer(selectors.recent_trades(instrument), many=True).data)


class OrderListCreateView(APIView):
    idempotent = True

    class InputSerializer(serializers.Serializer):
        instrument = serializers.CharField()
        side = serializers.CharField()
        order_type = serializers.CharField(default="limit")
        tif = serializers.CharField(default="GTC")
        quantity_kg = serializers.CharField()
        price = serializers.CharField(required=False, allow_null=True, allow_blank=True, default=None)
        client_order_id = serializers.CharField(max_length=64)

    class OutputSerializer(serializers.Serializer):
        order = OrderSerializer()
        trades = OwnTradeSerializer(many=True)
        cancelled_order_ids = serializers.ListField(child=serializers.IntegerField())

    @extend_schema(responses={200: OrderSerializer(many=True)}, operation_id="orders_list",
                   parameters=[OpenApiParameter("status", str, required=False)])
    def get(self, request: Request) -> Response:
        orders = selectors.orders_of(require_member(request))
        if request.query_params.get("status") == "open":
            orders = selectors.open_orders_of(require_member(request))
        return Response(OrderSerializer(orders[:200], many=True).data)

    @extend_schema(request=InputSerializer, responses={201: OutputSerializer}, operation_id="orders_place")
    def post(self, request: Request) -> Any:
        req = idempotent_request(request, require_member(request))
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        code = values.pop("instrument")

        def place(found: OrderInstrument | None) -> tuple[int, Any]:
            # In the batch's transaction, with the instrument read and locked (`order_place` does not lock it
            # again): a refusal rolls back this order and its key row alone (trading.batching._run_batch).
            if found is None:
                raise Http404
            result = order_place(member=req.member, instrument=found.instrument, savepoint=False, locked=True,
                                 delivery_countries=found.delivery_countries, **values)
            body = {"order": _ORDER_OUT.to_representation(result.order),
                    "trades": [_OWN_TRADE_OUT.to_representation(trade) for trade in result.trades],
                    "cancelled_order_ids": result.cancelled_order_ids}
            return (200 if result.replayed else 201), body

        return place_batched(code, req, place).response()


class OrderDetailView(APIView):
    @extend_schema(responses={200: OrderSerializer}, operation_id="orders_detail")
    def get(self, request: Request, pk: int) -> Response:
        return Response(OrderSerializer(get_object_or_404(selectors.orders_of(require_member(request)), pk=pk)).data)


class OrderCancelView(APIView):
    @extend_schema(request=None, responses={200: OrderSerializer}, operation_id="orders_cancel")
    def post(self, request: Request, pk: int) -> Response:
        order = order_cancel(member=require_member(request), order_id=pk)
        return Response(OrderSerializer(order).data)


class MyTradesView(APIView):
    @extend_schema(responses={200: OwnTradeSerializer(many=True)}, operation_id="trades_mine")
    def get(self, request: Request) -> Response:
        return Response(OwnTradeSerializer(selectors.trades_of(require_member(request))[:200], many=True).data)


class BalanceSerializer(serializers.ModelSerializer):
    class Meta:
        model = Account
        fields = ["currency", "available", "held"]


class BalancesView(APIView):
    @extend_schema(responses={200: BalanceSerializer(many=True)}, operation_id="balances")
    def get(self, request: Request) -> Response:
        return Response(BalanceSerializer(selectors.balances_of(require_member(request)), many=True).data)


class HoldingSerializer(serializers.ModelSerializer):
    grade = serializers.CharField(source="grade.code", allow_null=True, default=None)
    metal = serializers.CharField(source="lot.metal.symbol")
    warehouse = serializers.CharField(source="lot.warehouse.code")

    class Meta:
        model = Receipt
        fields = ["number", "metal", "grade", "warehouse", "quantity_kg", "status", "issued_at"]


class HoldingsView(APIView):
    @extend_schema(responses={200: HoldingSerializer(many=True)}, operation_id="holdings")
    def get(self, request: Request) -> Response:
        return Response(HoldingSerializer(selectors.holdings_of(require_member(request)), many=True).data)


class WithdrawalRequestView(APIView):
    """The holder asks to take the metal out; export control is checked (and a licence drawn) first."""

    idempotent = True

    class InputSerializer(serializers.Serializer):
        destination_country = serializers.CharField(max_length=2, min_length=2)

    @extend_schema(request=InputSerializer, responses={201: HoldingSerializer}, operation_id="withdrawals_request")
    def post(self, request: Request, number: str) -> Any:
        member = require_member(request)

        def work() -> tuple[int, Any]:
            data = self.InputSerializer(data=request.data)
            data.is_valid(raise_exception=True)
            receipt = get_object_or_404(selectors.holdings_of(member), number=number)
            receipt, _ = withdrawal_request(member=member, receipt=receipt,
                                            destination_country=data.validated_data["destination_country"])
            return 201, HoldingSerializer(receipt).data

        return idempotent(request, member, work)
