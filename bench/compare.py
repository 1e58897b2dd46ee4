"""Order entry, this checkout against another revision, in alternating runs on one machine.

    .venv/bin/python bench/compare.py REV [--pairs 3] [-- ARGS FOR bench/orders_api.py]

This machine's throughput drifts by 10-20 % within minutes, more than most single changes move it, so a
figure means something only beside the other code's figure from the same minutes. This checks REV out in a
temporary git worktree (sharing this checkout's .venv), then runs each tree's own `bench/orders_api.py`
alternately, A B B A A B ... (so drift in one direction favours neither), and prints every run and, per side,
the median orders/s, p99 and CPU milliseconds per order (web workers, PostgreSQL, the whole machine), then the
median of the pairs' ratios. The worktree is removed at the end. Default bench arguments: `--seconds 15
--floor-seconds 0`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def summary(output: str) -> dict[str, Any]:
    """The JSON summary bench/orders_api.py prints after wrk's own output (its lines from "{" to "}")."""
    lines = output.splitlines()
    start = max(i for i, line in enumerate(lines) if line == "{")
    end = next(i for i in range(start, len(lines)) if lines[i] == "}")
    return json.loads("\n".join(lines[start:end + 1]))


def run(tree: Path, bench_args: list[str]) -> dict[str, Any]:
    done = subprocess.run([str(ROOT / ".venv/bin/python"), "bench/orders_api.py", *bench_args], cwd=tree,
                          capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"bench/orders_api.py failed in {tree}:\n{done.stderr[-3000:]}")
    return summary(done.stdout)


def milliseconds(text: str) -> float:
    """wrk's latency ("97.61ms", "1.02s", "950.00us") in milliseconds."""
    for unit, factor in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    raise ValueError(f"not a wrk latency: {text!r}")


def figures(result: dict[str, Any]) -> str:
    cpu = result["cpu_ms_per_order"]
    return (f"{result['orders_per_s']:8.1f}/s  p99 {result['p99']:>9}  cpu/order web {cpu['web_workers']:5.2f} "
            f"pg {cpu['postgresql']:5.2f} machine {cpu['machine_all_busy']:5.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(usage="%(prog)s REV [--pairs N] [-- ARGS FOR bench/orders_api.py]")
    parser.add_argument("rev", help="the revision to compare this checkout with (e.g. HEAD~1, a commit)")
    parser.add_argument("--pairs", type=int, default=3)
    args, rest = parser.parse_known_args()
    bench_args = [a for a in rest if a != "--"] or ["--seconds", "15", "--floor-seconds", "0"]
    other = Path(tempfile.mkdtemp(prefix="bench-compare-")) / "tree"
    subprocess.run(["git", "worktree", "add", "--detach", "-q", str(other), args.rev], cwd=ROOT, check=True)
    label = {ROOT: "this checkout", other: args.rev}
    results: dict[Path, list[dict[str, Any]]] = {ROOT: [], other: []}
    try:
        (other / ".venv").symlink_to(ROOT / ".venv")
        for pair in range(args.pairs):
            order = [other, ROOT] if pair % 2 == 0 else [ROOT, other]
            for tree in order:
                result = run(tree, bench_args)
                results[tree].append(result)
                print(f"pair {pair + 1}  {label[tree]:>14}  {figures(result)}", flush=True)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(other)], cwd=ROOT, check=False)
        shutil.rmtree(other.parent, ignore_errors=True)
    print(f"medians over {args.pairs} runs each ({' '.join(bench_args)}):")
    for tree in (other, ROOT):
        runs = results[tree]
        cpu = {part: statistics.median(r["cpu_ms_per_order"][part] for r in runs)
               for part in ("web_workers", "postgresql", "machine_all_busy")}
        p99 = statistics.median(milliseconds(r["p99"]) for r in runs)
        print(f"  {label[tree]:>14}  {statistics.median(r['orders_per_s'] for r in runs):8.1f}/s  p99 {p99:6.1f}ms  "
              f"cpu/order web {cpu['web_workers']:5.2f} pg {cpu['postgresql']:5.2f} "
              f"machine {cpu['machine_all_busy']:5.2f} ms")
    ratios = [a["orders_per_s"] / b["orders_per_s"] for a, b in zip(results[ROOT], results[other], strict=True)]
    print(f"  this checkout / {args.rev}, orders/s, median of the pairs: {statistics.median(ratios):.3f} "
          f"(pairs: {', '.join(f'{r:.3f}' for r in ratios)})")


if __name__ == "__main__":
    main()
