from django.contrib import admin
from django.urls import include, path, register_converter
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from config.health import HealthView
from receipts.api import JwksView
from receipts.converters import ReceiptNumberConverter

# Before the app URLconfs below are imported: they route <receipt:number>.
register_converter(ReceiptNumberConverter, "receipt")

api_v1 = [
    path("", include("members.urls")),
    path("", include("receipts.urls")),
    path("", include("trading.urls")),
    path("", include("compliance.urls")),
]

urlpatterns = [
    path("healthz", HealthView.as_view(), name="healthz"),
    path(".well-known/jwks.json", JwksView.as_view(), name="jwks"),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/v1/", include(api_v1)),
    path("", include("trading.portal_urls")),
]

# Errors raised before a DRF view runs (an unmatched path converter, a crash outside DRF) are JSON under /api/.
handler404 = "config.api.errors.not_found"
handler500 = "config.api.errors.server_error"
