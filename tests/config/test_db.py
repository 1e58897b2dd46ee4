"""config.db: the plain INSERT and SELECT of the hot paths write and build what the ORM would."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext

from config import db as config_db
from config.db import columns, insert_rows, new_keys, select_rows, update_rows, write_rows
from receipts.models import Lot, Metal, ReceiptNumberCounter
from tests.factories.receipts import ReceiptWorld

pytestmark = pytest.mark.django_db


@pytest.fixture
def lot() -> Lot:
    lot = ReceiptWorld().lot()
    Lot.objects.filter(pk=lot.pk).update(seal_numbers=["S-1", "S-2"])
    return lot


def test_select_rows_builds_each_instance_as_the_orm_does_and_passes_the_other_columns_through(lot: Lot) -> None:
    sql = (f"SELECT {columns(Lot, 'l')}, m.symbol, 7 FROM receipts_lot l "  # noqa: S608  # nosec B608 - columns from meta
           "JOIN receipts_metal m ON m.id = l.metal_id WHERE l.id = %s")
    [(read, symbol, seven)] = select_rows(sql, [lot.pk], Lot)

    orm = Lot.objects.get(pk=lot.pk)
    assert (symbol, seven) == (orm.metal.symbol, 7)
    assert read.seal_numbers == ["S-1", "S-2"]  # the JSON field's converter ran
    for field in Lot._meta.concrete_fields:
        assert getattr(read, field.attname) == getattr(orm, field.attname), field.name
    assert not read._state.adding and read._state.db == connection.alias
    assert select_rows(sql, [-1], Lot) == []


def test_write_rows_sends_an_update_in_the_same_statement_as_the_insert(lot: Lot) -> None:
    counter = ReceiptNumberCounter(pk=new_keys(ReceiptNumberCounter, 1)[0],
                                   metal=Metal.objects.get(symbol=lot.metal.symbol), year=1999, last=41)
    with CaptureQueriesContext(connection) as queries:
        write_rows([counter], updates=[("UPDATE receipts_lot SET location = %s WHERE id = %s", ["B7", lot.pk])])
    assert len(queries) == 1
    assert ReceiptNumberCounter.objects.get(pk=counter.pk).last == 41
    assert Lot.objects.get(pk=lot.pk).location == "B7"


def test_without_a_data_modifying_with_the_update_runs_first_as_its_own_statement(
        lot: Lot, monkeypatch: pytest.MonkeyPatch) -> None:
    """The embedded SQLite mode has no INSERT/UPDATE inside WITH: the same two writes, one after the other."""
    counter = ReceiptNumberCounter(pk=new_keys(ReceiptNumberCounter, 1)[0],
                                   metal=Metal.objects.get(symbol=lot.metal.symbol), year=1998)
    monkeypatch.setattr(connections["default"], "vendor", "sqlite")
    with CaptureQueriesContext(connection) as queries:
        write_rows([counter], updates=[("UPDATE receipts_lot SET location = %s WHERE id = %s", ["C3", lot.pk])])
    assert [q["sql"].split()[0] for q in queries] == ["UPDATE", "INSERT"]
    assert ReceiptNumberCounter.objects.filter(pk=counter.pk).exists() and Lot.objects.get(pk=lot.pk).location == "C3"


@pytest.mark.parametrize("vendor", ["postgresql", "sqlite"])
def test_update_rows_sets_each_rows_values_by_key(lot: Lot, vendor: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """One UPDATE ... FROM (VALUES ...) on PostgreSQL, one UPDATE per row elsewhere; the same rows either way."""
    other = ReceiptWorld().lot()
    monkeypatch.setattr(connections["default"], "vendor", vendor)
    writes = update_rows("receipts_lot", [("location", "text"), ("package_count", "integer")],
                         [(lot.pk, "Q1", 7), (other.pk, "Q2", 9)])
    assert len(writes) == (1 if vendor == "postgresql" else 2)
    write_rows(updates=writes)
    assert sorted(Lot.objects.filter(pk__in=[lot.pk, other.pk]).values_list("location", "package_count")) == [
        ("Q1", 7), ("Q2", 9)]
    assert update_rows("receipts_lot", [("location", "text")], []) == []


def test_insert_rows_unless_exists_inserts_nothing_over_an_existing_row(lot: Lot) -> None:
    metal = Metal.objects.get(symbol=lot.metal.symbol)
    assert insert_rows([ReceiptNumberCounter(metal=metal, year=1997, last=1)], unless_exists_on=("metal", "year"))
    again = ReceiptNumberCounter(metal=metal, year=1997, last=2)
    assert not insert_rows([again], unless_exists_on=("metal", "year"))
    assert again.pk is None
    assert ReceiptNumberCounter.objects.get(metal=metal, year=1997).last == 1


def test_then_writes_read_the_new_key_in_the_same_statement(lot: Lot) -> None:
    metal = Metal.objects.get(symbol=lot.metal.symbol)
    counter = ReceiptNumberCounter(metal=metal, year=1996, last=5)
    moved = ("UPDATE receipts_lot SET location = 'K' || (SELECT id FROM inserted) WHERE id = %s", [lot.pk])
    with CaptureQueriesContext(connection) as queries:
        assert insert_rows([counter], unless_exists_on=("metal", "year"), then=[moved])
    assert len(queries) == 1
    assert Lot.objects.get(pk=lot.pk).location == f"K{counter.pk}"

    Lot.objects.filter(pk=lot.pk).update(location="A1")
    again = ReceiptNumberCounter(metal=metal, year=1996, last=6)
    guarded = ("UPDATE receipts_lot SET location = 'again' WHERE id = %s AND EXISTS (SELECT 1 FROM inserted)",
               [lot.pk])
    assert not insert_rows([again], unless_exists_on=("metal", "year"), then=[guarded])
    assert Lot.objects.get(pk=lot.pk).location == "A1"  # no new row: `inserted` was empty


@pytest.mark.parametrize("exists", [False, True])
def test_without_a_data_modifying_with_the_then_writes_follow_the_insert_with_its_key(
        lot: Lot, exists: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    metal = Metal.objects.get(symbol=lot.metal.symbol)
    if exists:
        ReceiptNumberCounter.objects.create(metal=metal, year=1995)
    monkeypatch.setattr(connections["default"], "vendor", "sqlite")
    counter = ReceiptNumberCounter(metal=metal, year=1995)
    moved = ("UPDATE receipts_lot SET location = 'K' || (SELECT id FROM inserted) WHERE id = %s "
             "AND EXISTS (SELECT 1 FROM inserted)", [lot.pk])
    with CaptureQueriesContext(connection) as queries:
        assert insert_rows([counter], unless_exists_on=("metal", "year"), then=[moved]) is not exists
    assert [q["sql"].split()[0] for q in queries] == ["INSERT", "WITH"]
    assert Lot.objects.get(pk=lot.pk).location == (lot.location if exists else f"K{counter.pk}")


def test_then_takes_one_row_at_a_time(lot: Lot) -> None:
    metal = Metal.objects.get(symbol=lot.metal.symbol)
    rows = [ReceiptNumberCounter(metal=metal, year=y) for y in (1993, 1994)]
    with pytest.raises(ValueError, match="one row at a time"):
        insert_rows(rows, then=[("SELECT 1", [])])


def test_write_rows_writes_rows_that_refer_to_each_other_and_updates_in_one_statement(lot: Lot) -> None:
    """A journal entry and its postings (the posting refers to the entry's key, taken ahead) and an update."""
    from trading.ledger import member_account
    from trading.models import JournalEntry, Posting

    account = member_account(lot.depositor, "USD")
    entry = JournalEntry(pk=new_keys(JournalEntry, 1)[0], kind="adjustment", reference="test")
    postings = [Posting(pk=key, entry=entry, account=account, bucket="available", amount=amount, currency="USD")
                for key, amount in zip(new_keys(Posting, 2), (Decimal("1.00"), Decimal("-1.00")), strict=True)]
    with CaptureQueriesContext(connection) as queries:
        write_rows([entry], postings, updates=[("UPDATE receipts_lot SET location = %s WHERE id = %s", ["Z9", lot.pk])])
    assert len(queries) == 1
    assert sorted(Posting.objects.filter(entry_id=entry.pk).values_list("pk", flat=True)) == sorted(
        p.pk for p in postings)
    assert Lot.objects.get(pk=lot.pk).location == "Z9"
    assert not entry._state.adding and all(not p._state.adding for p in postings)


def test_write_rows_takes_only_rows_with_their_keys(lot: Lot) -> None:
    metal = Metal.objects.get(symbol=lot.metal.symbol)
    with pytest.raises(ValueError, match="keys"):
        write_rows([ReceiptNumberCounter(metal=metal, year=1990)])


def test_new_keys_come_in_blocks_no_other_process_or_forked_child_gets(monkeypatch: pytest.MonkeyPatch) -> None:
    """A block taken before a fork (gunicorn, Celery) is dropped in the child: two processes would hand out the
    same keys. Keys from one block never meet keys another connection takes from the sequence."""
    from trading.models import JournalEntry

    first = new_keys(JournalEntry, 3)
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT nextval(pg_get_serial_sequence('trading_journalentry', 'id'))")
        elsewhere = cursor.fetchone()[0]
    rest = new_keys(JournalEntry, 5)  # from the same block: no round trip, none of them `elsewhere`
    assert elsewhere not in first + rest and len(set(first + rest)) == 8
    monkeypatch.setattr(config_db.os, "getpid", lambda: -4321)
    child = new_keys(JournalEntry, 2)
    assert min(child) > max(first + rest + [elsewhere])


def test_values_are_prepared_as_the_orm_prepares_them_whatever_their_type(lot: Lot) -> None:
    """On PostgreSQL values the ORM would pass through unchanged are taken as they are; any other value (an
    int or a float in a decimal column, a naive datetime, JSON, auto_now stamps) still goes the ORM's way."""
    import datetime as dt
    import warnings

    from django.utils import timezone

    fields = [f for f in Lot._meta.concrete_fields if f is not Lot._meta.auto_field]
    aware = timezone.now()
    rows = [Lot(warehouse_id=lot.warehouse_id, metal_id=lot.metal_id, form="ingot", net_mass_kg=mass, package_count=3,
                producer_id=None, brand="B", batch_number="N-1", seal_numbers=["S"], production_date=dt.date(2026, 1, 2),
                location="", depositor_id=lot.depositor_id, grade_id=None, grading={"ok": True}, graded_at=graded)
            for mass, graded in [(Decimal("12.500"), aware), (12, None), (12.5, dt.datetime(2026, 1, 2, 3, 4))]]

    def orm(instances: list[Lot]) -> list[object]:
        return [f.get_db_prep_save(f.pre_save(i, True), connection) for i in instances for f in fields]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the naive datetime: the ORM warns and makes it aware
        expected, prepared = orm(rows), config_db._prepared(rows, fields, connections["default"])
    assert [type(v) for v in prepared] == [type(v) for v in expected]
    stamp = fields.index(Lot._meta.get_field("created_at"))  # auto_now_add: a new now on each preparation

    def comparable(values: list[object]) -> list[object]:
        return [getattr(v, "obj", v) for n, v in enumerate(values) if n % len(fields) != stamp]  # Jsonb: its object

    assert comparable(prepared) == comparable(expected)
    assert prepared[fields.index(Lot._meta.get_field("net_mass_kg")) + len(fields)] == Decimal(12)  # an int, made Decimal
    assert isinstance(prepared[fields.index(Lot._meta.get_field("created_at"))], dt.datetime)  # auto_now_add ran


def test_select_rows_builds_through_from_db_when_something_listens_to_the_init_signals(lot: Lot) -> None:
    from django.db.models.signals import post_init

    seen: list[Lot] = []

    def listen(sender: type[Lot], instance: Lot, **kwargs: object) -> None:
        seen.append(instance)

    sql = f"SELECT {columns(Lot, 'l')} FROM receipts_lot l WHERE l.id = %s"  # noqa: S608  # nosec B608 - columns from meta
    post_init.connect(listen, sender=Lot)
    try:
        [(read,)] = select_rows(sql, [lot.pk], Lot)
    finally:
        post_init.disconnect(listen, sender=Lot)
    assert seen == [read] and read.pk == lot.pk
    [(again,)] = select_rows(sql, [lot.pk], Lot)
    assert seen == [read] and again.seal_numbers == ["S-1", "S-2"]


def test_a_statement_of_many_parameters_is_parsed_once(lot: Lot, monkeypatch: pytest.MonkeyPatch) -> None:
    """A split's or the ledger's one statement takes more than 50 parameters, psycopg's own limit for caching
    its parse of a statement; config.db raises the limit, so the statement is parsed on its first run only."""
    from psycopg import _queries

    parsed: list[bytes] = []
    parse = _queries._query2pg_nocache

    def counting(query: bytes, *args: object, **kwargs: object) -> object:
        parsed.append(query)
        return parse(query, *args, **kwargs)

    monkeypatch.setattr(_queries, "_query2pg_nocache", counting)
    sql = "SELECT " + " + ".join(["%s::int"] * 80) + " WHERE %s::bigint IS NOT NULL"
    with connection.cursor() as cursor:
        for _ in range(3):
            cursor.execute(sql, [1] * 80 + [lot.pk])
            assert cursor.fetchone()[0] == 80
    assert len(parsed) <= 1


def test_pipelined_writes_are_not_waited_for_and_their_error_is_raised_inside_the_block(lot: Lot) -> None:
    """In `pipelined()` a write whose result nobody reads is sent and left pending (PostgreSQL runs it while the
    caller goes on); a read sees it; a failing write's error is raised before the block ends, so it lands in the
    caller's transaction, and after it the connection works outside pipeline mode again."""
    from django.db import DatabaseError, transaction
    from psycopg import pq

    from config.db import pipelined

    raw = connection.connection
    write = [("UPDATE receipts_lot SET location = %s WHERE id = %s", ["P1", lot.pk])]
    with pipelined():
        assert raw.pgconn.pipeline_status == pq.PipelineStatus.ON
        write_rows(updates=write)
        assert raw._pipeline is not None and raw._pipeline.result_queue  # sent, its result not read yet
        assert Lot.objects.filter(pk=lot.pk).values_list("location", flat=True).get() == "P1"
    assert raw.pgconn.pipeline_status == pq.PipelineStatus.OFF

    reached_the_end = False
    with pytest.raises(DatabaseError, match="not_a_column"), transaction.atomic(), pipelined():
        write_rows(updates=[("UPDATE receipts_lot SET location = %s WHERE not_a_column = %s", ["P2", 1])])
        reached_the_end = True  # the write's error is not raised by the call that sent it...
    assert reached_the_end  # ...but by the block's end, inside the transaction, which rolled back
    assert Lot.objects.get(pk=lot.pk).location == "P1"


def test_statements_sent_before_the_first_read_go_together_in_a_pipelined_block(lot: Lot) -> None:
    """`send_insert_rows` and `send_select_rows` send now and read later: in a pipelined block both statements
    are on their way before either result is read (one round trip), and each reader gets its own result."""
    from config.db import pipelined, send_insert_rows, send_select_rows

    metal = Metal.objects.get(symbol=lot.metal.symbol)
    counter = ReceiptNumberCounter(metal=metal, year=1998, last=7)
    with pipelined():
        inserted = send_insert_rows([counter], unless_exists_on=("metal", "year"))
        lots = send_select_rows(f"SELECT {columns(Lot, 'l')} FROM receipts_lot l WHERE l.id = %s", [lot.pk], Lot)  # noqa: S608  # nosec B608 - columns from meta
        assert len(connection.connection._pipeline.result_queue) == 2  # both sent, neither read
        assert [row[0].pk for row in lots()] == [lot.pk]
        assert inserted() and counter.pk is not None
        again = send_insert_rows([ReceiptNumberCounter(metal=metal, year=1998, last=9)],
                                 unless_exists_on=("metal", "year"))
        assert not again()
    assert ReceiptNumberCounter.objects.get(pk=counter.pk).last == 7
