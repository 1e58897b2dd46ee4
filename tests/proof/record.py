"""Proof figures: each proof scenario appends one JSON line to var/proof/<scenario>.jsonl, and
bench/proof_report.py prints them as one table (scenario, runs, failures, figures).

Any suite can add a scenario: call `record(...)` at the end of its test. `make proof` empties var/proof
first, so the table shows that run only.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PROOF_DIR = Path(os.environ.get("INGOT_PROOF_DIR", ROOT / "var" / "proof"))


def record(scenario: str, *, runs: int, failures: int, figures: dict[str, Any] | None = None,
           variant: str | None = None) -> Path:
    """Append one result line for `scenario` (variant: "ci" or "proof"; default from the PROOF env var)."""
    PROOF_DIR.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^a-z0-9]+", "-", scenario.lower()).strip("-")
    path = PROOF_DIR / f"{slug}.jsonl"
    line = {"scenario": scenario, "runs": runs, "failures": failures, "figures": figures or {},
            "variant": variant or ("proof" if os.environ.get("INGOT_PROOF") else "ci"),
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "pid": os.getpid()}
    with path.open("a", encoding="utf-8") as out:
        out.write(json.dumps(line) + "\n")  # figures keep the order the suite wrote them in
    return path
