"""Portal pages (server-rendered, htmx-ready): sign in/out, the member's dashboard and the public
bundle verifier. Views parse input, call a selector, service or pure function, and render; rules
live in those modules, not here."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from axes.helpers import get_client_username, get_cool_off, get_failure_limit
from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.template.defaultfilters import filesizeformat
from django.views.decorators.http import require_http_methods

from config.errors import ApplicationError
from receipts.bundles import verify_bundle
from receipts.models import OPEN_STATUSES, Receipt
from receipts.selectors import jwks

# Largest bundle the verify page accepts, uploaded or pasted. A real bundle (receipt, lot, four
# attestations, a few dozen events and their ancestors) is tens of kilobytes.
BUNDLE_MAX_BYTES = 2 * 1024 * 1024


def portal_context(request: HttpRequest) -> dict[str, Any]:
    """What every portal page needs besides its own data. Shaped as a context processor, so the
    lead can register it in TEMPLATES; until then every portal view merges it in itself."""
    return {"demo": bool(settings.DEBUG or getattr(settings, "INGOT_DEMO", False))}


def render_page(request: HttpRequest, template: str, context: dict[str, Any] | None = None,
                status: int = 200) -> HttpResponse:
    return render(request, template, {**portal_context(request), **(context or {})}, status=status)


def add_application_error(form: forms.Form, error: ApplicationError) -> None:
    """Show a refusal next to the field it names, or above the form when it names none."""
    field = error.field if error.field in form.fields else None
    form.add_error(field, error.message)


# --- sign in / sign out ----------------------------------------------------------------------


class PortalLoginView(auth_views.LoginView):
    """Django's session login. AuthenticationForm passes the request to authenticate(), which
    django-axes needs to count failures and lock out."""

    template_name = "portal/login.html"
    redirect_authenticated_user = True

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        return {**portal_context(self.request), **super().get_context_data(**kwargs)}


class PortalLogoutView(auth_views.LogoutView):
    """POST-only sign out (Django 5); back to the sign-in page with a confirmation."""

    next_page = "portal:login"

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        was_signed_in = request.user.is_authenticated
        response = super().post(request, *args, **kwargs)
        if was_signed_in:
            messages.success(request, "You are signed out.")
        return response


def lockout_response(request: HttpRequest, original_response: HttpResponse | None = None,
                     credentials: dict[str, Any] | None = None) -> HttpResponse:
    """django-axes' lockout page (setting AXES_LOCKOUT_CALLABLE): a readable 429, not bare text."""
    cool_off = get_cool_off(request)
    return render_page(request, "portal/lockout.html", {
        "failure_limit": get_failure_limit(request, credentials),
        "username": get_client_username(request, credentials) or "",
        "cool_off": _duration(cool_off) if cool_off else "",
    }, status=429)


def _duration(span: timedelta) -> str:
    minutes = max(1, round(span.total_seconds() / 60))
    if minutes % 60 == 0:
        hours = minutes // 60
        return f"{hours} hour{'s' if hours != 1 else ''}"
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


# --- dashboard -----------------------------------------------------------------------------------


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    member = getattr(request.user, "member", None)
    context: dict[str, Any] = {"member": member}
    if member is not None:
        held = Receipt.objects.filter(holder=member)
        context.update(
            roles=[role.get_role_display() for role in member.roles.order_by("role")],
            receipts=held.filter(status__in=OPEN_STATUSES)
                         .select_related("grade", "lot__warehouse", "lot__metal").order_by("number"),
            closed_receipt_count=held.exclude(status__in=OPEN_STATUSES).count(),
        )
    return render_page(request, "portal/dashboard.html", context)


# --- bundle verification -----------------------------------------------------------------------


class BundleTooLarge(ApplicationError):
    status = 413
    default_code = "bundle_too_large"


class BundleForm(forms.Form):
    """A bundle as an uploaded .json file or pasted text; `clean` leaves the parsed object in
    cleaned_data["bundle"]. Parsing refuses what RFC 8785 cannot canonicalise anyway:
    duplicate member names and NaN/Infinity."""

    bundle_file = forms.FileField(
        label="Bundle file", required=False,
        help_text=f"A receipt bundle exported from Ingot (.json, up to {filesizeformat(BUNDLE_MAX_BYTES)}).",
        widget=forms.ClearableFileInput(attrs={"accept": ".json,application/json"}),
    )
    bundle_json = forms.CharField(
        label="…or paste the bundle JSON", required=False, strip=False,
        widget=forms.Textarea(attrs={"rows": 8, "spellcheck": "false", "autocomplete": "off",
                                     "class": "mono"}),
    )

    refusal: ApplicationError | None = None

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        try:
            cleaned["bundle"] = self._parse(cleaned.get("bundle_file"), cleaned.get("bundle_json") or "")
        except ApplicationError as exc:
            self.refusal = exc
            add_application_error(self, exc)
        return cleaned

    def _parse(self, upload: Any, pasted: str) -> dict[str, Any]:
        if upload and pasted.strip():
            raise ApplicationError("Upload a file or paste JSON, not both.", code="ambiguous_input")
        if upload:
            if upload.size is not None and upload.size > BUNDLE_MAX_BYTES:
                raise BundleTooLarge(_too_large(upload.size), field="bundle_file")
            raw = upload.read(BUNDLE_MAX_BYTES + 1)
            if len(raw) > BUNDLE_MAX_BYTES:
                raise BundleTooLarge(_too_large(len(raw)), field="bundle_file")
            try:
                text = raw.decode("utf-8-sig")
            except UnicodeDecodeError as exc:
                raise ApplicationError("The file is not UTF-8 text, so it cannot be a JSON bundle.",
                                       code="malformed_bundle", field="bundle_file") from exc
            return parse_bundle_json(text, field="bundle_file")
        if pasted.strip():
            size = len(pasted.encode("utf-8"))
            if size > BUNDLE_MAX_BYTES:
                raise BundleTooLarge(_too_large(size), field="bundle_json")
            return parse_bundle_json(pasted, field="bundle_json")
        raise ApplicationError("Choose a bundle file or paste the bundle JSON.", code="no_bundle")


def _too_large(size: int) -> str:
    return (f"The bundle is {filesizeformat(size)}; the limit is {filesizeformat(BUNDLE_MAX_BYTES)}. "
            "Check that you chose a receipt bundle.")


def _no_duplicate_names(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for name, value in pairs:
        if name in obj:
            raise ValueError(f"the member name {name!r} appears twice in one object")
        obj[name] = value
    return obj


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_bundle_json(text: str, *, field: str) -> dict[str, Any]:
    """The JSON object in `text`, or ApplicationError naming `field` with what is wrong and where."""
    try:
        bundle = json.loads(text, object_pairs_hook=_no_duplicate_names, parse_constant=_no_constants)
    except json.JSONDecodeError as exc:
        raise ApplicationError(f"This is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}.",
                               code="malformed_bundle", field=field) from exc
    except ValueError as exc:
        raise ApplicationError(f"This JSON cannot be a bundle: {exc}.", code="malformed_bundle",
                               field=field) from exc
    except RecursionError as exc:
        raise ApplicationError("This JSON is nested too deeply to be a bundle.", code="malformed_bundle",
                               field=field) from exc
    if not isinstance(bundle, dict):
        kind = {list: "an array", str: "a string", bool: "true/false", type(None): "null"}.get(
            type(bundle), "a number")
        raise ApplicationError(f"A bundle is a JSON object ({{…}}); this is {kind}.",
                               code="malformed_bundle", field=field)
    return bundle


@require_http_methods(["GET", "POST"])
def verify(request: HttpRequest) -> HttpResponse:
    """Anyone, signed in or not: verify a bundle and list every check with its evidence.

    Signatures are judged against Ingot's published key registry (the JWKS), not only the keys the file
    carries: a bundle sealed with a key Ingot never registered proves integrity but not provenance, and
    must not read "Verified" on Ingot's own site."""
    if request.method != "POST":
        return render_page(request, "portal/verify.html", {"form": BundleForm()})
    form = BundleForm(request.POST, request.FILES)
    if not form.is_valid():
        status = form.refusal.status if form.refusal is not None else 400
        return render_page(request, "portal/verify.html", {"form": form}, status=status)
    bundle = form.cleaned_data["bundle"]
    result = verify_bundle(bundle, trusted_keys=jwks(_kids_in(bundle))["keys"])
    return render_page(request, "portal/verify.html", {
        "form": BundleForm(),
        "result": result,
        "failed_count": sum(1 for check in result.checks if not check.ok),
        "receipt_number": _receipt_number(bundle),
    })


def _kids_in(bundle: dict[str, Any]) -> list[str]:
    """Key ids the bundle names, to fetch just those keys from the registry (any others cannot matter)."""
    keys = bundle.get("keys")
    return [k["kid"] for k in keys if isinstance(k, dict) and isinstance(k.get("kid"), str)] \
        if isinstance(keys, list) else []


def _receipt_number(bundle: dict[str, Any]) -> str | None:
    receipt = bundle.get("receipt")
    number = receipt.get("number") if isinstance(receipt, dict) else None
    return number if isinstance(number, str) else None
