"""The receipts console: records read-only, state moved only by reason actions that call the services
(freeze / unfreeze a receipt as a signed chain event, close an incident, approve a warehouse)."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse

from members.services import OFFICER_GROUP, officer_group_sync
from receipts import services
from receipts.models import Receipt, ReceiptEvent, StorageIncident
from tests.factories.compliance import officer_client
from tests.factories.members import UserFactory
from tests.factories.receipts import ReceiptWorld

pytestmark = pytest.mark.django_db


@pytest.fixture
def console() -> Client:
    """An officer as in production: staff, in the officers' group (not a superuser), OTP-verified."""
    officer_group_sync()
    user = UserFactory(member=None, is_staff=True, username="receipts-officer")
    user.groups.add(Group.objects.get(name=OFFICER_GROUP))
    return officer_client(user)


def act(client: Client, model: str, action: str, pks: list[int], reason: str | None) -> Any:
    data: dict[str, object] = {"action": action, "_selected_action": [str(pk) for pk in pks]}
    if reason is not None:
        data.update({"apply": "1", "reason": reason})
    return client.post(reverse(f"admin:receipts_{model}_changelist"), data)


def test_freeze_and_unfreeze_with_a_reason_append_signed_events(console: Client) -> None:
    receipt = ReceiptWorld().receipt(quantity="10.000")
    asked = act(console, "receipt", "freeze_receipts", [receipt.pk], None)
    assert asked.status_code == 200 and b"reason" in asked.content  # the intermediate page asks why
    assert Receipt.objects.get(pk=receipt.pk).status == "active"

    act(console, "receipt", "freeze_receipts", [receipt.pk], "Sanctions hit under review")
    receipt.refresh_from_db()
    assert receipt.status == "frozen"
    frozen = ReceiptEvent.objects.get(receipt=receipt, seq=2)
    assert frozen.kind == "frozen" and frozen.event["data"]["reason"] == "Sanctions hit under review"
    assert LogEntry.objects.filter(object_id=str(receipt.pk), change_message__contains="Sanctions").exists()

    act(console, "receipt", "unfreeze_receipts", [receipt.pk], "Cleared after review")
    receipt.refresh_from_db()
    assert receipt.status == "active" and receipt.last_event_seq == 3


def test_receipt_pages_are_read_only(console: Client) -> None:
    receipt = ReceiptWorld().receipt(quantity="10.000")
    assert console.get(reverse("admin:receipts_receipt_changelist")).status_code == 200
    page = console.get(reverse("admin:receipts_receipt_change", args=[receipt.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    assert 'name="quantity_kg"' not in html and 'name="holder"' not in html and 'name="_save"' not in html
    # Posting a change anyway is refused; nothing moves.
    posted = console.post(reverse("admin:receipts_receipt_change", args=[receipt.pk]),
                          {"quantity_kg": "999.000", "status": "withdrawn"})
    assert posted.status_code == 403
    assert Receipt.objects.get(pk=receipt.pk).quantity_kg == receipt.quantity_kg
    assert console.get(reverse("admin:receipts_receipt_add")).status_code == 403
    assert console.get(reverse("admin:receipts_receipt_delete", args=[receipt.pk])).status_code == 403
    for model in ("metal", "grade", "lot", "attestation", "receiptevent", "stockstatement", "stockgap",
                  "warehouse", "storageincident"):
        assert console.get(reverse(f"admin:receipts_{model}_changelist")).status_code == 200, model


def test_close_a_storage_incident_with_a_reason(console: Client) -> None:
    from datetime import timedelta
    from decimal import Decimal

    from django.utils import timezone

    world = ReceiptWorld()
    world.receipt(quantity="10.000")
    services.storage_reading_record(warehouse=world.warehouse, by=world.operator, location="A1",
                                    observed_at=timezone.now() - timedelta(minutes=1), temperature_c=Decimal("27"),
                                    humidity_pct=Decimal("40"), seal_intact=True)
    incident = StorageIncident.objects.get()
    assert str(incident.pk) in console.get(reverse("admin:receipts_storageincident_changelist")).content.decode()
    act(console, "storageincident", "close_incidents", [incident.pk], "Chiller repaired; lots re-assayed")
    incident.refresh_from_db()
    assert incident.closed_at is not None and incident.closed_reason == "Chiller repaired; lots re-assayed"


def test_approve_a_warehouse(console: Client) -> None:
    world = ReceiptWorld()
    services.warehouse_set_approved(warehouse=world.warehouse, approved=False)
    act(console, "warehouse", "approve_warehouse", [world.warehouse.pk], "Audit of 2026-03 passed")
    world.warehouse.refresh_from_db()
    assert world.warehouse.approved
    act(console, "warehouse", "withdraw_warehouse_approval", [world.warehouse.pk], "Lapsed insurance")
    world.warehouse.refresh_from_db()
    assert not world.warehouse.approved


def test_a_lot_shows_its_nominations_inline_read_only(console: Client) -> None:
    world = ReceiptWorld()
    lot = world.lot(mass="10.000")
    verifier = UserFactory().member
    verifier.roles.create(role="verifier")
    world.nominate(lot, verifier, "carbon_footprint")
    services.lot_nomination_withdraw(lot=lot, by=world.operator, member=verifier, kinds=["carbon_footprint"])
    page = console.get(reverse("admin:receipts_lot_change", args=[lot.pk]))
    assert page.status_code == 200
    text = page.content.decode()
    assert "Nominations to attest" in text
    assert str(world.lab) in text and str(verifier) in text  # the live one and the withdrawn one
    assert 'name="nominations-0-kind"' not in text  # shown, not editable
