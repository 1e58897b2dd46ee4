"""The receipt event chain: building, hashing and sealing events, and replaying them into
the receipt's state under the lifecycle's transition map. Pure; no database.

- An event is {"receipt", "seq", "kind", "at", "data", "prev_hash"}; `seq` runs 1, 2, 3...
  per receipt, `prev_hash` is the previous event's hash (null on seq 1), `at` is an ISO
  8601 UTC stamp ending in "Z".
- `event_hash` is the lowercase hex SHA-256 of the event's RFC 8785 bytes, so it commits
  to `prev_hash` and hence to the whole history before it.
- `seal` adds the platform's detached EdDSA signature over those same canonical event
  bytes (not over the hash): a verifier checks the signature against the bytes it has
  just hashed, with no second encoding to trust.
- Quantities are kg as decimal strings with exactly three decimals ("1250.000"; see
  `units.format_kg`), i.e. gram resolution.
- Kinds: issued | split_from (a chain's first event), then encumbered / released (sell
  order), pledged / unpledged (loan), frozen / unfrozen (compliance hold),
  transferred (whole receipt, new holder), split, withdrawal_requested /
  withdrawal_cancelled, withdrawn. `TRANSITIONS` is the lifecycle map.
- A split closes the parent: its `split` event lists every child (receipt, quantity,
  holder) and the children's quantities must sum exactly to the parent's. A sale of
  part of a receipt is a split into the seller's remainder and the buyer's part (the
  trade reference goes in the split's data); each child's chain opens with `split_from`
  naming the parent and the hash of the parent's `split` event.
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple, TypedDict

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from receipts.canonical import canonical_bytes, content_hash, parse_utc
from receipts.catalogue import ELEMENT_SET
from receipts.errors import (
    ILLEGAL_TRANSITION,
    INVALID_EVENT,
    QUANTITY_NOT_CONSERVED,
    ProofError,
)
from receipts.signing import sign_bytes
from receipts.units import KG_PATTERN

ISSUED = "issued"
SPLIT_FROM = "split_from"
ENCUMBERED = "encumbered"
RELEASED = "released"
PLEDGED = "pledged"
UNPLEDGED = "unpledged"
FROZEN = "frozen"
UNFROZEN = "unfrozen"
TRANSFERRED = "transferred"
SPLIT = "split"
WITHDRAWAL_REQUESTED = "withdrawal_requested"
WITHDRAWAL_CANCELLED = "withdrawal_cancelled"
WITHDRAWN = "withdrawn"

KINDS: tuple[str, ...] = (
    ISSUED, SPLIT_FROM, ENCUMBERED, RELEASED, PLEDGED, UNPLEDGED, FROZEN, UNFROZEN, TRANSFERRED, SPLIT,
    WITHDRAWAL_REQUESTED, WITHDRAWAL_CANCELLED, WITHDRAWN,
)  # fmt: skip
OPENING_KINDS = frozenset({ISSUED, SPLIT_FROM})

# Receipt statuses. "split" and "withdrawn" are closed for good.
S_ACTIVE = "active"
S_ENCUMBERED = "encumbered"
S_PLEDGED = "pledged"
S_FROZEN = "frozen"
S_WITHDRAWAL_REQUESTED = "withdrawal_requested"
S_SPLIT = "split"
S_WITHDRAWN = "withdrawn"
STATUSES: tuple[str, ...] = (
    S_ACTIVE, S_ENCUMBERED, S_PLEDGED, S_FROZEN, S_WITHDRAWAL_REQUESTED, S_SPLIT, S_WITHDRAWN,
)  # fmt: skip
CLOSED_STATUSES = frozenset({S_SPLIT, S_WITHDRAWN})

# kind -> statuses it may follow. The lead's Receipt.set_status uses this same map.
# Frozen blocks everything but `unfrozen` (which returns to the status before the
# freeze); a pledged receipt must be unpledged before it can be sold, split or withdrawn;
# a withdrawal is requested from an active receipt (not on the book) and either
# completes (`withdrawn`) or is cancelled.
TRANSITIONS: dict[str, frozenset[str]] = {
    ENCUMBERED: frozenset({S_ACTIVE}),
    RELEASED: frozenset({S_ENCUMBERED}),
    PLEDGED: frozenset({S_ACTIVE}),
    UNPLEDGED: frozenset({S_PLEDGED}),
    FROZEN: frozenset({S_ACTIVE, S_ENCUMBERED, S_PLEDGED, S_WITHDRAWAL_REQUESTED}),
    UNFROZEN: frozenset({S_FROZEN}),
    TRANSFERRED: frozenset({S_ACTIVE, S_ENCUMBERED}),
    SPLIT: frozenset({S_ACTIVE, S_ENCUMBERED}),
    WITHDRAWAL_REQUESTED: frozenset({S_ACTIVE}),
    WITHDRAWAL_CANCELLED: frozenset({S_WITHDRAWAL_REQUESTED}),
    WITHDRAWN: frozenset({S_ACTIVE, S_WITHDRAWAL_REQUESTED}),
}

# Attestations an `issued` event can bind (their document shapes: BUNDLE_FORMAT.md).
ATTESTATION_TYPES: tuple[str, ...] = ("assay", "carbon_footprint", "recycled_content", "origin")

_HEX64 = re.compile(r"[0-9a-f]{64}")


class Signature(TypedDict):
    alg: str
    kid: str
    sig: str


class SealedEvent(TypedDict):
    event: dict[str, Any]
    hash: str
    sig: Signature


# --- event data shapes -------------------------------------------------------------------------

_TEXT = "text"
_KG = "kg"
_HASH = "hash"
_OPTIONAL_TEXT = "optional text"
_ZERO_KG = "0.000"

_DATA_FIELDS: dict[str, dict[str, str]] = {
    ISSUED: {
        "metal": _TEXT, "form": _TEXT, "quantity": _KG, "warehouse": _TEXT, "lot": _TEXT,
        "holder": _TEXT, "lot_hash": _HASH,
    },
    SPLIT_FROM: {"parent": _TEXT, "parent_event_hash": _HASH, "quantity": _KG, "holder": _TEXT},
    ENCUMBERED: {"order": _TEXT},
    RELEASED: {"order": _TEXT},
    PLEDGED: {"lender": _TEXT, "loan": _TEXT},
    UNPLEDGED: {"lender": _TEXT, "loan": _TEXT},
    FROZEN: {"reason": _TEXT},
    UNFROZEN: {"reason": _TEXT},
    TRANSFERRED: {"from": _TEXT, "to": _TEXT, "quantity": _KG, "trade": _OPTIONAL_TEXT},
    SPLIT: {"trade": _OPTIONAL_TEXT},
    WITHDRAWAL_REQUESTED: {"withdrawal": _TEXT},
    WITHDRAWAL_CANCELLED: {"withdrawal": _TEXT},
    WITHDRAWN: {"quantity": _KG, "withdrawal": _TEXT},
}  # fmt: skip


def _field_problems(data: Mapping[str, Any], fields: Mapping[str, str]) -> list[str]:
    problems = []
    for name, shape in fields.items():
        value = data.get(name)
        if shape == _TEXT:
            if not isinstance(value, str) or not value:
                problems.append(f"{name} must be a non-empty string")
        elif shape == _KG:
            # KG_PATTERN admits only non-negative spellings with three decimals, so the one
            # quantity that is not positive is "0.000": no Decimal needed to tell.
            if not isinstance(value, str) or not KG_PATTERN.fullmatch(value) or value == _ZERO_KG:
                problems.append(f"{name} must be a positive kg quantity with 3 decimals")
        elif shape == _OPTIONAL_TEXT:
            if value is not None and (not isinstance(value, str) or not value):
                problems.append(f"{name} must be a non-empty string when present")
        elif shape == _HASH and (not isinstance(value, str) or not _HEX64.fullmatch(value)):
            problems.append(f"{name} must be a lowercase hex SHA-256")
    return problems


# Compared as dict key views (no set built per item).
_BOUND_ATTESTATION_KEYS = frozenset({"type", "hash"})
_CHILD_KEYS = frozenset({"receipt", "quantity", "holder"})
_CHILD_FIELDS = {"receipt": _TEXT, "quantity": _KG, "holder": _TEXT}


def event_data_problems(kind: str, data: Any) -> list[str]:
    """What is wrong with an event's `data` for its kind (empty list when fine)."""
    if not isinstance(data, dict):
        return ["data must be an object"]
    fields = _DATA_FIELDS.get(kind) if type(kind) is str else None
    if fields is None:
        return [f"unknown event kind {kind!r}"]
    problems = _field_problems(data, fields)
    if kind == ISSUED:
        metal = data.get("metal")
        if type(metal) is not str or metal not in ELEMENT_SET:
            problems.append("metal must be an element symbol")
        grade, spec_hash = data.get("grade"), data.get("grade_spec_hash")
        if grade is None:
            if spec_hash is not None:
                problems.append("a non-standard receipt (grade null) binds no grade spec")
        elif not isinstance(grade, str) or not grade or not isinstance(spec_hash, str) or not _HEX64.fullmatch(spec_hash):
            problems.append("grade must be a code with grade_spec_hash, or null for a non-standard receipt")
        bound = data.get("attestations")
        if not isinstance(bound, list):
            problems.append("attestations must be a list of {type, hash}")
        else:
            for i, item in enumerate(bound):
                if (
                    not isinstance(item, dict)
                    or item.keys() != _BOUND_ATTESTATION_KEYS
                    or item.get("type") not in ATTESTATION_TYPES
                    or not isinstance(item.get("hash"), str)
                    or not _HEX64.fullmatch(item["hash"])
                ):
                    problems.append(f"attestations[{i}] must be {{type, hash}} with a known type")
    elif kind == TRANSFERRED:
        if data.get("from") == data.get("to"):
            problems.append("a transfer needs a new holder")
    elif kind == SPLIT:
        children = data.get("children")
        if not isinstance(children, list) or len(children) < 2:
            problems.append("children must list at least two receipts")
        else:
            for i, child in enumerate(children):
                if not isinstance(child, dict) or child.keys() != _CHILD_KEYS:
                    problems.append(f"children[{i}] must be {{receipt, quantity, holder}}")
                    continue
                problems.extend(
                    f"children[{i}].{p}"
                    for p in _field_problems(child, _CHILD_FIELDS)
                )
            numbers = [c.get("receipt") for c in children if isinstance(c, dict)]
            if len(set(map(str, numbers))) != len(numbers):
                problems.append("children name the same receipt twice")
    return problems


# --- building and sealing -------------------------------------------------------------------


def new_event(
    *, receipt: str, seq: int, kind: str, at: str, data: dict[str, Any], prev_hash: str | None
) -> dict[str, Any]:
    """A validated event (data deep-copied, so later edits to the caller's dict cannot
    change what gets hashed). ProofError(invalid_event) lists every problem."""
    problems: list[str] = []
    if not isinstance(receipt, str) or not receipt or receipt != receipt.strip():
        problems.append("receipt must be a non-empty receipt number")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        problems.append("seq must be an integer >= 1")
    if kind not in KINDS:
        problems.append(f"kind must be one of {', '.join(KINDS)}")
    elif isinstance(seq, int) and (seq == 1) != (kind in OPENING_KINDS):
        problems.append("a chain opens with issued or split_from at seq 1, and only there")
    if parse_utc(at) is None:
        problems.append("at must be an ISO 8601 UTC stamp like 2026-01-05T09:30:00Z")
    if seq == 1:
        if prev_hash is not None:
            problems.append("the first event has prev_hash null")
    elif not isinstance(prev_hash, str) or not _HEX64.fullmatch(prev_hash):
        problems.append("prev_hash must be the previous event's hex SHA-256")
    if kind in KINDS:
        problems.extend(event_data_problems(kind, data))
    if problems:
        raise ProofError(INVALID_EVENT, "; ".join(problems), {"problems": problems, "kind": str(kind)})
    event = {"receipt": receipt, "seq": seq, "kind": kind, "at": at, "data": copy.deepcopy(data), "prev_hash": prev_hash}
    canonical_bytes(event)  # refuse floats and other unsignable values now, not at sealing
    return event


def event_hash(event: Mapping[str, Any]) -> str:
    """Lowercase hex SHA-256 of the event's canonical bytes."""
    return hashlib.sha256(canonical_bytes(event)).hexdigest()


def seal(event: dict[str, Any], private_key: Ed25519PrivateKey, kid: str) -> SealedEvent:
    """The stored and exported form of an event: the event, its hash, and the platform's
    signature over the same canonical bytes."""
    message = canonical_bytes(event)
    return {"event": event, "hash": hashlib.sha256(message).hexdigest(), "sig": sign_bytes(message, private_key, kid)}  # type: ignore[typeddict-item]


def attestation_hash(attestation: Mapping[str, Any]) -> str:
    """Hash binding one attestation into the `issued` event: over {type, document,
    signature}, so neither the document nor who signed it can be swapped later."""
    return content_hash(
        {"type": attestation["type"], "document": attestation["document"], "signature": attestation["signature"]}
    )


def issued_data(
    *,
    metal: str,
    grade: str | None,
    form: str,
    quantity: str,
    warehouse: str,
    holder: str,
    lot: Mapping[str, Any],
    grade_spec: Mapping[str, Any] | None,
    attestations: Iterable[Mapping[str, Any]],
    attesters: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The `data` of an `issued` event, binding the lot, the grade spec and every
    attestation by hash; `lot["ref"]` is the lot reference. `attesters` ({operator,
    producer, nominated: {kind: [member]}}) names who may sign the lot's attestations;
    receipts issued before nominations existed carry none."""
    data: dict[str, Any] = {
        "metal": metal,
        "grade": grade,
        "form": form,
        "quantity": quantity,
        "warehouse": warehouse,
        "lot": lot["ref"],
        "holder": holder,
        "lot_hash": content_hash(lot),
        "grade_spec_hash": None if grade_spec is None else content_hash(grade_spec),
        "attestations": [{"type": a["type"], "hash": attestation_hash(a)} for a in attestations],
    }
    if attesters is not None:
        data["attesters"] = attesters
    return data


# --- replay -------------------------------------------------------------------------------------


class ReceiptState(NamedTuple):
    """A receipt as its chain says it is after the last applied event. (A NamedTuple:
    replaying a chain makes one per event, and `_replace` is several times cheaper
    than `dataclasses.replace`.)"""

    number: str
    metal: str
    grade: str | None
    form: str
    warehouse: str
    lot: str
    holder: str
    quantity: Decimal
    status: str
    seq: int
    head: str
    at: str
    moment: datetime  # `at` parsed, kept so replay parses each stamp once
    before_freeze: str | None = None
    order: str | None = None
    withdrawal: str | None = None
    loan: tuple[str, str] | None = None
    children: tuple[tuple[str, Decimal, str], ...] = ()

    def header(self) -> dict[str, Any]:
        """The receipt header fields a bundle carries, as the chain implies them."""
        return {
            "number": self.number,
            "metal": self.metal,
            "grade": self.grade,
            "form": self.form,
            "quantity": format(self.quantity, "f"),
            "warehouse": self.warehouse,
            "lot": self.lot,
            "holder": self.holder,
            "status": self.status,
        }


# Field positions, for building the next state in `apply_event` without `_replace`.
_new_state = tuple.__new__
_FIELDS = ReceiptState._fields
_HOLDER = _FIELDS.index("holder")
_STATUS = _FIELDS.index("status")
_AFTER_MOMENT = _FIELDS.index("moment") + 1
_BEFORE_FREEZE = _FIELDS.index("before_freeze")
_ORDER = _FIELDS.index("order")
_WITHDRAWAL = _FIELDS.index("withdrawal")
_LOAN = _FIELDS.index("loan")
_CHILDREN = _FIELDS.index("children")
# status, seq, head, at, moment are consecutive fields: one slice assignment moves them.
assert _FIELDS[_STATUS:_AFTER_MOMENT] == ("status", "seq", "head", "at", "moment")


def _illegal(message: str, **details: Any) -> ProofError:
    return ProofError(ILLEGAL_TRANSITION, message, details)


def apply_event(
    state: ReceiptState | None,
    event: Mapping[str, Any],
    *,
    hash: str | None = None,
    parent: ReceiptState | None = None,
) -> ReceiptState:
    """The state after `event`. Checks the link to `state` (receipt, seq, prev_hash,
    time order), the data shape and the transition map; a `split_from` opening needs the
    `parent` state after its split. Services call this before appending an event
    (validate, then write); the bundle verifier replays whole chains with it."""
    kind, data, at = event.get("kind"), event.get("data"), event.get("at")
    if kind not in KINDS:
        raise ProofError(INVALID_EVENT, f"unknown event kind {kind!r}", {"kind": str(kind)})
    problems = event_data_problems(kind, data)
    if problems:
        raise ProofError(INVALID_EVENT, f"{kind}: " + "; ".join(problems), {"problems": problems})
    assert isinstance(data, dict)
    moment = parse_utc(at)
    if moment is None or not isinstance(at, str):
        raise ProofError(INVALID_EVENT, f"{kind}: at {at!r} is not an ISO 8601 UTC stamp", {})
    digest = hash if hash is not None else event_hash(event)
    seq = event.get("seq")
    number = event.get("receipt")

    if state is None:
        if seq != 1 or kind not in OPENING_KINDS or event.get("prev_hash") is not None:
            raise _illegal("a chain opens with issued or split_from at seq 1 with prev_hash null")
        if not isinstance(number, str) or not number:
            raise ProofError(INVALID_EVENT, "receipt must be a receipt number", {})
        if kind == ISSUED:
            return ReceiptState(
                number=number,
                metal=data["metal"],
                grade=data.get("grade"),
                form=data["form"],
                warehouse=data["warehouse"],
                lot=data["lot"],
                holder=data["holder"],
                quantity=Decimal(data["quantity"]),
                status=S_ACTIVE,
                seq=1,
                head=digest,
                at=at,
                moment=moment,
            )
        if parent is None:
            raise _illegal("split_from needs the parent receipt's state")
        if parent.status != S_SPLIT or data["parent"] != parent.number or data["parent_event_hash"] != parent.head:
            raise _illegal(
                f"split_from does not follow the split of {data['parent']}",
                parent=str(data["parent"]),
            )
        listed = [c for c in parent.children if c[0] == number]
        if len(listed) != 1:
            raise _illegal(f"{parent.number}'s split does not list {number}", parent=parent.number)
        if listed[0][1] != Decimal(data["quantity"]) or listed[0][2] != data["holder"]:
            raise ProofError(
                QUANTITY_NOT_CONSERVED,
                f"{number} opens with {data['quantity']} kg for {data['holder']}, but the split gave it "
                f"{format(listed[0][1], 'f')} kg for {listed[0][2]}",
                {"receipt": number},
            )
        if moment < parent.moment:
            raise _illegal("split_from is dated before the parent's split")
        return ReceiptState(
            number=number,
            metal=parent.metal,
            grade=parent.grade,
            form=parent.form,
            warehouse=parent.warehouse,
            lot=parent.lot,
            holder=data["holder"],
            quantity=Decimal(data["quantity"]),
            status=S_ACTIVE,
            seq=1,
            head=digest,
            at=at,
            moment=moment,
        )

    if number != state.number:
        raise _illegal(f"event belongs to {number!r}, not {state.number!r}")
    if seq != state.seq + 1:
        raise _illegal(f"expected seq {state.seq + 1}, got {seq!r}", expected=state.seq + 1)
    if event.get("prev_hash") != state.head:
        raise _illegal(f"seq {seq}: prev_hash does not match the previous event's hash")
    if moment < state.moment:
        raise _illegal(f"seq {seq}: dated before the previous event")
    allowed = TRANSITIONS.get(kind)
    if allowed is None:
        raise _illegal(f"seq {seq}: {kind} can only open a chain")
    if state.status not in allowed:
        raise _illegal(f"seq {seq}: cannot go {kind} from status {state.status}", status=state.status, kind=kind)

    # The next state is built as a list of the fields and made a ReceiptState in one
    # step: replay does this once per event, and `_replace` costs several times more.
    values = list(state)
    values[_STATUS:_AFTER_MOMENT] = (S_ACTIVE, seq, digest, at, moment)
    if kind == ENCUMBERED:
        values[_STATUS] = S_ENCUMBERED
        values[_ORDER] = data["order"]
    elif kind == RELEASED:
        if data["order"] != state.order:
            raise _illegal(f"seq {seq}: releases order {data['order']}, but {state.order} holds the receipt")
        values[_ORDER] = None
    elif kind == PLEDGED:
        values[_STATUS] = S_PLEDGED
        values[_LOAN] = (data["lender"], data["loan"])
    elif kind == UNPLEDGED:
        if (data["lender"], data["loan"]) != state.loan:
            raise _illegal(f"seq {seq}: unpledges a loan the receipt is not pledged to")
        values[_LOAN] = None
    elif kind == FROZEN:
        values[_STATUS] = S_FROZEN
        values[_BEFORE_FREEZE] = state.status
    elif kind == UNFROZEN:
        values[_STATUS] = state.before_freeze or S_ACTIVE
        values[_BEFORE_FREEZE] = None
    elif kind == TRANSFERRED:
        if data["from"] != state.holder:
            raise _illegal(f"seq {seq}: transfer from {data['from']}, but {state.holder} holds the receipt")
        if Decimal(data["quantity"]) != state.quantity:
            raise ProofError(
                QUANTITY_NOT_CONSERVED,
                f"seq {seq}: a transfer moves the whole {format(state.quantity, 'f')} kg; part of a receipt moves by split",
                {"seq": seq},
            )
        values[_HOLDER] = data["to"]
        values[_ORDER] = None
    elif kind == WITHDRAWAL_REQUESTED:
        values[_STATUS] = S_WITHDRAWAL_REQUESTED
        values[_WITHDRAWAL] = data["withdrawal"]
    elif kind == WITHDRAWAL_CANCELLED:
        if data["withdrawal"] != state.withdrawal:
            raise _illegal(f"seq {seq}: cancels withdrawal {data['withdrawal']}, but {state.withdrawal} is pending")
        values[_WITHDRAWAL] = None
    elif kind == WITHDRAWN:
        if state.withdrawal is not None and data["withdrawal"] != state.withdrawal:
            raise _illegal(f"seq {seq}: completes withdrawal {data['withdrawal']}, but {state.withdrawal} is pending")
        if Decimal(data["quantity"]) != state.quantity:
            raise ProofError(
                QUANTITY_NOT_CONSERVED,
                f"seq {seq}: withdrawal of {data['quantity']} kg from a {format(state.quantity, 'f')} kg receipt; split first",
                {"seq": seq},
            )
        values[_STATUS] = S_WITHDRAWN
    else:  # split
        children = tuple((c["receipt"], Decimal(c["quantity"]), c["holder"]) for c in data["children"])
        total = sum((c[1] for c in children), Decimal(0))
        if total != state.quantity:
            raise ProofError(
                QUANTITY_NOT_CONSERVED,
                f"seq {seq}: split children sum to {format(total, 'f')} kg, the receipt holds {format(state.quantity, 'f')} kg",
                {"seq": seq, "children_kg": format(total, "f"), "receipt_kg": format(state.quantity, "f")},
            )
        if any(c[0] == state.number for c in children):
            raise _illegal(f"seq {seq}: a receipt cannot be its own child")
        values[_STATUS] = S_SPLIT
        values[_ORDER] = None
        values[_CHILDREN] = children
    return _new_state(ReceiptState, values)


def replay(
    events: Iterable[Mapping[str, Any]],
    *,
    parent: ReceiptState | None = None,
    hashes: Iterable[str] | None = None,
) -> ReceiptState:
    """The receipt's state after all `events` (plain events, oldest first)."""
    state: ReceiptState | None = None
    hash_list = list(hashes) if hashes is not None else None
    for index, event in enumerate(events):
        digest = hash_list[index] if hash_list is not None else None
        state = apply_event(state, event, hash=digest, parent=parent)
    if state is None:
        raise ProofError(INVALID_EVENT, "an empty chain has no state", {})
    return state
