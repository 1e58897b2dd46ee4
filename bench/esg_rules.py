"""Prints pure ESG-rule throughput (receipts/s) and denied-party screening throughput (members/s).

Run: .venv/bin/python bench/esg_rules.py [--receipts 100000] [--entries 10000] [--members 1000]
"""

from __future__ import annotations

import argparse
import io
import random
import sys
import time
from collections import Counter, deque
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from compliance.esg import PASS, ReceiptFacts, compile_pack, evaluate, evaluate_many  # noqa: I001
from compliance.rulepack_loader import parse_rulepack
from compliance.screening import load_list_csv

SIX_RULE_PACK = """
id: bench-six
version: 1
title: Benchmark pack, one rule of each kind
market: EU
label: BX
cbam: {eur_per_tonne_low: 80, eur_per_tonne_high: 120, recognised_standards: [ISO 14067, PACT Methodology]}
rules:
  - {id: assay, kind: assay_max_age, description: d, severity: block, params: {months: 12}}
  - {id: storage, kind: no_open_storage_incident, description: d, severity: block}
  - id: smelter
    kind: smelter_conformant
    description: d
    severity: block
    params: {conformant: [CID900101, CID900102, CID900301, CID900401, CID900201]}
  - id: footprint
    kind: footprint_declared_verified
    description: d
    severity: warn
    params: {recognised_standards: [ISO 14067, PACT Methodology]}
  - {id: recycled, kind: recycled_content_min, description: d, severity: warn, params: {min_percent: 16}}
  - id: intensity
    kind: carbon_intensity_max
    description: d
    severity: block
    params: {thresholds: {Ga: 119.9, In: 62.2, W: 8.1}, default: null}
"""

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
METALS = ("Ga", "In", "W", "Ge", "Sb")
SMELTERS = ("CID900101", "CID900102", "CID900301", "CID900401", "CID900201", "CID123456", None)
STANDARDS = ("ISO 14067:2018", "PACT Methodology", "GHG Protocol Product Standard", None)


def synthetic_receipts(count: int, rng: random.Random) -> list[ReceiptFacts]:
    today = NOW.date()
    receipts = []
    for i in range(count):
        receipts.append(
            ReceiptFacts(
                receipt_number=f"WR-{i:07d}",
                metal=rng.choice(METALS),
                grade_code="GA-6N",
                quantity_kg=Decimal(rng.randint(1, 50_000)) / 10,
                warehouse_country=rng.choice(("CN", "NL", "DE")),
                assay_issued_on=today - timedelta(days=rng.randint(0, 500)) if rng.random() < 0.97 else None,
                footprint_kgco2e_per_kg=Decimal(rng.randint(10, 2500)) / 10 if rng.random() < 0.9 else None,
                footprint_verified=rng.random() < 0.8,
                footprint_verification_standard=rng.choice(STANDARDS),
                recycled_pre_consumer_pct=Decimal(rng.randint(0, 300)) / 10 if rng.random() < 0.8 else None,
                recycled_post_consumer_pct=Decimal(rng.randint(0, 200)) / 10 if rng.random() < 0.5 else None,
                origin_smelter_id=rng.choice(SMELTERS),
                open_storage_incident=rng.random() < 0.01,
            )
        )
    return receipts


SYLLABLES = (
    "ka", "lo", "mi", "tan", "ber", "vos", "quin", "dra", "zel", "mor", "pax", "ul", "ren", "sto", "vik",
    "gar", "sel", "tor", "an", "eth", "ri", "bal", "nor", "ux", "fen", "dor", "shi", "ya", "ko", "rin",
    "bre", "cas", "dun", "el", "fyr", "gon", "hal", "ist", "jor", "kem", "lys", "mun", "nes", "ob", "pry",
    "qua", "ros", "syl", "tem", "urd", "val", "wen", "xan", "yor", "zu", "ash", "bel", "cor", "dav", "ema",
)
WORDS = (
    "metals", "trading", "industrial", "resources", "mining", "group", "materials", "international",
    "holdings", "technology", "logistics", "supply", "export", "alloys", "shipping", "capital",
)
FORMS = ("Ltd", "LLC", "GmbH", "S.A.", "Co., Ltd.", "JSC", "OOO", "FZE", "", "", "")


def invented_word(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(3, 4))).capitalize()


def invented_name(rng: random.Random) -> str:
    parts = [invented_word(rng) for _ in range(rng.randint(1, 2))]
    parts += rng.sample(WORDS, rng.randint(0, 2))
    return " ".join(parts + [rng.choice(FORMS)]).strip()


def misspell(name: str, rng: random.Random) -> str:
    chars = list(name)
    i = rng.randrange(len(chars))
    chars[i] = rng.choice("aeiouklmnrst")
    return "".join(chars)


def synthetic_list_csv(count: int, rng: random.Random) -> tuple[str, list[str]]:
    lines = ["name,aliases,country,source"]
    names = []
    for _ in range(count):
        name = invented_name(rng)
        aliases = ";".join(invented_name(rng) for _ in range(rng.choice((0, 0, 1, 2))))
        country = rng.choice(("RU", "IR", "KP", "BY", "SY", "CN", "AE", "HK", "TR", ""))
        lines.append(f'"{name}","{aliases}",{country},BENCH')
        names.append(name)
    return "\n".join(lines) + "\n", names


def bench_rules(count: int) -> float:
    rng = random.Random(20260301)
    pack = parse_rulepack(SIX_RULE_PACK, source="bench")
    compiled = compile_pack(pack)

    started = time.perf_counter()
    receipts = synthetic_receipts(count, rng)
    built = time.perf_counter() - started
    print(f"built {count:,} ReceiptFacts in {built:.2f} s ({count / built:,.0f}/s, caller's cost, not timed below)")

    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        deque(evaluate_many(receipts, compiled, NOW), maxlen=0)
        best = min(best, time.perf_counter() - started)
    results = list(evaluate_many(receipts, compiled, NOW))
    outcomes = {o: sum(1 for r in results if r.outcome == o) for o in ("pass", "warn", "fail")}
    labelled = sum(1 for r in results if r.label)
    rate = count / best
    print(
        f"ESG rules, bulk (evaluate_many, 6 rules + CBAM): {count:,} receipts in {best:.3f} s "
        f"= {rate:,.0f} receipts/s (best of 3; target >= 100,000) -> {'OK' if rate >= 100_000 else 'BELOW TARGET'}"
    )
    print(f"  outcomes {outcomes}, label earned by {labelled:,}")

    sample = receipts[:10_000]
    started = time.perf_counter()
    for receipt in sample:
        evaluate(receipt, compiled, now=NOW)
    detailed = len(sample) / (time.perf_counter() - started)
    print(f"ESG rules, detailed (evaluate, with messages): {detailed:,.0f} receipts/s")
    assert all(o in (PASS, "warn", "fail") for o in outcomes)
    return rate


def bench_screening(entries: int, members: int) -> float:
    rng = random.Random(7)
    text, listed = synthetic_list_csv(entries, rng)
    started = time.perf_counter()
    screening_list = load_list_csv(io.StringIO(text))
    loaded = time.perf_counter() - started
    print(f"screening list: {len(screening_list):,} entries loaded and indexed in {loaded:.2f} s")

    # A fifth of the members are misspellings of listed names, the rest invented names.
    queries: list[tuple[str, tuple[str, ...]]] = []
    for i in range(members):
        if i % 5 == 0:
            queries.append((misspell(rng.choice(listed), rng), ()))
        else:
            queries.append((invented_name(rng), (invented_name(rng),) if i % 3 == 0 else ()))
    countries = ("DE", "CN", "NL", "RU", "EE")

    started = time.perf_counter()
    by_method: Counter[str] = Counter()
    for i, (name, aliases) in enumerate(queries):
        for hit in screening_list.screen(name, aliases=aliases, country=countries[i % len(countries)]):
            by_method[hit.method] += 1
    elapsed = time.perf_counter() - started
    hits = sum(by_method.values())
    rate = members / elapsed
    print(
        f"screening: {members:,} members (1/3 with an alias) against {len(screening_list):,} entries in "
        f"{elapsed:.2f} s = {rate:,.0f} members/s (target >= 200) -> {'OK' if rate >= 200 else 'BELOW TARGET'}; "
        f"{hits:,} hits at threshold 88"
    )
    print(f"  hits by method: {dict(by_method.most_common())} ({members // 5} members were misspelt list names)")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--receipts", type=int, default=100_000)
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--members", type=int, default=1_000)
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, date {date.today().isoformat()}")
    bench_rules(args.receipts)
    bench_screening(args.entries, args.members)


if __name__ == "__main__":
    main()
