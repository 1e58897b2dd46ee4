"""Portal (server-rendered pages) URL configuration."""

from django.urls import URLPattern, URLResolver

urlpatterns: list[URLPattern | URLResolver] = []
