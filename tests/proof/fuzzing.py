"""Schemathesis against our OpenAPI schema, in process, on the test database, with every check.

How a run works:

- The schema is loaded from `/api/schema/` of the real WSGI application (`config.wsgi`), and every
  generated request goes through the whole Django stack (middleware, DRF, services) on PostgreSQL.
- Schemathesis runs its requests on worker threads. They share the test's database connection (as
  Django's LiveServerTestCase does), so they see the world the test built, everything stays inside the
  test's transaction (rolled back afterwards, no task published on commit), and nothing leaks into other
  test runs that share Redis. Each request runs in its own savepoint, rolled back if it answered 5xx, so one
  request that dies on a database error is reported without aborting the transaction for the rest.
- Identities come from a Web Fuzzing Commons auth document listing every actor of the world (two members
  of each role plus two officers) with its `Authorization: Token ...` header. A run is pinned to one
  identity; all of them are `peers`, so the `object_level_authorization` check replays each object one
  identity read as every other identity and fails if another member gets it.
- All checks are on. `positive_data_acceptance` also accepts 400 and 422: a schema-valid request that
  breaks a business rule the schema cannot state (an unknown member id, a price outside the band, an
  unsigned document) is refused with our 400/422 error body, which is correct.

Findings are classified as server errors, schema violations, undocumented status codes, object-level
authorization failures and other check failures. A finding that matches a known, reported bug
(KNOWN_BUGS, each with an xfail(strict) reproducer in test_known_bugs.py) is counted apart.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.core.signals import request_finished, request_started
from django.db import DatabaseError, close_old_connections, connections, transaction

from tests.proof.world import ApiWorld

SCHEMA_PATH = "/api/schema/?format=json"

SERVER_ERROR_CHECKS = frozenset({"not_a_server_error"})
SCHEMA_CHECKS = frozenset({"response_schema_conformance", "content_type_conformance", "response_headers_conformance",
                           "negative_data_rejection", "positive_data_acceptance"})
STATUS_CHECKS = frozenset({"status_code_conformance"})
OLA_CHECKS = frozenset({"object_level_authorization"})

# Schemathesis' test phases: schema examples, boundary/negative coverage, random fuzzing, stateful sequences.
ALL_PHASES = ("examples", "coverage", "fuzzing", "stateful")

CATEGORIES = ("server_errors", "schema_violations", "undocumented_statuses", "ola_failures", "other_failures")


def category_of(check: str) -> str:
    if check in SERVER_ERROR_CHECKS:
        return "server_errors"
    if check in SCHEMA_CHECKS:
        return "schema_violations"
    if check in STATUS_CHECKS:
        return "undocumented_statuses"
    if check in OLA_CHECKS:
        return "ola_failures"
    return "other_failures"


@dataclass(frozen=True)
class Finding:
    operation: str
    check: str
    title: str
    message: str
    reproduce: str

    @property
    def category(self) -> str:
        return category_of(self.check)

    def __str__(self) -> str:
        return f"[{self.check}] {self.operation}: {self.title}\n{self.message}\n{self.reproduce}"


@dataclass(frozen=True)
class KnownBug:
    """A bug found by the fuzzer and reported to the owner of the code; see test_known_bugs.py."""

    ref: str
    checks: frozenset[str]
    pattern: str  # searched in the finding's operation, message and reproduction

    def matches(self, finding: Finding) -> bool:
        return finding.check in self.checks and re.search(
            self.pattern, f"{finding.operation}\n{finding.message}\n{finding.reproduce}", re.S) is not None


# Each entry is one bug with a precise reproducer (test_known_bugs.py, xfail strict). When the owner fixes
# it, the reproducer passes, strict xfail turns that into a failure, and whoever flips it removes the entry.
KNOWN_BUGS: tuple[KnownBug, ...] = (
    # BUG-1, 2, 3, 4, 11, 12 are fixed; their reproducers in test_known_bugs.py are regression tests now.
)


@dataclass
class FuzzRun:
    identity: str
    seed: int
    max_examples: int
    requests: int = 0
    cases: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    operations: set[str] = field(default_factory=set)
    checks_run: Counter[str] = field(default_factory=Counter)
    findings: list[Finding] = field(default_factory=list)
    known: list[tuple[KnownBug, Finding]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def counts(self) -> dict[str, int]:
        counted = Counter(f.category for f in self.findings)
        return {name: counted.get(name, 0) for name in CATEGORIES}


class SharedConnectionApp:
    """The WSGI app, serving schemathesis' worker threads on the test's own database connection, and
    counting what it answered."""

    def __init__(self, app: Any, connection: Any) -> None:
        self.app = app
        self.connection = connection
        self.requests = 0
        self.statuses: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        connections["default"] = self.connection  # this thread's alias -> the test's connection
        status: list[int] = []

        def counting_start_response(status_line: str, headers: Any, exc_info: Any = None) -> Any:
            code = status_line.split(" ", 1)[0]
            status.append(int(code))
            with self._lock:
                self.requests += 1
                self.statuses[code] += 1
            return start_response(status_line, headers, exc_info)

        # Each request in a savepoint, as autocommit would isolate it: a request that dies on a database error
        # (a 500, reported) must not leave the shared transaction aborted for every request after it. Marked
        # like TestCase's own blocks, so the durable Idempotency-Key transaction inside runs as in any test.
        atomic = transaction.atomic()
        atomic._from_testcase = True  # type: ignore[attr-defined]
        try:
            with atomic:
                result = self.app(environ, counting_start_response)
                if status and status[0] >= 500:
                    transaction.set_rollback(True)
        except DatabaseError:  # the savepoint could not be released: already rolled back to it
            pass
        return result


@contextmanager
def served_in_process() -> Iterator[SharedConnectionApp]:
    """The Django WSGI app sharing the test's connection with schemathesis' threads, for the block."""
    from django.core.wsgi import get_wsgi_application

    connection = connections["default"]
    connection.inc_thread_sharing()
    # As Django's test client does: a request must not close the test's connection (it is in a transaction).
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield SharedConnectionApp(get_wsgi_application(), connection)
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)
        connection.dec_thread_sharing()


def _patch_wsgi_probe_kwargs() -> Any:
    """Schemathesis 4.32 sends its auth probes (ignored_auth, object_level_authorization) without the
    requests.Session, so its WSGI transport forwards socket-only options (max_redirects, verify, ...) to
    werkzeug, which raises TypeError. Drop them; they mean nothing in process. Returns an undo."""
    from schemathesis.transport.wsgi import WSGITransport

    original = WSGITransport.send

    def send(self: Any, case: Any, **kwargs: Any) -> Any:
        for name in ("max_redirects", "verify", "cert", "proxies"):
            kwargs.pop(name, None)
        return original(self, case, **kwargs)

    WSGITransport.send = send  # type: ignore[method-assign]

    def undo() -> None:
        WSGITransport.send = original  # type: ignore[method-assign]

    return undo


def wfc_document(world: ApiWorld) -> dict[str, Any]:
    return {"auth": [{"name": actor.name, "fixedHeaders": [{"name": "Authorization", "value": actor.authorization}]}
                     for actor in world.actors.values()]}


def schemathesis_config(*, seed: int, max_examples: int, wfc_path: Path | None, user: str | None,
                        peers: list[str], stateful_steps: int = 6, phases: tuple[str, ...] = ALL_PHASES) -> Any:
    from schemathesis.config import SchemathesisConfig

    data: dict[str, Any] = {
        "seed": seed,
        "workers": 1,
        "cache": {"enabled": False},  # no .schemathesis/ state: every run starts from the schema alone
        "generation": {"max-examples": max_examples, "database": "none"},
        "phases": {name: {"enabled": name in phases} for name in ALL_PHASES} | {
            "stateful": {"enabled": "stateful" in phases, "max-steps": stateful_steps}},
        "checks": {
            "positive_data_acceptance": {
                "expected-statuses": ["2xx", "400", "401", "403", "404", "409", "422", "429", "5xx"]},
        },
    }
    if wfc_path is not None:
        data["auth"] = {"auto-signup": False, "wfc": {"path": str(wfc_path), "user": user, "peers": peers}}
    else:
        data["auth"] = {"auto-signup": False}
    return SchemathesisConfig.from_dict(data)


def _finding(label: str | None, check: Any, fallback: str) -> Finding:
    info = check.failure_info
    failure = info.failure if info is not None else None
    operation = label or getattr(failure, "operation", None) or fallback
    return Finding(operation=str(operation), check=check.name, title=getattr(failure, "title", "") or "",
                   message=getattr(failure, "message", "") or "", reproduce=info.code_sample if info else "")


def run_fuzz(world: ApiWorld, workdir: Path, *, user: str | None, seed: int, max_examples: int,
             stateful_steps: int = 6, path_regex: str | None = None,
             phases: tuple[str, ...] = ALL_PHASES) -> FuzzRun:
    """One schemathesis engine run (every phase, every check) as `user` (None: anonymous)."""
    import schemathesis
    from schemathesis.engine import events, from_schema

    run = FuzzRun(identity=user or "anonymous", seed=seed, max_examples=max_examples)
    wfc_path = None
    if user is not None:
        wfc_path = workdir / "wfc-auth.json"
        wfc_path.write_text(json.dumps(wfc_document(world)))
    config = schemathesis_config(seed=seed, max_examples=max_examples, wfc_path=wfc_path, user=user,
                                 peers=list(world.actors), stateful_steps=stateful_steps, phases=phases)
    undo = _patch_wsgi_probe_kwargs()
    started = time.monotonic()
    try:
        with served_in_process() as app:
            schema = schemathesis.openapi.from_wsgi(SCHEMA_PATH, app, config=config)
            if path_regex is not None:
                schema = schema.include(path_regex=path_regex)
            seen: set[tuple[str, str, str, str]] = set()
            for event in from_schema(schema).execute():
                if isinstance(event, events.ScenarioFinished):
                    run.cases += len(event.recorder.cases)
                    if event.label:
                        run.operations.add(event.label)
                    for checks in event.recorder.checks.values():
                        for check in checks:
                            run.checks_run[check.name] += 1
                            if check.failure_info is None:
                                continue
                            finding = _finding(event.label, check, event.recorder.label)
                            key = (finding.operation, finding.check, finding.title, finding.message[:200])
                            if key in seen:
                                continue
                            seen.add(key)
                            bug = next((b for b in KNOWN_BUGS if b.matches(finding)), None)
                            if bug is not None:
                                run.known.append((bug, finding))
                            else:
                                run.findings.append(finding)
                elif isinstance(event, events.NonFatalError):
                    run.errors.append(f"{event.label}: {type(event.value).__name__}: {event.value}")
                elif isinstance(event, events.FatalError):
                    run.errors.append(f"fatal: {type(event.exception).__name__}: {event.exception}")
            run.requests = app.requests
            run.statuses = app.statuses
    finally:
        undo()
    run.seconds = time.monotonic() - started
    return run
