"""The admin console: Django admin behind a second factor (django-otp) and login lockout (django-axes)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.template.response import TemplateResponse
from django_otp import devices_for_user
from django_otp.admin import OTPAdminAuthenticationForm, OTPAdminSite


class ConsoleLoginForm(OTPAdminAuthenticationForm):
    """Username, password and one-time code on one form. django-otp (1.7) wants the device named, from a list it
    shows only after a first submission has failed ("Please select a device."): an officer with one confirmed
    device has nothing to choose, so that device is taken. With several, the list is asked for, as before; the
    code is never tried against more than one device (what django-otp's rule guards against)."""

    def _chosen_device(self, user: Any) -> Any:
        chosen = super()._chosen_device(user)
        if chosen is None and not self.cleaned_data.get("otp_device"):
            devices = list(devices_for_user(user, confirmed=True, for_verify=True))
            if len(devices) == 1:
                return devices[0]
        return chosen


class IngotAdminSite(OTPAdminSite):
    site_header = "Ingot — compliance console"
    site_title = "Ingot console"
    index_title = "Review queues and records"
    index_template = "admin/console_index.html"
    login_form = ConsoleLoginForm

    def index(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> TemplateResponse:
        """The home page: what waits for a decision (compliance.selectors.review_queues), then the records."""
        from compliance.selectors import review_queues

        return super().index(request, {**(extra_context or {}), "review_queues": review_queues()})
