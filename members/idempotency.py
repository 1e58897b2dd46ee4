"""`Idempotency-Key` for every creating POST: the key row goes in first, in the same transaction as the work.

A replay returns the first response byte for byte; the same key with another body is 422; a retry
while the first request is still running is 409; a create without a key is 400. A request that
fails with a domain error rolls back entirely, key row included, so the key can be used again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import connection, transaction
from django.http import HttpResponse
from django.utils import timezone
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request

from config.db import pipelined, update_rows, write_rows
from config.errors import Conflict, NotAllowed, Unprocessable, ValidationFailed
from members.models import IdempotencyRecord, Member

MAX_KEY_LENGTH = 255


def request_fingerprint(request: Request) -> str:
    body = json.dumps(request.data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{request.method} {request.path}\n{body}".encode()).hexdigest()


def _advisory_key(member_id: int, key: str) -> int:
    digest = hashlib.sha256(f"idem:{member_id}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _claim(member_id: int, key: str, fingerprint: str, method: str, path: str) -> tuple[bool, int | None]:
    """Take the key's advisory lock and insert its row, in one statement: (locked, id of the new row).

    Not locked: a request with this key is still running (409). Locked but no new row: the key was used by a
    request that has committed (ON CONFLICT judges against committed rows, not the statement's snapshot, so a
    first request that commits just before this one is seen). Only PostgreSQL has concurrent writers; SQLite
    in IMMEDIATE mode already runs them one at a time, so there the insert alone decides."""
    row: list[Any] = [member_id, key, fingerprint, method, path,
                      connection.ops.adapt_datetimefield_value(timezone.now())]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "WITH advisory AS (SELECT pg_try_advisory_xact_lock(%s) AS held), "
                "fresh AS (INSERT INTO members_idempotencyrecord "
                "(member_id, key, request_hash, method, path, created_at, response_status, response_body) "
                "SELECT %s, %s, %s, %s, %s, %s, 0, '' FROM advisory WHERE held "
                "ON CONFLICT (member_id, key) DO NOTHING RETURNING id) "
                "SELECT held, (SELECT id FROM fresh) FROM advisory", [_advisory_key(member_id, key), *row])
            held, fresh = cursor.fetchone()
            return bool(held), fresh
        cursor.execute(
            "INSERT INTO members_idempotencyrecord "
            "(member_id, key, request_hash, method, path, created_at, response_status, response_body) "
            "VALUES (%s, %s, %s, %s, %s, %s, 0, X'') ON CONFLICT (member_id, key) DO NOTHING RETURNING id", row)
        found = cursor.fetchone()
        return True, found[0] if found else None


@dataclass(frozen=True)
class IdempotentRequest:
    """What the wrapper needs of a creating request, read and checked before any transaction."""
    member: Member
    key: str
    fingerprint: str
    method: str
    path: str


def idempotent_request(request: Request, member: Member | None) -> IdempotentRequest:
    """The request's member, Idempotency-Key and fingerprint; 400/403 for a request that cannot have one."""
    if member is None:
        raise NotAllowed("Only users of a member can create resources.", code="no_member")
    key = request.headers.get("Idempotency-Key", "").strip()
    if not key:
        raise ValidationFailed("The Idempotency-Key header is required on this request.",
                               code="idempotency_key_missing")
    if len(key) > MAX_KEY_LENGTH:
        raise ValidationFailed(f"Idempotency-Key is at most {MAX_KEY_LENGTH} characters.",
                               code="idempotency_key_invalid")
    return IdempotentRequest(member, key, request_fingerprint(request), request.method or "", request.path[:500])


@dataclass(frozen=True)
class Outcome:
    """A request's answer: a replay of the first response (`record_id` None), or a new one whose row
    `record_id` still needs its response (`record_responses`, in the same transaction)."""
    status: int
    body: bytes
    record_id: int | None = None

    def response(self) -> HttpResponse:
        response = HttpResponse(self.body, status=self.status, content_type="application/json")
        if self.record_id is None:
            response["Idempotent-Replayed"] = "true"
        return response


def claim(req: IdempotentRequest) -> Outcome | int:
    """Claim the request's key inside the caller's transaction: the id of its new row, whose response the caller
    writes before commit (`answer`, `record_responses`), or the first response when the key was used by a
    request that has committed (a replay, which has nothing left to do).

    A row of this transaction without a response yet (the same key twice in one batch of orders) is a request
    still in progress: 409, as for a concurrent one."""
    locked, record_id = _claim(req.member.pk, req.key, req.fingerprint, req.method, req.path)
    if not locked:
        raise Conflict("A request with this Idempotency-Key is still in progress; retry later.",
                       code="idempotency_in_flight")
    if record_id is None:
        first = IdempotencyRecord.objects.filter(member=req.member, key=req.key).first()
        if first is None or first.response_status == 0:  # purged since the insert found it, or not answered yet
            raise Conflict("A request with this Idempotency-Key is still in progress; retry later.",
                           code="idempotency_in_flight")
        if first.request_hash != req.fingerprint:
            raise Unprocessable("This Idempotency-Key was used with a different request.",
                                code="idempotency_key_reused")
        return Outcome(first.response_status, bytes(first.response_body))
    return record_id


def answer(record_id: int, work: Callable[[], tuple[int, Any]]) -> Outcome:
    """Run `work` (which returns status and body data) for the key row `record_id` claimed by this transaction."""
    status, data = work()
    return Outcome(status, JSONRenderer().render(data), record_id)


def run_once(req: IdempotentRequest, work: Callable[[], tuple[int, Any]]) -> Outcome:
    """Claim the key and run `work`, inside the caller's transaction; or answer with the first response. The
    caller writes the new response (`record_responses`) before commit."""
    claimed = claim(req)
    return claimed if isinstance(claimed, Outcome) else answer(claimed, work)


def record_responses(outcomes: list[Outcome]) -> None:
    """Write the new outcomes' responses into their key rows, in one statement (after `enter_pipeline`, sent
    with the COMMIT that follows)."""
    rows = [(o.record_id, o.status, o.body) for o in outcomes if o.record_id is not None]
    if rows:
        write_rows(updates=update_rows("members_idempotencyrecord",
                                       [("response_status", "integer"), ("response_body", "bytea")], rows))


def enter_pipeline(stack: contextlib.ExitStack) -> None:
    """On PostgreSQL, send the rest of the transaction (its last statement and the COMMIT) in one round trip:
    psycopg's pipeline mode (`config.db.pipelined`; nothing new inside one already open), left when `stack`
    closes, after the commit and its on_commit hooks."""
    stack.enter_context(pipelined())


def idempotent(request: Request, member: Member | None, work: Callable[[], tuple[int, Any]]) -> HttpResponse:
    """Run `work` (which returns status and body data) at most once per (member, Idempotency-Key), in a
    transaction of its own."""
    req = idempotent_request(request, member)
    with contextlib.ExitStack() as pipelined, transaction.atomic(durable=True):
        outcome = run_once(req, work)
        # The response row and the COMMIT reach PostgreSQL together: one round trip fewer on every create, the
        # last one before an order's row locks are released.
        enter_pipeline(pipelined)
        record_responses([outcome])
    return outcome.response()
