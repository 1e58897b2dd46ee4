"""Pricing API: who may post factor observations, bad input refused with a code and nothing stored,
idempotent posting, and the public reads (observations, reference with components, candles, index)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone

from tests.conftest import client_for
from tests.factories.members import MemberFactory, UserFactory
from tests.factories.pricing import observation, record_trade
from tests.factories.trading import instrument
from trading import pricing
from trading.pricing_config import default_pricing_config
from trading.pricing_models import FactorObservation
from trading.pricing_services import candles_fold, index_publish, reference_price_compute, window_end_for

pytestmark = pytest.mark.django_db

URL = "/api/v1/factors/observations"
BODY = {"factor": "aluminium_price", "observed_at": "2026-01-01", "value": "2400.5", "unit": "USD/t",
        "source": "LME-style monthly average (test)"}


@pytest.fixture
def platform(member_client):
    return member_client(["platform"])


def test_the_platform_posts_an_observation_and_a_replay_returns_the_same_response(platform) -> None:
    first = platform.post(URL, BODY, key="obs-1")
    assert first.status_code == 201, first.content
    body = first.json()
    assert body["observation"]["factor"] == "aluminium_price" and body["observation"]["value"] == "2400.500000"
    assert body["observation"]["observed_at"].startswith("2026-01-01T00:00:00")
    replay = platform.post(URL, BODY, key="obs-1")
    assert replay.status_code == 201 and replay.content == first.content
    assert replay["Idempotent-Replayed"] == "true"
    assert FactorObservation.objects.count() == 1
    assert FactorObservation.objects.get().recorded_by == platform.user


def test_a_reserve_agency_and_a_staff_user_may_post_but_a_trader_may_not(member_client, trader) -> None:
    agency = member_client(["reserve_agency"])
    assert agency.post(URL, BODY).status_code == 201
    staff = client_for(UserFactory(member=MemberFactory(roles=["trader"]), is_staff=True))
    assert staff.post(URL, {**BODY, "observed_at": "2026-02-01"}).status_code == 201
    refused = trader.post(URL, {**BODY, "observed_at": "2026-03-01"})
    assert refused.status_code == 403 and refused.json()["code"] == "factor_poster_not_authorised"
    pending = member_client(["platform"], kyc_status="pending")
    assert pending.post(URL, {**BODY, "observed_at": "2026-03-01"}).status_code == 403
    assert Client().post(URL, BODY, content_type="application/json").status_code == 401
    assert FactorObservation.objects.count() == 2


def test_a_post_without_an_idempotency_key_is_refused(platform) -> None:
    response = platform.post(URL, BODY, key=None)
    assert response.status_code == 400 and response.json()["code"] == "idempotency_key_missing"
    assert not FactorObservation.objects.exists()


@pytest.mark.parametrize(("change", "status", "code"), [
    ({"observed_at": (timezone.now() + timedelta(days=3)).date().isoformat()}, 400, "factor_in_future"),
    ({"value": "-12"}, 400, "negative_value"),
    ({"observed_at": "2025-12-01"}, 409, "duplicate_observation"),
    ({"factor": "cobalt_price"}, 400, "unknown_factor"),
    ({"unit": "USD/lb"}, 400, "wrong_unit"),
    ({"observed_at": "01/12/2025"}, 400, "invalid_timestamp"),
    ({"value": "1e999999"}, 400, "invalid_value"),
    ({"source": ""}, 400, "invalid_input"),
])
def test_bad_factor_input_gets_a_clear_code_and_nothing_is_stored(platform, change, status, code) -> None:
    observation("aluminium_price", datetime(2025, 12, 1, tzinfo=UTC), "2300", unit="USD/t")
    response = platform.post(URL, {**BODY, **change})
    assert response.status_code == status, response.content
    body = response.json()
    assert body["code"] == code and body["message"]
    if code not in ("invalid_input",):
        assert body["details"]["issues"][0]["code"] == code
    assert FactorObservation.objects.count() == 1


def test_several_problems_are_all_listed(platform) -> None:
    response = platform.post(URL, {**BODY, "value": "-1", "unit": "t", "observed_at": "2099-01-01"})
    assert response.status_code == 400
    codes = {i["code"] for i in response.json()["details"]["issues"]}
    assert codes == {"factor_in_future", "negative_value", "wrong_unit"}


def test_observations_of_a_factor_are_public_and_an_unknown_factor_is_404() -> None:
    for month in (1, 2, 3):
        observation("solar_installations", datetime(2026, month, 1, tzinfo=UTC), f"2{month}.5", unit="GW/month")
    rows = Client().get("/api/v1/factors/solar_installations/observations?since=2026-02-01").json()
    assert [(r["observed_at"][:10], r["value"]) for r in rows] == [("2026-02-01", "22.500000"),
                                                                   ("2026-03-01", "23.500000")]
    missing = Client().get("/api/v1/factors/copper/observations")
    assert missing.status_code == 404 and missing.json()["code"] == "unknown_factor"
    bad = Client().get("/api/v1/factors/solar_installations/observations?since=yesterday")
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_timestamp"


def test_the_reference_endpoint_shows_the_latest_price_with_its_components() -> None:
    inst = instrument()
    assert Client().get("/api/v1/instruments/GA-6N-CN/reference").json()["code"] == "no_reference"
    end = window_end_for(timezone.now())
    b, s = MemberFactory(), MemberFactory()
    record_trade(inst, price="600.00", at=end - timedelta(hours=1), buyer=b, seller=s)
    reference_price_compute(instrument=inst, window_end=end - timedelta(minutes=1))
    latest = reference_price_compute(instrument=inst, window_end=end)

    body = Client().get("/api/v1/instruments/GA-6N-CN/reference").json()

    assert body["window_end"].startswith(end.strftime("%Y-%m-%dT%H:%M")) and Decimal(body["value"]) == latest.value
    assert set(body["components"]["components"]) == {"trades", "book", "model"}
    assert body["components"]["omitted"][0]["code"] == "book_side_empty"
    assert {"band_low", "band_high", "vol", "forward_curve", "method_version"} <= set(body)
    assert Client().get("/api/v1/instruments/NOPE/reference").status_code == 404


def test_candles_by_interval() -> None:
    inst = instrument()
    b, s = MemberFactory(), MemberFactory()
    base = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    for minutes, price in ((1, "100.00"), (2, "104.00"), (61, "99.00")):
        record_trade(inst, price=price, at=base + timedelta(minutes=minutes), buyer=b, seller=s)
    candles_fold(instrument=inst)

    hours = Client().get("/api/v1/instruments/GA-6N-CN/candles?interval=1h").json()
    assert [(c["bucket_start"][:16], c["open"], c["close"], c["trade_count"]) for c in hours] == [
        ("2026-03-02T10:00", "100.0000", "104.0000", 2), ("2026-03-02T11:00", "99.0000", "99.0000", 1)]
    minutes = Client().get("/api/v1/instruments/GA-6N-CN/candles?interval=1m&limit=2").json()
    assert [c["bucket_start"][11:16] for c in minutes] == ["10:02", "11:01"]  # the newest two, oldest first
    assert len(Client().get("/api/v1/instruments/GA-6N-CN/candles?interval=1d").json()) == 1
    bad = Client().get("/api/v1/instruments/GA-6N-CN/candles?interval=5m")
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_interval"


def test_index_history_and_the_methodology_are_public() -> None:
    inst = instrument()
    method = default_pricing_config().index
    today = (timezone.now() + method.utc_offset).date()
    for back in (3, 2):
        index_publish(grade=inst.grade, day=today - timedelta(days=back))

    rows = Client().get("/api/v1/index/GA-6N").json()
    assert [(r["day"], r["status"], r["value"]) for r in rows] == [
        ((today - timedelta(days=3)).isoformat(), "assessed", "580.0000"),
        ((today - timedelta(days=2)).isoformat(), "assessed", "580.0000")]
    since = (today - timedelta(days=2)).isoformat()
    assert len(Client().get(f"/api/v1/index/GA-6N?since={since}").json()) == 1
    assert Client().get("/api/v1/index/XX-9N").status_code == 404

    text = Client().get("/api/v1/index/methodology").json()
    assert text["index_method_version"] == "IDX-1" and text["reference_method_version"] == pricing.REFERENCE_METHOD_VERSION
    assert text["text"].startswith("# Ingot pricing methodology")


def test_index_history_gives_a_regions_values_with_region_and_refuses_a_region_the_grade_lacks() -> None:
    cn = instrument()
    instrument("GA-6N-EU", region="EU", reference="612.00")
    method = default_pricing_config().index
    day = (timezone.now() + method.utc_offset).date() - timedelta(days=2)
    for region in ("", "CN", "EU"):
        index_publish(grade=cn.grade, day=day, region=region)

    grade_index = Client().get("/api/v1/index/GA-6N").json()
    assert [(r["region"], r["value"], r["instruments"]) for r in grade_index] == [
        ("", "580.0000", ["GA-6N-CN", "GA-6N-EU"])]  # no trades: the benchmark (first code) is assessed
    europe = Client().get("/api/v1/index/GA-6N?region=EU").json()
    assert [(r["region"], r["status"], r["value"], r["assessed_from"]) for r in europe] == [
        ("EU", "assessed", "612.0000", "GA-6N-EU")]

    unknown = Client().get("/api/v1/index/GA-6N?region=US")
    assert unknown.status_code == 400
    body = unknown.json()
    assert body["code"] == "invalid_region" and "CN, EU" in body["message"]


def test_the_schema_documents_the_pricing_endpoints() -> None:
    schema = json.loads(Client().get("/api/schema/", HTTP_ACCEPT="application/json").content)
    paths = schema["paths"]
    for path in ("/api/v1/factors/observations", "/api/v1/factors/{factor}/observations",
                 "/api/v1/instruments/{code}/reference", "/api/v1/instruments/{code}/candles",
                 "/api/v1/index/{grade}", "/api/v1/index/methodology"):
        assert path in paths, path
    post = paths["/api/v1/factors/observations"]["post"]
    assert any(p["name"] == "Idempotency-Key" and p["required"] for p in post["parameters"])
    assert {"201", "400", "403", "409"} <= set(post["responses"])
    assert "reserve_agency" in post["description"]
