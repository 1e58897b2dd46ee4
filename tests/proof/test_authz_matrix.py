"""Authorization matrix: every endpoint x every role, with the status each cell must answer.

Roles: anonymous, trader, warehouse, assay lab, compliance officer (staff user, no member). Every
member-role cell is tried twice: on the acting member's own object ("own") and on the same object kind
of the other member of that role ("other"), which must be a 404, never a 403 or a 200.

The endpoint list is derived from the URL resolver (API and portal) and cross-checked with the OpenAPI
schema: an endpoint (or a method of one) without a row here fails `test_every_endpoint_has_a_matrix_row`.
Each cell runs in a savepoint that is rolled back, so cells never see each other's effects.

The admin console is covered by its own rule (every admin URL, no access without a verified second
factor) in `test_admin_urls_need_a_verified_second_factor`.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from django.db import transaction
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone

from members.models import Member
from receipts.canonical import utc_stamp
from receipts.models import Lot, Receipt, ReceiptStatus
from receipts.selectors import receipt_bundle
from tests.conftest import MemberClient
from tests.factories.members import new_public_key
from tests.factories.receipts import Signer, assay_document
from tests.proof.record import record
from tests.proof.world import Actor, ApiWorld, build_api_world
from trading.models import LIVE_ORDER_STATUSES, Order

pytestmark = pytest.mark.django_db

ROLES = ("anonymous", "trader", "warehouse", "assay_lab", "officer")
MEMBER_ROLES = ("trader", "warehouse", "assay_lab")
_n = itertools.count(1)


# --- the objects a cell acts on ---------------------------------------------------------------------------

@dataclass
class Ctx:
    world: ApiWorld

    def actor(self, role: str, tag: str = "A") -> Actor:
        return self.world.actors[f"{role}_{tag}"]

    def member(self, role: str, tag: str) -> Member:
        member = self.actor(role, tag).member
        assert member is not None
        return member

    # Each kind: the object of member `role`+`tag`, or, for a role that owns none of that kind, the object
    # of the member that does (trader or warehouse of that tag), so every role is tried on a real object.
    def receipt(self, role: str, tag: str, status: str = ReceiptStatus.ACTIVE) -> str:
        receipts = Receipt.objects.filter(status=status).order_by("number")
        if role == "warehouse":
            receipts = receipts.filter(lot__warehouse__operator=self.member("warehouse", tag))
        else:
            receipts = receipts.filter(holder=self.member("trader", tag))
        found = receipts.first()
        assert found is not None, (role, tag, status)
        return found.number

    def warehouse(self, role: str, tag: str) -> str:
        return self.world.worlds[tag].warehouse.code

    def lot(self, role: str, tag: str) -> int:
        """A graded lot with nothing receipted on it (the spare lot of that tag's warehouse)."""
        lot = Lot.objects.filter(warehouse=self.world.worlds[tag].warehouse, receipts__isnull=True).first()
        assert lot is not None
        return lot.pk

    def order(self, role: str, tag: str) -> int:
        order = Order.objects.filter(member=self.member("trader", tag), status__in=LIVE_ORDER_STATUSES).first()
        assert order is not None
        return order.pk

    def owned(self, kind: str, role: str, tag: str) -> Any:
        owner = self.actor(role if role in MEMBER_ROLES else "trader", tag)
        values = owner.owns.get(kind) or self.actor("trader", tag).owns[kind]
        return values[0]


# --- rows -----------------------------------------------------------------------------------------------

Path = Callable[[Ctx, str, str], str]  # (ctx, acting role, owner tag) -> path
Body = Callable[[Ctx, str, str], Any]


@dataclass
class Row:
    method: str
    route: str  # the resolver's route, e.g. "api/v1/receipts/<receipt:number>"
    expect: dict[str, int]  # role -> status on the role's own object (or for a request without one)
    path: Path | None = None  # None: the route itself
    body: Body | None = None
    other: bool = False  # acting on another member's object: 404 for every member role
    other_expect: dict[str, int] = field(default_factory=dict)  # exceptions to that 404, each explained
    portal: bool = False  # session login instead of a token; portal pages answer 302 to anonymous
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str]:
        return self.method, self.route


def public(status: int = 200) -> dict[str, int]:
    return dict.fromkeys(ROLES, status)


def members_only(status: int, **per_role: int) -> dict[str, int]:
    """Member endpoints: anonymous 401 (not authenticated), officer 403 (`no_member`: no member to act for)."""
    return {"anonymous": 401, "officer": 403, **dict.fromkeys(MEMBER_ROLES, status), **per_role}


def portal_member_page(status: int, **per_role: int) -> dict[str, int]:
    """Portal pages behind member_required: anonymous to the sign-in page, an officer (no member) 404."""
    return {"anonymous": 302, "officer": 404, **dict.fromkeys(MEMBER_ROLES, status), **per_role}


def _key_body(ctx: Ctx, role: str, tag: str) -> dict[str, Any]:
    return {"public_key": new_public_key(), "label": "matrix"}


def _lot_body(ctx: Ctx, role: str, tag: str) -> dict[str, Any]:
    return {"metal": "Ga", "form": "ingot", "net_mass_kg": "10.000", "package_count": 1, "brand": "MATRIX",
            "batch_number": f"MX{next(_n):05d}", "production_date": "2026-01-02", "location": "A1",
            "depositor": ctx.member("trader", tag).legal_id}


def _reading_body(ctx: Ctx, role: str, tag: str) -> dict[str, Any]:
    return {"location": "A1", "observed_at": utc_stamp(timezone.now()), "temperature_c": "20.00",
            "humidity_pct": "40.00", "seal_intact": True}


def _statement_body(ctx: Ctx, role: str, tag: str) -> dict[str, Any]:
    """Signed by a fresh key of the acting member (a warehouse signs its own statements)."""
    world = ctx.world.worlds[tag]
    document = {"type": "stock_statement", "warehouse": world.warehouse.code,
                "asOf": utc_stamp(timezone.now() - timedelta(seconds=next(_n))), "lots": []}
    actor = ctx.actor(role if role in MEMBER_ROLES else "trader", "A")
    assert actor.member is not None
    return {"document": document, "signature": Signer(actor.member).sign(document)}


def _attestation_body(ctx: Ctx, role: str, tag: str) -> dict[str, Any]:
    """An assay of the lot signed by lab A: lab A submits what it signed itself, the warehouse operator may
    submit what a lab signed for its lot, anyone else (a trader, another warehouse) signed nothing here."""
    lot = Lot.objects.get(pk=ctx.lot(role, tag))
    lab = ctx.world.worlds["A"]
    document = assay_document(lot, lab.lab)
    return {"kind": "assay", "document": document, "signature": lab.lab_signer.sign(document)}


def _withdrawal_body(ctx: Ctx, role: str, tag: str) -> dict[str, Any]:
    """A verifier the lot's operator nominated for its footprint and that has attested nothing yet."""
    from receipts.services import lot_nominate
    from tests.factories.members import MemberFactory

    lot = Lot.objects.get(pk=ctx.lot(role, tag))
    verifier = MemberFactory(roles=["verifier"])
    lot_nominate(lot=lot, by=ctx.world.worlds[tag].operator, member=verifier, kinds=["carbon_footprint"])
    return {"member": verifier.legal_id, "kinds": ["carbon_footprint"]}


def _order_body(ctx: Ctx, role: str, tag: str) -> dict[str, Any]:
    return {"instrument": ctx.world.instrument.code, "side": "buy", "order_type": "limit", "tif": "GTC",
            "quantity_kg": "1", "price": "575.00", "client_order_id": f"mx-{next(_n)}"}


def _declaration_body(ctx: Ctx, role: str, tag: str) -> dict[str, Any]:
    today = timezone.localdate()
    return {"metal": "Ga", "end_user": "Matrix GmbH", "end_use": "test", "destination_country": "DE",
            "valid_from": str(today), "valid_to": str(today + timedelta(days=30))}


def _licence_body(ctx: Ctx, role: str, tag: str) -> dict[str, Any]:
    return {**_declaration_body(ctx, role, tag), "licence_number": f"LIC-MX-{next(_n)}",
            "quantity_cap_kg": "10.000", "consignee": "Matrix GmbH"}


def _bundle_body(ctx: Ctx, role: str, tag: str) -> dict[str, Any]:
    return receipt_bundle(Receipt.objects.get(number=ctx.receipt("trader", "A")))


INSTR = "GA-6N-CN"

API_ROWS: list[Row] = [
    # Public: anyone, signed in or not.
    Row("GET", "healthz", public()),
    Row("GET", ".well-known/jwks.json", public()),
    Row("GET", "api/schema/", public()),
    Row("GET", "api/docs/", public()),
    Row("POST", "api/v1/receipts/verify", public(), body=_bundle_body),
    Row("GET", "api/v1/instruments", public()),
    Row("GET", "api/v1/instruments/<str:code>", public(), path=lambda c, r, t: f"api/v1/instruments/{INSTR}"),
    Row("GET", "api/v1/instruments/<str:code>/depth", public(),
        path=lambda c, r, t: f"api/v1/instruments/{INSTR}/depth"),
    Row("GET", "api/v1/instruments/<str:code>/trades", public(),
        path=lambda c, r, t: f"api/v1/instruments/{INSTR}/trades"),
    # No reference price is computed in this world: 404 `no_reference`, to everyone alike.
    Row("GET", "api/v1/instruments/<str:code>/reference", public(404),
        path=lambda c, r, t: f"api/v1/instruments/{INSTR}/reference"),
    Row("GET", "api/v1/instruments/<str:code>/candles", public(),
        path=lambda c, r, t: f"api/v1/instruments/{INSTR}/candles"),
    Row("GET", "api/v1/factors/<str:factor>/observations", public(),
        path=lambda c, r, t: "api/v1/factors/aluminium_price/observations"),
    Row("GET", "api/v1/index/methodology", public()),
    Row("GET", "api/v1/index/<str:grade>", public(), path=lambda c, r, t: "api/v1/index/GA-6N"),
    # Token: each identity posts its own credentials; anonymous has none that work.
    Row("POST", "api/v1/auth/token", {**public(200), "anonymous": 400},
        body=lambda c, r, t: ({"username": c.actor(r, t).user.username, "password": "test-password-123"}
                              if r != "anonymous" else {"username": "nobody", "password": "wrong-password"})),
    # Member endpoints.
    Row("GET", "api/v1/members/me", members_only(200)),
    Row("GET", "api/v1/members/me/keys", members_only(200)),
    Row("POST", "api/v1/members/me/keys", members_only(201), body=_key_body),
    Row("POST", "api/v1/members/me/keys/<str:kid>/revoke", members_only(200), other=True,
        path=lambda c, r, t: f"api/v1/members/me/keys/{c.owned('key', r, t)}/revoke",
        body=lambda c, r, t: {"reason": "matrix"}),
    # Only the platform's desk or a reserve agency publishes factor data.
    Row("POST", "api/v1/factors/observations", members_only(403),
        body=lambda c, r, t: {"factor": "aluminium_price", "observed_at": "2026-01-05", "value": "2400",
                              "unit": "USD/t", "source": "matrix"}),
    Row("GET", "api/v1/warehouses", members_only(200)),
    # A warehouse acts on its own warehouse; to anyone else another's warehouse does not exist.
    Row("POST", "api/v1/warehouses/<str:code>/lots", members_only(404, warehouse=201), other=True,
        path=lambda c, r, t: f"api/v1/warehouses/{c.warehouse(r, t)}/lots", body=_lot_body),
    Row("POST", "api/v1/warehouses/<str:code>/readings", members_only(404, warehouse=201), other=True,
        path=lambda c, r, t: f"api/v1/warehouses/{c.warehouse(r, t)}/readings", body=_reading_body),
    Row("GET", "api/v1/warehouses/<str:code>/stock-statements", members_only(404, warehouse=200), other=True,
        path=lambda c, r, t: f"api/v1/warehouses/{c.warehouse(r, t)}/stock-statements"),
    Row("POST", "api/v1/warehouses/<str:code>/stock-statements", members_only(404, warehouse=201), other=True,
        path=lambda c, r, t: f"api/v1/warehouses/{c.warehouse(r, t)}/stock-statements", body=_statement_body),
    Row("GET", "api/v1/lots", members_only(200)),
    # The operator and the depositor (trader) see a lot; a lab does not (it signs, it does not look up).
    Row("GET", "api/v1/lots/<int:pk>", members_only(200, assay_lab=404), other=True,
        path=lambda c, r, t: f"api/v1/lots/{c.lot(r, t)}"),
    # The operator may attach what a lab signed; a lab may attach what it signed itself, but only to a lot
    # whose warehouse nominated it (finding F-ATT, closed by nominations): on the other warehouse's lot lab A
    # signed the assay, so the lot is not hidden from it, and it is refused 400 signer_not_nominated. A
    # trader that signed nothing gets 404.
    Row("POST", "api/v1/lots/<int:pk>/attestations", members_only(404, warehouse=201, assay_lab=201),
        other=True, other_expect={"assay_lab": 400},
        path=lambda c, r, t: f"api/v1/lots/{c.lot(r, t)}/attestations", body=_attestation_body),
    # Who may attest a lot: read by whoever sees the lot; nominations made and withdrawn by its operator only
    # (the depositor sees the lot but is not its operator: 403 not_warehouse_operator).
    Row("GET", "api/v1/lots/<int:pk>/nominations", members_only(200, assay_lab=404), other=True,
        path=lambda c, r, t: f"api/v1/lots/{c.lot(r, t)}/nominations"),
    Row("POST", "api/v1/lots/<int:pk>/nominations", members_only(404, warehouse=201, trader=403), other=True,
        path=lambda c, r, t: f"api/v1/lots/{c.lot(r, t)}/nominations",
        body=lambda c, r, t: {"member": c.world.worlds[t].lab.legal_id, "kinds": ["assay"]}),
    Row("POST", "api/v1/lots/<int:pk>/nominations/withdraw", members_only(404, warehouse=200, trader=403),
        other=True, path=lambda c, r, t: f"api/v1/lots/{c.lot(r, t)}/nominations/withdraw",
        body=_withdrawal_body),
    # The depositor sees its lot but is not its operator: 403 not_warehouse_operator.
    Row("POST", "api/v1/lots/<int:pk>/grade", members_only(404, warehouse=200, trader=403), other=True,
        path=lambda c, r, t: f"api/v1/lots/{c.lot(r, t)}/grade"),
    Row("POST", "api/v1/lots/<int:pk>/receipts", members_only(404, warehouse=201, trader=403), other=True,
        path=lambda c, r, t: f"api/v1/lots/{c.lot(r, t)}/receipts",
        body=lambda c, r, t: {"holder": c.member("trader", t).legal_id, "quantity_kg": "10.000"}),
    Row("GET", "api/v1/receipts", members_only(200)),
    # Holder and operator see a receipt; nobody else.
    Row("GET", "api/v1/receipts/<receipt:number>", members_only(200, assay_lab=404), other=True,
        path=lambda c, r, t: f"api/v1/receipts/{c.receipt(r, t)}"),
    Row("GET", "api/v1/receipts/<receipt:number>/bundle", members_only(200, assay_lab=404), other=True,
        path=lambda c, r, t: f"api/v1/receipts/{c.receipt(r, t)}/bundle"),
    Row("GET", "api/v1/compliance/receipts/<receipt:number>/esg", members_only(200, assay_lab=404), other=True,
        path=lambda c, r, t: f"api/v1/compliance/receipts/{c.receipt(r, t)}/esg"),
    # The holder sees the receipt but only its warehouse completes a withdrawal: 403 for the holder.
    Row("POST", "api/v1/receipts/<receipt:number>/withdrawal/complete",
        members_only(404, warehouse=200, trader=403), other=True,
        path=lambda c, r, t: f"api/v1/receipts/{c.receipt(r, t, ReceiptStatus.WITHDRAWAL_REQUESTED)}"
                             "/withdrawal/complete"),
    Row("GET", "api/v1/orders", members_only(200)),
    # Any approved member may trade (DESIGN §4: KYC, not a role, gates trading); a warehouse or a lab has
    # no cash, so its buy is refused for funds (409 insufficient_cash), not for who it is.
    Row("POST", "api/v1/orders", members_only(201, warehouse=409, assay_lab=409), body=_order_body),
    Row("GET", "api/v1/orders/<int:pk>", members_only(404, trader=200), other=True,
        path=lambda c, r, t: f"api/v1/orders/{c.order(r, t)}"),
    Row("POST", "api/v1/orders/<int:pk>/cancel", members_only(404, trader=200), other=True,
        path=lambda c, r, t: f"api/v1/orders/{c.order(r, t)}/cancel"),
    Row("GET", "api/v1/trades/mine", members_only(200)),
    Row("GET", "api/v1/balances", members_only(200)),
    Row("GET", "api/v1/holdings", members_only(200)),
    # Only the holder asks to withdraw; a warehouse does not hold the receipts it stores.
    Row("POST", "api/v1/holdings/<receipt:number>/withdrawal", members_only(404, trader=201), other=True,
        path=lambda c, r, t: f"api/v1/holdings/{c.receipt(r, t)}/withdrawal",
        body=lambda c, r, t: {"destination_country": "CN"}),
    Row("GET", "api/v1/compliance/end-use-declarations", members_only(200)),
    Row("POST", "api/v1/compliance/end-use-declarations", members_only(201), body=_declaration_body),
    Row("GET", "api/v1/compliance/end-use-declarations/<int:pk>", members_only(404, trader=200), other=True,
        path=lambda c, r, t: f"api/v1/compliance/end-use-declarations/{c.owned('declaration', r, t)}"),
    Row("GET", "api/v1/compliance/export-licences", members_only(200)),
    Row("POST", "api/v1/compliance/export-licences", members_only(201), body=_licence_body),
    Row("GET", "api/v1/compliance/export-licences/<int:pk>", members_only(404, trader=200), other=True,
        path=lambda c, r, t: f"api/v1/compliance/export-licences/{c.owned('licence', r, t)}"),
]

HTMX = {"HTTP_HX_REQUEST": "true"}

PORTAL_ROWS: list[Row] = [
    Row("GET", "", {**public(200), "anonymous": 302}, portal=True),
    # Signed in already: on to the dashboard.
    Row("GET", "login/", {**public(302), "anonymous": 200}, portal=True),
    Row("POST", "logout/", public(302), portal=True),
    Row("GET", "verify/", public(200), portal=True),
    Row("GET", "markets/", public(200), portal=True),
    Row("GET", "markets/<str:code>/", public(200), portal=True, path=lambda c, r, t: f"markets/{INSTR}/"),
    Row("GET", "markets/<str:code>/live/", public(200), portal=True, path=lambda c, r, t: f"markets/{INSTR}/live/"),
    Row("GET", "markets/<str:code>/my-orders/", portal_member_page(200), portal=True,
        path=lambda c, r, t: f"markets/{INSTR}/my-orders/"),
    # Non-htmx success redirects to the instrument page; a refused buy (no cash) re-renders with its status.
    Row("POST", "markets/<str:code>/orders/", portal_member_page(302, warehouse=409, assay_lab=409), portal=True,
        path=lambda c, r, t: f"markets/{INSTR}/orders/",
        body=lambda c, r, t: {"side": "buy", "order_type": "limit", "tif": "GTC", "quantity_kg": "1",
                              "price": "575.00", "client_order_id": f"mx-portal-{next(_n)}"}),
    # htmx so the refusal shows as a status (the plain form redirects with a message either way); an htmx
    # request without a session gets 200 with HX-Redirect to the sign-in page (htmx's way of redirecting).
    Row("POST", "orders/<int:pk>/cancel/", portal_member_page(404, trader=200, anonymous=200), other=True,
        portal=True,
        headers=HTMX, path=lambda c, r, t: f"orders/{c.order(r, t)}/cancel/",
        body=lambda c, r, t: {"region": "dashboard"}),
    Row("GET", "receipts/<receipt:number>/", portal_member_page(200, assay_lab=404), other=True, portal=True,
        path=lambda c, r, t: f"receipts/{c.receipt(r, t)}/"),
    Row("GET", "receipts/<receipt:number>/bundle.json", portal_member_page(200, assay_lab=404), other=True,
        portal=True, path=lambda c, r, t: f"receipts/{c.receipt(r, t)}/bundle.json"),
    Row("POST", "receipts/<receipt:number>/withdrawal/", portal_member_page(404, trader=302), other=True,
        portal=True, path=lambda c, r, t: f"receipts/{c.receipt(r, t)}/withdrawal/",
        body=lambda c, r, t: {"destination_country": "CN"}),
    Row("GET", "index/", public(200), portal=True),
]

ROWS = API_ROWS + PORTAL_ROWS


# --- the endpoints the application has ----------------------------------------------------------------

def _walk(patterns: list[URLPattern | URLResolver], prefix: str = "") -> Iterator[tuple[str, URLPattern]]:
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _walk(pattern.url_patterns, prefix + str(pattern.pattern))
        else:
            yield prefix + str(pattern.pattern), pattern


def _methods(pattern: URLPattern) -> set[str]:
    view_class = getattr(pattern.callback, "view_class", None) or getattr(pattern.callback, "cls", None)
    if view_class is None:
        return set()
    return {m.upper() for m in ("get", "post", "put", "patch", "delete") if hasattr(view_class, m)}


def resolver_endpoints() -> tuple[set[tuple[str, str]], set[str]]:
    """(method, route) of every class-based API view, and the route of every portal page (function views
    declare their methods by decorator, so a portal row is matched on its route). The admin is separate."""
    api: set[tuple[str, str]] = set()
    portal: set[str] = set()
    for route, pattern in _walk(get_resolver().url_patterns):
        if route.startswith("admin/"):
            continue
        if route.startswith("api/") or route in {"healthz", ".well-known/jwks.json"}:
            api.update((method, route) for method in _methods(pattern))
        else:
            portal.add(route)
    return api, portal


def _schema_key(method: str, path: str) -> tuple[str, str]:
    import re

    return method.upper(), re.sub(r"\{[^}]+\}", "{}", path.lstrip("/"))


def _route_key(method: str, route: str) -> tuple[str, str]:
    import re

    return method.upper(), re.sub(r"<(?:[^>:]+:)?[^>]+>", "{}", route)


# The portal's login form takes a POST too (row: GET), and its logout view a GET that Django answers 405.
PORTAL_ROUTE_METHODS_NOT_ROWED = {("POST", "login/"), ("GET", "logout/")}


def test_every_endpoint_has_a_matrix_row() -> None:
    api, portal = resolver_endpoints()
    api_rows = {row.key for row in API_ROWS}
    portal_rows = {row.route for row in PORTAL_ROWS}
    assert sorted(api - api_rows) == [], "API endpoints without a row: add one to API_ROWS in " + __file__
    assert sorted(api_rows - api) == [], "matrix rows for API endpoints that no longer exist"
    assert sorted(portal - portal_rows) == [], "portal pages without a row: add one to PORTAL_ROWS in " + __file__
    assert sorted(portal_rows - portal) == [], "matrix rows for portal pages that no longer exist"

    # And the schema documents exactly the API's endpoints.
    schema = json.loads(Client().get("/api/schema/", HTTP_ACCEPT="application/json").content)
    documented = {_schema_key(method, path) for path, ops in schema["paths"].items() for method in ops
                  if method in {"get", "post", "put", "patch", "delete"}}
    served = {_route_key(m, r) for m, r in api if r.startswith("api/v1/") or r in {"healthz", ".well-known/jwks.json"}}
    assert sorted(served - documented) == [], "endpoints missing from the OpenAPI schema"
    assert sorted(documented - served) == [], "schema operations with no endpoint"


# --- running cells ---------------------------------------------------------------------------------------

@contextmanager
def rolled_back() -> Iterator[None]:
    """A savepoint undone afterwards. Marked like TestCase's own atomic blocks, so the durable blocks the
    API opens inside (the Idempotency-Key transaction) run as they do in any test."""
    atomic = transaction.atomic()
    atomic._from_testcase = True  # type: ignore[attr-defined]
    with atomic:
        yield
        transaction.set_rollback(True)


def _client(ctx: Ctx, role: str, row: Row) -> Client:
    # A crash is a 500 in its cell (with the others still run), not an exception that ends the test.
    if row.portal:
        client = Client(raise_request_exception=False)
        if role != "anonymous":
            client.force_login(ctx.actor(role).user)
        return client
    api = MemberClient(raise_request_exception=False)
    if role != "anonymous":
        api.credentials(HTTP_AUTHORIZATION=ctx.actor(role).authorization)
    return api


@dataclass
class Cell:
    row: Row
    role: str
    variant: str
    expected: int
    got: int | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.got == self.expected

    def __str__(self) -> str:
        return (f"{self.row.method} /{self.row.route} as {self.role} ({self.variant}): expected {self.expected}, "
                f"got {self.got} {self.detail[:300]}")


def run_cell(ctx: Ctx, row: Row, role: str, variant: str) -> Cell:
    tag = "B" if variant == "other" else "A"
    expected = row.expect[role] if variant == "own" else row.other_expect.get(role, 404)
    cell = Cell(row, role, variant, expected)
    with rolled_back():
        path = "/" + (row.path(ctx, role, tag) if row.path else row.route)
        body = row.body(ctx, role, tag) if row.body else None
        client = _client(ctx, role, row)
        if row.method == "GET":
            response = client.get(path, **row.headers)
        elif row.portal:
            response = client.post(path, body or {}, **row.headers)
        else:
            response = client.post(path, body, format="json", **row.headers)
        cell.got = response.status_code
        if not cell.ok:
            cell.detail = response.content[:400].decode(errors="replace")
    return cell


def cells_of(rows: list[Row]) -> Iterator[tuple[Row, str, str]]:
    for row in rows:
        for role in ROLES:
            yield row, role, "own"
            if row.other and role in MEMBER_ROLES:
                yield row, role, "other"


def test_authorization_matrix() -> None:
    started = time.monotonic()
    ctx = Ctx(build_api_world())
    cells = [run_cell(ctx, row, role, variant) for row, role, variant in cells_of(ROWS)]
    wrong = [c for c in cells if not c.ok]
    other_cells = [c for c in cells if c.variant == "other"]
    record("authorization matrix", runs=len(cells), failures=len(wrong), figures={
        "endpoints": len(ROWS), "roles": len(ROLES), "cells": len(cells),
        "other-member cells (404)": len(other_cells), "seconds": round(time.monotonic() - started, 1)})
    assert not wrong, f"{len(wrong)} of {len(cells)} cells differ:\n" + "\n".join(map(str, wrong))


def test_every_member_role_has_two_members_with_their_own_objects() -> None:
    ctx = Ctx(build_api_world())
    for role in MEMBER_ROLES:
        a, b = ctx.actor(role, "A"), ctx.actor(role, "B")
        assert a.member is not None and b.member is not None and a.member != b.member
        assert a.owns and b.owns and set(a.owns) == set(b.owns)
    assert ctx.actor("officer", "A").user.is_staff and ctx.actor("officer", "A").member is None


# --- the admin console ---------------------------------------------------------------------------------

def admin_urls() -> list[str]:
    """Every page of the console: the index, each app, and each model's list, add form and (for a model with
    rows) one row's change, history and delete pages."""
    from django.contrib import admin
    from django.urls import NoReverseMatch, reverse

    urls = [reverse("admin:index")]
    labels = set()
    for model in admin.site._registry:
        opts = model._meta
        labels.add(opts.app_label)
        for name in ("changelist", "add"):
            urls.append(reverse(f"admin:{opts.app_label}_{opts.model_name}_{name}"))
        first = model._default_manager.order_by("pk").first()
        if first is not None:
            for name in ("change", "history", "delete"):
                try:
                    urls.append(reverse(f"admin:{opts.app_label}_{opts.model_name}_{name}", args=[first.pk]))
                except NoReverseMatch:
                    pass
    urls += [reverse("admin:app_list", args=[label]) for label in sorted(labels)]
    urls += [reverse("admin:password_change"), reverse("admin:jsi18n")]
    return urls


def test_admin_urls_need_a_verified_second_factor() -> None:
    """Anonymous, every member role and an officer signed in without a second factor: no admin page, only
    the sign-in form. An officer with a verified TOTP code gets in."""
    from tests.factories.compliance import officer_client

    ctx = Ctx(build_api_world())
    urls = admin_urls()
    refused = 0
    leaks = []
    for role in ROLES:
        client = Client()
        if role != "anonymous":
            client.force_login(ctx.actor(role).user)  # password-only session: no OTP device verified
        for url in urls:
            response = client.get(url)
            if response.status_code == 302 and "/admin/login/" in response["Location"]:
                refused += 1
            else:
                leaks.append(f"{role} GET {url} -> {response.status_code}")
    verified = officer_client(ctx.actor("officer", "B").user)
    assert verified.get("/admin/").status_code == 200
    record("admin without second factor", runs=len(urls) * len(ROLES), failures=len(leaks),
           figures={"admin URLs": len(urls), "identities": len(ROLES), "refused": refused})
    assert not leaks, "\n".join(leaks)

