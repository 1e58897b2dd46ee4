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
from typing import Any

from django.db import connection, transaction
from django.http import HttpResponse
from django.utils import timezone
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request

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


def idempotent(request: Request, member: Member | None, work: Callable[[], tuple[int, Any]]) -> HttpResponse:
    """Run `work` (which returns status and body data) at most once per (member, Idempotency-Key)."""
    if member is None:
        raise NotAllowed("Only users of a member can create resources.", code="no_member")
    key = request.headers.get("Idempotency-Key", "").strip()
    if not key:
        raise ValidationFailed("The Idempotency-Key header is required on this request.",
                               code="idempotency_key_missing")
    if len(key) > MAX_KEY_LENGTH:
        raise ValidationFailed(f"Idempotency-Key is at most {MAX_KEY_LENGTH} characters.",
                               code="idempotency_key_invalid")
    fingerprint = request_fingerprint(request)
    with contextlib.ExitStack() as pipelined, transaction.atomic(durable=True):
        locked, record_id = _claim(member.pk, key, fingerprint, request.method or "", request.path[:500])
        if not locked:
            raise Conflict("A request with this Idempotency-Key is still in progress; retry later.",
                           code="idempotency_in_flight")
        if record_id is None:
            first = IdempotencyRecord.objects.filter(member=member, key=key).first()
            if first is None:  # the first request's row was purged since the insert found it: try again
                raise Conflict("A request with this Idempotency-Key is still in progress; retry later.",
                               code="idempotency_in_flight")
            if first.request_hash != fingerprint:
                raise Unprocessable("This Idempotency-Key was used with a different request.",
                                    code="idempotency_key_reused")
            replay = HttpResponse(bytes(first.response_body), status=first.response_status,
                                  content_type="application/json")
            replay["Idempotent-Replayed"] = "true"
            return replay
        status, data = work()
        body = JSONRenderer().render(data)
        if connection.vendor == "postgresql":
            # The response row and the COMMIT reach PostgreSQL together (psycopg's pipeline mode, entered for
            # the rest of the transaction): one round trip fewer on every create, the last one before an
            # order's row locks are released. The pipeline is left after the commit (and its on_commit hooks).
            pipelined.enter_context(connection.connection.pipeline())
        with connection.cursor() as cursor:
            cursor.execute("UPDATE members_idempotencyrecord SET response_status = %s, response_body = %s "
                           "WHERE id = %s", [status, body, record_id])
    return HttpResponse(body, status=status, content_type="application/json")
