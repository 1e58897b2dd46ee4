"""Portal pages (server-rendered, htmx): sign in/out, the member's dashboard, markets, an instrument's live
book with the order ticket, a receipt's proof and withdrawal, the index, and the public bundle verifier.
Views parse input, call a selector, service or pure function, and render; rules live in those modules,
not here."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import lru_cache, wraps
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from axes.helpers import get_client_username, get_cool_off, get_failure_limit
from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect, render, resolve_url
from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect, trigger_client_event

from compliance import errors as compliance_errors
from compliance.errors import ComplianceRefused
from compliance.selectors import receipt_esg_labels, receipt_esg_report
from config.errors import ApplicationError
from members.models import Member
from receipts.bundles import bundle_bytes, verify_bundle
from receipts.canonical import parse_utc
from receipts.models import OPEN_STATUSES, Receipt, ReceiptStatus
from receipts.selectors import jwks, receipt_bundle, receipts_visible_to
from trading import selectors
from trading.forms import OrderTicketForm, WithdrawalRequestForm, new_client_order_id
from trading.models import Instrument, OrderStatus, OrderType, Side
from trading.pricing_selectors import latest_reference
from trading.services import OrderResult, order_cancel, order_place, withdrawal_request

# Largest bundle the verify page accepts, uploaded or pasted. A real bundle (receipt, lot, four
# attestations, a few dozen events and their ancestors) is tens of kilobytes.
BUNDLE_MAX_BYTES = 2 * 1024 * 1024


def portal_context(request: HttpRequest) -> dict[str, Any]:
    """What every portal page needs besides its own data (registered as a context processor)."""
    return {"demo": bool(settings.DEBUG or getattr(settings, "INGOT_DEMO", False))}


def render_page(request: HttpRequest, template: str, context: dict[str, Any] | None = None,
                status: int = 200) -> HttpResponse:
    return render(request, template, context or {}, status=status)


def render_fragment(request: HttpRequest, template: str, context: dict[str, Any], status: int = 200) -> HttpResponse:
    """A partial for htmx. X-Ingot-Form tells portal.js to swap it whatever the status (a 403 compliance
    refusal or a 404 is shown in place, like a 400), while a foreign error page never is."""
    response = render(request, template, context, status=status)
    response["X-Ingot-Form"] = "1"
    return response


def is_htmx(request: HttpRequest) -> bool:
    """Sent by htmx (django_htmx's middleware sets request.htmx, truthy for htmx requests)."""
    return bool(getattr(request, "htmx", False))


def member_of(request: HttpRequest) -> Member | None:
    return getattr(request.user, "member", None) if request.user.is_authenticated else None


def member_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Signed in, and the user belongs to a member. An htmx request whose session has ended is sent to
    the sign-in page as a whole page (HX-Redirect), never as a login form swapped into a panel."""

    @wraps(view)
    def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            if is_htmx(request):
                back = request.htmx.current_url_abs_path or "/"  # type: ignore[attr-defined]
                return HttpResponseClientRedirect(f"{resolve_url(settings.LOGIN_URL)}?{urlencode({'next': back})}")
            return redirect_to_login(request.get_full_path())
        if member_of(request) is None:
            raise Http404("This user belongs to no member organisation.")
        return view(request, *args, **kwargs)

    return guarded


def _safe_next(request: HttpRequest, fallback: str) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()},
                                       require_https=request.is_secure()):
        return target
    return fallback


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


RECENT_TRADES_SHOWN = 20


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    member = member_of(request)
    context: dict[str, Any] = {"member": member}
    if member is not None:
        held = list(selectors.holdings_of(member).order_by("number"))
        labels = {r.pk: receipt_esg_labels(r) for r in held}
        books = selectors.instruments_for_receipts(held, labels)
        context.update(
            roles=[role.get_role_display() for role in member.roles.order_by("role")],
            balances=list(selectors.balances_of(member)),
            receipts=[{"receipt": r, "labels": sorted(labels[r.pk]), "books": books[r.pk]} for r in held],
            closed_receipt_count=Receipt.objects.filter(holder=member).exclude(status__in=OPEN_STATUSES).count(),
            trades=[_own_trade(t, member) for t in selectors.trades_of(member)[:RECENT_TRADES_SHOWN]],
            **_open_orders_context(member),
        )
    return render_page(request, "portal/dashboard.html", context)


def _open_orders_context(member: Member, message: str = "", message_ok: bool = True) -> dict[str, Any]:
    return {"open_orders": _order_rows(selectors.open_orders_of(member)), "orders_message": message,
            "orders_message_ok": message_ok}


def _order_rows(orders: Any) -> list[dict[str, Any]]:
    """Orders with their figures formatted here: a market maker's page lists a hundred orders, and
    Python's format is some fifty times faster than the floatformat filter."""
    rows = []
    for order in orders:
        rows.append({"order": order, "quantity": f"{order.quantity_kg:,.3f}", "filled": f"{order.filled_kg:,.3f}",
                     "price": None if order.price is None else price_text(order.price, order.instrument),
                     "cancel_url": reverse("portal:order-cancel", args=[order.pk])})
    return rows


def _own_trade(trade: Any, member: Member) -> dict[str, Any]:
    bought = trade.buyer_id == member.pk
    return {"trade": trade, "side": "buy" if bought else "sell", "pf": price_format(trade.instrument),
            "fee": trade.buyer_fee if bought else trade.seller_fee,
            # What the trade did to the member's cash: a buyer pays notional + fee, a seller receives
            # notional - fee.
            "cash": -(trade.notional + trade.buyer_fee) if bought else trade.notional - trade.seller_fee}


# --- markets and instruments -------------------------------------------------------------------------

DEPTH_LEVELS = 12
TRADES_SHOWN = 25
DEFAULT_INTERVAL = "1h"
INTERVAL_LABELS = {"1m": "1 minute", "1h": "1 hour", "1d": "1 day"}


def price_places(instrument: Instrument) -> int:
    """Decimals an instrument's prices are shown with: as many as its tick, at least two."""
    exponent = instrument.tick_size.normalize().as_tuple().exponent
    return max(2, -exponent if isinstance(exponent, int) else 2)


def price_format(instrument: Instrument) -> str:
    """floatformat argument for the instrument's prices, grouped in thousands."""
    return f"{price_places(instrument)}g"


def price_text(price: Decimal, instrument: Instrument) -> str:
    return f"{price:,.{price_places(instrument)}f}"


@require_GET
def markets(request: HttpRequest) -> HttpResponse:
    rows = [{**row, "pf": price_format(row["instrument"])} for row in selectors.market_overview()]
    index_rows = selectors.latest_index_per_grade()
    return render_page(request, "portal/markets.html", {"rows": rows, "index_rows": index_rows,
                                                        "index_regional": any(v.regional for v in index_rows)})


def _ladder(book: dict[str, list[dict[str, str]]], instrument: Instrument) -> dict[str, Any]:
    """The depth as a ladder: asks above (best ask nearest the spread), bids below, each level with its
    cumulative quantity and a bar scaled to the deeper side; figures formatted here (polled every 2 s)."""
    def side(levels: list[dict[str, str]]) -> list[dict[str, Any]]:
        total, out = Decimal(0), []
        for level in levels:
            price, quantity = Decimal(level["price"]), Decimal(level["quantity_kg"])
            total += quantity
            out.append({"price": price, "total": total, "price_text": price_text(price, instrument),
                        "quantity": f"{quantity:,.3f}", "total_text": f"{total:,.3f}"})
        return out

    asks, bids = side(book["asks"]), side(book["bids"])
    deepest = max([level["total"] for level in asks + bids] or [Decimal(1)])
    for level in asks + bids:
        level["bar"] = int(level["total"] / deepest * 100)
    spread = price_text(asks[0]["price"] - bids[0]["price"], instrument) if asks and bids else None
    return {"asks": list(reversed(asks)), "bids": bids, "spread": spread}


def _tape(instrument: Instrument) -> list[dict[str, Any]]:
    today = datetime.now(UTC).date()
    return [{"trade": t, "when": tape_time(t.executed_at, today), "price": price_text(t.price, instrument),
             "quantity": f"{t.quantity_kg:,.3f}"}
            for t in selectors.recent_trades(instrument, TRADES_SHOWN)]


def tape_time(at: datetime, today: date) -> str:
    """A trade's time on the tape, in UTC: the time of day for today's trades, the date and minute for older
    ones (a quiet book's last trades may be days old, and must not read as today's)."""
    at = at.astimezone(UTC)
    return f"{at:%H:%M:%S}" if at.date() == today else f"{at:%b} {at.day} {at:%H:%M}"


def _interval(request: HttpRequest) -> str:
    interval = request.GET.get("interval")
    return interval if interval in selectors.CANDLE_INTERVALS else DEFAULT_INTERVAL


def _live_context(instrument: Instrument, interval: str, *, newest_candles: bool = True) -> dict[str, Any]:
    return {
        "instrument": instrument,
        "pf": price_format(instrument),
        "interval": interval,
        "market": selectors.instrument_market(instrument),
        "reference": latest_reference(instrument),
        "trades": _tape(instrument),
        "version": selectors.market_version(instrument),
        # The chart's newest bars, which the chart script applies after each refresh (a full page draws
        # its chart with them already).
        "live_candles": selectors.candles_from_trades(instrument, interval, latest=2) if newest_candles else [],
        **_ladder(selectors.depth(instrument, DEPTH_LEVELS), instrument),
    }


def _candle_rows(candles: list[dict[str, Any]], count: int = 10) -> list[dict[str, Any]]:
    """The latest candles, newest first, for the table that stands in for the chart."""
    return [{**c, "start": datetime.fromtimestamp(c["time"], tz=UTC)} for c in reversed(candles[-count:])]


def _path_value(value: str) -> str:
    """A value from the URL to look up. PostgreSQL refuses a NUL in a text parameter (a DataError, hence a
    500); no code or number holds one, so such a value names nothing."""
    if "\x00" in value:
        raise Http404("No such object.")
    return value


def _instrument(code: str) -> Instrument:
    return get_object_or_404(Instrument.objects.select_related("grade__metal"), code=_path_value(code))


def _ticket_initial(request: HttpRequest) -> dict[str, Any]:
    """A ticket pre-filled from a link (e.g. "Sell" next to a receipt): side, quantity, price."""
    initial: dict[str, Any] = {}
    if request.GET.get("side") in Side.values:
        initial["side"] = request.GET["side"]
    for name in ("quantity_kg", "price"):
        value = request.GET.get(name, "")
        if value and len(value) <= 32:
            initial[name] = value
    return initial


def _my_orders_context(member: Member, instrument: Instrument, message: str = "",
                       message_ok: bool = True) -> dict[str, Any]:
    return {"instrument": instrument, "pf": price_format(instrument),
            "my_orders": _order_rows(selectors.open_orders_of(member).filter(instrument=instrument)),
            "orders_message": message, "orders_message_ok": message_ok}


def _instrument_context(request: HttpRequest, instrument: Instrument, *, ticket: OrderTicketForm | None = None,
                        outcome: str = "") -> dict[str, Any]:
    interval = _interval(request)
    candles = selectors.chart_candles(instrument, interval)
    context: dict[str, Any] = {
        **_live_context(instrument, interval, newest_candles=False),
        "intervals": INTERVAL_LABELS, "candles": candles,
        "candle_rows": _candle_rows(candles),
    }
    member = member_of(request)
    if member is not None:
        context.update(
            ticket=ticket or OrderTicketForm(instrument=instrument, initial=_ticket_initial(request)),
            position=selectors.ticket_position(member, instrument), outcome=outcome,
            **_my_orders_context(member, instrument))
    return context


@require_GET
def instrument_page(request: HttpRequest, code: str) -> HttpResponse:
    instrument = _instrument(code)
    return render_page(request, "portal/instrument.html", _instrument_context(request, instrument))


@require_GET
def instrument_live(request: HttpRequest, code: str) -> HttpResponse:
    """The live panel (market figures, depth, recent trades), polled every 2 s. With the version the
    poller already shows and nothing changed: 204, which htmx leaves alone."""
    instrument = _instrument(code)
    if request.GET.get("v") == selectors.market_version(instrument):
        return HttpResponse(status=204)
    return render_fragment(request, "portal/includes/market_live.html", _live_context(instrument, _interval(request)))


@require_GET
@member_required
def instrument_my_orders(request: HttpRequest, code: str) -> HttpResponse:
    member = member_of(request)
    assert member is not None
    return render_fragment(request, "portal/includes/my_orders.html", _my_orders_context(member, _instrument(code)))


def order_outcome(result: OrderResult) -> str:
    """One sentence on what an accepted order did."""
    order = result.order
    currency = order.instrument.currency
    what = (f"Order O{order.pk}: {order.get_side_display().lower()} {order.quantity_kg:,.3f} kg "
            + (f"at {price_text(order.price, order.instrument)} {currency}/kg" if order.price is not None
               and order.order_type == OrderType.LIMIT else "at market") + f" ({order.tif})")
    if result.replayed:
        return f"{what} was already placed by this ticket; nothing new was sent."
    filled = sum((t.quantity_kg for t in result.trades), Decimal(0))
    parts = [what]
    if result.trades:
        average = sum((t.quantity_kg * t.price for t in result.trades), Decimal(0)) / filled
        parts.append(f"filled {filled:,.3f} kg in {len(result.trades)} trade{'s' if len(result.trades) != 1 else ''}"
                     f" at {price_text(average, order.instrument)} {currency}/kg on average")
    states: dict[str, str] = {
        OrderStatus.OPEN: "resting on the book",
        OrderStatus.PARTIALLY_FILLED: f"{order.remaining_kg:,.3f} kg resting on the book",
        OrderStatus.FILLED: "fully filled",
        OrderStatus.EXPIRED: "the unfilled rest expired" if result.trades else "nothing matched; it expired",
        OrderStatus.CANCELLED: "cancelled",
    }
    parts.append(states.get(str(order.status), str(order.status)))
    if result.cancelled_order_ids:
        count = len(result.cancelled_order_ids)
        parts.append(f"{count} of your resting order{'s' if count != 1 else ''} on the other side "
                     f"{'were' if count != 1 else 'was'} cancelled (self-trade prevention)")
    return "; ".join(parts) + "."


@require_POST
@member_required
def order_place_view(request: HttpRequest, code: str) -> HttpResponse:
    """The order ticket: order_place with the ticket's client_order_id, so a second submit of the same
    ticket (double click, retry) replays the first order instead of placing another."""
    member = member_of(request)
    assert member is not None
    instrument = _instrument(code)
    form = OrderTicketForm(request.POST, instrument=instrument)
    status, outcome, result = 400, "", None
    if form.is_valid():
        try:
            result = order_place(member=member, instrument=instrument, **form.order_arguments())
        except ApplicationError as exc:
            status = exc.status
            if exc.code == "client_order_id_reused":
                # This ticket already placed an order (its answer was lost) and was then changed: give it
                # a fresh id, so submitting again places the changed order as a new one.
                data = request.POST.copy()
                data["client_order_id"] = new_client_order_id()
                form = OrderTicketForm(data, instrument=instrument)
                form.is_valid()
                form.add_error(None, "This ticket already placed an order (see your open orders below) and its "
                                     "figures have changed since. Check them and submit again to place a new order.")
            else:
                form.add_refusal(exc)
        else:
            status, outcome, form = 200, order_outcome(result), form.next_ticket()
    if not is_htmx(request):
        if result is not None:
            messages.success(request, outcome)
            return redirect("portal:instrument", code=instrument.code)
        return render_page(request, "portal/instrument.html",
                           _instrument_context(request, instrument, ticket=form), status=status)
    response = render_fragment(request, "portal/includes/order_ticket.html", {
        "instrument": instrument, "pf": price_format(instrument), "ticket": form, "outcome": outcome,
        "position": selectors.ticket_position(member, instrument)}, status=status)
    if result is not None:
        trigger_client_event(response, "order-placed")
    return response


CANCEL_REGIONS = ("dashboard", "instrument")


@require_POST
@member_required
def order_cancel_view(request: HttpRequest, pk: int) -> HttpResponse:
    """Cancel one of the member's orders; answer with the orders panel it sits in (`region`)."""
    member = member_of(request)
    assert member is not None
    try:
        order = order_cancel(member=member, order_id=pk)
    except ApplicationError as exc:
        message, ok, status = exc.message, False, exc.status
    else:
        released = (f"{order.remaining_kg:,.3f} kg of receipts released" if order.side == Side.SELL
                    else "its cash hold released")
        message, ok, status = f"Order O{order.pk} cancelled; {released}.", True, 200
    region = request.POST.get("region")
    if is_htmx(request) and region in CANCEL_REGIONS:
        if region == "instrument":
            context = _my_orders_context(member, _instrument(request.POST.get("instrument", "")), message, ok)
            template = "portal/includes/my_orders.html"
        else:
            context, template = _open_orders_context(member, message, ok), "portal/includes/open_orders.html"
        response = render_fragment(request, template, context, status=status)
        if ok:
            trigger_client_event(response, "order-cancelled")
        return response
    (messages.success if ok else messages.error)(request, message)
    return HttpResponseRedirect(_safe_next(request, reverse("portal:dashboard")))


# --- receipts ------------------------------------------------------------------------------------------


def _visible_receipt(member: Member, number: str) -> Receipt:
    """The holder and the warehouse operator see a receipt; for anyone else it does not exist (404)."""
    return get_object_or_404(receipts_visible_to(member), number=_path_value(number))


EVENT_TITLES = {"split_from": "Split from", "withdrawal_requested": "Withdrawal requested",
                "withdrawal_cancelled": "Withdrawal cancelled"}


def event_summary(kind: str, data: dict[str, Any]) -> str:
    """What a chain event recorded, from its signed data (the page shows the kind before it)."""
    def get(name: str) -> str:
        return str(data.get(name, "?"))

    trade = f" (trade {data['trade']})" if data.get("trade") else ""
    if kind == "issued":
        grade = data.get("grade") or "non-standard"
        return f"{get('quantity')} kg of {get('metal')} {grade} in {get('warehouse')}, to {get('holder')}"
    if kind == "split":
        listed = data.get("children")
        children: list[Any] = listed if isinstance(listed, list) else []
        parts = "; ".join(f"{c.get('receipt')}: {c.get('quantity')} kg to {c.get('holder')}"
                          for c in children if isinstance(c, dict))
        return f"into {parts}{trade}"
    return {
        "split_from": f"part of {get('parent')}: {get('quantity')} kg to {get('holder')}",
        "transferred": f"{get('quantity')} kg from {get('from')} to {get('to')}{trade}",
        "encumbered": f"by sell order {get('order')}",
        "released": f"by order {get('order')}",
        "pledged": f"to {get('lender')} (loan {get('loan')})",
        "unpledged": f"by lender {get('lender')} (loan {get('loan')})",
        "frozen": get("reason"),
        "unfrozen": get("reason"),
        "withdrawal_requested": get("withdrawal"),
        "withdrawal_cancelled": get("withdrawal"),
        "withdrawn": f"{get('quantity')} kg delivered out of the warehouse",
    }.get(kind, "")


# Refusals that come from export control (a licence), as opposed to the member's standing (KYC, sanctions).
EXPORT_CONTROL_CODES = frozenset({compliance_errors.EXPORT_LICENCE_REQUIRED, compliance_errors.LICENCE_EXHAUSTED,
                                  compliance_errors.LICENCE_NOT_APPROVED, compliance_errors.LICENCE_NOT_VALID})


def _receipt_context(member: Member, receipt: Receipt, *, form: WithdrawalRequestForm | None = None,
                     refusal: ApplicationError | None = None) -> dict[str, Any]:
    proof = selectors.receipt_proof(receipt)
    esg = receipt_esg_report(receipt)
    for chain in proof.chains:
        for event in chain["events"]:
            event["summary"] = event_summary(event["kind"], event["data"])
            event["when"] = parse_utc(event["at"])
            event["title"] = EVENT_TITLES.get(event["kind"], event["kind"].replace("_", " ").capitalize())
    is_holder = receipt.holder_id == member.pk
    return {
        "receipt": receipt, "proof": proof, "lot": proof.bundle["lot"], "grade_spec": proof.bundle["grade_spec"],
        "is_holder": is_holder,
        "esg": esg,
        "books": selectors.instruments_for_receipts([receipt], {receipt.pk: frozenset(esg["labels"])})[receipt.pk]
        if is_holder else [],
        "can_withdraw": is_holder and receipt.status == ReceiptStatus.ACTIVE,
        "withdrawal_form": form or WithdrawalRequestForm(),
        "refusal": refusal,
        "export_refusal": refusal is not None and refusal.code in EXPORT_CONTROL_CODES,
    }


@require_GET
@member_required
def receipt_page(request: HttpRequest, number: str) -> HttpResponse:
    member = member_of(request)
    assert member is not None
    receipt = _visible_receipt(member, number)
    return render_page(request, "portal/receipt.html", _receipt_context(member, receipt))


@require_GET
@member_required
def receipt_bundle_download(request: HttpRequest, number: str) -> HttpResponse:
    """The bundle as a file: its canonical (RFC 8785) bytes, the same the API serves."""
    member = member_of(request)
    assert member is not None
    receipt = _visible_receipt(member, number)
    response = HttpResponse(bundle_bytes(receipt_bundle(receipt)), content_type="application/json")
    response["Content-Disposition"] = f'attachment; filename="{receipt.number}.bundle.json"'
    return response


@require_POST
@member_required
def receipt_withdrawal(request: HttpRequest, number: str) -> HttpResponse:
    """The holder asks to take the metal out. As the API does: export control is checked and an export
    licence drawn down, then the receipt records the request, in one transaction (a refusal draws
    nothing). A refusal is shown with its code and the reason compliance gave."""
    member = member_of(request)
    assert member is not None
    receipt = get_object_or_404(selectors.holdings_of(member), number=_path_value(number))
    form = WithdrawalRequestForm(request.POST)
    refusal: ApplicationError | None = None
    status = 400
    if form.is_valid():
        destination = form.cleaned_data["destination_country"]
        try:
            _, reason = withdrawal_request(member=member, receipt=receipt, destination_country=destination)
        except ComplianceRefused as exc:
            refusal, status = exc, exc.status
        except ApplicationError as exc:
            form.add_error(None, exc.message)
            status = exc.status
        else:
            messages.success(request, f"Withdrawal of {receipt.number} to {destination} requested. Export control: "
                                      f"{reason.rstrip('.')}. The warehouse completes it when the metal "
                                      "leaves.")
            return redirect("portal:receipt", number=receipt.number)
        receipt.refresh_from_db()
    return render_page(request, "portal/receipt.html",
                       _receipt_context(member, receipt, form=form, refusal=refusal), status=status)


# --- index ---------------------------------------------------------------------------------------------

METHODOLOGY = Path(__file__).resolve().parent / "METHODOLOGY.md"


@require_GET
def index_page(request: HttpRequest) -> HttpResponse:
    """The daily spot index per grade (trading.pricing_selectors.index_history) and the methodology. A
    grade with no published value yet shows its standard book's daily trade candles, labelled as such."""
    from trading.pricing_selectors import index_history

    grades = selectors.index_grades()
    chosen = next((g for g in grades if g.code == request.GET.get("grade")), None)
    if chosen is None and grades:
        published = {v.grade_id for v in selectors.latest_index_per_grade()}
        chosen = next((g for g in grades if g.pk in published), grades[0])
    values = index_history(chosen, limit=366) if chosen else []
    rows = list(reversed(values[-10:]))
    selectors.attach_regional(rows)
    context: dict[str, Any] = {
        "grades": grades, "chosen": chosen, "index_points": selectors.index_series(values),
        "index_rows": rows, "latest": rows[0] if rows else None, "methodology": methodology_html(), "candles": [],
    }
    if chosen is not None and not values:
        book = Instrument.objects.filter(grade=chosen, esg_class="").order_by("code").first()
        if book is not None:
            candles = selectors.chart_candles(book, "1d")
            context.update(book=book, candles=candles, candle_rows=_candle_rows(candles), pf=price_format(book))
    return render_page(request, "portal/index.html", context)


def methodology_html() -> str:
    stat = METHODOLOGY.stat()
    return _methodology_html(stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=2)
def _methodology_html(mtime_ns: int, size: int) -> str:  # the key makes an edited file re-render
    return markdown_to_html(METHODOLOGY.read_text(encoding="utf-8"))


_TABLE_RULE = re.compile(r"^\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")
_LIST_ITEM = re.compile(r"^(\s*)([-*]|\d+\.)\s+(.*)$")
_HEADING = re.compile(r"^(#{1,4})\s+(.*?)\s*#*\s*$")


def _inline(text: str) -> str:
    """Escaped text with `code` and **bold**; nothing else is interpreted (a formula's * stays a *)."""
    spans: list[str] = []

    def stash(match: re.Match[str]) -> str:
        spans.append(f"<code>{html.escape(match.group(1))}</code>")
        return f"\x00{len(spans) - 1}\x00"

    text = html.escape(re.sub(r"`([^`]+)`", stash, text))
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub("\x00(\\d+)\x00", lambda m: spans[int(m.group(1))], text)


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def markdown_to_html(text: str) -> str:
    """The subset of Markdown METHODOLOGY.md is written in: headings, paragraphs, bullet and numbered
    lists (with indented continuation lines), pipe tables, indented code blocks, rules, `code` and
    **bold**. Everything is HTML-escaped first; no new dependency for one page."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
        elif heading := _HEADING.match(line):
            level = min(len(heading.group(1)) + 1, 5)  # the page has its own h1
            title = heading.group(2)
            slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
            out.append(f'<h{level} id="m-{slug}">{_inline(title)}</h{level}>')
            i += 1
        elif re.fullmatch(r"\s*(-{3,}|\*{3,})\s*", line):
            out.append("<hr>")
            i += 1
        elif line.startswith("    "):
            block = []
            while i < len(lines) and (lines[i].startswith("    ") or not lines[i].strip()):
                block.append(lines[i][4:])
                i += 1
            out.append(f"<pre><code>{html.escape(chr(10).join(block).strip(chr(10)))}</code></pre>")
        elif line.lstrip().startswith("|") and i + 1 < len(lines) and _TABLE_RULE.match(lines[i + 1]):
            head = "".join(f'<th scope="col">{_inline(c)}</th>' for c in _cells(line))
            rows = []
            i += 2
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                rows.append("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in _cells(lines[i])) + "</tr>")
                i += 1
            out.append(f'<div class="table-scroll"><table class="data-table md-table"><thead><tr>{head}</tr></thead>'
                       f"<tbody>{''.join(rows)}</tbody></table></div>")
        elif (item := _LIST_ITEM.match(line)) and not item.group(1):
            ordered = item.group(2)[0].isdigit()
            items: list[str] = []
            while i < len(lines):
                current = _LIST_ITEM.match(lines[i])
                if current and len(current.group(1)) == 0:
                    items.append(current.group(3))
                elif lines[i].startswith(" ") and lines[i].strip() and items:
                    items[-1] += " " + lines[i].strip()  # a continuation line of the item
                else:
                    break
                i += 1
            tag = "ol" if ordered else "ul"
            out.append(f"<{tag}>" + "".join(f"<li>{_inline(x)}</li>" for x in items) + f"</{tag}>")
        else:
            paragraph = [line.strip()]
            i += 1
            while i < len(lines) and lines[i].strip() and not (
                    _HEADING.match(lines[i]) or _LIST_ITEM.match(lines[i]) or lines[i].startswith("    ")
                    or lines[i].lstrip().startswith("|")):
                paragraph.append(lines[i].strip())
                i += 1
            out.append(f"<p>{_inline(' '.join(paragraph))}</p>")
    return "\n".join(out)


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
