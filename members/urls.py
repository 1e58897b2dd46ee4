from django.urls import path

from members import api

urlpatterns = [
    path("auth/token", api.TokenView.as_view(), name="api-token"),
    path("members/me", api.MeView.as_view(), name="member-me"),
    path("members/me/keys", api.SigningKeyListCreateView.as_view(), name="member-keys"),
    path("members/me/keys/<str:kid>/revoke", api.SigningKeyRevokeView.as_view(), name="member-key-revoke"),
]
