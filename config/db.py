"""Row inserts and reads for the hot paths (order entry, receipt splits, the ledger) without the ORM's per-call
compile.

`QuerySet.bulk_create` builds and compiles its INSERT anew on every call: on this stack ~0.5-0.7 ms for two
or three rows, more than the round trip. `insert_rows` writes the same statement directly: every concrete
field but the auto key, each value prepared exactly as the ORM prepares it (`pre_save`, then
`get_db_prep_save`: auto_now stamps, decimals, datetimes, JSON), so the rows are the ones bulk_create would
write, and the instances come back as bulk_create leaves them: primary key set, marked as saved. Works on
PostgreSQL and SQLite (3.35+, RETURNING).

`write_rows` sends several inserts (rows whose keys `new_keys` took ahead, so they can refer to each other) and
updates (`update_rows`: many rows' values in one UPDATE) as one statement on PostgreSQL; `select_rows` reads
rows into instances as the ORM would. In a `pipelined` block (psycopg's pipeline mode) a write is not waited
for, and `send_select_rows` / `send_insert_rows` send a statement now and read it later, so statements sent
before the first read travel together.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, cast

from django.db import DEFAULT_DB_ALIAS, connection, connections, models
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Field, Model
from django.db.models.base import ModelState
from django.db.models.fields import AutoFieldMixin
from django.db.models.signals import post_init, pre_init


def _cache_longer_statements() -> None:
    """psycopg converts each statement's `%s` placeholders to `$n` and caches that per statement text, but only
    for statements of at most 50 parameters (`MAX_CACHED_STATEMENT_PARAMS`). A split's one statement (the
    parent's update, two children, three or four events) takes 60 and more, the ledger's one statement about as
    many: each was parsed again, by regular expressions, on every run, ~1 ms of Python under the instrument's
    lock. The cache holds 128 statement texts whatever their size, and ours are a few dozen shapes. The knob is
    not public: if a psycopg release drops it, nothing here breaks, the statements are only parsed again."""
    from psycopg import _queries  # noqa: PLC0415 - psycopg's internals, only to move one limit

    if getattr(_queries, "MAX_CACHED_STATEMENT_PARAMS", 0) < 400:
        _queries.MAX_CACHED_STATEMENT_PARAMS = 400


_cache_longer_statements()


def _wrapper() -> BaseDatabaseWrapper:
    """The thread's connection itself. `django.db.connection` is a proxy that looks the thread's connection up
    on every attribute access (asgiref's Local): preparing a split's values through it cost ~100 lookups."""
    return cast(BaseDatabaseWrapper, connections[DEFAULT_DB_ALIAS])


@functools.lru_cache(maxsize=256)  # shapes vary with the row count: bounded
def _insert_sql(model: type[Model], count: int, unless_exists_on: tuple[str, ...],
                keyed: bool = False) -> tuple[list[Any], str]:
    """The fields `insert_rows` writes and its statement for `count` rows (built once per process and shape);
    `keyed`: the rows carry their primary keys (`new_keys`)."""
    meta = model._meta
    quote = connection.ops.quote_name
    fields = [cast("Field[Any, Any]", f) for f in meta.concrete_fields if keyed or f is not meta.auto_field]
    row = "(" + ", ".join(["%s"] * len(fields)) + ")"
    conflict = ""
    if unless_exists_on:
        target = ", ".join(quote(cast(str, meta.get_field(name).column)) for name in unless_exists_on)  # type: ignore[union-attr]
        conflict = f" ON CONFLICT ({target}) DO NOTHING"
    sql = (f"INSERT INTO {quote(meta.db_table)} ({', '.join(quote(cast(str, f.column)) for f in fields)}) "  # noqa: S608  # nosec B608 - names from meta
           f"VALUES {', '.join([row] * count)}{conflict}")
    if not keyed:
        sql += f" RETURNING {quote(cast(str, meta.pk.column))}"  # type: ignore[union-attr]
    return fields, sql


def insert_rows(instances: Sequence[Model], *, unless_exists_on: Sequence[str] = (),
                then: Sequence[tuple[str, Sequence[Any]]] = ()) -> bool:
    """Insert `instances` (all of one model, at least one) in one statement and give them their new primary
    keys, in order. True when they were inserted.

    `unless_exists_on` names the fields of a unique constraint: a row already holding the same values (committed,
    or committed by a concurrent transaction this one waited for) means nothing is inserted and False. Only for
    one instance at a time: the keys that come back could not be matched to the rows that went in.

    `then`: writes that need the new row's key, (sql, params) each, reading it from the relation `inserted` (one
    column, `id`; no row when `unless_exists_on` found the row already there): on PostgreSQL in the same
    statement, after the insert elsewhere. Only for one instance."""
    return send_insert_rows(instances, unless_exists_on=unless_exists_on, then=then)()


def send_insert_rows(instances: Sequence[Model], *, unless_exists_on: Sequence[str] = (),
                     then: Sequence[tuple[str, Sequence[Any]]] = ()) -> Callable[[], bool]:
    """`insert_rows` in two steps: the statement is sent now, and the function returned reads its keys (and
    returns what `insert_rows` returns). In a pipelined block (`pipelined`) statements sent before the first
    of them is read go to PostgreSQL in one round trip."""
    if (unless_exists_on or then) and len(instances) != 1:
        raise ValueError("unless_exists_on and then insert one row at a time")
    fields, sql = _insert_sql(type(instances[0]), len(instances), tuple(unless_exists_on))
    db = _wrapper()
    params = _prepared(instances, fields, db)
    postgresql = db.vendor == "postgresql"
    cursor = db.cursor()
    if postgresql and then:
        ctes = [f"inserted(id) AS ({sql})", *(f"then{n} AS ({write})" for n, (write, _) in enumerate(then))]
        sql = f"WITH {', '.join(ctes)} SELECT id FROM inserted"  # noqa: S608  # nosec B608 - the caller's statements
        params = [*params, *(p for _, write_params in then for p in write_params)]
    _send(cursor, sql, params)

    def read() -> bool:
        with cursor:
            keys = [found[0] for found in cursor.fetchall()]
            if then and not postgresql:
                for write, write_params in then:
                    cursor.execute(f"WITH inserted(id) AS (SELECT %s WHERE %s) {write}",  # noqa: S608  # nosec B608 - the caller's statement
                                   [keys[0] if keys else None, bool(keys), *write_params])
        if not keys and unless_exists_on:
            return False
        for instance, pk in zip(instances, keys, strict=True):
            instance.pk = pk
            instance._state.adding = False
            instance._state.db = db.alias
        return True

    return read


def _prepared(instances: Sequence[Model], fields: list[Any], db: BaseDatabaseWrapper) -> list[Any]:
    """The parameters of `instances`' rows, each value prepared exactly as the ORM prepares it for an insert
    (`pre_save`, then `get_db_prep_save`). On PostgreSQL a value the ORM would pass through unchanged (an int,
    a str, a finite Decimal, an aware datetime, None, in a column of that kind) is taken as it is: the ORM's
    generic path costs ~35 us a value here, a split's rows have ~80 values."""
    for instance in instances:  # a related object saved since it was assigned gives its key, as in bulk_create
        instance._prepare_related_fields_for_save(operation_name="insert_rows")  # type: ignore[attr-defined]
    if db.vendor == "postgresql":
        plan = _plan(tuple(fields), cast(Any, type(db.ops)))
    else:
        plan = [(f.attname, None, None, f) for f in fields]
    params: list[Any] = []
    for instance in instances:
        for attname, passes, wrap, field in plan:
            if passes is not None:
                value = getattr(instance, attname)
                if value is None:
                    params.append(None)
                    continue
                if passes(value):
                    params.append(value if wrap is None else wrap(value))
                    continue
            params.append(field.get_db_prep_save(field.pre_save(instance, True), db))
    return params


def _is_int(value: Any) -> bool:
    return type(value) is int


def _is_str(value: Any) -> bool:
    return type(value) is str


def _is_bool(value: Any) -> bool:
    return type(value) is bool


def _is_decimal(value: Any) -> bool:
    return type(value) is Decimal and value.is_finite()


def _is_aware(value: Any) -> bool:
    return type(value) is datetime and value.tzinfo is not None


# Django's own field classes whose PostgreSQL preparation leaves such a value as it is (to_python of a value of
# the type itself, then the backend's identity adapter; an integer column's value is wrapped in psycopg's type
# of its width, see `_plan`), and the test of "such a value". By class, not by internal type: a subclass may
# prepare differently.
_PASSES: dict[type[Any], Any] = {
    **dict.fromkeys([models.AutoField, models.BigAutoField, models.SmallAutoField, models.IntegerField,
                     models.BigIntegerField, models.SmallIntegerField, models.PositiveIntegerField,
                     models.PositiveBigIntegerField, models.PositiveSmallIntegerField], _is_int),
    models.CharField: _is_str, models.TextField: _is_str, models.BooleanField: _is_bool,
    models.DecimalField: _is_decimal, models.DateTimeField: _is_aware,
}


@functools.cache
def _plan(fields: tuple[Any, ...], ops: type[Any]) -> list[tuple[str, Any, Any, Any]]:
    """Per field: its attname, the test of a value PostgreSQL takes without the ORM's preparation (None: always
    prepare), what wraps such a value (the psycopg type Django gives an integer column's values, Int4 and the
    like, so a prepared statement's parameter types do not change with the values; auto keys and the foreign
    keys to them go plain, as the ORM sends them), the field. A field whose `pre_save` sets the value (auto_now)
    is always prepared; a foreign key only over an integer key (the ORM turns an empty string into NULL for
    others). Keyed by the backend's operations class, not a connection: each thread has its own connection, and
    a cache keyed by them would keep every one alive."""
    widths = getattr(ops, "integerfield_type_map", {})
    plan = []
    for field in fields:
        passes, wrap = None, None
        if not getattr(field, "auto_now", False) and not getattr(field, "auto_now_add", False):
            target = field.target_field if type(field) in (models.ForeignKey, models.OneToOneField) else field
            passes = _PASSES.get(type(target))
            if field is not target and passes is not _is_int:
                passes = None
            if passes is _is_int and not isinstance(target, AutoFieldMixin):
                wrap = widths.get(target.get_internal_type())
        plan.append((field.attname, passes, wrap, field))
    return plan


@contextlib.contextmanager
def pipelined() -> Iterator[None]:
    """On PostgreSQL, run the block in psycopg's pipeline mode: a statement whose result nobody reads (an insert
    with its keys taken ahead, `write_rows`, an UPDATE) is sent and not waited for, so PostgreSQL executes it
    while the block's Python goes on; a read waits for everything sent before it. The block's end waits for the
    rest (a Sync), so an error of any statement in it is raised inside the block, in the caller's transaction
    or savepoint, never after.

    Inside a pipeline already open (the caller's, e.g. order entry's batch, which runs its first
    order through its COMMIT in one), a plain block: what it sends is waited for when the caller's pipeline
    ends or at the commit, one round trip fewer; errors then land in the caller's scope.

    Not for a block with ORM saves or queryset updates: the ORM reads an UPDATE's row count at once, and in
    pipeline mode that count is not there yet. Nor for a block that catches a database error to go on in a
    savepoint (after an error every statement up to the Sync is refused). Elsewhere, a plain block."""
    db = _wrapper()
    if db.vendor != "postgresql" or _in_pipeline():
        yield
        return
    db.ensure_connection()
    with db.wrap_database_errors, db.connection.pipeline():  # the Sync's error as Django's, like any statement's
        yield


def _in_pipeline() -> bool:
    """The thread's connection is in psycopg's pipeline mode (a `pipelined` block, or the caller's)."""
    db = _wrapper()
    return db.vendor == "postgresql" and db.connection is not None and db.connection._pipeline is not None


# --- rows that refer to each other, in one statement ---------------------------------------------------------

KEY_BLOCK = 100  # values a process takes from a sequence per round trip
_block_lock = threading.Lock()  # gunicorn's threaded workers share a process's blocks
_blocks: dict[str, list[int]] = {}
_blocks_pid = 0  # blocks taken before a fork belong to the parent only


def from_sequence(sequence: str, count: int) -> list[int]:
    """`count` values of PostgreSQL sequence `sequence`, taken by this process in blocks of KEY_BLOCK: one round
    trip per block. Unique and never reused, but not gap-free (a block's rest is lost when the process stops)
    and, across processes, not in the order they are used."""
    global _blocks_pid
    with _block_lock:
        if _blocks_pid != os.getpid():
            _blocks.clear()
            _blocks_pid = os.getpid()
        block = _blocks.setdefault(sequence, [])
        if len(block) < count:
            with connection.cursor() as cursor:
                cursor.execute("SELECT nextval(%s) FROM generate_series(1, %s)", [sequence, max(KEY_BLOCK, count)])
                block.extend(row[0] for row in cursor.fetchall())
        taken = block[:count]
        del block[:count]
    return taken


@functools.cache
def _key_sequence(table: str, column: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_get_serial_sequence(%s, %s)", [table, column])
        return str(cursor.fetchone()[0])


def new_keys(model: type[Model], count: int) -> list[int]:
    """`count` primary keys for new rows of `model`, so that rows which refer to each other (a split's children
    and their events, journal entries and their postings) go to the database in one statement (`write_rows`).

    PostgreSQL: from the table's identity sequence, by `from_sequence` (no round trip for most calls); keys
    are unique, not gap-free and, across processes, not in insertion order: only for tables whose order lies
    in their own columns (a chain's `seq`, a timestamp), never where a key's order is read as time (trades: the
    candle fold's watermark). SQLite (writers one at a time): the table's AUTOINCREMENT counter is moved in the
    caller's transaction."""
    table, column = model._meta.db_table, cast(str, model._meta.pk.column)  # type: ignore[union-attr]
    if connection.vendor != "postgresql":
        return _sqlite_keys(table, column, count)
    return from_sequence(_key_sequence(table, column), count)


def _sqlite_keys(table: str, pk: str, count: int) -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute("UPDATE sqlite_sequence SET seq = seq + %s WHERE name = %s RETURNING seq", [count, table])
        found = cursor.fetchone()
        if found is None:  # the table's first row: SQLite makes its counter row on the first insert
            quote = connection.ops.quote_name
            cursor.execute(f"SELECT COALESCE(MAX({quote(pk)}), 0) + %s FROM {quote(table)}", [count])  # noqa: S608  # nosec B608 - a model's table
            found = cursor.fetchone()
            cursor.execute("INSERT INTO sqlite_sequence (name, seq) VALUES (%s, %s)", [table, found[0]])
    last = int(found[0])
    return list(range(last - count + 1, last + 1))


def write_rows(*groups: Sequence[Model], updates: Sequence[tuple[str, Sequence[Any]]] = ()) -> None:
    """Insert each group of rows (all of one model, every row with its key already taken by `new_keys`) and run
    `updates`, (sql, params) each: on PostgreSQL in one statement, each part a data-modifying WITH (they all see
    the same snapshot: no part may read what another writes; foreign keys between the groups are checked at
    the statement's end); elsewhere one after the other, updates first. The instances are left as the ORM
    leaves saved ones."""
    db = _wrapper()
    parts: list[tuple[str, list[Any]]] = [(sql, list(params)) for sql, params in updates]
    for group in (g for g in groups if g):
        if any(instance.pk is None for instance in group):
            raise ValueError("write_rows takes rows with their keys (new_keys)")
        fields, sql = _insert_sql(type(group[0]), len(group), (), keyed=True)
        parts.append((sql, _prepared(group, fields, db)))
    with db.cursor() as cursor:
        if db.vendor == "postgresql":
            ctes = ", ".join(f"w{n} AS ({sql})" for n, (sql, _) in enumerate(parts))
            cursor.execute(f"WITH {ctes} SELECT 1", [p for _, params in parts for p in params])  # noqa: S608  # nosec B608 - the caller's statements
        else:
            for sql, params in parts:
                cursor.execute(sql, params)
    for group in groups:
        for instance in group:
            instance._state.adding = False
            instance._state.db = db.alias


def update_rows(table: str, columns: Sequence[tuple[str, str]],
                rows: Sequence[Sequence[Any]]) -> list[tuple[str, list[Any]]]:
    """The writes that set `columns` ((name, PostgreSQL type) each) on rows of `table` keyed by `id`, from `rows`
    ((id, *values) each), for `write_rows(updates=...)`: one `UPDATE ... FROM (VALUES ...)` on PostgreSQL, one
    UPDATE per row elsewhere. Values go as the caller prepared them."""
    if not rows:
        return []
    quote = connection.ops.quote_name
    names = [quote(name) for name, _ in columns]
    if connection.vendor == "postgresql":
        row = "(" + ", ".join(["%s::bigint", *(f"%s::{kind}" for _, kind in columns)]) + ")"
        assign = ", ".join(f"{name} = v.{name}" for name in names)
        return [(f"UPDATE {quote(table)} AS t SET {assign} FROM (VALUES {', '.join([row] * len(rows))}) "  # noqa: S608  # nosec B608 - names from the caller's code, placeholders
                 f"AS v(id, {', '.join(names)}) WHERE t.id = v.id", [value for values in rows for value in values])]
    assign = ", ".join(f"{name} = %s" for name in names)
    return [(f"UPDATE {quote(table)} SET {assign} WHERE id = %s", [*values[1:], values[0]]) for values in rows]  # noqa: S608  # nosec B608 - names from the caller's code


# --- reads ---------------------------------------------------------------------------------------------------

@functools.cache
def _readers(model: type[Model]) -> tuple[list[str], list[list[Any]], list[Any]]:
    """The model's concrete fields' attnames, the converters the ORM applies to each column as it comes from the
    database (JSON parsing and the like), and the column expressions they are called with."""
    meta = model._meta
    cols = [cast("Field[Any, Any]", f).get_col(meta.db_table) for f in meta.concrete_fields]
    converters = [connection.ops.get_db_converters(col) + col.get_db_converters(connection) for col in cols]
    return [cast(str, f.attname) for f in meta.concrete_fields], converters, cols


def for_update(of: str = "") -> str:
    """The row-lock clause of a plain SELECT (` FOR UPDATE`, ` FOR UPDATE OF <of>`), or nothing on SQLite, which
    has no row locks (its writers already run one at a time)."""
    if not connection.features.has_select_for_update:
        return ""
    return f" FOR UPDATE OF {of}" if of else " FOR UPDATE"


@functools.cache
def columns(model: type[Model], alias: str) -> str:
    """The select list of `model`'s concrete columns under table alias `alias`, in the order `select_rows` reads
    them: `"r"."id", "r"."number", ...`."""
    quote = connection.ops.quote_name
    return ", ".join(f"{quote(alias)}.{quote(cast(str, f.column))}" for f in model._meta.concrete_fields)


def select_rows(sql: str, params: Sequence[Any], *models: type[Model]) -> list[tuple[Any, ...]]:
    """Run `sql`, whose select list is `columns(m, alias)` of each of `models` in turn, then any other columns,
    and build one instance of each model per row, as the ORM would build them (`from_db`, the ORM's
    converters); the other columns follow the instances in each tuple, as they came.

    For the hot read-and-lock statements of order entry: a queryset compiles its SQL anew on every call, about
    0.5-1 ms for a join, more than the statement's round trip."""
    return send_select_rows(sql, params, *models)()


def send_select_rows(sql: str, params: Sequence[Any], *models: type[Model]) -> Callable[[], list[tuple[Any, ...]]]:
    """`select_rows` in two steps: the statement is sent now, and the function returned reads its rows. In a
    pipelined block (`pipelined`) statements sent before the first of them is read go to PostgreSQL in one
    round trip."""
    db = _wrapper()
    readers = [(*_readers(model), _builder(model)) for model in models]
    cursor = db.cursor()
    _send(cursor, sql, params)

    def read() -> list[tuple[Any, ...]]:
        with cursor:
            rows = cursor.fetchall()
        out = []
        for row in rows:
            start, built = 0, []
            for names, converters, cols, build in readers:
                values = list(row[start:start + len(names)])
                for i, chain in enumerate(converters):
                    for convert in chain:
                        values[i] = convert(values[i], cols[i], db)
                built.append(build(db.alias, names, values))
                start += len(names)
            out.append((*built, *row[start:]))
        return out

    return read


def _send(cursor: Any, sql: str, params: Sequence[Any]) -> None:
    try:
        cursor.execute(sql, params)
    except BaseException:
        cursor.close()
        raise


def _builder(model: type[Model]) -> Any:
    """How `select_rows` makes an instance of `model` from a full row: `from_db` when anything listens to the
    model's init signals, otherwise the state `from_db` leaves, set directly (every concrete field's value under
    its attname, the state saved in `db`): `Model.__init__` with positional values costs ~40 us a row here."""
    if pre_init.has_listeners(model) or post_init.has_listeners(model):
        return model.from_db
    new = object.__new__

    def build(alias: str, names: list[str], values: list[Any]) -> Model:
        instance = new(model)
        state = ModelState()
        state.adding, state.db = False, alias
        instance.__dict__.update(zip(names, values, strict=True))
        instance._state = state
        return cast(Model, instance)

    return build
