"""factory_boy factories for members, users and tokens."""

from __future__ import annotations

import factory
from rest_framework.authtoken.models import Token

from members.models import KycStatus, Member, MemberRole, User


class MemberFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Member
        skip_postgeneration_save = True

    name = factory.Sequence(lambda n: f"Test Metals {n} Ltd")
    legal_id = factory.Sequence(lambda n: f"TEST-{n:06d}")
    country = "CN"
    kyc_status = KycStatus.APPROVED

    @factory.post_generation
    def roles(self, create: bool, extracted: list[str] | None, **kwargs: object) -> None:
        for role in extracted if extracted is not None else ["trader"]:
            MemberRole.objects.create(member=self, role=role)


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    member = factory.SubFactory(MemberFactory)
    password = factory.django.Password("test-password-123")


def token_for(user: User) -> str:
    return Token.objects.get_or_create(user=user)[0].key


def new_public_key() -> str:
    """A fresh Ed25519 public key as base64url raw bytes."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from members.keys import b64url_encode

    return b64url_encode(Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw))
