"""HTTP order entry through gunicorn on loopback against PostgreSQL: orders/s and latency percentiles.

Real path end to end: token authentication, Idempotency-Key, cash holds / receipt encumbrance,
matching, DvP settlement with signed receipt events, double-entry ledger. About 30 % of orders cross.

    .venv/bin/python bench/orders_api.py [--seconds 20] [--connections 8] [--workers 2] [--floor-seconds 10]
        [--runs N] [--instruments 2] [--spy [--spy-dir DIR]]

`--runs N` measures N runs one after another against the same server (the machine's noise is ±10-20 % from one
run to the next): the summary gives the median run's figures and lists every run. Each run also gives the CPU
milliseconds per order of the web workers, all PostgreSQL processes, Redis, wrk and the whole machine
(`cpu_ms_per_order`, from /proc): 2 cores busy at 1,000 orders/s leave 2 ms of CPU per order in all.

`--instruments 2` spreads the traders over two books of one metal (GA-6N-CN and GA-6N-EU): each book is
serialised by its instrument's row lock, two are not serialised by each other.

Before the orders it measures the stack's floor on the same server: an authenticated GET of the member's
balances (token auth, one small query, DRF rendering) driven by wrk the same way. No order path on this
stack can beat that rate; the gap between the two is what the order path itself costs.

`--spy` also records both gunicorn workers with py-spy during the measured run (`py-spy record --idle -r 200
-f raw`, one per worker, started a second after the run begins and stopping a second before it ends) and prints,
after the JSON summary, where the workers' wall time goes (`bench/spy_breakdown.py`): idle, gunicorn, Django/DRF,
token authentication, throttles, the Idempotency-Key request, waiting for the instrument's row lock, the order
under that lock (Python CPU and SQL round trips), commit, after-commit hooks; the own-code functions under the lock;
and the share of the wall time the instrument lock is held (near 100 %: order entry on one instrument is serialised
by it). py-spy pauses a worker for each sample, so a `--spy` run's orders/s and latencies are not the bench's
figures. `--spy-dir DIR` keeps the raw recordings (flamegraph.pl and `bench/spy_breakdown.py DIR/*.txt` read
them). Needs py-spy (`pip install py-spy`, in the dev extra) and ptrace permission (root, or
`kernel.yama.ptrace_scope=0`).

Needs `wrk` (Debian package `wrk`). Uses its own database `ingot_bench_orders` (dropped at the end).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DB = "ingot_bench_orders"
PG = "postgres://postgres@127.0.0.1:5432"
PORT = 8765

LUA = r"""
local tokens = {%(tokens)s}
local sides = {%(sides)s}
local instruments = {%(instruments)s}
local counter = 0
-- A global, not a local: setup() reaches a thread's state through thread:set, which sets globals only
-- (with a local here both threads kept id 0 and sent the same client order ids: half the requests were
-- answered 409 idempotency_in_flight, and counted as orders by wrk).
thread_id = 0
local id_seq = 0
function setup(thread)
  id_seq = id_seq + 1
  thread:set("thread_id", id_seq)
end
function request()
  counter = counter + 1
  local i = (counter * 7 + thread_id) %% #tokens + 1
  local side = sides[i]
  local r = math.random()
  local price
  -- ~30%% of orders cross: aggressive buys at 590, aggressive sells at 570; the rest rest away from mid.
  if r < 0.30 then
    if side == "buy" then price = 590 else price = 570 end
  else
    local offset = math.random(1, 50) / 10
    if side == "buy" then price = 575 - offset else price = 585 + offset end
  end
  local coid = string.format("%(run)s-b%%d-%%d", thread_id, counter)
  local body = string.format('{"instrument":"%%s","side":"%%s","order_type":"limit","tif":"GTC","quantity_kg":"%%d","price":"%%.2f","client_order_id":"%%s"}',
    instruments[i], side, math.random(1, 3), price, coid)
  local headers = {}
  headers["Content-Type"] = "application/json"
  headers["Authorization"] = "Token " .. tokens[i]
  headers["Idempotency-Key"] = coid
  return wrk.format("POST", "/api/v1/orders", headers, body)
end
local statuses = {}
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end
function done(summary, latency, requests)
  io.write("STATUS ")
  for k, v in pairs(statuses) do io.write(k .. "=" .. v .. " ") end
  io.write("\n")
end
"""


FLOOR_LUA = r"""
local tokens = {%(tokens)s}
local counter = 0
function request()
  counter = counter + 1
  local headers = {}
  headers["Authorization"] = "Token " .. tokens[counter %% #tokens + 1]
  return wrk.format("GET", "/api/v1/balances", headers)
end
"""


HZ = os.sysconf("SC_CLK_TCK")


def process_ticks(pid: int) -> int | None:
    """User + system CPU time of process `pid` so far, in clock ticks (Linux /proc); None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[11]) + int(fields[12])  # utime, stime


def command_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def ticks_of(command: str) -> int:
    """User + system CPU so far of every process named `command` (e.g. "postgres"), in clock ticks."""
    pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]
    return sum(process_ticks(p) or 0 for p in pids if command_of(p) == command)  # gone meanwhile: nothing


def machine_busy_ticks() -> int:
    """The whole machine's busy CPU so far, all cores: user + nice + system + irq + softirq + steal (idle and
    iowait are not busy), in clock ticks (/proc/stat)."""
    machine = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    return sum(int(machine[i]) for i in (0, 1, 2, 5, 6, 7))


def cpu_jiffies(server_pid: int) -> dict[str, int]:
    """CPU time so far (user + system, in clock ticks) of the gunicorn workers, of every PostgreSQL process, of
    Redis, of wrk (the waited-for children of this process) and of the whole machine (all cores, from
    /proc/stat): where each order's CPU goes, by process."""
    workers = [int(p) for p in Path(f"/proc/{server_pid}/task/{server_pid}/children").read_text().split()]
    return {
        "web_workers": sum(process_ticks(p) or 0 for p in workers),
        "postgresql": ticks_of("postgres"),
        "redis": ticks_of("redis-server"),
        # wrk lives only during a run: its CPU comes from this process's waited-for children
        "wrk": round((lambda u: u.ru_utime + u.ru_stime)(resource.getrusage(resource.RUSAGE_CHILDREN)) * HZ),
        "machine_all_busy": machine_busy_ticks(),
    }


def wrk_figures(out: str) -> dict[str, Any]:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    pcts = dict(re.findall(r"\s+(50|75|90|99)%\s+([\d.]+\w+)", out))
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)  # the Lua counters are per wrk thread
    return {"per_s": rps, "p50": pcts.get("50"), "p90": pcts.get("90"), "p99": pcts.get("99"),
            "non_2xx_responses": int(non_2xx.group(1)) if non_2xx else 0}


def psql(sql: str) -> None:
    subprocess.run(["psql", "-q", "-h", "127.0.0.1", "-U", "postgres", "-c", sql], check=True,
                   stdout=subprocess.DEVNULL)


def env() -> dict[str, str]:
    return {**os.environ, "DATABASE_URL": f"{PG}/{DB}", "REDIS_URL": "redis://127.0.0.1:6379/14",
            "DJANGO_SETTINGS_MODULE": "config.settings.local", "DJANGO_DEBUG": "false",
            "INGOT_DEMO_MARKET_MAKER": "false", "LOG_LEVEL": "WARNING", "GUNICORN_ACCESSLOG": "",
            "DB_CONN_MAX_AGE": "600"}


# The order book(s) of the bench: GA-6N-CN, then with --instruments 2 GA-6N-EU (gallium in a German warehouse,
# traded by German members: no export clearance needed), two books of one metal.
MARKETS = [("GA-6N-CN", "CN", "CN"), ("GA-6N-EU", "EU", "DE")]


def setup_market(traders: int, instruments: int = 1) -> tuple[list[str], list[str], list[str]]:
    """Instruments, traders (half buyers with cash, half sellers with receipts, spread over the instruments) and
    their API tokens: (tokens, sides, instrument codes), one of each per trader."""
    os.environ.update(env())
    import django

    django.setup()
    from rest_framework.authtoken.models import Token

    from members.models import User
    from tests.factories.members import MemberFactory
    from tests.factories.receipts import ReceiptWorld
    from tests.factories.trading import funded_member, instrument

    markets = MARKETS[:instruments]
    worlds = []
    for code, region, country in markets:
        instrument(code, region=region)
        worlds.append(ReceiptWorld(country=country, region=region))
    tokens, sides, codes = [], [], []
    for n in range(traders):
        market = (n // 2) % len(markets)  # buyer and seller pairs, market by market
        code, _, country = markets[market]
        if n % 2 == 0:
            member = funded_member("100000000.00", country=country)
            sides.append("buy")
        else:
            member = MemberFactory(roles=["trader", "producer"], country=country)
            for _ in range(2):
                worlds[market].receipt(member, quantity="50000.000")
            sides.append("sell")
        codes.append(code)
        user = User.objects.create_user(username=f"bench{n}", password="bench-password-1", member=member)
        tokens.append(Token.objects.create(user=user).key)
    return tokens, sides, codes


def wait_up(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)  # noqa: S310 - loopback only
            return
        except Exception:  # noqa: BLE001
            time.sleep(0.3)
    raise RuntimeError("gunicorn did not start")


def py_spy() -> str:
    """The py-spy next to this interpreter (the venv's), else on PATH; exits with how to install it."""
    beside = Path(sys.executable).parent / "py-spy"
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if not found:
        sys.exit("--spy needs py-spy: pip install py-spy (it is in the dev extra: pip install -e '.[dev]')")
    return found


def worker_pids(master: int) -> list[int]:
    """The gunicorn master's child processes (its workers), from /proc."""
    pids: list[int] = []
    for children in Path(f"/proc/{master}/task").glob("*/children"):
        pids.extend(int(pid) for pid in children.read_text().split())
    return sorted(pids)


def start_spies(spy: str, master: int, workers: int, seconds: int,
                directory: Path) -> list[tuple[subprocess.Popen[str], Path]]:
    """One `py-spy record` per worker, started a second into the measured run (wrk is connecting and the
    workers are busy by then) and sampling until a second before its end."""
    pids = worker_pids(master)
    if len(pids) != workers:
        raise RuntimeError(f"expected {workers} gunicorn workers under pid {master}, found {pids}")
    time.sleep(1)
    directory.mkdir(parents=True, exist_ok=True)
    spies = []
    for pid in pids:
        path = directory / f"worker-{pid}.txt"
        spies.append((subprocess.Popen([spy, "record", "-p", str(pid), "-d", str(max(1, seconds - 2)), "--idle",
                                        "-r", "200", "-f", "raw", "-o", str(path)],
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True), path))
    return spies


def finish_spies(spies: list[tuple[subprocess.Popen[str], Path]]) -> list[Path]:
    paths = []
    for process, path in spies:
        output, _ = process.communicate(timeout=60)
        if process.returncode or not path.exists():
            raise RuntimeError(f"py-spy failed (exit {process.returncode}; it needs ptrace permission):\n{output}")
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--traders", type=int, default=20)
    parser.add_argument("--floor-seconds", type=int, default=10, help="0 skips the floor measurement")
    parser.add_argument("--keep", action="store_true", help="keep the database")
    parser.add_argument("--server-log", type=Path, help="write gunicorn's own output (errors, tracebacks) here")
    parser.add_argument("--threads", type=int, default=0,
                        help="gunicorn's gthread worker with this many threads per worker (default: the sync worker, "
                             "or what GUNICORN_WORKER_CLASS and GUNICORN_THREADS say)")
    parser.add_argument("--instruments", type=int, choices=[1, 2], default=1,
                        help="order books the traders are spread over (2: GA-6N-CN and GA-6N-EU, both gallium)")
    parser.add_argument("--runs", type=int, default=1,
                        help="measured runs against the same server, one after another; the median run is reported")
    parser.add_argument("--spy", action="store_true",
                        help="record the workers with py-spy during the measured run and print where their time goes")
    parser.add_argument("--spy-dir", type=Path, help="with --spy: keep the raw py-spy recordings in this directory")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install -y wrk")
    spy = py_spy() if args.spy else ""

    psql(f"DROP DATABASE IF EXISTS {DB}")
    psql(f"CREATE DATABASE {DB}")
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env(), check=True)
    tokens, sides, codes = setup_market(args.traders, args.instruments)
    # One script per wrk run, each with its own client order id prefix: a key reused from the warm-up with
    # another body would be answered 422 (idempotency_key_reused), cheaply, and flatter the figure.
    work = Path(tempfile.mkdtemp(prefix="orders-bench-"))
    quoted_tokens = ",".join(f'"{t}"' for t in tokens)
    scripts = {run: work / f"{run}.lua" for run in ("warmup", "main", "floor")}
    for run in ("warmup", "main"):
        scripts[run].write_text(LUA % {"tokens": quoted_tokens, "sides": ",".join(f'"{s}"' for s in sides),
                                       "instruments": ",".join(f'"{c}"' for c in codes),
                                       "run": f"{run}{os.getpid()}"})
    scripts["floor"].write_text(FLOOR_LUA % {"tokens": quoted_tokens})
    access_log = work / "access.log"
    spy_dir = args.spy_dir or work
    spies: list[tuple[subprocess.Popen[str], Path]] = []
    spy_paths: list[Path] = []
    main_run: subprocess.Popen[str] | None = None
    runs: list[dict[str, Any]] = []
    outputs: list[str] = []

    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "config.wsgi", "-c", "platform/gunicorn.conf.py",
         "--workers", str(args.workers), "--bind", f"127.0.0.1:{PORT}", "--access-logfile", str(access_log),
         "--access-logformat", "%(m)s %(U)s %(s)s"],
        cwd=ROOT, env={**env(), **({"GUNICORN_WORKER_CLASS": "gthread", "GUNICORN_THREADS": str(args.threads)}
                                   if args.threads else {})},
        stdout=subprocess.DEVNULL,
        stderr=args.server_log.open("w") if args.server_log else subprocess.DEVNULL)
    try:
        wait_up(f"http://127.0.0.1:{PORT}/healthz")
        floor_out = ""
        if args.floor_seconds:
            floor_out = subprocess.run(["wrk", "-t2", f"-c{args.connections}", f"-d{args.floor_seconds}s", "--latency",
                                        "-s", str(scripts["floor"]), f"http://127.0.0.1:{PORT}"], check=True,
                                       capture_output=True, text=True).stdout
        # Warm-up: fill both sides of the book and the per-process caches.
        subprocess.run(["wrk", "-t1", "-c2", "-d3s", "-s", str(scripts["warmup"]), f"http://127.0.0.1:{PORT}"],
                       check=True, capture_output=True)
        access_log.write_text("")  # count only the measured runs' orders
        for run in range(args.runs):
            script = work / f"main{run}.lua"  # each run its own client order ids
            script.write_text(scripts["main"].read_text().replace(f"main{os.getpid()}", f"main{os.getpid()}r{run}"))
            before = cpu_jiffies(server.pid)
            main_run = subprocess.Popen(["wrk", "-t2", f"-c{args.connections}", f"-d{args.seconds}s", "--latency",
                                         "-s", str(script), f"http://127.0.0.1:{PORT}"],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            if spy and run == 0:
                spies = start_spies(spy, server.pid, args.workers, args.seconds, spy_dir)
            out, err = main_run.communicate()
            if main_run.returncode:
                raise RuntimeError(f"wrk failed: {err}")
            figures = wrk_figures(out)
            after = cpu_jiffies(server.pid)
            orders_done = figures["per_s"] * args.seconds
            figures["cpu_ms_per_order"] = {part: round((after[part] - before[part]) * 1000 / HZ / orders_done, 2)
                                           for part in before}
            runs.append(figures)
            outputs.append(out)
            if spy and run == 0:
                spy_paths = finish_spies(spies)
    finally:
        for process in [main_run, *(p for p, _ in spies)]:
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
        server.terminate()
        server.wait(timeout=20)

    from django.db import connection

    from trading.models import Order, Trade

    # With several runs, the figures are the median run's (by orders/s); every run is listed under "runs".
    orders = sorted(runs, key=lambda r: r["per_s"])[len(runs) // 2]
    summary = {
        "orders_per_s": orders["per_s"], "p50": orders["p50"], "p90": orders["p90"], "p99": orders["p99"],
        "non_2xx_responses": sum(r["non_2xx_responses"] for r in runs), "orders_total": Order.objects.count(),
        "trades_total": Trade.objects.count(), "instruments": args.instruments, "workers": args.workers,
        "connections": args.connections, "threads": args.threads or int(os.environ.get("GUNICORN_THREADS", "1")),
        "seconds": args.seconds, "cpu_ms_per_order": orders["cpu_ms_per_order"],
    }
    if len(runs) > 1:
        summary["runs"] = [{k: r[k] for k in ("per_s", "p50", "p99")} for r in runs]
    if floor_out:
        floor = wrk_figures(floor_out)
        summary["floor_authenticated_get_per_s"] = floor["per_s"]
        summary["floor_p50"], summary["floor_p99"] = floor["p50"], floor["p99"]
        summary["floor_non_2xx_responses"] = floor["non_2xx_responses"]
    statuses = Counter(line.split()[2] for line in access_log.read_text().splitlines()
                       if line.startswith("POST /api/v1/orders"))
    summary["order_statuses"] = dict(sorted(statuses.items()))
    with connection.cursor() as cursor:
        # Orders per transaction: a batch writes its orders' Idempotency-Key responses in one statement of its
        # own transaction, so the rows' xmin (that transaction's id) counts the batches.
        cursor.execute("SELECT count(*), count(DISTINCT xmin::text) FROM members_idempotencyrecord "
                       "WHERE path = '/api/v1/orders' AND response_status > 0")
        answered, transactions = cursor.fetchone()
    summary["orders_per_transaction"] = round(answered / transactions, 2) if transactions else None
    summary["load_average_1min"] = round(os.getloadavg()[0], 2)
    print(outputs[runs.index(orders)])
    print(json.dumps(summary, indent=2))
    if spy:
        from bench.spy_breakdown import breakdown

        print(breakdown(spy_paths))
        if args.spy_dir:
            print("raw recordings: " + ", ".join(str(p) for p in spy_paths))
    shutil.rmtree(work)
    connection.close()
    if not args.keep:
        psql(f"DROP DATABASE IF EXISTS {DB}")


if __name__ == "__main__":
    main()
