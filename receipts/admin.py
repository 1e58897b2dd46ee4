"""The receipts part of the officers' console: catalogue, warehouses (approval), lots with their nominated
attesters and signed attestations, receipts and their event chains, storage incidents and stock statements.

Everything is read-only: title, quantities and signed documents never change through a form. State moves
only through actions that ask for a reason and call a service (freeze / unfreeze a receipt, close an
incident, approve a warehouse), so the same rules and the same signed event chain apply as via the API.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.models import CHANGE, LogEntry
from django.db.models import Model, QuerySet
from django.http import HttpRequest

from config.admin_actions import ReadOnlyAdmin, ReadOnlyInline, reason_action
from receipts import services
from receipts.models import (
    Attestation,
    Grade,
    Lot,
    LotNomination,
    Metal,
    Receipt,
    ReceiptEvent,
    StockGap,
    StockStatement,
    StorageIncident,
    Warehouse,
)


def _log(request: HttpRequest, obj: Model, message: str) -> None:
    """The admin's own history of who did what to the row, with the reason given."""
    assert request.user.pk is not None  # the console is behind a login
    LogEntry.objects.log_actions(user_id=request.user.pk, queryset=[obj], action_flag=CHANGE,
                                 change_message=message, single_object=True)


# --- catalogue ---------------------------------------------------------------------------------------------

@admin.register(Metal)
class MetalAdmin(ReadOnlyAdmin):
    """The catalogue is data in the repository (receipts/catalogue.json); change it there."""

    list_display = ["symbol", "name", "hs_code", "export_controlled", "controlled_since", "max_temp_c",
                    "catalogue_version"]
    list_filter = ["export_controlled"]
    search_fields = ["symbol", "name"]


@admin.register(Grade)
class GradeAdmin(ReadOnlyAdmin):
    list_display = ["code", "metal", "name", "purity_min", "rank", "catalogue_version"]
    list_filter = ["metal"]
    search_fields = ["code", "name"]


# --- warehouses ------------------------------------------------------------------------------------------

def _approve(warehouse: Warehouse, request: HttpRequest, reason: str) -> None:
    services.warehouse_set_approved(warehouse=warehouse, approved=True)
    _log(request, warehouse, f"Approved: {reason}")


def _suspend(warehouse: Warehouse, request: HttpRequest, reason: str) -> None:
    services.warehouse_set_approved(warehouse=warehouse, approved=False)
    _log(request, warehouse, f"Approval withdrawn: {reason}")


@admin.register(Warehouse)
class WarehouseAdmin(ReadOnlyAdmin):
    actions_need_change = True
    list_display = ["code", "name", "operator", "country", "region", "approved"]
    list_filter = ["approved", "region", "country"]
    search_fields = ["code", "name", "operator__name"]
    actions = [
        reason_action(name="approve_warehouse", description="Approve warehouse", apply=_approve),
        reason_action(name="withdraw_warehouse_approval", description="Withdraw warehouse approval",
                      apply=_suspend),
    ]


# --- lots and attestations -------------------------------------------------------------------------------

class AttestationInline(ReadOnlyInline):
    show_change_link = True
    model = Attestation
    fields = ["kind", "signer", "signing_key", "digest", "created_at"]


class LotNominationInline(ReadOnlyInline):
    """Who the warehouse nominated to attest the lot; withdrawn rows stay, with when and by whom."""

    model = LotNomination
    fields = ["member", "kind", "nominated_by", "nominated_at", "withdrawn_by", "withdrawn_at"]
    ordering = ["nominated_at", "pk"]
    verbose_name = "nomination to attest"
    verbose_name_plural = "nominations to attest (besides the operator and the producer)"


@admin.register(Lot)
class LotAdmin(ReadOnlyAdmin):
    list_display = ["__str__", "warehouse", "metal", "form", "net_mass_kg", "grade", "depositor", "created_at"]
    list_filter = ["metal", "grade", "warehouse"]
    search_fields = ["batch_number", "brand", "depositor__name", "warehouse__code"]
    list_select_related = ["warehouse", "metal", "grade", "depositor"]
    inlines = [LotNominationInline, AttestationInline]


@admin.register(Attestation)
class AttestationAdmin(ReadOnlyAdmin):
    list_display = ["__str__", "kind", "lot", "signer", "submitted_by", "created_at"]
    list_filter = ["kind"]
    search_fields = ["digest", "signer__name", "lot__batch_number"]
    list_select_related = ["lot", "signer", "submitted_by"]


# --- receipts ---------------------------------------------------------------------------------------------

class ReceiptEventInline(ReadOnlyInline):
    show_change_link = True
    model = ReceiptEvent
    fields = ["seq", "kind", "recorded_at", "hash"]
    ordering = ["seq"]


def _freeze(receipt: Receipt, request: HttpRequest, reason: str) -> None:
    services.receipt_freeze(receipt=receipt, reason=reason)
    _log(request, receipt, f"Frozen: {reason}")


def _unfreeze(receipt: Receipt, request: HttpRequest, reason: str) -> None:
    services.receipt_unfreeze(receipt=receipt, reason=reason)
    _log(request, receipt, f"Unfrozen: {reason}")


@admin.register(Receipt)
class ReceiptAdmin(ReadOnlyAdmin):
    """Money and title are never edited here: a freeze or unfreeze is a signed event on the receipt's chain."""

    actions_need_change = True
    list_display = ["number", "lot", "grade", "quantity_kg", "holder", "status", "issued_at", "closed_at"]
    list_filter = ["status", "grade", "lot__metal", "lot__warehouse"]
    search_fields = ["number", "holder__name", "holder__legal_id"]
    list_select_related = ["lot", "grade", "holder"]
    inlines = [ReceiptEventInline]
    actions = [
        reason_action(name="freeze_receipts", description="Freeze", apply=_freeze, permission="freeze"),
        reason_action(name="unfreeze_receipts", description="Unfreeze", apply=_unfreeze, permission="freeze"),
    ]

    def has_freeze_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("receipts.change_receipt")


@admin.register(ReceiptEvent)
class ReceiptEventAdmin(ReadOnlyAdmin):
    list_display = ["receipt", "seq", "kind", "recorded_at", "hash"]
    list_filter = ["kind"]
    search_fields = ["receipt__number", "hash"]
    list_select_related = ["receipt"]


# --- storage and stock ---------------------------------------------------------------------------------

class IncidentOpenFilter(admin.SimpleListFilter):
    """Open by default: the queue shows what still needs someone to act."""

    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("open", "Open"), ("closed", "Closed"), ("all", "All")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        state = self.value() or "open"
        if state == "open":
            return queryset.filter(closed_at__isnull=True)
        if state == "closed":
            return queryset.filter(closed_at__isnull=False)
        return queryset

    def choices(self, changelist: Any) -> Any:
        current = self.value() or "open"
        for value, label in self.lookup_choices:
            yield {"selected": current == value, "display": label,
                   "query_string": changelist.get_query_string({self.parameter_name: value})}


def _close_incident(incident: StorageIncident, request: HttpRequest, reason: str) -> None:
    services.storage_incident_close(incident=incident, reason=reason)
    _log(request, incident, f"Closed: {reason}")


@admin.register(StorageIncident)
class StorageIncidentAdmin(ReadOnlyAdmin):
    actions_need_change = True
    list_display = ["__str__", "warehouse", "location", "opened_at", "closed_at"]
    list_filter = [IncidentOpenFilter, "warehouse"]
    list_select_related = ["warehouse"]
    actions = [reason_action(name="close_incidents", description="Close incident", apply=_close_incident)]


class StockGapInline(ReadOnlyInline):
    show_change_link = True
    model = StockGap
    fields = ["lot", "stated_kg", "receipted_kg", "opened_at", "resolved_at"]


@admin.register(StockStatement)
class StockStatementAdmin(ReadOnlyAdmin):
    list_display = ["__str__", "warehouse", "as_of", "received_at", "reconciled_at"]
    list_filter = ["warehouse"]
    list_select_related = ["warehouse"]
    inlines = [StockGapInline]


@admin.register(StockGap)
class StockGapAdmin(ReadOnlyAdmin):
    list_display = ["__str__", "statement", "lot", "stated_kg", "receipted_kg", "opened_at", "resolved_at"]
    list_filter = ["resolved_at"]
    list_select_related = ["statement", "lot"]
