"""The audit trail: trigger-based history (django-pghistory) of money, title and compliance state.

PostgreSQL triggers write one event row per inserted, updated or deleted row, so bulk `update()`,
`bulk_create()` and raw SQL are captured as well as `save()`. On SQLite (the embedded `make run`
mode) pgtrigger installs nothing: the event tables exist but stay empty there.

How an app adds its models to the trail (trading's Account / Posting / JournalEntry, for example):

    from compliance.audit import audited

    @audited()
    class Account(models.Model): ...

then `manage.py makemigrations trading`: the event model (`AccountAuditEvent`) and its triggers land in
trading's own migrations. Register the event model read-only in trading's admin with
`compliance.admin.AuditEventAdmin`. Models of an app that cannot be edited are tracked through a
proxy model in an app that may import them (see compliance.models: MemberProxy, ReceiptProxy).
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from typing import Any, TypeVar

import pghistory
import pghistory.config
from django.db import connection, transaction
from django.db.models import Index, Model

M = TypeVar("M", bound=type[Model])

# Every event table points back at the tracked row as `pgh_obj`; reverse accessor "audit_events"
# (the default "events" clashes with Receipt.events, the receipt's signed chain).
AUDIT_RELATED_NAME = "audit_events"


EVERY_OPERATION = ("insert", "update", "delete")


def audit_trackers(operations: Sequence[str] = EVERY_OPERATION) -> tuple[pghistory.RowEvent, ...]:
    """Insert, update (only when a tracked field changes) and delete: the whole life of a row.

    Triggers are named audit_* so they read as what they are in `\\dS` and never collide with
    another app's own triggers on the same table.
    """
    trackers = {"insert": pghistory.InsertEvent(trigger_name="audit_insert"),
                "update": pghistory.UpdateEvent(trigger_name="audit_update"),
                "delete": pghistory.DeleteEvent(trigger_name="audit_delete")}
    return tuple(trackers[operation] for operation in operations)


def audited(*, fields: Sequence[str] | None = None, model_name: str | None = None,
            app_label: str | None = None, statement_level: bool = False,
            indexed: Sequence[str] = (), operations: Sequence[str] = EVERY_OPERATION) -> Callable[[M], M]:
    """Class decorator: record every change of the model's rows in an append-only event table.

    `fields` limits what is snapshotted (and which changes make an event); default: all fields.
    The event model is `<Model>AuditEvent` (a proxy's "Proxy" suffix dropped) unless named.
    Event rows are protected against update and delete by a trigger (append_only), so the
    trail itself cannot be rewritten through the ORM.

    `statement_level`: one trigger call per statement, reading the changed rows from transition tables,
    instead of one per row. Same event rows; the context (who / why) is attached once per statement
    instead of once per row, which is most of a row-level trigger's cost. For tables written in bulk
    (ESG results, their flags: thousands of rows per statement) and on order entry's path (receipts and
    their events, a split's two or three rows per statement; accounts, every touched one in one UPDATE).

    `indexed`: snapshotted foreign keys that keep an index in the event table, for the trail is looked up by
    them. The others have none (PGHISTORY_FOREIGN_KEY_FIELD): each would cost every audited write an index
    entry. The tracked row (`pgh_obj`) and the context are always indexed.

    `operations`: which of insert, update and delete make an event. An append-only table whose rows are
    their own record (the receipts' signed chain) leaves out insert: the copy would say nothing the row does not.
    """

    def decorate(model: M) -> M:
        name = model_name or f"{model.__name__.removesuffix('Proxy')}AuditEvent"
        return pghistory.track(  # type: ignore[no-any-return]
            *audit_trackers(operations),
            fields=list(fields) if fields is not None else None,
            model_name=name,
            app_label=app_label,
            obj_field=pghistory.ObjForeignKey(related_name=AUDIT_RELATED_NAME, db_index=True),
            append_only=True,
            level=pghistory.Statement if statement_level else None,
            meta={"indexes": [Index(fields=[field]) for field in indexed]} if indexed else None,
        )(model)

    return decorate


# The audit context of the current transaction: {"id": uuid, "metadata": {...}} while an audit_context is open.
_ACTIVE: ContextVar[dict[str, Any] | None] = ContextVar("ingot_audit_context", default=None)


def _attach(context_id: str, metadata: dict[str, Any]) -> None:
    """Put the context where pghistory's triggers read it: two transaction-local settings."""
    encoded = json.dumps(metadata, cls=pghistory.config.json_encoder()) if context_id else ""
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config('pghistory.context_id', %s, true), "
                       "set_config('pghistory.context_metadata', %s, true)", [context_id, encoded])


@contextlib.contextmanager
def audit_context(**metadata: Any) -> Iterator[None]:
    """Attach who and why (officer id, action, reason) to every audit event written inside, in one
    transaction (opened here if the caller has none).

    pghistory's triggers read the context from two transaction-local settings. They are set once, when the
    context opens, rather than through `pghistory.context`, which prepends a second statement to every
    statement run inside: that cannot be sent as one prepared statement (server-side binding, see the
    database settings), and costs a second statement's parse each time. It also reaches COPY, which no
    execute wrapper sees. Only PostgreSQL has the settings; elsewhere this is a no-op so the same service code
    runs on the embedded SQLite mode.
    """
    if connection.vendor != "postgresql":
        yield
        return
    given = {k: v for k, v in metadata.items() if v is not None}
    active = _ACTIVE.get()
    if active is not None:
        # Nested: the outermost operation names the whole change (an approval that also closes its
        # review flag is one approval); inner services may only add what it did not say.
        extra = {k: v for k, v in given.items() if k not in active["metadata"]}
        if extra:
            active["metadata"].update(extra)
            _attach(active["id"], active["metadata"])
        yield
        return
    with transaction.atomic(savepoint=False):
        active = {"id": str(uuid.uuid4()), "metadata": given}
        token = _ACTIVE.set(active)
        try:
            _attach(active["id"], given)
            yield
        finally:
            _ACTIVE.reset(token)
        # The settings are transaction-local, not block-local: left alone, later writes in the caller's
        # transaction (a settlement after a licence draw) would be attributed to this action. Clear them
        # once the outermost context is left. (After an error the rollback reverts them.)
        _attach("", {})
