"""Portal (server-rendered pages) URL configuration, namespace "portal"."""

from django.urls import URLPattern, URLResolver, path

from trading import views

app_name = "portal"

urlpatterns: list[URLPattern | URLResolver] = [
    path("", views.dashboard, name="dashboard"),
    path("login/", views.PortalLoginView.as_view(), name="login"),
    path("logout/", views.PortalLogoutView.as_view(), name="logout"),
    path("verify/", views.verify, name="verify"),
]
