"""API fuzzing with schemathesis against /api/schema/, every phase and every check (tests/proof/fuzzing.py).

One engine run per identity: a member of each role (trader, warehouse, assay lab), an officer and
anonymous in CI; every one of the eight identities and anonymous in `make proof`. All eight are peers of
the object-level authorization check. Zero findings are allowed apart from known, reported bugs
(fuzzing.KNOWN_BUGS, each reproduced by an xfail(strict) test in test_known_bugs.py).

The CI variant uses a fixed seed (deterministic); `make proof` draws one and prints it; INGOT_PROOF_SEED pins it.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.proof.fuzzing import ALL_PHASES, CATEGORIES, FuzzRun, run_fuzz
from tests.proof.record import record
from tests.proof.world import ApiWorld, build_api_world

pytestmark = pytest.mark.django_db

# CI (about 40 s): every phase as a trader (the boundary/negative "coverage" phase is the slow one and
# mostly identity-independent), random fuzzing and stateful sequences as the other member roles, fuzzing
# as an officer and anonymously. `make proof`: every phase as each of the eight identities and anonymous.
CI_PLAN: list[tuple[str | None, tuple[str, ...]]] = [
    ("trader_A", ALL_PHASES),
    ("warehouse_A", ("fuzzing", "stateful")),
    ("assay_lab_A", ("fuzzing", "stateful")),
    ("officer_A", ("fuzzing",)),
    (None, ("fuzzing",)),
]
CI_MAX_EXAMPLES = 2
PROOF_MAX_EXAMPLES = 25
PROOF_MIN_REQUESTS = 5000


def _seed(default: int | None) -> int:
    if os.environ.get("INGOT_PROOF_SEED"):
        return int(os.environ["INGOT_PROOF_SEED"])
    return default if default is not None else random.SystemRandom().randrange(2**31)


def campaign(world: ApiWorld, workdir: Path, plan: list[tuple[str | None, tuple[str, ...]]], *, seed: int,
             max_examples: int, variant: str) -> list[FuzzRun]:
    print(f"schemathesis seed: {seed} (INGOT_PROOF_SEED={seed} reproduces)")
    runs = []
    for index, (identity, phases) in enumerate(plan):
        run = run_fuzz(world, workdir, user=identity, seed=seed + index, max_examples=max_examples, phases=phases)
        print(f"  {run.identity:12} {'+'.join(phases):32} {run.requests:6} requests {run.cases:6} cases {len(run.operations):3} operations "
              f"{run.seconds:6.1f} s  statuses {dict(sorted(run.statuses.items()))}  {run.counts()}  "
              f"known bugs hit: {sorted({bug.ref.split()[0] for bug, _ in run.known})}")
        runs.append(run)
    totals: Counter[str] = Counter()
    for run in runs:
        totals.update(run.counts())
    known = sorted({bug.ref.split()[0] for run in runs for bug, _ in run.known})
    findings = [f for run in runs for f in run.findings]
    errors = [e for run in runs for e in run.errors]
    requests = sum(r.requests for r in runs)
    statuses: Counter[str] = Counter()
    for run in runs:
        statuses.update(run.statuses)
    known_findings = sum(len(run.known) for run in runs)
    # Failures: everything that did not hold, known bugs included (the gate below fails on the new ones only).
    record("API fuzzing (schemathesis, all checks)", runs=requests,
           failures=len(findings) + len(errors) + known_findings, variant=variant, figures={
               "identities": len(runs), "peers": len(world.actors), "cases": sum(r.cases for r in runs),
               "operations": max(len(r.operations) for r in runs),
               **{name.replace("_", " "): totals[name] for name in CATEGORIES},
               "5xx responses": sum(n for s, n in statuses.items() if s.startswith("5")),
               "findings of known bugs": f"{known_findings} ({', '.join(known) or 'none'})",
               "new findings": len(findings) + len(errors),
               "seconds": round(sum(r.seconds for r in runs), 1), "seed": seed})
    assert not errors, "the fuzzer could not run some requests:\n" + "\n".join(errors[:20])
    assert not findings, f"{len(findings)} findings:\n\n" + "\n\n".join(str(f)[:2000] for f in findings[:30])
    return runs


@pytest.fixture
def world() -> ApiWorld:
    return build_api_world()


def test_fuzz_every_operation_as_each_role(world: ApiWorld, tmp_path: Path) -> None:
    runs = campaign(world, tmp_path, CI_PLAN, seed=_seed(20261125), max_examples=CI_MAX_EXAMPLES, variant="ci")
    assert all(r.checks_run["object_level_authorization"] > 0 for r in runs if r.identity != "anonymous")


@pytest.mark.proof
def test_fuzz_every_operation_as_every_identity(world: ApiWorld, tmp_path: Path) -> None:
    plan: list[tuple[str | None, tuple[str, ...]]] = [(name, ALL_PHASES) for name in [*world.actors, None]]
    runs = campaign(world, tmp_path, plan, seed=_seed(None), max_examples=PROOF_MAX_EXAMPLES, variant="proof")
    assert sum(r.requests for r in runs) >= PROOF_MIN_REQUESTS


def test_the_fuzzer_catches_a_planted_object_leak(world: ApiWorld, tmp_path: Path, monkeypatch: Any) -> None:
    """The harness has teeth: a receipt detail view that forgets the member's scope is reported by the
    object_level_authorization check (the owner's receipt, read by a peer)."""
    from config.errors import NotFound
    from receipts import api
    from receipts.models import Receipt

    def leaky(member: Any, number: str) -> Receipt:
        receipt = Receipt.objects.filter(number=number).select_related("lot__warehouse").first()
        if receipt is None:
            raise NotFound("No such receipt.")
        return receipt

    monkeypatch.setattr(api, "_visible_receipt", leaky)
    run = run_fuzz(world, tmp_path, user="trader_A", seed=_seed(7), max_examples=3,
                   path_regex=r"^/api/v1/receipts")
    leaks = [f for f in run.findings if f.check == "object_level_authorization"]
    assert leaks, f"the planted leak went unnoticed: {run.counts()} {[str(f)[:300] for f in run.findings]}"
    assert any("GET /api/v1/receipts/{number}" in f.operation for f in leaks)
