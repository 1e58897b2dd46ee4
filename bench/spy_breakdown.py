"""Where gunicorn workers' wall time goes, from py-spy raw recordings (`py-spy record --idle -f raw`).

Used by `bench/orders_api.py --spy`; also runs on its own on kept recordings:

    .venv/bin/python bench/spy_breakdown.py var/spy/worker-*.txt

Each line of a raw recording is one stack (root first, frames `qualname (file:line)`, separated by `;`) and the
number of samples it was seen in. With `--idle` every sample of a worker's thread is kept whether it runs or
waits, so the samples of one worker are its wall clock. A sample is put in the first category whose frames
match, in this order:

- after-commit hooks (Django's `run_and_clear_commit_hooks`, the end of `config.after_commit.merged()`, and the
  spool thread of `config.after_commit` when it publishes; its sleeping samples are idle);
- commit: Django's `commit`, and the rest of the closing of the batch's transaction (`trading.batching._run_batch`
  leaving its `with`: psycopg's pipeline, which sends the COMMIT, and `Atomic.__exit__`): the instrument's lock
  is held until PostgreSQL answers it;
- the instrument's row lock (`instrument_for_order`): waiting when the leaf frame waits on a socket;
- under the lock in `_place_locked`, split in Python CPU and waiting on SQL round trips;
- under the lock outside `_place_locked`: the rest of `order_place` and, located in the source of
  `trading.batching._run_batch`, the statements after the locking read (the Idempotency-Key claim, the order
  checks, the response body, the responses' write), and `_run_each` (a batch's savepoints);
- waiting for the batch ahead (gthread: another thread of the process is running this instrument's batch);
- the Idempotency-Key before the lock (`idempotent_request`: the key's checks and fingerprint; `claim` of a
  batch's first order, which claims before the lock), the rest of the order view (input validation, the
  answer), token authentication, throttles, the rest of Django/DRF, gunicorn's request handling, idle
  (gunicorn's accept/select).

"On a socket" (the second column, and the SQL round trip categories) means the leaf frame's current line, in
psycopg, redis, gunicorn or the socket modules, sends, receives or waits: psycopg's `Connection.wait` (libpq's C
`wait_c` is invisible to py-spy without `--native`), libpq's send of a statement (`send_query_prepared`, a system call in C that
wakes the PostgreSQL backend; on a busy 2-core machine the worker can lose its core there: not Python CPU),
Redis's and gunicorn's socket reads and writes. The line's text is read from the installed source.
"""

from __future__ import annotations

import ast
import linecache
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from functools import cache
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
OWN_PACKAGES = ("trading/", "receipts/", "compliance/", "members/", "config/")


class Frame(NamedTuple):
    func: str  # the qualified name, e.g. `BaseDatabaseWrapper.commit` or `_place_locked.<locals>.<lambda>`
    file: str  # as py-spy shortens it (`django/db/transaction.py`), or relative to the repository
    line: int

    @property
    def name(self) -> str:
        return self.func.rpartition(".")[2]

    def is_(self, name: str, file: str) -> bool:
        """This frame is function `name` (the last part of its qualified name, compared whole) of `file`."""
        return self.name == name and (self.file == file or self.file.endswith("/" + file))

    def in_file(self, *files: str) -> bool:
        return any(self.file == f or self.file.endswith("/" + f) for f in files)


FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def parse_frame(text: str) -> Frame:
    m = FRAME.match(text)
    if not m:
        return Frame(text, "", 0)
    file = m["file"]
    if file.startswith("/"):
        for root in {str(ROOT), str(ROOT.resolve())}:
            if file.startswith(root + "/"):
                file = file[len(root) + 1:]
    return Frame(m["func"], file, int(m["line"] or 0))


def parse_raw(path: Path) -> list[tuple[tuple[Frame, ...], int]]:
    stacks = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if stack and count.isdigit():
            stacks.append((tuple(parse_frame(f) for f in stack.split(";")), int(count)))
    return stacks


# Leaves in these places are on a socket when their current line calls into one (or into libpq, which sends and
# reads PostgreSQL's socket in C, invisible to py-spy without --native).
IO_FILES = ("psycopg/", "redis/", "gunicorn/", "socket.py", "selectors.py", "ssl.py")
IO_CALL = re.compile(r"\b(send\w*|recv\w*|wait\w*|select|poll|accept|shutdown|readinto)\(|"
                     r"yield from (\w+\.)?(execute|fetch\w*|pipeline_communicate|send|flush\w*)\(")
SEND_CALL = re.compile(r"\bsend\w*\(|yield from (\w+\.)?(send|flush\w*)\(")


@cache
def source_line(file: str, line: int) -> str:
    """The text of `line` of `file` as py-spy names it (shortened to the package part), found on sys.path."""
    for entry in [str(ROOT), *sys.path]:
        path = Path(entry or ".") / file
        if path.is_file():
            return linecache.getline(str(path), line)
    return ""


@cache
def socket_io(leaf: Frame) -> str:
    """"send" or "wait" when the leaf frame is on a socket (PostgreSQL, Redis, the HTTP client), else ""."""
    if not leaf.file.startswith(IO_FILES) and not any("/" + f in leaf.file for f in IO_FILES):
        return ""
    text = source_line(leaf.file, leaf.line)
    if not text:  # source not found: psycopg's waits by their name (Connection.wait drives libpq's wait_c)
        return "wait" if "psycopg/" in leaf.file and "wait" in leaf.name else ""
    if not IO_CALL.search(text):
        return ""
    return "send" if SEND_CALL.search(text) else "wait"


def waiting(leaf: Frame) -> bool:
    return bool(socket_io(leaf))


def _statements_after(body: Sequence[ast.stmt], is_pivot: Callable[[ast.stmt], bool]) -> list[tuple[int, int]]:
    for i, stmt in enumerate(body):
        if is_pivot(stmt):
            return [(s.lineno, s.end_lineno or s.lineno) for s in body[i + 1:]]
    return []


def _calls(stmt: ast.AST, name: str) -> bool:
    return any(isinstance(n, ast.Call) and (getattr(n.func, "attr", None) == name or getattr(n.func, "id", None) == name)
               for n in ast.walk(stmt))


def lock_spans(root: Path = ROOT) -> tuple[dict[tuple[str, str], list[tuple[int, int]]], list[str]]:
    """Line spans, per (function name, file), of the statements run under the instrument's lock outside
    `order_place`: in `trading.batching._run_batch` those after the locking read (`instrument_for_order`) inside
    its transaction's `with`, and all of `_run_each`. Read from the source, so edits move them along; what
    cannot be found is reported (its samples then count outside the lock)."""
    spans: dict[tuple[str, str], list[tuple[int, int]]] = {}
    notes = []
    batching = "trading/batching.py"
    for node in ast.walk(ast.parse((root / batching).read_text())):
        if isinstance(node, ast.FunctionDef) and node.name == "_run_batch":
            for with_ in (n for n in ast.walk(node) if isinstance(n, ast.With)):
                spans.setdefault(("_run_batch", batching), []).extend(
                    _statements_after(with_.body, lambda s: _calls(s, "instrument_for_order")))
        elif isinstance(node, ast.FunctionDef) and node.name == "_run_each":
            spans.setdefault(("_run_each", batching), []).append((node.body[0].lineno, node.end_lineno or 0))
    for key, where in (((("_run_batch", batching)), "_run_batch() after instrument_for_order"),
                       ((("_run_each", batching)), "_run_each()")):
        if not spans.get(key):
            notes.append(f"note: could not locate {where} in the source; those samples count outside the lock")
    return spans, notes


IDLE = "idle: waiting for a request (gunicorn accept/select)"
GUNICORN = "gunicorn: request parsing, response writing, worker loop"
DJANGO = "rest of Django/DRF (middleware, routing, view, rendering)"
AUTH = "token authentication"
THROTTLE = "throttles"
IDEMPOTENCY = "Idempotency-Key before the lock (checks, fingerprint; a batch's first order: its claim)"
VALIDATION = "order view outside the batch (input validation, the answer)"
LANE_WAIT = "waiting for the batch ahead (gthread: another thread runs this instrument's batch)"
LOCK_WAIT = "waiting for the instrument's row lock (instrument_for_order)"
LOCK_READ = "instrument_for_order: Python (statement, instrument)"
PLACE_CPU = "under lock: _place_locked, Python CPU"
PLACE_SQL = "under lock: _place_locked, SQL round trips (sending, awaiting the answer)"
REST_CPU = "under lock, outside _place_locked (key claim, checks, response body and write): Python CPU"
REST_SQL = "under lock, outside _place_locked: SQL round trips"
COMMIT = "commit (lock held until PostgreSQL answers)"
HOOKS = "after-commit publishes (Celery: ESG evaluation, candle fold; the spool thread's sends)"
OTHER = "unclassified"
ORDER = [IDLE, GUNICORN, DJANGO, AUTH, THROTTLE, IDEMPOTENCY, VALIDATION, LANE_WAIT, LOCK_WAIT, LOCK_READ, PLACE_CPU,
         PLACE_SQL, REST_CPU, REST_SQL, COMMIT, HOOKS, OTHER]
UNDER_LOCK = (PLACE_CPU, PLACE_SQL, REST_CPU, REST_SQL, COMMIT)


class Classifier:
    def __init__(self, root: Path = ROOT) -> None:
        self.spans, self.notes = lock_spans(root)

    def _in_span(self, frame: Frame) -> bool:
        for (name, file), spans in self.spans.items():
            if frame.is_(name, file):
                return any(a <= frame.line <= b for a, b in spans)
        return False

    def classify(self, frames: Sequence[Frame]) -> str:
        def has(name: str, file: str) -> bool:
            return any(f.is_(name, file) for f in frames)

        leaf = frames[-1]
        wait = waiting(leaf)
        if has("_run", "config/after_commit.py"):  # the spool thread: asleep between its sends, or sending
            return IDLE if leaf.is_("_run", "config/after_commit.py") else HOOKS
        # The sync worker serves requests in its one thread; the gthread worker in a pool thread, its main thread
        # polling the connections (idle, like a pool thread waiting for work).
        workers = ("gunicorn/workers/sync.py", "gunicorn/workers/gthread.py")
        if not any(has("handle_request", w) for w in workers):
            if leaf.is_("wait", workers[0]) or leaf.is_("accept", "socket.py") \
                    or leaf.is_("accept", workers[0]) or leaf.is_("select", "selectors.py") \
                    or leaf.in_file("concurrent/futures/thread.py", "threading.py", "queue.py"):
                return IDLE
            return GUNICORN if any(f.in_file(*workers) for f in frames) else OTHER
        if has("run_and_clear_commit_hooks", "django/db/backends/base/base.py") or any(
                f.in_file("config/after_commit.py") and f.name in ("merged", "_dispatch") for f in frames):
            return HOOKS
        batch = [i for i, f in enumerate(frames) if f.is_("_run_batch", "trading/batching.py")]
        if has("commit", "django/db/backends/base/base.py") or (
                batch and len(frames) > batch[0] + 1 and frames[batch[0] + 1].name == "__exit__"
                and not has("order_place", "trading/services.py")):
            return COMMIT
        if has("instrument_for_order", "trading/selectors.py"):
            return LOCK_WAIT if wait else LOCK_READ
        if has("_place_locked", "trading/services.py"):
            return PLACE_SQL if wait else PLACE_CPU
        if has("order_place", "trading/services.py") or any(self._in_span(f) for f in frames):
            return REST_SQL if wait else REST_CPU
        if has("place_batched", "trading/batching.py") and leaf.in_file("threading.py"):
            return LANE_WAIT
        if has("idempotent_request", "members/idempotency.py") or has("claim", "members/idempotency.py"):
            return IDEMPOTENCY
        if any(f.is_("post", "trading/api.py") for f in frames):
            return VALIDATION
        if any(f.in_file("config/api/authentication.py", "rest_framework/authentication.py") for f in frames):
            return AUTH
        if has("check_throttles", "rest_framework/views.py") or any(
                f.in_file("config/api/throttling.py") for f in frames):
            return THROTTLE
        if has("__call__", "django/core/handlers/wsgi.py"):
            return DJANGO
        return GUNICORN


def own(frame: Frame) -> bool:
    return frame.file.startswith(OWN_PACKAGES)


def breakdown(paths: Iterable[Path], *, top: int = 12, root: Path = ROOT) -> str:
    """The report: categories as % of all samples of all recordings (one per worker), with the part waiting on
    a socket; the instrument lock's share of wall time; the own-code functions under the lock."""
    classifier = Classifier(root)
    per_worker: list[tuple[str, Counter[str], int]] = []
    cats: Counter[str] = Counter()
    waits: Counter[str] = Counter()
    sends: Counter[str] = Counter()
    leaf_own: Counter[tuple[str, str]] = Counter()
    incl_own: Counter[tuple[str, str]] = Counter()
    unclassified: Counter[str] = Counter()
    for path in paths:
        worker: Counter[str] = Counter()
        for frames, n in parse_raw(path):
            cat = classifier.classify(frames)
            worker[cat] += n
            io = socket_io(frames[-1])
            if io:
                waits[cat] += n
            if io == "send":
                sends[cat] += n
            if cat == OTHER:
                unclassified[f"{frames[-1].func} ({frames[-1].file})"] += n
            if cat in UNDER_LOCK and cat != COMMIT:
                mine = [(f.func, f.file) for f in frames if own(f)]
                callers = [key for key in mine if key[1] != "config/db.py"]
                if callers:
                    leaf_own[callers[-1]] += n
                for key in set(mine):
                    incl_own[key] += n
        cats.update(worker)
        per_worker.append((path.name, worker, sum(worker.values())))
    # Shares are of the samples not idle: a gthread worker's main thread polls its connections all the time.
    idle = cats.pop(IDLE, 0)
    for _, worker, _ in per_worker:
        worker.pop(IDLE, None)
    per_worker = [(name, worker, sum(worker.values())) for name, worker, _ in per_worker]
    total = sum(cats.values())
    if not total:
        return "py-spy breakdown: no samples recorded"

    def pct(n: int) -> str:
        return f"{100 * n / total:5.1f} %"

    lines = [f"py-spy breakdown: {total} samples of {len(per_worker)} workers ("
             + ", ".join(f"{name}: {n}" for name, _, n in per_worker)
             + f"; {idle} idle samples left out: waiting for a request or polling connections); % of those samples, "
             "then the part of it on a socket (PostgreSQL, Redis, the HTTP client)"]
    for cat in ORDER:
        if cat != IDLE and (cats[cat] or cat not in (OTHER, LOCK_READ)):
            lines.append(f"  {pct(cats[cat])}  {pct(waits[cat])} socket   {cat}")
    lines.append(f"  {pct(total)}  {pct(sum(waits.values()))} socket   total")
    lines.append(f"  of the socket time, sending (libpq's send of a statement, sendall): {pct(sum(sends.values()))} "
                 f"in all, {pct(sum(sends[c] for c in UNDER_LOCK))} under the lock; the rest awaits answers")
    if unclassified:
        lines.append("  unclassified leaves: " + "; ".join(f"{k} {v}" for k, v in unclassified.most_common(3)))
    held = sum(sum(w[c] for c in UNDER_LOCK) / n for _, w, n in per_worker if n)
    narrow = sum((w[PLACE_CPU] + w[PLACE_SQL] + w[COMMIT]) / n for _, w, n in per_worker if n)
    lines.append(f"instrument lock held {100 * held:.1f} % of the wall time (sum over workers of each one's under-lock "
                 f"samples / its samples; _place_locked and commit alone: {100 * narrow:.1f} %); near 100 % = order "
                 "entry on the instrument is serialised by that lock")
    lines.extend(classifier.notes)
    under = sum(cats[c] for c in UNDER_LOCK if c != COMMIT)
    lines.append(f"own code under the lock (commit excluded; {pct(under)} of all samples), top {top} by samples as "
                 "the innermost own frame, with what it calls outside own code (config/db.py's SQL helpers count for "
                 "their caller); incl = on the stack:")
    for (func, file), n in leaf_own.most_common(top):
        lines.append(f"  {pct(n)}  incl {pct(incl_own[(func, file)])}  {func} ({file})")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: bench/spy_breakdown.py RAW_FILE... (py-spy record --idle -f raw, one per worker)")
    print(breakdown([Path(p) for p in sys.argv[1:]]))
