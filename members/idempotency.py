"""`Idempotency-Key` for every creating POST: the key row goes in first, in the same transaction as the work.

A replay returns the first response byte for byte; the same key with another body is 422; a retry
while the first request is still running is 409; a create without a key is 400. A request that
fails with a domain error rolls back entirely, key row included, so the key can be used again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from django.db import connection, transaction
from django.http import HttpResponse
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


def _try_lock(member_id: int, key: str) -> bool:
    """Only PostgreSQL has concurrent writers; SQLite in IMMEDIATE mode already runs them one at a time."""
    if connection.vendor != "postgresql":
        return True
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [_advisory_key(member_id, key)])
        return bool(cursor.fetchone()[0])


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
    with transaction.atomic(durable=True):
        if not _try_lock(member.pk, key):
            raise Conflict("A request with this Idempotency-Key is still in progress; retry later.",
                           code="idempotency_in_flight")
        first = IdempotencyRecord.objects.filter(member=member, key=key).first()
        if first is not None:
            if first.request_hash != fingerprint:
                raise Unprocessable("This Idempotency-Key was used with a different request.",
                                    code="idempotency_key_reused")
            replay = HttpResponse(bytes(first.response_body), status=first.response_status,
                                  content_type="application/json")
            replay["Idempotent-Replayed"] = "true"
            return replay
        record = IdempotencyRecord.objects.create(member=member, key=key, request_hash=fingerprint,
                                                  method=request.method or "", path=request.path[:500])
        status, data = work()
        body = JSONRenderer().render(data)
        record.response_status = status
        record.response_body = body
        record.save(update_fields=["response_status", "response_body"])
    return HttpResponse(body, status=status, content_type="application/json")
