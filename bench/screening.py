"""Benchmark: members screened per second against a 10,000-entry denied-party list, through the service
(database) path on PostgreSQL.

    .venv/bin/python bench/screening.py [--entries 10000] [--members 1000] [--keep-db]

It creates an isolated database `ingot_bench_screening` (dropped first if left over, dropped at the end
unless --keep-db) and migrates it, then:

1. loads a synthetic 10,000-entry list CSV (invented names, aliases, countries; the generator of
   bench/esg_rules.py) through `compliance.services.screening_list_load` — parse, validate, store every
   entry, activate — and times it;
2. creates the members (a fifth of them misspellings of listed names, the rest invented, a third with a
   parenthetical remark) through `members.services.member_create`;
3. screens each member with `compliance.services.member_screen`: read the active list row, match the name and
   its variants against the list's matcher (built from the database once per list version and process: the
   first call pays for it, timed on its own), and store a flag per hit (idempotent);
4. screens them all again: every hit is already flagged, nothing is written;
5. runs the Celery task function `members_screen_all` (what a list reload enqueues) in this process.

Needs PostgreSQL on 127.0.0.1:5432 (user postgres).
"""

from __future__ import annotations

import argparse
import io
import os
import random
import secrets
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from esg_rules import invented_name, misspell, synthetic_list_csv  # noqa: I001  (bench/esg_rules.py)

DB_NAME = "ingot_bench_screening"
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
ENV = {
    **os.environ,
    "DJANGO_SETTINGS_MODULE": "config.settings.production",
    "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{DB_NAME}",
    "REDIS_URL": "redis://127.0.0.1:6379/12",
    "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
    "DJANGO_SECURE_SSL_REDIRECT": "false",
    "INGOT_KEY_SECRET": secrets.token_hex(32),
    "LOG_LEVEL": "WARNING",
}


def _admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql)


def create_database() -> None:
    _admin(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
    _admin(f"CREATE DATABASE {DB_NAME}")
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=ENV, check=True)


def run(entries: int, members: int) -> None:
    os.environ.update(ENV)
    import django

    django.setup()
    from compliance.models import Flag, FlagKind, ScreeningEntry
    from compliance.services import member_screen, screening_list_load
    from compliance.tasks import members_screen_all
    from members.models import Member
    from members.services import member_create

    rng = random.Random(7)
    text, listed = synthetic_list_csv(entries, rng)
    started = time.perf_counter()
    active = screening_list_load(source=io.StringIO(text), rescreen=False)
    loaded = time.perf_counter() - started
    print(f"list: {ScreeningEntry.objects.filter(screening_list=active).count():,} entries loaded through "
          f"screening_list_load (parse, validate, store, activate) in {loaded:.2f} s")

    countries = ("DE", "CN", "NL", "RU", "EE")
    people: list[Any] = []
    for i in range(members):
        name = misspell(rng.choice(listed), rng) if i % 5 == 0 else invented_name(rng)
        if i % 3 == 0:
            name = f"{name} (trading arm)"
        people.append(member_create(name=name[:200], legal_id=f"BENCH-{i:06d}", country=countries[i % 5],
                                    roles=["trader"]))

    started = time.perf_counter()
    member_screen(member=people[0])
    first = time.perf_counter() - started
    print(f"first screening in this process builds the list's matcher from the database: {first:.2f} s")

    started = time.perf_counter()
    hits = sum(len(member_screen(member=m)) for m in people)
    elapsed = time.perf_counter() - started
    flags = Flag.objects.filter(kind=FlagKind.SANCTIONS_HIT).count()
    rate = members / elapsed
    print(f"member_screen (service, DB): {members:,} members against {entries:,} entries in {elapsed:.2f} s = "
          f"{rate:,.0f} members/s (target >= 200) -> {'OK' if rate >= 200 else 'BELOW TARGET'}; {hits:,} hits, "
          f"{flags:,} sanctions flags stored ({members // 5:,} members were misspelt list names)")

    started = time.perf_counter()
    sum(len(member_screen(member=m)) for m in people)
    again = time.perf_counter() - started
    print(f"  again (every hit already flagged, nothing written): {members / again:,.0f} members/s, "
          f"{Flag.objects.filter(kind=FlagKind.SANCTIONS_HIT).count() - flags} new flags")

    started = time.perf_counter()
    members_screen_all(active.pk)
    task = time.perf_counter() - started
    print(f"members_screen_all task (in-process, {Member.objects.count():,} members): {task:.2f} s = "
          f"{Member.objects.count() / task:,.0f} members/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--members", type=int, default=1_000)
    parser.add_argument("--keep-db", action="store_true")
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, date {date.today().isoformat()}")
    create_database()
    try:
        run(args.entries, args.members)
    finally:
        from django.db import connections

        connections.close_all()
        if not args.keep_db:
            _admin(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")


if __name__ == "__main__":
    main()
