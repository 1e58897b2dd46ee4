"""Members API: who am I, my signing keys, tokens. Views parse, call a service, render."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.exceptions import Throttled
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.api.throttling import ScopedThrottle
from config.errors import NotAllowed
from members.idempotency import idempotent
from members.models import Member, SigningKey
from members.selectors import member_of, signing_keys_of
from members.services import signing_key_register, signing_key_revoke


def require_member(request: Request) -> Member:
    member = member_of(request.user)
    if member is None:
        raise NotAllowed("This user does not belong to a member.", code="no_member")
    return member


class TokenView(ObtainAuthToken):
    """Exchange a username and password for the user's API token. Throttled per client address, and a
    user locked out by repeated failures (django-axes) is told so with 429 rather than a generic 400."""

    throttle_classes = [ScopedThrottle]
    throttle_scope = "token"

    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        from axes.handlers.proxy import AxesProxyHandler

        username = request.data.get("username") if isinstance(request.data, dict) else None
        if isinstance(username, str) and AxesProxyHandler.is_locked(request._request,
                                                                    credentials={"username": username}):
            raise Throttled(detail="Too many failed sign-ins: this account is locked for a while.",
                            code="locked_out")
        return super().post(request, *args, **kwargs)


class MeView(APIView):
    class OutputSerializer(serializers.ModelSerializer):
        roles = serializers.SerializerMethodField()
        country = serializers.CharField(source="country.code")

        class Meta:
            model = Member
            fields = ["id", "name", "legal_id", "country", "kyc_status", "roles", "qualifications"]

        def get_roles(self, member: Member) -> list[str]:
            return sorted(member.role_set())

    @extend_schema(responses={200: OutputSerializer}, operation_id="members_me")
    def get(self, request: Request) -> Response:
        return Response(self.OutputSerializer(require_member(request)).data)


class SigningKeyOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = SigningKey
        fields = ["kid", "public_key", "label", "valid_from", "valid_to", "revoked_at", "created_at"]


class SigningKeyListCreateView(APIView):
    idempotent = True

    class InputSerializer(serializers.Serializer):
        public_key = serializers.JSONField(help_text="base64url raw key (32 bytes), an OKP/Ed25519 JWK, or a PEM")
        # A field called `label` shadows Field.label in the stubs; the API name stays.
        label = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")  # type: ignore[assignment]
        valid_from = serializers.DateTimeField(required=False)
        valid_to = serializers.DateTimeField(required=False)

    @extend_schema(responses={200: SigningKeyOutputSerializer(many=True)}, operation_id="members_keys_list")
    def get(self, request: Request) -> Response:
        keys = signing_keys_of(require_member(request))
        return Response(SigningKeyOutputSerializer(keys, many=True).data)

    @extend_schema(request=InputSerializer, responses={201: SigningKeyOutputSerializer},
                   operation_id="members_keys_register")
    def post(self, request: Request) -> Any:
        member = require_member(request)

        def work() -> tuple[int, Any]:
            data = self.InputSerializer(data=request.data)
            data.is_valid(raise_exception=True)
            key = signing_key_register(member=member, **data.validated_data)
            return 201, SigningKeyOutputSerializer(key).data

        return idempotent(request, member, work)


class SigningKeyRevokeView(APIView):
    class InputSerializer(serializers.Serializer):
        reason = serializers.CharField(max_length=1000)

    @extend_schema(request=InputSerializer, responses={200: SigningKeyOutputSerializer},
                   operation_id="members_keys_revoke")
    def post(self, request: Request, kid: str) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        key = signing_key_revoke(member=require_member(request), kid=kid, reason=data.validated_data["reason"])
        return Response(SigningKeyOutputSerializer(key).data)
