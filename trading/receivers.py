"""What trading does when another app tells it something: each receiver calls one service."""

from __future__ import annotations

from typing import Any

from trading.services import order_cancel_for_hold


def pull_order_behind_frozen_receipt(sender: Any, *, receipt_id: int, order_ref: str, reason: str,
                                     **kwargs: Any) -> None:
    """receipts' `receipt_freezing`: the sell order the receipt backs leaves the book before the freeze."""
    order_cancel_for_hold(order_ref=order_ref, reason=reason)
