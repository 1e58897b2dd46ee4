"""Admin for trading: instruments (halt/open with a reason), read-only orders, trades and the ledger,
cash deposits and withdrawals recorded by staff through the ledger service with a reason."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from django import forms
from django.apps import apps
from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse

from compliance.admin import AuditEventAdmin
from config.admin_actions import ReadOnlyAdmin, reason_action
from config.errors import ApplicationError
from trading.ledger import cash_deposit, cash_withdraw
from trading.models import Account, Instrument, InstrumentStatus, JournalEntry, Order, Posting, Trade
from trading.services import instrument_set_status


@admin.register(Instrument)
class InstrumentAdmin(admin.ModelAdmin):
    list_display = ["code", "grade", "region", "esg_class", "currency", "reference_price", "band_low", "band_high",
                    "status"]
    list_filter = ["status", "region", "esg_class"]
    readonly_fields = ["status", "book_seq", "reference_price", "band_low", "band_high"]
    actions = [
        reason_action(name="halt", description="Halt trading",
                      apply=lambda i, r, why: instrument_set_status(instrument=i, status=InstrumentStatus.HALTED,
                                                                    reason=why)),
        reason_action(name="reopen", description="Reopen trading",
                      apply=lambda i, r, why: instrument_set_status(instrument=i, status=InstrumentStatus.OPEN,
                                                                    reason=why)),
    ]


@admin.register(Order)
class OrderAdmin(ReadOnlyAdmin):
    list_display = ["id", "member", "instrument", "side", "order_type", "tif", "price", "quantity_kg", "filled_kg",
                    "status", "created_at"]
    list_filter = ["status", "side", "instrument"]
    search_fields = ["client_order_id", "member__name"]


@admin.register(Trade)
class TradeAdmin(ReadOnlyAdmin):
    list_display = ["id", "instrument", "price", "quantity_kg", "buyer", "seller", "executed_at"]
    list_filter = ["instrument"]


class CashForm(forms.Form):
    amount = forms.DecimalField(max_digits=20, decimal_places=2, min_value=Decimal("0.01"))
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), min_length=3)


@admin.register(Account)
class AccountAdmin(ReadOnlyAdmin):
    list_display = ["id", "member", "kind", "currency", "available", "held", "cash_links"]
    list_filter = ["kind", "currency"]
    search_fields = ["member__name"]

    def get_urls(self) -> list[Any]:
        return [path("<int:pk>/cash/<str:direction>/", self.admin_site.admin_view(self.cash_view),
                     name="trading_account_cash"), *super().get_urls()]

    @admin.display(description="Cash")
    def cash_links(self, account: Account) -> str:
        from django.utils.html import format_html

        if account.kind != "member":
            return "-"
        return format_html('<a href="{}">deposit</a> · <a href="{}">withdraw</a>',
                           reverse("admin:trading_account_cash", args=[account.pk, "deposit"]),
                           reverse("admin:trading_account_cash", args=[account.pk, "withdraw"]))

    def cash_view(self, request: HttpRequest, pk: int, direction: str) -> HttpResponse:
        if not request.user.has_perm("trading.view_account"):
            return HttpResponse(status=403)
        account = get_object_or_404(Account, pk=pk, kind="member")
        form = CashForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            service = cash_deposit if direction == "deposit" else cash_withdraw
            try:
                assert account.member is not None  # kind="member": a member account
                service(member=account.member, currency=account.currency, amount=form.cleaned_data["amount"],
                        by=request.user, reason=form.cleaned_data["reason"])  # type: ignore[arg-type]
            except (ApplicationError, InvalidOperation) as exc:
                self.message_user(request, getattr(exc, "message", str(exc)), messages.ERROR)
            else:
                self.message_user(request, f"{direction.title()} of {form.cleaned_data['amount']} "
                                           f"{account.currency} recorded.", messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:trading_account_changelist"))
        return TemplateResponse(request, "admin/trading/cash.html", {
            **self.admin_site.each_context(request), "title": f"{direction.title()} cash — {account}",
            "form": form, "opts": self.model._meta, "account": account})


class PostingInline(admin.TabularInline):
    model = Posting
    extra = 0
    can_delete = False
    readonly_fields = ["account", "bucket", "amount", "currency"]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(JournalEntry)
class JournalEntryAdmin(ReadOnlyAdmin):
    list_display = ["id", "kind", "reference", "created_by", "created_at"]
    list_filter = ["kind"]
    search_fields = ["reference", "memo"]
    inlines = [PostingInline]


admin.site.register(apps.get_model("trading", "AccountAuditEvent"), AuditEventAdmin)
