"""The admin console: Django admin behind a second factor (django-otp) and login lockout (django-axes)."""

from django_otp.admin import OTPAdminSite


class IngotAdminSite(OTPAdminSite):
    site_header = "Ingot — compliance console"
    site_title = "Ingot console"
    index_title = "Review queues and records"
