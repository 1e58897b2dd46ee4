from django.urls import path

from compliance import api

urlpatterns = [
    path("compliance/end-use-declarations", api.EndUseDeclarationListCreateView.as_view(),
         name="compliance-end-use-declarations"),
    path("compliance/end-use-declarations/<int:pk>", api.EndUseDeclarationDetailView.as_view(),
         name="compliance-end-use-declaration"),
    path("compliance/export-licences", api.ExportLicenceListCreateView.as_view(), name="compliance-export-licences"),
    path("compliance/export-licences/<int:pk>", api.ExportLicenceDetailView.as_view(),
         name="compliance-export-licence"),
    path("compliance/receipts/<receipt:number>/esg", api.ReceiptEsgView.as_view(), name="compliance-receipt-esg"),
]
