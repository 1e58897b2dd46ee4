"""Print the proof table: one row per scenario, from the JSON lines the proof suites wrote to var/proof/.

    .venv/bin/python bench/proof_report.py [--dir var/proof] [--markdown] [--strict]

Each line of var/proof/*.jsonl is {"scenario", "runs", "failures", "figures": {...}} (optionally "variant":
"ci" or "proof", "at"). A scenario that wrote several lines shows its last "proof" line if it has one,
else its last line; so `make proof`, which empties the folder and runs the long variants after the short
ones, shows the long figures. Any suite adds a row by writing such a line (tests/proof/record.py).

--strict exits 1 when a row has failures (the Makefile relies on pytest's status instead).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DIR = Path(os.environ.get("INGOT_PROOF_DIR", ROOT / "var" / "proof"))


def load(directory: Path) -> list[dict[str, Any]]:
    """The row of each scenario, in the order the scenarios first reported."""
    lines: list[tuple[float, int, dict[str, Any]]] = []
    for path in sorted(directory.glob("*.jsonl")):
        mtime = path.stat().st_mtime
        for index, raw in enumerate(path.read_text(encoding="utf-8").splitlines()):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            if isinstance(line, dict) and "scenario" in line:
                lines.append((mtime, index, line))
    lines.sort(key=lambda item: (item[2].get("at") or "", item[0], item[1]))
    chosen: dict[str, dict[str, Any]] = {}
    for _, _, line in lines:
        name = str(line["scenario"])
        current = chosen.get(name)
        if current is None or line.get("variant") == "proof" or current.get("variant") != "proof":
            chosen[name] = line
    return list(chosen.values())


def figures_text(figures: Any) -> str:
    if not isinstance(figures, dict):
        return str(figures)
    parts = []
    for key, value in figures.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items()) or "0"
        parts.append(f"{key}: {value}")
    return "; ".join(parts)


def table(rows: list[dict[str, Any]], *, markdown: bool) -> str:
    header = ("scenario", "runs", "failures", "figures")
    body = [(str(r["scenario"]) + (f" [{r['variant']}]" if r.get("variant") == "ci" else ""), f"{r.get('runs', '')}",
             f"{r.get('failures', '')}", figures_text(r.get("figures", {}))) for r in rows]
    if markdown:
        out = ["| " + " | ".join(header) + " |", "|---|---:|---:|---|"]
        out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in body]
        return "\n".join(out)
    widths = [max(len(header[i]), *(len(row[i]) for row in body)) if body else len(header[i]) for i in range(3)]
    lines = ["  ".join([header[0].ljust(widths[0]), header[1].rjust(widths[1]), header[2].rjust(widths[2]),
                        header[3]])]
    lines.append("  ".join(["-" * widths[0], "-" * widths[1], "-" * widths[2], "-" * 7]))
    for row in body:
        lines.append("  ".join([row[0].ljust(widths[0]), row[1].rjust(widths[1]), row[2].rjust(widths[2]), row[3]]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--markdown", action="store_true", help="a Markdown table")
    parser.add_argument("--strict", action="store_true", help="exit 1 if any scenario has failures")
    args = parser.parse_args(argv)
    rows = load(args.dir) if args.dir.is_dir() else []
    if not rows:
        print(f"no proof results in {args.dir}")
        return 1 if args.strict else 0
    print(table(rows, markdown=args.markdown))
    failed = [r for r in rows if r.get("failures")]
    return 1 if args.strict and failed else 0


if __name__ == "__main__":
    sys.exit(main())
