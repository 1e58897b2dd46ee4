"""Signals the receipts app sends. Other apps listen (compliance re-evaluates ESG rules); receipts never
imports them."""

from __future__ import annotations

from collections.abc import Iterable

from django.dispatch import Signal

from config.after_commit import on_commit_merged

# Sent once the transaction commits, with `receipt_ids` (list[int]): what these receipts' proof rests on may
# have changed — the receipt was issued, born from a split, or its lot got a new attestation.
receipt_proof_changed = Signal()


def proof_changed_on_commit(receipt_ids: Iterable[int]) -> None:
    """Send `receipt_proof_changed` for these receipts after the current transaction commits (at once
    outside one), one send for every call of a transaction that merges its publishes (`config.after_commit`).
    A failing receiver is logged, never raised into the caller: the change has committed."""
    on_commit_merged("receipt_proof_changed", receipt_ids, _send_proof_changed)


def _send_proof_changed(receipt_ids: list[int]) -> None:
    receipt_proof_changed.send(sender=None, receipt_ids=receipt_ids)


# Sent inside the freezing transaction, before the receipt's row lock is taken, when the receipt backs a
# sell order (`order_ref`, "O42"), with `receipt_id` and `reason`. The trading app cancels that order, which
# releases its receipts, so the book never shows an ask that cannot deliver; receipts never imports trading.
# Receivers take their own locks (the order's instrument first) and raise to refuse the freeze.
receipt_freezing = Signal()
