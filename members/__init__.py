"""Organisations, their roles and KYC status, users, API tokens and registered signing keys."""
