"""Storage readings: a breach of a stored metal's limits (gallium above 25 °C) or a broken seal opens an
incident that flags every open receipt at that location, and the receipt shows it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from receipts import services
from receipts.canonical import utc_stamp
from receipts.models import StorageIncident, StorageReading
from tests.conftest import client_for
from tests.factories.members import UserFactory
from tests.factories.receipts import ReceiptWorld

pytestmark = pytest.mark.django_db


@pytest.fixture
def world() -> ReceiptWorld:
    return ReceiptWorld()


@pytest.fixture
def wh(world: ReceiptWorld) -> Any:
    return client_for(UserFactory(member=world.operator))


def reading(wh: Any, world: ReceiptWorld, *, location: str = "A1", temperature: str = "20.0",
            humidity: str = "40.0", seal: bool = True, key: str | None = "auto", minutes_ago: int = 1,
            observed_at: str | None = None) -> Any:
    observed_at = observed_at or utc_stamp(timezone.now() - timedelta(minutes=minutes_ago))
    body = {"location": location, "observed_at": observed_at,
            "temperature_c": temperature, "humidity_pct": humidity, "seal_intact": seal}
    return wh.post(f"/api/v1/warehouses/{world.warehouse.code}/readings", body, key=key)


def test_gallium_above_25c_opens_an_incident_flagging_the_receipts_there(world, wh) -> None:
    here_a = world.receipt(quantity="10.000", location="A1")
    here_b = world.receipt(quantity="5.000", location="A1")
    elsewhere = world.receipt(quantity="7.000", location="B2")

    calm = reading(wh, world, temperature="24.9")
    assert calm.status_code == 201 and calm.json()["incident"] is None
    assert StorageIncident.objects.count() == 0

    hot = reading(wh, world, temperature="26.5")
    assert hot.status_code == 201, hot.content
    incident = hot.json()["incident"]
    assert sorted(incident["receipts"]) == sorted([here_a.number, here_b.number])
    assert incident["breaches"][0] | {"observed_at": "x"} == {
        "metal": "Ga", "limit": "max_temp_c", "measured": "26.50", "allowed": "25.00", "observed_at": "x"}

    holder = client_for(UserFactory(member=here_a.holder))
    flagged = holder.get(f"/api/v1/receipts/{here_a.number}").json()["storage_incidents_open"]
    assert [i["id"] for i in flagged] == [incident["id"]]
    assert wh.get(f"/api/v1/receipts/{elsewhere.number}").json()["storage_incidents_open"] == []
    assert wh.get("/api/v1/warehouses").json()[0]["open_incidents"] == 1


def test_a_broken_seal_is_a_breach_whatever_the_metal(world, wh) -> None:
    tungsten = ReceiptWorld(metal="W")
    receipt = tungsten.receipt(quantity="50.000", form="powder", purity="99.995",
                               impurities=[("Mo", "12", "ppm"), ("Fe", "5", "ppm"), ("O", "300", "ppm")])
    operator = client_for(UserFactory(member=tungsten.operator))
    assert reading(operator, tungsten, temperature="20").json()["incident"] is None
    broken = reading(operator, tungsten, seal=False).json()["incident"]
    assert broken["breaches"][0]["limit"] == "seal" and broken["receipts"] == [receipt.number]


def test_germanium_tolerates_what_gallium_does_not(wh, world) -> None:
    germanium = ReceiptWorld(metal="Ge")
    germanium.receipt(quantity="5.000", impurities=[("Fe", "2", "ppb"), ("Cu", "1", "ppb")], purity="99.99996")
    operator = client_for(UserFactory(member=germanium.operator))
    assert reading(operator, germanium, temperature="30").json()["incident"] is None  # Ge: up to 35 °C


def test_further_breaches_join_the_open_incident_until_it_is_closed(world, wh) -> None:
    world.receipt(quantity="10.000", location="A1")
    first = reading(wh, world, temperature="26", minutes_ago=3).json()["incident"]
    second = reading(wh, world, temperature="27", minutes_ago=2).json()["incident"]
    third = reading(wh, world, temperature="26", seal=False, minutes_ago=1).json()["incident"]
    assert first["id"] == second["id"] == third["id"]
    assert [b["limit"] for b in third["breaches"]] == ["max_temp_c", "seal"]  # each kind recorded once
    assert StorageIncident.objects.count() == 1 and StorageReading.objects.count() == 3

    services.storage_incident_close(incident=StorageIncident.objects.get(), reason="cooling restored, re-assayed")
    fresh = reading(wh, world, temperature="26").json()["incident"]
    assert fresh["id"] != first["id"]


def test_metal_without_receipts_still_breaches(world, wh) -> None:
    world.lot(mass="10.000", location="C3")  # graded, but no receipt issued yet
    incident = reading(wh, world, location="C3", temperature="28").json()["incident"]
    assert incident is not None and incident["receipts"] == []


def test_withdrawn_metal_is_no_longer_at_the_location(world, wh) -> None:
    receipt = world.receipt(quantity="10.000", mass="10.000", location="D4")
    services.receipt_withdrawal_request(receipt=receipt, by=receipt.holder, withdrawal_ref="W-1")
    services.receipt_withdrawal_complete(receipt=receipt, by=world.operator)
    assert reading(wh, world, location="D4", temperature="28").json()["incident"] is None


def test_reading_replay_stores_one_reading(world, wh) -> None:
    world.receipt(quantity="10.000")
    at = utc_stamp(timezone.now() - timedelta(minutes=1))
    first = reading(wh, world, temperature="26", key="sensor-7-0001", observed_at=at)
    again = reading(wh, world, temperature="26", key="sensor-7-0001", observed_at=at)
    assert first.status_code == 201 and again.content == first.content
    assert StorageReading.objects.count() == 1
