from django.urls import path

from trading import api, pricing_api

urlpatterns = [
    path("instruments", api.InstrumentListView.as_view(), name="instruments"),
    path("instruments/<str:code>", api.InstrumentDetailView.as_view(), name="instrument"),
    path("instruments/<str:code>/depth", api.DepthView.as_view(), name="instrument-depth"),
    path("instruments/<str:code>/trades", api.InstrumentTradesView.as_view(), name="instrument-trades"),
    path("orders", api.OrderListCreateView.as_view(), name="orders"),
    path("orders/<int:pk>", api.OrderDetailView.as_view(), name="order"),
    path("orders/<int:pk>/cancel", api.OrderCancelView.as_view(), name="order-cancel"),
    path("trades/mine", api.MyTradesView.as_view(), name="my-trades"),
    path("balances", api.BalancesView.as_view(), name="balances"),
    path("holdings", api.HoldingsView.as_view(), name="holdings"),
    path("holdings/<receipt:number>/withdrawal", api.WithdrawalRequestView.as_view(), name="withdrawal-request"),
    # Pricing (trading/pricing_api.py): factors, reference prices, candles, the spot index.
    path("factors/observations", pricing_api.FactorObservationCreateView.as_view(), name="factor-observation-create"),
    path("factors/<str:factor>/observations", pricing_api.FactorObservationListView.as_view(),
         name="factor-observations"),
    path("instruments/<str:code>/reference", pricing_api.ReferencePriceView.as_view(), name="instrument-reference"),
    path("instruments/<str:code>/candles", pricing_api.CandlesView.as_view(), name="instrument-candles"),
    path("index/methodology", pricing_api.MethodologyView.as_view(), name="index-methodology"),
    path("index/<str:grade>", pricing_api.IndexHistoryView.as_view(), name="index-history"),
]
