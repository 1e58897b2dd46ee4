"""Warehouse API routes under /api/v1/ (the JWKS is published at /.well-known/jwks.json by config.urls)."""

from django.urls import path

from receipts import api

urlpatterns = [
    path("warehouses", api.WarehouseListView.as_view(), name="warehouses"),
    path("warehouses/<str:code>/lots", api.LotRegisterView.as_view(), name="warehouse-lots"),
    path("warehouses/<str:code>/readings", api.StorageReadingView.as_view(), name="warehouse-readings"),
    path("warehouses/<str:code>/stock-statements", api.StockStatementView.as_view(),
         name="warehouse-stock-statements"),
    path("lots", api.LotListView.as_view(), name="lots"),
    path("lots/<int:pk>", api.LotDetailView.as_view(), name="lot-detail"),
    path("lots/<int:pk>/attestations", api.AttestationSubmitView.as_view(), name="lot-attestations"),
    path("lots/<int:pk>/nominations", api.LotNominationsView.as_view(), name="lot-nominations"),
    path("lots/<int:pk>/nominations/withdraw", api.LotNominationWithdrawView.as_view(),
         name="lot-nominations-withdraw"),
    path("lots/<int:pk>/grade", api.LotGradeView.as_view(), name="lot-grade"),
    path("lots/<int:pk>/receipts", api.ReceiptIssueView.as_view(), name="lot-receipts"),
    path("receipts", api.ReceiptListView.as_view(), name="receipts"),
    # <receipt:number> only matches receipt numbers (receipts/converters.py), so "verify" is never one.
    path("receipts/verify", api.BundleVerifyView.as_view(), name="receipts-verify"),
    path("receipts/<receipt:number>", api.ReceiptDetailView.as_view(), name="receipt-detail"),
    path("receipts/<receipt:number>/bundle", api.ReceiptBundleView.as_view(), name="receipt-bundle"),
    path("receipts/<receipt:number>/withdrawal/complete", api.WithdrawalCompleteView.as_view(),
         name="receipt-withdrawal-complete"),
]
