"""The audit trail: PostgreSQL triggers record every change of members' status, receipts, licences and
flags, including bulk update() paths, with who and why; the trail cannot be rewritten; and the same
migrations still run on the embedded SQLite mode, where no trigger is installed."""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from django.db import DatabaseError, InternalError, ProgrammingError, connection, transaction
from django.db.models import Case, F, ProtectedError, Value, When

from compliance.models import (
    ExportLicenceAuditEvent,  # type: ignore[attr-defined]
    Flag,
    FlagAuditEvent,  # type: ignore[attr-defined]
    FlagStatus,
    LicenceDrawdownAuditEvent,  # type: ignore[attr-defined]
    MemberAuditEvent,  # type: ignore[attr-defined]
    ReceiptAuditEvent,  # type: ignore[attr-defined]
    ReceiptChainAuditEvent,  # type: ignore[attr-defined]
)
from compliance.services import flag_open, flag_resolve, licence_draw
from members.models import KycStatus, Member
from receipts.models import Receipt, ReceiptEvent
from tests.factories.compliance import licence, officer, receipt
from tests.factories.members import MemberFactory

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.django_db
def test_a_bulk_kyc_update_is_captured_row_by_row() -> None:
    members = [MemberFactory(kyc_status=KycStatus.APPROVED) for _ in range(3)]
    bystander = MemberFactory()
    ids = [m.pk for m in members]

    changed = Member.objects.filter(pk__in=ids).update(kyc_status=KycStatus.SUSPENDED)

    assert changed == 3
    updates = MemberAuditEvent.objects.filter(pgh_label="update")
    assert sorted(updates.values_list("pgh_obj_id", "kyc_status")) == [(pk, "suspended") for pk in sorted(ids)]
    assert not updates.filter(pgh_obj_id=bystander.pk).exists()
    # Inserts were captured too, with the status the member started with.
    assert MemberAuditEvent.objects.filter(pgh_label="insert", pgh_obj_id__in=ids, kyc_status="approved").count() == 3
    # An update that changes no tracked field is not an event.
    Member.objects.filter(pk__in=ids).update(kyc_status=KycStatus.SUSPENDED)
    assert updates.count() == 3


@pytest.mark.django_db
def test_receipts_are_captured_including_bulk_moves_of_title_and_their_chain_is_append_only() -> None:
    goods = receipt(quantity_kg="50.000")
    buyer = MemberFactory()
    Receipt.objects.filter(pk=goods.pk).update(holder=buyer, status="encumbered")
    history = list(ReceiptAuditEvent.objects.filter(pgh_obj_id=goods.pk).order_by("pgh_id")
                   .values_list("pgh_label", "holder_id", "status", "quantity_kg"))
    assert history == [("insert", goods.holder_id, "active", Decimal("50.000")),
                       ("update", buyer.pk, "encumbered", Decimal("50.000"))]
    from django.utils import timezone

    event = ReceiptEvent.objects.create(receipt=goods, seq=1, kind="issued", event={"seq": 1}, hash="a" * 64,
                                        signature={"alg": "EdDSA"}, recorded_at=timezone.now())
    # The chain is append-only: a link is its own record, never copied; rewriting or deleting one is refused.
    assert not ReceiptChainAuditEvent.objects.filter(pgh_obj_id=event.pk).exists()
    for action in (lambda: ReceiptEvent.objects.filter(pk=event.pk).update(kind="tampered"),
                   lambda: ReceiptEvent.objects.filter(pk=event.pk).delete()):
        with pytest.raises((InternalError, ProgrammingError, ProtectedError)), transaction.atomic():
            action()
    assert ReceiptEvent.objects.get(pk=event.pk).kind == "issued"
    # With the refusal switched off (the table's owner can), a rewrite is still on record.
    with connection.cursor() as cursor:
        cursor.execute("SELECT tgname FROM pg_trigger WHERE tgname LIKE 'pgtrigger_receipt_event_append_only%%'")
        (refusal,) = cursor.fetchone()
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # no deferred check may be pending for ALTER TABLE
        cursor.execute(f'ALTER TABLE receipts_receiptevent DISABLE TRIGGER "{refusal}"')  # rolled back with the test
    ReceiptEvent.objects.filter(pk=event.pk).update(kind="tampered")
    assert list(ReceiptChainAuditEvent.objects.filter(pgh_obj_id=event.pk).values_list("pgh_label", "kind")) == [
        ("update", "tampered")]


@pytest.mark.django_db
def test_one_statement_over_many_rows_records_each_changed_row_once_with_the_context() -> None:
    """Receipts, their chain and accounts are recorded by statement-level triggers (order entry writes a
    split's rows, or every touched account, in one statement): the same rows a row-level trigger writes."""
    from compliance.audit import audit_context

    first, second, third = (receipt(quantity_kg="10.000") for _ in range(3))
    buyer = MemberFactory()
    with audit_context(action="bulk_test", reason="three rows, one unchanged"):
        Receipt.objects.filter(pk__in=[first.pk, second.pk, third.pk]).update(
            holder=Case(When(pk=third.pk, then=F("holder")), default=Value(buyer.pk)))
    updates = ReceiptAuditEvent.objects.filter(pgh_obj_id__in=[first.pk, second.pk, third.pk], pgh_label="update")
    assert sorted(updates.values_list("pgh_obj_id", "holder_id")) == [(first.pk, buyer.pk), (second.pk, buyer.pk)]
    assert {e.pgh_context.metadata["action"] for e in updates} == {"bulk_test"}


@pytest.mark.django_db
def test_officer_actions_carry_who_and_why() -> None:
    who = officer()
    flag = flag_open(kind="other", member=MemberFactory(), reference="stock note", subject_key="note-1")
    flag_resolve(flag=flag, outcome=FlagStatus.DISMISSED, decided_by=who, reason="Explained by the warehouse")
    update = FlagAuditEvent.objects.get(pgh_obj_id=flag.pk, pgh_label="update")
    assert update.status == "dismissed"
    assert update.pgh_context.metadata == {"actor": who.pk, "action": "flag_dismissed",
                                           "reason": "Explained by the warehouse"}
    # A bulk update that bypasses the services is still on record (without a context).
    Flag.objects.filter(pk=flag.pk).update(status=FlagStatus.OPEN)
    bypass = FlagAuditEvent.objects.filter(pgh_obj_id=flag.pk, pgh_label="update").latest("pgh_id")
    assert bypass.status == "open" and bypass.pgh_context is None


@pytest.mark.django_db
def test_a_suspension_by_a_confirmed_hit_is_attributed_to_the_officer_and_the_flag() -> None:
    who = officer()
    member = MemberFactory()
    flag = flag_open(kind="sanctions_hit", member=member, reference="DEMO: listed", subject_key="entry-1")
    flag_resolve(flag=flag, outcome=FlagStatus.CONFIRMED, decided_by=who, reason="Same party")
    suspended = MemberAuditEvent.objects.get(pgh_obj_id=member.pk, pgh_label="update")
    assert suspended.kyc_status == "suspended"
    assert suspended.pgh_context.metadata == {"actor": who.pk, "action": "flag_confirmed", "reason": "Same party"}


@pytest.mark.django_db
def test_licence_drawdowns_are_on_record() -> None:
    made = licence(MemberFactory(), cap="20.000")
    licence_draw(licence=made, quantity_kg="5", reference="W-1")
    assert list(ExportLicenceAuditEvent.objects.filter(pgh_obj_id=made.pk).order_by("pgh_id")
                .values_list("pgh_label", "status", "drawn_kg")) == [
        ("insert", "pending", Decimal("0.000")), ("update", "approved", Decimal("0.000")),
        ("update", "approved", Decimal("5.000"))]
    row = LicenceDrawdownAuditEvent.objects.get()
    assert (row.pgh_label, row.reference, row.pgh_context.metadata["action"]) == ("insert", "W-1", "licence_draw")


@pytest.mark.django_db
def test_the_trail_itself_cannot_be_rewritten() -> None:
    MemberFactory()
    with pytest.raises(DatabaseError, match="append_only"), transaction.atomic():
        MemberAuditEvent.objects.update(kyc_status="approved")
    with pytest.raises(DatabaseError, match="append_only"), transaction.atomic():
        MemberAuditEvent.objects.all().delete()
    assert MemberAuditEvent.objects.count() == 1


def test_migrations_still_run_on_a_fresh_sqlite_file(tmp_path: Path) -> None:
    database = tmp_path / "embedded.sqlite3"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.local", "DATABASE_URL": f"sqlite:///{database}",
           "REDIS_URL": ""}
    result = subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    import sqlite3

    with sqlite3.connect(database) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        triggers = list(db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'"))
    assert {"compliance_flag", "compliance_memberauditevent", "compliance_exportlicence"} <= tables
    assert triggers == []  # pgtrigger installs nothing outside PostgreSQL
