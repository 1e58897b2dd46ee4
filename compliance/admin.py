"""The compliance officer's console: the flag review queue, declarations and licences to decide,
screening lists, the drawdown ledger and the audit trail.

Everything is read-only; state moves only through the reason actions, which call the services.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pghistory.models
from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.db import connection
from django.db.models import Model, QuerySet
from django.http import HttpRequest

from compliance.models import (
    DeclarationStatus,
    EndUseDeclaration,
    EsgEvaluation,
    EsgRulePack,
    ExportLicence,
    Flag,
    FlagStatus,
    FlagTransition,
    LicenceDrawdown,
    LicenceStatus,
    ScreeningEntry,
    ScreeningList,
)
from compliance.selectors import esg_rules_explained
from compliance.services import (
    ESG_CHUNK,
    end_use_declaration_decide,
    esg_compiled_pack,
    esg_evaluate,
    export_licence_decide,
    flag_member_suspend,
    flag_resolve,
    flag_set_status,
)
from compliance.tasks import enqueue_esg, esg_evaluate_all
from config.admin_actions import ReadOnlyAdmin, ReadOnlyInline, reason_action
from config.errors import ApplicationError
from members.models import User


def _officer(request: HttpRequest) -> User:
    # The console is behind login and a second factor: the requester is always a real user.
    assert isinstance(request.user, User)
    return request.user


# --- the review queue ---------------------------------------------------------------------------


class FlagStatusFilter(admin.SimpleListFilter):
    """Status, open by default: the queue shows what still needs a decision."""

    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]) -> list[tuple[str, str]]:
        return [*FlagStatus.choices, ("all", "All")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value() or FlagStatus.OPEN
        return queryset if value == "all" else queryset.filter(status=value)

    def choices(self, changelist: ChangeList) -> Iterator[dict[str, Any]]:  # type: ignore[override]
        current = self.value() or FlagStatus.OPEN
        for lookup, title in self.lookup_choices:
            yield {"selected": current == str(lookup), "display": title,
                   "query_string": changelist.get_query_string({self.parameter_name: lookup})}


class FlagTransitionInline(ReadOnlyInline):
    model = FlagTransition


@admin.register(Flag)
class FlagAdmin(ReadOnlyAdmin):
    actions_need_change = True
    list_display = ["id", "kind", "status", "member", "receipt", "reference", "score", "opened_at", "resolved_at"]
    list_filter = [FlagStatusFilter, "kind", "opened_at"]
    date_hierarchy = "opened_at"
    search_fields = ["member__name", "member__legal_id", "reference"]
    list_select_related = ["member", "receipt"]
    inlines = [FlagTransitionInline]
    actions = [
        reason_action(name="confirm_flag", description="Confirm (a sanctions hit suspends the member)",
                      permission="change",
                      apply=lambda f, r, why: flag_resolve(flag=f, outcome=FlagStatus.CONFIRMED, decided_by=_officer(r),
                                                           reason=why)),
        reason_action(name="dismiss_flag", description="Dismiss", permission="change",
                      apply=lambda f, r, why: flag_resolve(flag=f, outcome=FlagStatus.DISMISSED, decided_by=_officer(r),
                                                           reason=why)),
        reason_action(name="reopen_flag", description="Reopen", permission="change",
                      apply=lambda f, r, why: flag_set_status(flag=f, status=FlagStatus.OPEN, decided_by=_officer(r),
                                                              reason=why)),
        reason_action(name="suspend_flagged_member", description="Suspend the flagged member", permission="change",
                      apply=lambda f, r, why: flag_member_suspend(flag=f, decided_by=_officer(r), reason=why)),
    ]

    @admin.display(description="score")
    def score(self, flag: Flag) -> str:
        value = (flag.details or {}).get("score")
        return "" if value is None else str(value)


# --- export control ------------------------------------------------------------------------------


@admin.register(EndUseDeclaration)
class EndUseDeclarationAdmin(ReadOnlyAdmin):
    actions_need_change = True
    list_display = ["id", "member", "metal", "end_user", "destination_country", "valid_from", "valid_to", "status",
                    "submitted_at", "decided_by"]
    list_filter = ["status", "metal", "destination_country", "submitted_at"]
    search_fields = ["member__name", "end_user", "end_use"]
    list_select_related = ["member", "metal", "decided_by"]
    actions = [
        reason_action(name="approve_declaration", description="Approve end-use declaration", permission="change",
                      apply=lambda d, r, why: end_use_declaration_decide(
                          declaration=d, status=DeclarationStatus.APPROVED, decided_by=_officer(r), reason=why)),
        reason_action(name="reject_declaration", description="Reject end-use declaration", permission="change",
                      apply=lambda d, r, why: end_use_declaration_decide(
                          declaration=d, status=DeclarationStatus.REJECTED, decided_by=_officer(r), reason=why)),
    ]


class LicenceDrawdownInline(ReadOnlyInline):
    model = LicenceDrawdown


@admin.register(ExportLicence)
class ExportLicenceAdmin(ReadOnlyAdmin):
    actions_need_change = True
    list_display = ["licence_number", "exporter", "metal", "quantity_cap_kg", "drawn_kg", "destination_country",
                    "end_user", "valid_from", "valid_to", "status"]
    list_filter = ["status", "metal", "destination_country", "valid_to"]
    search_fields = ["licence_number", "exporter__name", "consignee", "end_user"]
    list_select_related = ["exporter", "metal"]
    inlines = [LicenceDrawdownInline]
    actions = [
        reason_action(name="approve_licence", description="Approve export licence", permission="change",
                      apply=lambda lic, r, why: export_licence_decide(
                          licence=lic, status=LicenceStatus.APPROVED, decided_by=_officer(r), reason=why)),
        reason_action(name="reject_licence", description="Reject export licence", permission="change",
                      apply=lambda lic, r, why: export_licence_decide(
                          licence=lic, status=LicenceStatus.REJECTED, decided_by=_officer(r), reason=why)),
        reason_action(name="revoke_licence", description="Revoke export licence", permission="change",
                      apply=lambda lic, r, why: export_licence_decide(
                          licence=lic, status=LicenceStatus.REVOKED, decided_by=_officer(r), reason=why)),
    ]


@admin.register(LicenceDrawdown)
class LicenceDrawdownAdmin(ReadOnlyAdmin):
    list_display = ["id", "licence", "quantity_kg", "drawn_total_kg", "receipt", "reference", "created_at"]
    list_filter = ["created_at"]
    search_fields = ["licence__licence_number", "reference"]
    list_select_related = ["licence", "receipt"]


# --- screening lists ------------------------------------------------------------------------------


@admin.register(ScreeningList)
class ScreeningListAdmin(ReadOnlyAdmin):
    list_display = ["id", "source_name", "entry_count", "active", "content_hash", "loaded_at", "loaded_by"]
    list_filter = ["active"]


@admin.register(ScreeningEntry)
class ScreeningEntryAdmin(ReadOnlyAdmin):
    list_display = ["name", "aliases", "country", "source", "row", "screening_list"]
    list_filter = ["screening_list__active", "source", "country"]
    search_fields = ["name", "aliases"]


@admin.register(FlagTransition)
class FlagTransitionAdmin(ReadOnlyAdmin):
    list_display = ["flag", "from_status", "to_status", "decided_by", "decided_at"]
    list_filter = ["to_status", "decided_at"]


# --- ESG ------------------------------------------------------------------------------------------


def _reevaluate(modeladmin: admin.ModelAdmin[Any], request: HttpRequest, receipt_ids: list[int]) -> None:
    """Evaluate now, in the request, under every active pack version; a large selection goes to the workers."""
    if len(receipt_ids) > ESG_CHUNK:
        tasks = enqueue_esg(receipt_ids)
        modeladmin.message_user(request, f"{len(receipt_ids)} receipts queued for re-evaluation ({tasks} tasks).",
                                messages.SUCCESS)
        return
    try:
        run = esg_evaluate(receipt_ids=receipt_ids)
    except ApplicationError as exc:
        modeladmin.message_user(request, exc.message, messages.ERROR)
        return
    modeladmin.message_user(request, f"{run.receipts} receipts re-evaluated: {run.written} results changed, "
                                     f"{run.flags} flags raised.", messages.SUCCESS)


@admin.register(EsgRulePack)
class EsgRulePackAdmin(ReadOnlyAdmin):
    list_display = ["pack_id", "version", "title", "market", "label", "active", "content_hash", "loaded_at"]
    list_filter = ["active", "pack_id"]
    actions = ["reevaluate_all"]

    @admin.action(description="Re-evaluate every open receipt under the active versions (in the workers)")
    def reevaluate_all(self, request: HttpRequest, queryset: QuerySet[EsgRulePack]) -> None:
        tasks = esg_evaluate_all.delay()
        self.message_user(request, f"Re-evaluation of every open receipt queued ({tasks.id}).", messages.SUCCESS)


class EsgEvaluationCurrentFilter(admin.SimpleListFilter):
    title = "pack version"
    parameter_name = "current"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]) -> list[tuple[str, str]]:
        return [("yes", "Active version (current result)"), ("no", "Superseded version")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() in ("yes", "no"):
            return queryset.filter(rule_pack__active=self.value() == "yes")
        return queryset


@admin.register(EsgEvaluation)
class EsgEvaluationAdmin(ReadOnlyAdmin):
    """Every stored result, read-only; a row's page shows each rule's measured vs required values."""

    list_display = ["receipt", "rule_pack", "outcome", "label", "failed_rules", "evaluated_at"]
    list_filter = [EsgEvaluationCurrentFilter, "outcome", "rule_pack__pack_id", "label", "evaluated_at",
                   "receipt__lot__metal", "receipt__status"]
    date_hierarchy = "evaluated_at"
    search_fields = ["receipt__number", "receipt__holder__name"]
    list_select_related = ["receipt", "rule_pack"]
    actions = ["reevaluate"]

    def get_readonly_fields(self, request: HttpRequest, obj: Model | None = None) -> list[str]:
        return [*super().get_readonly_fields(request, obj), "rules_explained"]

    @admin.display(description="failed rules")
    def failed_rules(self, evaluation: EsgEvaluation) -> str:
        outcomes = evaluation.rule_outcomes(esg_compiled_pack(evaluation.rule_pack).rule_ids)
        return ", ".join(rule_id for rule_id, outcome in outcomes.items() if outcome == "fail")

    @admin.display(description="rules: measured vs required")
    def rules_explained(self, evaluation: EsgEvaluation) -> str:
        from django.utils.html import format_html, format_html_join

        rules, _ = esg_rules_explained(evaluation, esg_compiled_pack(evaluation.rule_pack), evaluation.receipt.number)
        rows = format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                                ((r["rule_id"], r["severity"], r["outcome"], r["measured"], r["required"])
                                 for r in rules))
        return format_html("<table><tr><th>rule</th><th>severity</th><th>outcome</th><th>measured</th>"
                           "<th>required</th></tr>{}</table>", rows)

    @admin.action(description="Re-evaluate the selected receipts under the active pack versions")
    def reevaluate(self, request: HttpRequest, queryset: QuerySet[EsgEvaluation]) -> None:
        _reevaluate(self, request, sorted(set(queryset.values_list("receipt_id", flat=True))))


# --- the audit trail ------------------------------------------------------------------------------


class AuditEventAdmin(ReadOnlyAdmin):
    """Read-only list of one pghistory event table; usable by any app for its own event models."""

    list_filter = ["pgh_label", "pgh_created_at"]
    date_hierarchy = "pgh_created_at"
    ordering = ["-pgh_id"]
    list_select_related = ["pgh_context"]

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        if connection.vendor != "postgresql":
            messages.warning(request, "Embedded mode (SQLite): the audit trail is written by PostgreSQL triggers, "
                                      "so nothing is recorded here. Set DATABASE_URL to a PostgreSQL database "
                                      "(README) for the audit trail and the database's append-only guards.")
        return super().changelist_view(request, extra_context)

    def get_list_display(self, request: HttpRequest) -> list[Any]:
        snapshot = [f.name for f in self.model._meta.fields if not f.name.startswith("pgh_")]
        return ["pgh_id", "pgh_created_at", "pgh_label", "object_id", *snapshot[:6], "context"]

    @admin.display(description="object")
    def object_id(self, event: Any) -> Any:
        # The tracked row may be gone (a delete event): show its id, never follow the reference.
        return event.pgh_obj_id

    @admin.display(description="who / why")
    def context(self, event: Any) -> str:
        metadata = getattr(event.pgh_context, "metadata", None) or {}
        return ", ".join(f"{k}={v}" for k, v in sorted(metadata.items()))


def _register_audit_events() -> None:
    from django.apps import apps

    for model in apps.get_app_config("compliance").get_models():
        if issubclass(model, pghistory.models.Event) and not admin.site.is_registered(model):
            admin.site.register(model, AuditEventAdmin)


_register_audit_events()
