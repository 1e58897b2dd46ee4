"""App config that swaps Django's admin site for the two-factor console."""

from django.contrib.admin.apps import AdminConfig


class IngotAdminConfig(AdminConfig):
    default_site = "config.admin_site.IngotAdminSite"
