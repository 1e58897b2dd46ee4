"""Portal (server-rendered pages) URL configuration, namespace "portal"."""

from django.urls import URLPattern, URLResolver, path

from trading import views

app_name = "portal"

urlpatterns: list[URLPattern | URLResolver] = [
    path("", views.dashboard, name="dashboard"),
    path("login/", views.PortalLoginView.as_view(), name="login"),
    path("logout/", views.PortalLogoutView.as_view(), name="logout"),
    path("verify/", views.verify, name="verify"),
    path("markets/", views.markets, name="markets"),
    path("markets/<str:code>/", views.instrument_page, name="instrument"),
    # Partials the instrument page polls (htmx) and the forms it posts.
    path("markets/<str:code>/live/", views.instrument_live, name="instrument-live"),
    path("markets/<str:code>/my-orders/", views.instrument_my_orders, name="instrument-my-orders"),
    path("markets/<str:code>/orders/", views.order_place_view, name="order-place"),
    path("orders/<int:pk>/cancel/", views.order_cancel_view, name="order-cancel"),
    path("receipts/<receipt:number>/", views.receipt_page, name="receipt"),
    path("receipts/<receipt:number>/bundle.json", views.receipt_bundle_download, name="receipt-bundle"),
    path("receipts/<receipt:number>/withdrawal/", views.receipt_withdrawal, name="receipt-withdrawal"),
    path("index/", views.index_page, name="index"),
]
