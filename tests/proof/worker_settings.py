"""Settings for the Celery worker (and beat) of the proof's fault suites, tests/proof/test_worker_faults.py
and tests/proof/test_broker_loss.py: the test settings, on a Redis server of the test's own (REDIS_URL), plus
test-only hooks. The broker transport options are NOT changed here: the suites prove the shipped ones
(config/settings/base.py).

- INGOT_PROOF_QUEUE: the default queue, so what the worker or beat publishes (fan-outs, the pending-work
  sweep) lands on the queue the test's worker consumes.
- INGOT_PROOF_HOOK_DIR: a folder of pause plans. A file `<task id>.prerun` or `<task id>.postrun` holding a
  number of seconds makes the FIRST run of that task sleep that long before its body (prerun) or after its
  body has returned and committed, before the worker acknowledges it (postrun). The plan is consumed by
  that run, so the redelivered run goes straight through. While it sleeps, the pool child writes
  `<task id>.<phase>.paused` ("<pid> <time>") so the test knows whom to kill -9 and when; a file
  `<task id>.<phase>.release` ends the pause early.
- INGOT_PROOF_BEAT_EVERY: run beat with a short schedule (seconds) of the pending-work sweep, the pricing
  tick and the candles fold (the broker-loss suite); INGOT_PROOF_BEAT_FILE: beat's schedule file.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from config.settings.test import *  # noqa: F403

CELERY_TASK_DEFAULT_QUEUE = os.environ.get("INGOT_PROOF_QUEUE", "celery")

_BEAT_EVERY = float(os.environ.get("INGOT_PROOF_BEAT_EVERY", "0") or 0)
if _BEAT_EVERY:
    _SWEEP_MIN_AGE = int(os.environ.get("INGOT_PROOF_SWEEP_MIN_AGE", "2"))
    CELERY_BEAT_SCHEDULE = {
        "pending-work-sweep": {"task": "compliance.tasks.pending_work_sweep", "schedule": _BEAT_EVERY,
                               "kwargs": {"min_age_seconds": _SWEEP_MIN_AGE}},
        "reference-prices-every-minute": {"task": "trading.tasks.reference_prices_tick", "schedule": _BEAT_EVERY},
        "candles-fold-every-minute": {"task": "trading.tasks.candles_fold_all", "schedule": _BEAT_EVERY},
    }
    CELERY_BEAT_SCHEDULE_FILENAME = os.environ["INGOT_PROOF_BEAT_FILE"]

_HOOK_DIR = os.environ.get("INGOT_PROOF_HOOK_DIR")
if _HOOK_DIR:
    from celery.signals import task_postrun, task_prerun

    def _pause(phase: str, task_id: str | None) -> None:
        plan = Path(_HOOK_DIR) / f"{task_id}.{phase}"
        try:
            seconds = float(plan.read_text(encoding="utf-8") or 0)
            plan.unlink()  # consumed: the redelivered run does not pause
        except FileNotFoundError:
            return
        marker = plan.with_name(f"{plan.name}.paused")
        scratch = plan.with_name(f"{plan.name}.tmp")
        scratch.write_text(f"{os.getpid()} {time.time()}", encoding="utf-8")
        scratch.replace(marker)
        release = plan.with_name(f"{plan.name}.release")  # the test may end the pause early
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not release.exists():
            time.sleep(0.02)

    def _before(sender: Any = None, task_id: str | None = None, **kwargs: Any) -> None:
        _pause("prerun", task_id)

    def _after(sender: Any = None, task_id: str | None = None, **kwargs: Any) -> None:
        _pause("postrun", task_id)

    task_prerun.connect(_before, weak=False)
    task_postrun.connect(_after, weak=False)
