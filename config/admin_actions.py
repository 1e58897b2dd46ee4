"""Admin actions that need a reason: an intermediate page asks for it, then a service is called per row."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from config.errors import ApplicationError


class ReasonForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), min_length=3, max_length=2000)


def reason_action(*, name: str, description: str, apply: Callable[[Any, HttpRequest, str], object],
                  permission: str | None = None) -> Callable[..., HttpResponse | None]:
    """Build an admin action that asks for a reason and calls `apply(obj, request, reason)` for each row."""

    def action(modeladmin: admin.ModelAdmin[Model], request: HttpRequest,
               queryset: QuerySet[Model]) -> HttpResponse | None:
        form = ReasonForm(request.POST if "apply" in request.POST else None)
        if "apply" in request.POST and form.is_valid():
            done, failed = 0, 0
            for obj in queryset.order_by("pk"):
                try:
                    apply(obj, request, form.cleaned_data["reason"])
                    done += 1
                except ApplicationError as exc:
                    failed += 1
                    modeladmin.message_user(request, f"{obj}: {exc.message}", messages.ERROR)
            if done:
                modeladmin.message_user(request, f"{description}: {done} done.", messages.SUCCESS)
            return None
        return TemplateResponse(request, "admin/reason_action.html", {
            **modeladmin.admin_site.each_context(request),
            "title": description, "action": name, "queryset": queryset, "form": form,
            "opts": modeladmin.model._meta,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        })

    action.__name__ = name
    action.short_description = description  # type: ignore[attr-defined]
    if permission:
        action.allowed_permissions = (permission,)  # type: ignore[attr-defined]
    return action


class ReadOnlyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """No adding, editing or deleting through forms: money, title and records change only through services.
    Admins with reason actions set `actions_need_change` (Django asks for the change permission to offer
    actions), but a row's own page stays view-only."""

    actions_need_change = False

    def get_readonly_fields(self, request: HttpRequest, obj: Model | None = None) -> list[str]:
        return [f.name for f in self.model._meta.fields] + [m.name for m in self.model._meta.many_to_many]

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        if obj is not None or not self.actions_need_change:
            return False
        return super().has_change_permission(request)


class ReadOnlyInline(admin.TabularInline):  # type: ignore[type-arg]
    extra = 0
    can_delete = False

    def get_readonly_fields(self, request: HttpRequest, obj: Model | None = None) -> list[str]:
        return list(self.fields or [f.name for f in self.model._meta.fields])

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False
