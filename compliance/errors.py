"""Compliance refusals and their stable codes; policy.require() and the services raise these."""

from __future__ import annotations

from typing import Final

from config.errors import NotAllowed

# Stable codes: trading, the API and the portal key on them; add new ones, never rename.
OK: Final = "ok"
KYC_PENDING: Final = "kyc_pending"
MEMBER_SUSPENDED: Final = "member_suspended"
ROLE_REQUIRED: Final = "role_required"
SANCTIONS_HIT: Final = "sanctions_hit"
END_USE_DECLARATION_REQUIRED: Final = "end_use_declaration_required"
EXPORT_LICENCE_REQUIRED: Final = "export_licence_required"
LICENCE_EXHAUSTED: Final = "licence_exhausted"
LICENCE_NOT_APPROVED: Final = "licence_not_approved"
LICENCE_NOT_VALID: Final = "licence_not_valid"


class ComplianceRefused(NotAllowed):
    """The platform's rules forbid the action for this member (HTTP 403); `code` says which rule."""

    default_code = "compliance_refused"
