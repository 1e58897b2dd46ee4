"""Admin for members, users and signing keys. KYC status changes only through the reason action."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin
from django.http import HttpRequest

from config.admin_actions import reason_action
from members.models import KycDecision, KycStatus, Member, MemberRole, SigningKey, User
from members.services import member_set_kyc_status, signing_key_revoke


def _officer(request: HttpRequest) -> User:
    """The admin site only serves authenticated staff, so the user is a real User."""
    assert isinstance(request.user, User)
    return request.user


class MemberRoleInline(admin.TabularInline):
    model = MemberRole
    extra = 0


class KycDecisionInline(admin.TabularInline):
    model = KycDecision
    extra = 0
    can_delete = False
    readonly_fields = ["from_status", "to_status", "decided_by", "reason", "decided_at"]

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Member)
class MemberAdmin(admin.ModelAdmin):
    list_display = ["name", "legal_id", "country", "kyc_status", "created_at"]
    list_filter = ["kyc_status", "country", "roles__role"]
    search_fields = ["name", "legal_id"]
    readonly_fields = ["kyc_status", "created_at"]
    inlines = [MemberRoleInline, KycDecisionInline]
    actions = [
        reason_action(name="approve_kyc", description="Approve KYC",
                      apply=lambda m, r, why: member_set_kyc_status(
                          member=m, status=KycStatus.APPROVED, decided_by=_officer(r), reason=why)),
        reason_action(name="suspend_member", description="Suspend member",
                      apply=lambda m, r, why: member_set_kyc_status(
                          member=m, status=KycStatus.SUSPENDED, decided_by=_officer(r), reason=why)),
    ]


@admin.register(User)
class IngotUserAdmin(UserAdmin):
    list_display = ["username", "member", "is_staff", "is_active"]
    list_filter = ["is_staff", "is_active", "groups"]
    fieldsets = (*UserAdmin.fieldsets, ("Member", {"fields": ("member",)}))  # type: ignore[misc]


@admin.register(SigningKey)
class SigningKeyAdmin(admin.ModelAdmin):
    list_display = ["kid", "member", "label", "valid_from", "valid_to", "revoked_at"]
    list_filter = ["revoked_at"]
    search_fields = ["kid", "member__name"]
    readonly_fields = ["kid", "public_key", "member", "valid_from", "valid_to", "revoked_at", "revoked_reason",
                       "created_at"]
    actions = [reason_action(name="revoke_key", description="Revoke signing key",
                             apply=lambda k, r, why: signing_key_revoke(member=k.member, kid=k.kid, reason=why))]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(KycDecision)
class KycDecisionAdmin(admin.ModelAdmin):
    list_display = ["member", "from_status", "to_status", "decided_by", "decided_at"]
    list_filter = ["to_status"]
    readonly_fields = ["member", "from_status", "to_status", "decided_by", "reason", "decided_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
