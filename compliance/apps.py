"""The compliance app listens to receipts (never the other way round):

- `receipts.signals.receipt_proof_changed` (after commit: a receipt issued, split children, a new attestation
  on a lot) and storage incidents opening or closing -> the affected receipts are evaluated again by a
  Celery task;
- every `migrate` syncs the ESG rule packs from compliance/rulepacks/ (as receipts syncs its catalogue), and
  a version that changed re-evaluates every open receipt once the sync commits.

Enqueueing never fails the caller: a broker that is down is logged, and the pending-work sweep
(compliance.tasks.pending_work_sweep) finds the receipts again in the database.
"""

from __future__ import annotations

import logging
from typing import Any

from django.apps import AppConfig
from django.db import connections, transaction
from django.db.models.signals import post_migrate, post_save

logger = logging.getLogger(__name__)


def _on_receipt_proof_changed(sender: Any, receipt_ids: list[int], **kwargs: Any) -> None:
    from compliance.tasks import enqueue_esg

    enqueue_esg(sorted(set(receipt_ids)))


def _on_storage_incident_saved(sender: Any, instance: Any, created: bool, update_fields: Any = None,
                               **kwargs: Any) -> None:
    """An incident opening or closing changes `open_storage_incident` for every open receipt at its location."""
    if not created and not (update_fields and "closed_at" in update_fields) and instance.closed_at is None:
        return
    warehouse_id, location = instance.warehouse_id, instance.location

    def enqueue() -> None:
        from compliance.tasks import enqueue_esg
        from receipts.models import OPEN_STATUSES, Receipt

        enqueue_esg(Receipt.objects.filter(lot__warehouse_id=warehouse_id, lot__location=location,
                                           status__in=OPEN_STATUSES).order_by("pk").values_list("pk", flat=True))

    transaction.on_commit(enqueue, robust=True)


def _sync_rule_packs(sender: AppConfig, using: str = "default", **kwargs: Any) -> None:
    from compliance.models import EsgRulePack
    from compliance.services import esg_rule_packs_sync

    if EsgRulePack._meta.db_table not in connections[using].introspection.table_names():
        return  # compliance is not migrated (yet) in this database
    activated = esg_rule_packs_sync()
    if activated:
        logger.info("ESG rule packs activated: %s", ", ".join(str(p) for p in activated))


class ComplianceConfig(AppConfig):
    name = "compliance"
    verbose_name = "Compliance"

    def ready(self) -> None:
        from receipts.models import StorageIncident
        from receipts.signals import receipt_proof_changed

        receipt_proof_changed.connect(_on_receipt_proof_changed, dispatch_uid="compliance.esg_on_proof_changed")
        post_save.connect(_on_storage_incident_saved, sender=StorageIncident,
                          dispatch_uid="compliance.esg_on_storage_incident")
        # The rule packs are data in the repo (compliance/rulepacks/*.yaml); every migrate brings the tables in line.
        post_migrate.connect(_sync_rule_packs, sender=self, dispatch_uid="compliance.rule_packs_sync")
