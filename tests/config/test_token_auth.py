"""API token authentication (config/api/authentication.py): the token's user and member in one statement."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from rest_framework.exceptions import AuthenticationFailed

from config.api.authentication import MemberTokenAuthentication
from tests.factories.members import MemberFactory, UserFactory, token_for

pytestmark = pytest.mark.django_db


def test_a_token_gives_its_user_and_member_in_one_statement() -> None:
    member = MemberFactory(roles=["trader"], country="NL", name="Baltic Metals", qualifications="LBMA")
    user = UserFactory(member=member)
    key = token_for(user)
    with CaptureQueriesContext(connection) as queries:
        found, token = MemberTokenAuthentication().authenticate_credentials(key)
        assert (found.pk, found.username, found.is_active) == (user.pk, user.username, True)
        assert found.member.pk == member.pk and found.member_id == member.pk
        assert (found.member.name, found.member.legal_id, str(found.member.country), found.member.kyc_status,
                found.member.qualifications) == ("Baltic Metals", member.legal_id, "NL", member.kyc_status, "LBMA")
        assert token.key == key and token.user_id == user.pk
    assert len(queries) == 1
    assert found.member.created_at == member.created_at  # the one field left out loads on use


def test_a_user_without_a_member_authenticates_and_is_refused_by_member_endpoints() -> None:
    user = UserFactory(member=None)
    found, _ = MemberTokenAuthentication().authenticate_credentials(token_for(user))
    assert found.pk == user.pk and found.member is None
    response = Client().get("/api/v1/balances", HTTP_AUTHORIZATION=f"Token {token_for(user)}")
    assert response.status_code == 403 and response.json()["code"] == "no_member"


def test_an_inactive_user_s_token_is_refused() -> None:
    user = UserFactory(member=MemberFactory(roles=["trader"]))
    key = token_for(user)
    user.is_active = False
    user.save(update_fields=["is_active"])
    with pytest.raises(AuthenticationFailed):
        MemberTokenAuthentication().authenticate_credentials(key)
    response = Client().get("/api/v1/balances", HTTP_AUTHORIZATION=f"Token {key}")
    assert response.status_code == 401 and response.json()["code"] == "authentication_failed"


def test_an_unknown_token_is_refused() -> None:
    with pytest.raises(AuthenticationFailed):
        MemberTokenAuthentication().authenticate_credentials("0" * 40)
