"""Members (organisations), users, roles, KYC decisions, signing keys and idempotency records."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import models
from django.db.models import Q
from django_countries.fields import CountryField


class Role(models.TextChoices):
    WAREHOUSE = "warehouse", "Warehouse operator"
    ASSAY_LAB = "assay_lab", "Assay lab"
    TRADER = "trader", "Trader"
    PRODUCER = "producer", "Producer"
    RECYCLER = "recycler", "Recycler"
    END_USER = "end_user", "End user"
    RESERVE_AGENCY = "reserve_agency", "Reserve agency"
    LENDER = "lender", "Lender"
    VERIFIER = "verifier", "Accredited verifier"
    PLATFORM = "platform", "Platform operator"


class KycStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    APPROVED = "approved", "Approved"
    SUSPENDED = "suspended", "Suspended"


# The only moves a KYC status may make; members.services.member_set_kyc_status enforces it.
KYC_TRANSITIONS: dict[str, frozenset[str]] = {
    KycStatus.PENDING: frozenset({KycStatus.APPROVED, KycStatus.SUSPENDED}),
    KycStatus.APPROVED: frozenset({KycStatus.SUSPENDED}),
    KycStatus.SUSPENDED: frozenset({KycStatus.APPROVED}),
}


class Member(models.Model):
    name = models.CharField(max_length=200)
    legal_id = models.CharField(max_length=64, unique=True, help_text="Registration / LEI number.")
    country = CountryField()
    kyc_status = models.CharField(max_length=16, choices=KycStatus.choices, default=KycStatus.PENDING)
    qualifications = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_approved(self) -> bool:
        return self.kyc_status == KycStatus.APPROVED

    def role_set(self) -> frozenset[str]:
        return frozenset(self.roles.values_list("role", flat=True))

    def has_role(self, *roles: str) -> bool:
        return self.roles.filter(role__in=roles).exists()


class MemberRole(models.Model):
    member = models.ForeignKey(Member, on_delete=models.CASCADE, related_name="roles")
    role = models.CharField(max_length=20, choices=Role.choices)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["member", "role"], name="member_role_unique")]

    def __str__(self) -> str:
        return f"{self.member_id}:{self.role}"


class User(AbstractUser):
    """A person; belongs to one member. Compliance officers are staff in the officers' group."""

    member = models.ForeignKey(Member, null=True, blank=True, on_delete=models.PROTECT, related_name="users")


class KycDecision(models.Model):
    """Who moved a member's KYC status, when and why. Append-only."""

    member = models.ForeignKey(Member, on_delete=models.PROTECT, related_name="kyc_decisions")
    from_status = models.CharField(max_length=16, choices=KycStatus.choices)
    to_status = models.CharField(max_length=16, choices=KycStatus.choices)
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.PROTECT)
    reason = models.TextField()
    decided_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-decided_at", "-pk"]
        constraints = [models.CheckConstraint(condition=~Q(reason=""), name="kyc_decision_reason_required")]

    def __str__(self) -> str:
        return f"{self.member_id}: {self.from_status} -> {self.to_status}"


class SigningKey(models.Model):
    """An Ed25519 public key a member signs attestations with. Never deleted: old signatures must verify."""

    member = models.ForeignKey(Member, on_delete=models.PROTECT, related_name="signing_keys")
    kid = models.CharField(max_length=64, unique=True, help_text="RFC 7638 JWK thumbprint.")
    public_key = models.CharField(max_length=64, help_text="Raw 32-byte key, base64url without padding.")
    label = models.CharField(max_length=100, blank=True)
    valid_from = models.DateTimeField()
    valid_to = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["member_id", "valid_from"]
        constraints = [
            models.CheckConstraint(condition=Q(valid_to__isnull=True) | Q(valid_to__gt=models.F("valid_from")),
                                   name="signing_key_validity_order"),
        ]

    def __str__(self) -> str:
        return f"{self.kid} ({self.member_id})"


class IdempotencyRecord(models.Model):
    """The first response to a creating request, replayed byte for byte when the key comes again."""

    # No index of its own: (member, key)'s unique index serves it.
    member = models.ForeignKey(Member, on_delete=models.CASCADE, related_name="+", db_index=False)
    key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64)
    method = models.CharField(max_length=8)
    path = models.CharField(max_length=500)
    # Filled in at the end of the same transaction that inserted the row first.
    response_status = models.PositiveSmallIntegerField(default=0)
    response_body = models.BinaryField(default=b"")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["member", "key"], name="idempotency_key_unique_per_member")]

    def __str__(self) -> str:
        return f"{self.member_id}:{self.key}"
