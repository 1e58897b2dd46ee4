"""Stored pricing: external factor observations, reference prices with their components, the daily
spot index per grade, and OHLC candles with the watermark that makes folding incremental.

Registered by the star import at the end of trading/models.py; the method is trading/METHODOLOGY.md.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from receipts.models import Grade

__all__ = [
    "CANDLE_INTERVALS",
    "Candle",
    "CandleInterval",
    "CandleWatermark",
    "FactorObservation",
    "IndexStatus",
    "IndexValue",
    "ReferencePrice",
]



# trading.models' precision (PRICE, receipts' MASS), repeated: importing trading.models here would be circular.
def _price(**options: Any) -> models.DecimalField:
    return models.DecimalField(max_digits=18, decimal_places=4, **options)


def _mass(**options: Any) -> models.DecimalField:
    return models.DecimalField(max_digits=18, decimal_places=3, **options)


class FactorObservation(models.Model):
    """One published value of an external series (aluminium price, PV installations, utilisation)."""

    factor = models.CharField(max_length=64, help_text="Factor id from trading/pricing_config.yaml.")
    observed_at = models.DateTimeField(help_text="The moment (or period start) the value describes, UTC.")
    # USD/t, GW/month, percentages: six places keep any published figure exact (trading.factors checks).
    value = models.DecimalField(max_digits=24, decimal_places=6)
    unit = models.CharField(max_length=20)
    source = models.CharField(max_length=300)
    # When Ingot learnt the value: the factor model only uses what was known at its as-of time.
    recorded_at = models.DateTimeField(default=timezone.now)
    recorded_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                    related_name="+")

    class Meta:
        ordering = ["factor", "observed_at"]
        constraints = [
            models.UniqueConstraint(fields=["factor", "observed_at"], name="factor_observation_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.factor}@{self.observed_at:%Y-%m-%d} = {self.value} {self.unit}"


class ReferencePrice(models.Model):
    """The reference price of one instrument as of `window_end`, with everything that made it.

    One row per (instrument, window_end): the recompute task is idempotent for its window.
    `value` is null when no component and no previous reference exist (the reasons say so).
    """

    instrument = models.ForeignKey("trading.Instrument", on_delete=models.PROTECT, related_name="reference_prices")
    window_start = models.DateTimeField()
    window_end = models.DateTimeField(help_text="As-of time: only trades and factors known by then count.")
    value = _price(null=True, blank=True)
    components = models.JSONField(help_text="Components, weights used, omissions and reasons (see METHODOLOGY §2).")
    band_low = _price(null=True, blank=True)
    band_high = _price(null=True, blank=True)
    band_pct = models.DecimalField(max_digits=6, decimal_places=2, null=True, blank=True,
                                   help_text="Half-width applied, % (widened when vol is high).")
    vol = models.DecimalField(max_digits=8, decimal_places=2, null=True, blank=True,
                              help_text="30-day realised volatility, %; null when unknown.")
    forward_curve = models.JSONField(default=dict, blank=True)
    method_version = models.CharField(max_length=16)
    computed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["instrument_id", "-window_end"]
        constraints = [
            models.UniqueConstraint(fields=["instrument", "window_end"], name="reference_price_one_per_window"),
            models.CheckConstraint(condition=Q(value__isnull=True) | Q(value__gt=0), name="reference_price_positive"),
            models.CheckConstraint(condition=Q(window_start__lt=models.F("window_end")),
                                   name="reference_price_window_order"),
        ]

    def __str__(self) -> str:
        return f"{self.instrument_id}@{self.window_end:%Y-%m-%d %H:%M} = {self.value}"


class IndexStatus(models.TextChoices):
    TRADED = "traded", "Traded (VWAP of eligible trades)"
    ASSESSED = "assessed", "Assessed (reference price; too few trades)"


class IndexValue(models.Model):
    """The published daily spot index of a grade (METHODOLOGY §1), or of the grade in one delivery region
    (§1.6: `region` set). Never recalculated once published."""

    grade = models.ForeignKey(Grade, on_delete=models.PROTECT, related_name="index_values")
    region = models.CharField(max_length=20, blank=True, default="",
                              help_text="Delivery region of a regional value; blank for the grade's index "
                                        "over every region.")
    day = models.DateField()
    value = _price()
    status = models.CharField(max_length=8, choices=IndexStatus.choices)
    trade_count = models.PositiveIntegerField(help_text="Eligible trades (after exclusions).")
    seller_count = models.PositiveIntegerField(help_text="Distinct sellers among the eligible trades.")
    volume = _mass(help_text="Eligible quantity, kg.")
    considered = models.PositiveIntegerField(default=0, help_text="Trades in the window before exclusions.")
    median = _price(null=True, blank=True, help_text="Volume-weighted median (anchor).")
    excluded = models.JSONField(default=list, help_text="[{trade_id, reason, detail}] of excluded trades.")
    assessed_reference = _price(null=True, blank=True)
    assessed_from = models.CharField(max_length=32, blank=True, help_text="Instrument whose reference was used.")
    instruments = models.JSONField(default=list, help_text="Instrument codes whose trades count.")
    reason = models.TextField(blank=True)
    window_start = models.DateTimeField()
    window_end = models.DateTimeField()
    method_version = models.CharField(max_length=16)
    published_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["grade_id", "-day"]
        constraints = [
            models.UniqueConstraint(fields=["grade", "region", "day"], name="index_value_one_per_grade_region_day"),
            models.CheckConstraint(condition=Q(value__gt=0), name="index_value_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.grade_id}{'/' + self.region if self.region else ''} {self.day}: {self.value} ({self.status})"


class CandleInterval(models.TextChoices):
    MINUTE = "1m", "1 minute"
    HOUR = "1h", "1 hour"
    DAY = "1d", "1 day (UTC)"


CANDLE_INTERVALS: tuple[str, ...] = tuple(CandleInterval.values)


class Candle(models.Model):
    """OHLC of one instrument over one bucket, folded from its trades in execution (id) order."""

    instrument = models.ForeignKey("trading.Instrument", on_delete=models.PROTECT, related_name="candles")
    interval = models.CharField(max_length=2, choices=CandleInterval.choices)
    bucket_start = models.DateTimeField()
    open = _price()
    high = _price()
    low = _price()
    close = _price()
    volume = _mass()
    turnover = models.DecimalField(max_digits=24, decimal_places=7, help_text="Σ price × quantity.")
    trade_count = models.PositiveIntegerField()

    class Meta:
        ordering = ["instrument_id", "interval", "bucket_start"]
        constraints = [
            models.UniqueConstraint(fields=["instrument", "interval", "bucket_start"], name="candle_one_per_bucket"),
            models.CheckConstraint(condition=Q(low__lte=models.F("high")), name="candle_low_le_high"),
        ]

    def __str__(self) -> str:
        return f"{self.instrument_id} {self.interval} {self.bucket_start:%Y-%m-%d %H:%M}"


class CandleWatermark(models.Model):
    """The last trade id folded into an instrument's candles: each fold reads only newer trades."""

    instrument = models.OneToOneField("trading.Instrument", on_delete=models.PROTECT, primary_key=True,
                                      related_name="candle_watermark")
    last_trade_id = models.BigIntegerField(default=0)
    folded_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.instrument_id} <= T{self.last_trade_id}"
