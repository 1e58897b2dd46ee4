"""Signals the receipts app sends. Other apps listen (compliance re-evaluates ESG rules); receipts never
imports them."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction
from django.dispatch import Signal

# Sent once the transaction commits, with `receipt_ids` (list[int]): what these receipts' proof rests on may
# have changed — the receipt was issued, born from a split, or its lot got a new attestation.
receipt_proof_changed = Signal()


def proof_changed_on_commit(receipt_ids: Iterable[int]) -> None:
    """Send `receipt_proof_changed` for these receipts after the current transaction commits (at once
    outside one). A failing receiver is logged, never raised into the caller: the change has committed."""
    ids = sorted(set(receipt_ids))
    if ids:
        transaction.on_commit(lambda: receipt_proof_changed.send(sender=None, receipt_ids=ids), robust=True)
