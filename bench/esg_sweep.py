"""Benchmark: ESG evaluation of 100,000 receipts against a 6-rule pack through the Celery task path on
PostgreSQL, results stored (one EsgEvaluation row per receipt, flags for block failures).

    .venv/bin/python bench/esg_sweep.py [--receipts 100000] [--receipts-per-lot 1] [--concurrency 2] [--keep-db]
                                        [--reuse-world]

What it does:

1. Creates an isolated database `ingot_bench_esg` (dropped first if left over), migrates it (which syncs the
   repo's rule packs), and uses Redis database 12 (flushed), so nothing touches the tests' or the dev data.
2. Builds the world. A handful of lots go through the real services: registered, assayed, attested by a
   producer (PACT footprint, recycled content, origin) with real Ed25519 signatures verified by
   `attestation_submit`, graded and issued. The other lots, their four attestations each and the receipts
   are inserted set-based with COPY: their documents are variations of the real ones (lot reference,
   dates, figures, smelter) and their signature bytes are copied, so they do NOT verify — ESG evaluation
   never checks signatures (attestation_submit did on the way in), it reads facts; the bulk receipts also
   have no event chain. Figures vary per lot: ~6 % assays older than 12 months, ~3 % smelters missing or not
   conformant, 1 % of lots at a location with an open storage incident, footprints mostly under the
   metal's threshold, Ga / In / W.
3. Makes the benchmark's 6-rule pack (one rule of each kind, 4 block + 2 warn, label BX) the only active
   pack, through `esg_rule_packs_sync` from a temporary directory.
4. Phase "task in-process": lists the open receipts as `esg_evaluate_all` does and calls the task
   function `esg_evaluate_receipts` once per 5,000-id chunk, in this process, timed end to end (facts
   read, evaluation, bulk upsert, flags, commit). Then the same again: nothing changed, nothing written.
5. Phase "real worker": a new version of the pack is synced (as after a pack edit), which enqueues
   `esg_evaluate_all` on commit; a real `celery worker` (prefork, --concurrency) fans out and evaluates
   every chunk; timed from the sync until the last result row is in the database (polled every 0.1 s through
   one receipt per chunk, then confirmed by counting every result). Also printed: the CPU seconds the worker
   processes and their PostgreSQL backends used meanwhile (read from /proc), which say what the sweep costs
   whatever else the machine is running.

The facts come from `compliance_esglotfacts`, the per-lot projection the database keeps from the attestations
(triggers on receipts_attestation): the COPY of step 2 fills it like any other write, and a world built before
that table existed gets it filled by the migration run on the copy (some seconds, before anything is timed).

With `--reuse-world` (for iterating), the built world (step 2, before any pack) is kept as the template database
`ingot_bench_esg_world_<receipts>x<per-lot>` and later runs with the same sizes copy it instead of building it again
(then migrate, in case the code gained a migration). The template is never dropped by the bench: drop it by hand.

Needs PostgreSQL on 127.0.0.1:5432 (user postgres) and Redis on :6379.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import secrets
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DB_NAME = "ingot_bench_esg"
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/12"
REAL_LOTS = 5  # lots that go through the services with real signatures

ENV = {
    **os.environ,
    "DJANGO_SETTINGS_MODULE": "config.settings.production",
    "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{DB_NAME}",
    "REDIS_URL": REDIS_URL,
    "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
    "DJANGO_SECURE_SSL_REDIRECT": "false",
    "INGOT_KEY_SECRET": secrets.token_hex(32),
    "LOG_LEVEL": "WARNING",
}

SIX_RULE_PACK = """
id: bench-six
version: {version}
title: Benchmark pack, one rule of each kind
market: EU
label: BX
cbam: {{eur_per_tonne_low: 80, eur_per_tonne_high: 120, recognised_standards: [ISO 14067, PACT Methodology]}}
rules:
  - {{id: assay, kind: assay_max_age, description: d, severity: block, params: {{months: 12}}}}
  - {{id: storage, kind: no_open_storage_incident, description: d, severity: block}}
  - id: smelter
    kind: smelter_conformant
    description: d
    severity: block
    params: {{conformant: [CID900101, CID900102, CID900201, CID900301, CID900401]}}
  - id: footprint
    kind: footprint_declared_verified
    description: d
    severity: warn
    params: {{recognised_standards: [ISO 14067, PACT Methodology]}}
  - {{id: recycled, kind: recycled_content_min, description: d, severity: warn, params: {{min_percent: 16}}}}
  - id: intensity
    kind: carbon_intensity_max
    description: d
    severity: block
    params: {{thresholds: {{Ga: 119.9, In: 62.2, W: 8.1}}, default: null}}
"""
METALS = (("Ga", 0.7, Decimal("119.9")), ("In", 0.2, Decimal("62.2")), ("W", 0.1, Decimal("8.1")))
SMELTERS = ("CID900101", "CID900102", "CID900201", "CID900301", "CID900401")


def _admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql)


def create_database() -> None:
    _admin(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
    _admin(f"CREATE DATABASE {DB_NAME}")
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=ENV, check=True)


def world_template(receipts: int, per_lot: int) -> str:
    return f"{DB_NAME}_world_{receipts}x{per_lot}"


def _exists(name: str) -> bool:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def clone_world(template: str) -> None:
    import psycopg

    # The platform's private keys in the world are encrypted under the secret of the run that built it,
    # kept as the template's comment.
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        row = conn.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
                           (template,)).fetchone()
    if row is None or not row[0]:
        raise RuntimeError(f"{template} has no key secret as its comment: drop it and build the world again")
    ENV["INGOT_KEY_SECRET"] = row[0]
    _admin(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
    _admin(f"CREATE DATABASE {DB_NAME} TEMPLATE {template}")
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=ENV, check=True)


def save_world(template: str) -> None:
    from django.db import connections

    connections.close_all()
    _admin(f"DROP DATABASE IF EXISTS {template} WITH (FORCE)")
    _admin(f"CREATE DATABASE {template} TEMPLATE {DB_NAME}")
    _admin(f"COMMENT ON DATABASE {template} IS '{ENV['INGOT_KEY_SECRET']}'")  # hex: nothing to quote


def world_of_clone() -> dict[str, Any]:
    from receipts.models import Lot, Receipt

    real = list(Receipt.objects.filter(lot__in=Lot.objects.filter(batch_number__startswith="REAL-")).order_by("pk"))
    total = Receipt.objects.count()
    print(f"world: copied from the template database, {total:,} receipts")
    return {"real": real, "receipts": total}


def drop_database() -> None:
    _admin(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")


def setup_django() -> None:
    os.environ.update(ENV)
    import django

    django.setup()


# --- the world ------------------------------------------------------------------------------------------


def build_world(receipts: int, per_lot: int) -> dict[str, Any]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from django.db import connection
    from django.utils import timezone

    from members.services import member_create, member_set_kyc_status, signing_key_register
    from receipts import services
    from receipts.canonical import utc_stamp
    from receipts.models import Attestation, Grade, Lot, Metal, Receipt, StorageIncident, StorageReading
    from receipts.signing import b64url_encode, public_key_bytes, sign_document
    from tests.factories.compliance import footprint_document, origin_doc, recycled_document
    from tests.factories.receipts import assay_document

    def member(name: str, legal_id: str, roles: list[str]) -> Any:
        made = member_create(name=name, legal_id=legal_id, country="CN", roles=roles)
        return member_set_kyc_status(member=made, status="approved", decided_by=None, reason="bench")

    def signer(who: Any) -> tuple[Any, str]:
        key = Ed25519PrivateKey.generate()
        kid = signing_key_register(member=who, public_key=b64url_encode(public_key_bytes(key.public_key())),
                                   valid_from=timezone.now() - timedelta(days=400)).kid
        return key, kid

    operator = member("Bench Vault", "BENCH-WH", ["warehouse"])
    lab = member("Bench Lab", "BENCH-LAB", ["assay_lab"])
    producer = member("Bench Producer", "BENCH-PROD", ["producer"])
    holders = [member(f"Bench Holder {i}", f"BENCH-H{i:02d}", ["trader"]) for i in range(20)]
    lab_key, lab_kid = signer(lab)
    prod_key, prod_kid = signer(producer)
    warehouse = services.warehouse_create(operator=operator, code="BENCH-ESG", name="Bench Vault", country="CN",
                                          region="CN", approved=True)

    # A handful through the services, signatures real and verified on submission.
    real: list[Any] = []
    templates: dict[str, Any] = {}
    for n in range(REAL_LOTS):
        lot = services.lot_register(
            warehouse=warehouse, registered_by=operator, metal="Ga", form="ingot", net_mass_kg=Decimal("100"),
            package_count=4, brand="BENCH", batch_number=f"REAL-{n:03d}", production_date=date(2026, 1, 5),
            location="A1", depositor=holders[n],
            nominees=[(lab, ["assay"]), (producer, ["carbon_footprint", "recycled_content", "origin"])])
        docs = {"assay": (assay_document(lot, lab), lab_key, lab_kid, lab),
                "carbon_footprint": (footprint_document(lot, producer, pcf="12.4"), prod_key, prod_kid, producer),
                "recycled_content": (recycled_document(lot), prod_key, prod_kid, producer),
                "origin": (origin_doc(lot), prod_key, prod_kid, producer)}
        for kind, (doc, key, kid, who) in docs.items():
            templates[kind] = services.attestation_submit(lot=lot, kind=kind, document=doc,
                                                          signature=sign_document(doc, key, kid), submitted_by=who)
        services.lot_grade(lot=lot, by=operator)
        real.append(services.receipt_issue(lot=lot, holder=holders[n], quantity_kg="100", issued_by=operator))

    # The rest set-based: COPY of lots, attestations and receipts built from the real documents.
    rng = random.Random(20260301)
    metals = {m.symbol: m for m in Metal.objects.filter(symbol__in=[s for s, _, _ in METALS])}
    grades = {s: Grade.objects.filter(metal__symbol=s).order_by("rank").first() for s in metals}
    now = timezone.now()
    reading = StorageReading.objects.create(warehouse=warehouse, location="HOT", observed_at=now,
                                            temperature_c=Decimal("35"), humidity_pct=Decimal("20"), seal_intact=True)
    StorageIncident.objects.create(warehouse=warehouse, location="HOT", reading=reading,
                                   breaches=[{"limit": "max_temp_c", "measured": "35", "allowed": "29.76"}])
    lot_count = -(-(receipts - REAL_LOTS) // per_lot)
    first_lot = Lot.objects.order_by("-pk").values_list("pk", flat=True).first() + 1  # type: ignore[operator]
    lots, attestations, receipt_rows = [], [], []
    fields = {kind: templates[kind] for kind in templates}
    for i in range(lot_count):
        symbol = rng.choices([s for s, _, _ in METALS], [w for _, w, _ in METALS])[0]
        threshold = next(t for s, _, t in METALS if s == symbol)
        metal = metals[symbol]
        lot_id = first_lot + i
        ref = f"BENCH-ESG/B{i:07d}"
        location = "HOT" if rng.random() < 0.01 else "A1"
        mass = Decimal(per_lot * 10)
        lots.append((lot_id, warehouse.pk, metal.pk, metal.forms[0], mass, per_lot, producer.pk, "BENCH",
                     f"B{i:07d}", "[]", date(2026, 1, 5), location, operator.pk, grades[symbol].pk, None, now, now))
        assay = dict(fields["assay"].document, lot=ref,
                     issuedAt=utc_stamp(now - timedelta(days=rng.randint(1, 390))))
        assay["sampledAt"] = assay["issuedAt"]
        footprint = json.loads(json.dumps(fields["carbon_footprint"].document))
        footprint["productIds"] = [f"urn:ingot:lot:{ref}"]
        roll = rng.random()
        pcf = threshold * Decimal(rng.randint(5, 95)) / 100 if roll < 0.85 else threshold * Decimal(rng.randint(101, 300)) / 100
        footprint["pcf"]["pcfExcludingBiogenicUptake"] = str(pcf.quantize(Decimal("0.01")))
        if rng.random() < 0.10:
            footprint["pcf"].pop("verification")
        recycled = dict(fields["recycled_content"].document, lot=ref, recycledMaterial=symbol,
                        preConsumerShare=str(rng.randint(0, 30)), postConsumerShare=str(rng.randint(0, 20)))
        smelter_roll = rng.random()
        origin = dict(fields["origin"].document, lot=ref,
                      smelterId=rng.choice(SMELTERS) if smelter_roll < 0.97 else f"CID{rng.randint(100000, 899999)}")
        docs = [("assay", assay), ("carbon_footprint", footprint), ("recycled_content", recycled)]
        if smelter_roll < 0.99:  # 1 % carry no origin document at all
            docs.append(("origin", origin))
        for kind, doc in docs:
            text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            digest = hashlib.sha256(text.encode()).hexdigest()
            template = fields[kind]
            attestations.append((lot_id, kind, json.dumps(doc), text, digest, digest, json.dumps(template.signature),
                                 template.signing_key_id, template.signer_id, template.submitted_by_id, now))
        for j in range(per_lot):
            n = i * per_lot + j
            if n >= receipts - REAL_LOTS:
                break
            receipt_rows.append((f"WR-{symbol}-2026-B{n:07d}", lot_id, grades[symbol].pk, Decimal("10.000"),
                                 holders[n % len(holders)].pk, "active", "", "", 0, "", now))
    started = time.perf_counter()
    with connection.cursor() as cursor:
        with cursor.copy("COPY receipts_lot (id, warehouse_id, metal_id, form, net_mass_kg, package_count, producer_id, "
                         "brand, batch_number, seal_numbers, production_date, location, depositor_id, grade_id, grading, "
                         "graded_at, created_at) FROM STDIN") as copy:
            for row in lots:
                copy.write_row(row)
        cursor.execute("SELECT setval(pg_get_serial_sequence('receipts_lot', 'id'), (SELECT max(id) FROM receipts_lot))")
        with cursor.copy("COPY receipts_attestation (lot_id, kind, document, canonical, digest, binding_hash, signature, "
                         "signing_key_id, signer_id, submitted_by_id, created_at) FROM STDIN") as copy:
            for row in attestations:
                copy.write_row(row)
        with cursor.copy("COPY receipts_receipt (number, lot_id, grade_id, quantity_kg, holder_id, status, frozen_from, "
                         "encumbrance_ref, last_event_seq, last_event_hash, issued_at) FROM STDIN") as copy:
            for row in receipt_rows:
                copy.write_row(row)
        cursor.execute("ANALYZE")
    copied = time.perf_counter() - started
    total = Receipt.objects.count()
    print(f"world: {REAL_LOTS} lots through the services (real signatures), {len(lots):,} lots, "
          f"{len(attestations):,} attestations and {len(receipt_rows):,} receipts by COPY in {copied:.1f} s; "
          f"{total:,} receipts, {Attestation.objects.count():,} attestations in the database")
    return {"real": real, "receipts": total}


# --- phases ----------------------------------------------------------------------------------------------


def activate_bench_pack(version: int, *, reevaluate: bool) -> Any:
    from compliance.models import EsgRulePack
    from compliance.services import esg_rule_packs_sync

    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "bench-six.yaml").write_text(SIX_RULE_PACK.format(version=version), encoding="utf-8")
        EsgRulePack.objects.exclude(pack_id="bench-six").filter(active=True).update(active=False)
        [row] = esg_rule_packs_sync(directory=folder, reevaluate=reevaluate)
    return row


def cpu_meter() -> Any:
    """CPU seconds used since the call by this process and by its PostgreSQL backend (read from /proc: the
    server runs on this host), to tell the two apart when the wall clock says too little."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        [backend] = cursor.fetchone()
    tick = os.sysconf("SC_CLK_TCK")

    def backend_cpu() -> float:
        try:
            fields = Path(f"/proc/{backend}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")
        return (int(fields[11]) + int(fields[12])) / tick

    python_start, backend_start = time.process_time(), backend_cpu()
    return lambda: (time.process_time() - python_start, backend_cpu() - backend_start)


def _process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process on this host has used so far; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


class BackendMeter:
    """CPU seconds used by the PostgreSQL backends of the bench database that were not connected when it
    started (the server runs on this host): the postmaster's children are listed every 20 ms and each new
    backend's CPU is read until it exits. Celery closes a task's connection when the task ends, so a
    backend can exit up to 20 ms after its last reading: a slight undercount."""

    def __init__(self) -> None:
        import threading

        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            [backend] = cursor.fetchone()
        self.postmaster = int(Path(f"/proc/{backend}/stat").read_text().rsplit(")", 1)[1].split()[1])
        self.ignored: set[int] = set(self._children())
        self.seen: dict[int, float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _children(self) -> list[int]:
        text = Path(f"/proc/{self.postmaster}/task/{self.postmaster}/children").read_text()
        return [int(pid) for pid in text.split()]

    def _run(self) -> None:
        marker = f" {DB_NAME} ".encode()
        while not self.stop.wait(0.02):
            for pid in self._children():
                if pid in self.ignored:
                    continue
                if pid not in self.seen:
                    try:
                        title = Path(f"/proc/{pid}/cmdline").read_bytes()
                    except OSError:
                        continue
                    if marker not in title:
                        if title.startswith(b"postgres: "):  # another database's (else: not yet titled)
                            self.ignored.add(pid)
                        continue
                cpu = _process_cpu(pid)
                if cpu:
                    self.seen[pid] = max(cpu, self.seen.get(pid, 0.0))

    def total(self) -> float:
        self.stop.set()
        self.thread.join()
        return sum(self.seen.values())


def phase_in_process(count: int) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from compliance import tasks
    from compliance.models import EsgEvaluation, Flag
    from receipts.models import OPEN_STATUSES, Receipt

    pack = activate_bench_pack(1, reevaluate=False)
    cpu = cpu_meter()
    started = time.perf_counter()
    ids = list(Receipt.objects.filter(status__in=OPEN_STATUSES).order_by("pk").values_list("pk", flat=True))
    written = 0
    chunks = [ids[i:i + tasks.ESG_CHUNK] for i in range(0, len(ids), tasks.ESG_CHUNK)]
    for index, chunk in enumerate(chunks):
        if index == 1:
            with CaptureQueriesContext(connection) as queries:
                written += tasks.esg_evaluate_receipts(chunk)
            per_chunk = len(queries)
        else:
            written += tasks.esg_evaluate_receipts(chunk)
    elapsed = time.perf_counter() - started
    python_cpu, database_cpu = cpu()
    stored = EsgEvaluation.objects.filter(rule_pack=pack).count()
    outcomes = Counter(EsgEvaluation.objects.filter(rule_pack=pack).values_list("outcome", flat=True))
    labelled = EsgEvaluation.objects.filter(rule_pack=pack, label="BX").count()
    flags = Flag.objects.filter(kind="esg_failure").count()
    rate = count / elapsed
    print(f"task in-process (esg_evaluate_receipts per {tasks.ESG_CHUNK:,}-id chunk, {len(chunks)} chunks, "
          f"{per_chunk} queries per chunk): {count:,} receipts in {elapsed:.2f} s = {rate:,.0f} receipts/s "
          f"(goal >= 10,000) -> {'OK' if rate >= 10_000 else 'BELOW GOAL'}")
    print(f"  stored {stored:,} results ({written:,} rows written), outcomes {dict(outcomes)}, label BX earned by "
          f"{labelled:,}, {flags:,} ESG flags raised")
    print(f"  CPU: this process {python_cpu:.2f} s, its PostgreSQL backend {database_cpu:.2f} s "
          f"({database_cpu / len(chunks):.3f} s per chunk); wall {elapsed:.2f} s")
    assert stored == count == written

    started = time.perf_counter()
    rewritten = sum(tasks.esg_evaluate_receipts(chunk) for chunk in chunks)
    again = time.perf_counter() - started
    print(f"  the same task again (nothing changed): {count / again:,.0f} receipts/s, {rewritten} rows written, "
          f"{Flag.objects.filter(kind='esg_failure').count() - flags} new flags")
    assert rewritten == 0


def phase_worker(count: int, concurrency: int) -> None:
    import redis

    from compliance.models import EsgEvaluation
    from compliance.tasks import ESG_CHUNK
    from config.celery import app
    from receipts.models import OPEN_STATUSES, Receipt

    # One receipt of each chunk esg_evaluate_all will publish: a chunk's results commit together, so when
    # these few have their result every chunk is done. Polling them costs a few index probes; counting the
    # results every 0.1 s (as this bench used to) cost a good part of a core, taken from the worker it times.
    ids = list(Receipt.objects.filter(status__in=OPEN_STATUSES).order_by("pk").values_list("pk", flat=True))
    markers = ids[ESG_CHUNK - 1::ESG_CHUNK] + ids[-1:]
    redis.Redis.from_url(REDIS_URL).flushdb()
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "--loglevel", "WARNING", "--pool", "prefork",
         "--concurrency", str(concurrency), "-Q", "celery", "--without-gossip", "--without-mingle",
         "--without-heartbeat", "-n", f"bench-esg-{os.getpid()}@%h"],
        cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not app.control.ping(timeout=0.5):
            if time.monotonic() > deadline or worker.poll() is not None:
                raise RuntimeError("the Celery worker did not come up")
        workers = [worker.pid, *_children(worker.pid)]
        worker_cpu = sum(_process_cpu(pid) for pid in workers)
        backends = BackendMeter()
        started = time.perf_counter()
        pack = activate_bench_pack(2, reevaluate=True)  # on commit: esg_evaluate_all -> chunk tasks
        done = 0
        while done < count:
            time.sleep(0.1)
            if time.perf_counter() - started > 600:
                raise RuntimeError(f"only {done:,} of {count:,} results after 600 s")
            if EsgEvaluation.objects.filter(rule_pack=pack, receipt_id__in=markers).count() < len(set(markers)):
                continue
            elapsed = time.perf_counter() - started
            done = EsgEvaluation.objects.filter(rule_pack=pack).count()  # short: not the chunks expected, go on
        rate = count / elapsed
        database_cpu = backends.total()  # the backends the worker's tasks opened (the bench's own is left out)
        python_cpu = sum(_process_cpu(pid) for pid in workers) - worker_cpu
        print(f"real worker (pack v2 synced -> esg_evaluate_all -> chunk tasks, prefork x{concurrency}): "
              f"{count:,} receipts in {elapsed:.2f} s = {rate:,.0f} receipts/s "
              f"(goal >= 10,000) -> {'OK' if rate >= 10_000 else 'BELOW GOAL'}")
        print(f"  CPU: worker processes {python_cpu:.2f} s, their PostgreSQL backends {database_cpu:.2f} s "
              f"({(python_cpu + database_cpu) / elapsed:.2f} of {os.cpu_count()} cores busy on average; "
              f"load average now {os.getloadavg()[0]:.1f})")
    finally:
        worker.terminate()
        worker.wait(timeout=30)


def check_real(world: dict[str, Any]) -> None:
    from compliance.selectors import receipt_esg_report
    from receipts.bundles import verify_bundle
    from receipts.selectors import receipt_bundle

    receipt = world["real"][0]
    verified = verify_bundle(receipt_bundle(receipt)).ok
    report = receipt_esg_report(receipt)
    [pack] = report["packs"]
    print(f"  {receipt.number} (real signatures): bundle verifies {verified}; labels {report['labels']}; "
          f"{pack['pack']} v{pack['version']} {pack['outcome']}: "
          + ", ".join(f"{r['rule_id']} {r['outcome']} ({r['measured']})" for r in pack["rules"][:3]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--receipts", type=int, default=100_000)
    parser.add_argument("--receipts-per-lot", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--keep-db", action="store_true")
    parser.add_argument("--reuse-world", action="store_true",
                        help="copy the world from (or save it as) a template database instead of building it each run")
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, date {date.today().isoformat()}, "
          f"load average {os.getloadavg()[0]:.1f} (other processes share these cores)")
    template = world_template(args.receipts, args.receipts_per_lot)
    reuse = args.reuse_world and _exists(template)
    if reuse:
        clone_world(template)
    else:
        create_database()
    try:
        setup_django()
        if reuse:
            world = world_of_clone()
        else:
            world = build_world(args.receipts, args.receipts_per_lot)
            if args.reuse_world:
                save_world(template)
        phase_in_process(world["receipts"])
        phase_worker(world["receipts"], args.concurrency)
        check_real(world)
        print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    finally:
        from django.db import connections

        connections.close_all()
        if not args.keep_db:
            drop_database()


if __name__ == "__main__":
    main()
