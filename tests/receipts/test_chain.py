"""The receipt event chain: event shape, hashing, sealing, and replay under the lifecycle's
transition map, with quantity conservation across splits."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from receipts.canonical import canonical_bytes, content_hash
from receipts.chain import (
    KINDS,
    TRANSITIONS,
    ReceiptState,
    apply_event,
    attestation_hash,
    event_hash,
    issued_data,
    new_event,
    replay,
    seal,
)
from receipts.errors import ProofError
from receipts.signing import key_id, verify_document
from receipts.units import format_kg

PLATFORM = Ed25519PrivateKey.generate()
KID = key_id(PLATFORM.public_key())
LOT = {"ref": "SH01/GA-1", "metal": "Ga", "form": "ingot", "net_mass_kg": "100.000", "warehouse": "SH01"}
ASSAY = {"type": "assay", "document": {"type": "assay", "lot": "SH01/GA-1"},
         "signature": {"alg": "EdDSA", "kid": "k", "sig": "s"}}


def issued(quantity: str = "100.000", holder: str = "M-A") -> dict[str, Any]:
    return issued_data(metal="Ga", grade="GA-6N", form="ingot", quantity=quantity, warehouse="SH01", holder=holder,
                       lot=LOT, grade_spec={"code": "GA-6N"}, attestations=[ASSAY])


class Builder:
    """Appends events to one receipt's chain the way a service would."""

    def __init__(self, receipt: str = "R-1", parent: ReceiptState | None = None, minute: int = 0) -> None:
        self.receipt = receipt
        self.parent = parent
        self.sealed: list[Any] = []
        self.state: ReceiptState | None = None
        self.minute = minute

    def add(self, kind: str, data: dict[str, Any]) -> ReceiptState:
        self.minute += 1
        event = new_event(receipt=self.receipt, seq=len(self.sealed) + 1, kind=kind,
                          at=f"2026-01-10T{self.minute // 60:02d}:{self.minute % 60:02d}:00Z", data=data,
                          prev_hash=self.sealed[-1]["hash"] if self.sealed else None)
        state = apply_event(self.state, event, parent=self.parent)  # validate, then write
        self.sealed.append(seal(event, PLATFORM, KID))
        self.state = state
        return state


# --- events -----------------------------------------------------------------------------------


def test_new_event_shape() -> None:
    data = issued()
    event = new_event(receipt="R-1", seq=1, kind="issued", at="2026-01-10T09:00:00Z", data=data, prev_hash=None)
    assert event == {"receipt": "R-1", "seq": 1, "kind": "issued", "at": "2026-01-10T09:00:00Z", "data": data,
                     "prev_hash": None}
    data["holder"] = "M-EVIL"
    assert event["data"]["holder"] == "M-A"  # copied: later edits to the caller's dict change nothing


@pytest.mark.parametrize(("changes", "complaint"), [
    ({"seq": 0}, "seq must be"),
    ({"seq": True}, "seq must be"),
    ({"kind": "stolen"}, "kind must be"),
    ({"kind": "encumbered"}, "opens with issued"),
    ({"at": "2026-01-10 09:00"}, "at must be"),
    ({"at": "2026-01-10T09:00:00+01:00"}, "at must be"),
    ({"prev_hash": "ab" * 32}, "prev_hash null"),
    ({"receipt": ""}, "receipt must be"),
    ({"data": {"metal": "Ga"}}, "quantity must be"),
])
def test_new_event_refuses_bad_events(changes: dict[str, Any], complaint: str) -> None:
    args: dict[str, Any] = {"receipt": "R-1", "seq": 1, "kind": "issued", "at": "2026-01-10T09:00:00Z",
                            "data": issued(), "prev_hash": None}
    args.update(changes)
    with pytest.raises(ProofError) as caught:
        new_event(**args)
    assert caught.value.code == "invalid_event"
    assert complaint in caught.value.message


def test_later_events_need_a_prev_hash_and_valid_data() -> None:
    for data, prev_hash, complaint in (
        ({"order": "O-1"}, None, "prev_hash must be"),
        ({"order": "O-1"}, "AB" * 32, "prev_hash must be"),
        ({}, "ab" * 32, "order must be"),
        ({"from": "M-A", "to": "M-A", "quantity": "1.000"}, "ab" * 32, None),
    ):
        kind = "transferred" if "from" in data else "encumbered"
        with pytest.raises(ProofError) as caught:
            new_event(receipt="R-1", seq=2, kind=kind, at="2026-01-10T09:00:00Z", data=data, prev_hash=prev_hash)
        if complaint:
            assert complaint in caught.value.message


def test_quantities_are_three_decimal_kg_strings() -> None:
    for quantity in ("100", "100.0", "100.0000", "-1.000", "0.000"):
        with pytest.raises(ProofError):
            new_event(receipt="R-1", seq=1, kind="issued", at="2026-01-10T09:00:00Z", data=issued(quantity),
                      prev_hash=None)


def test_floats_in_event_data_are_refused() -> None:
    with pytest.raises(ProofError) as caught:
        new_event(receipt="R-1", seq=2, kind="frozen", at="2026-01-10T09:00:00Z",
                  data={"reason": "x", "score": 0.5}, prev_hash="ab" * 32)
    assert caught.value.code == "float_in_signed_document"


def test_event_hash_covers_every_field_and_the_link() -> None:
    event = new_event(receipt="R-1", seq=2, kind="encumbered", at="2026-01-10T09:00:00Z",
                      data={"order": "O-1"}, prev_hash="ab" * 32)
    digest = event_hash(event)
    assert len(digest) == 64 and digest == content_hash(event)
    for name, value in (("prev_hash", "cd" * 32), ("seq", 3), ("at", "2026-01-10T09:00:01Z"), ("receipt", "R-2"),
                        ("data", {"order": "O-2"})):
        assert event_hash(dict(event, **{name: value})) != digest


def test_seal_signs_the_canonical_event_bytes() -> None:
    event = new_event(receipt="R-1", seq=1, kind="issued", at="2026-01-10T09:00:00Z", data=issued(), prev_hash=None)
    sealed = seal(event, PLATFORM, KID)
    assert sealed["hash"] == event_hash(event)
    assert sealed["sig"]["kid"] == KID and sealed["sig"]["alg"] == "EdDSA"
    assert verify_document(event, sealed["sig"], PLATFORM.public_key())
    assert not verify_document(dict(event, seq=2), sealed["sig"], PLATFORM.public_key())


def test_issued_data_binds_lot_spec_and_attestations() -> None:
    data = issued()
    assert data["lot"] == "SH01/GA-1" and data["lot_hash"] == content_hash(LOT)
    assert data["grade_spec_hash"] == content_hash({"code": "GA-6N"})
    assert data["attestations"] == [{"type": "assay", "hash": attestation_hash(ASSAY)}]
    assert attestation_hash(ASSAY) == content_hash(ASSAY)
    changed = dict(ASSAY, signature={"alg": "EdDSA", "kid": "other", "sig": "s"})
    assert attestation_hash(changed) != attestation_hash(ASSAY)


# --- lifecycle ---------------------------------------------------------------------------------


def test_full_lifecycle_replays() -> None:
    chain = Builder()
    chain.add("issued", issued())
    assert chain.add("encumbered", {"order": "O-1"}).status == "encumbered"
    assert chain.add("released", {"order": "O-1"}).status == "active"
    assert chain.add("pledged", {"lender": "M-BANK", "loan": "L-1"}).status == "pledged"
    assert chain.add("frozen", {"reason": "screening hit"}).status == "frozen"
    assert chain.add("unfrozen", {"reason": "cleared"}).status == "pledged"  # back to where it was
    assert chain.add("unpledged", {"lender": "M-BANK", "loan": "L-1"}).status == "active"
    state = chain.add("transferred", {"from": "M-A", "to": "M-B", "quantity": "100.000", "trade": "T-1"})
    assert (state.holder, state.status) == ("M-B", "active")
    assert chain.add("withdrawal_requested", {"withdrawal": "W-1"}).status == "withdrawal_requested"
    assert chain.add("withdrawal_cancelled", {"withdrawal": "W-1"}).status == "active"
    assert chain.add("withdrawal_requested", {"withdrawal": "W-2"}).status == "withdrawal_requested"
    state = chain.add("withdrawn", {"quantity": "100.000", "withdrawal": "W-2"})
    assert state.status == "withdrawn"
    replayed = replay([s["event"] for s in chain.sealed])
    assert replayed == state
    assert replayed.header() == {"number": "R-1", "metal": "Ga", "grade": "GA-6N", "form": "ingot",
                                 "quantity": "100.000", "warehouse": "SH01", "lot": "SH01/GA-1", "holder": "M-B",
                                 "status": "withdrawn"}
    assert replay([s["event"] for s in chain.sealed], hashes=[s["hash"] for s in chain.sealed]) == state


@pytest.mark.parametrize(("steps", "code"), [
    ([("frozen", {"reason": "x"}), ("encumbered", {"order": "O-1"})], "illegal_transition"),
    ([("frozen", {"reason": "x"}), ("transferred", {"from": "M-A", "to": "M-B", "quantity": "100.000"})],
     "illegal_transition"),
    ([("encumbered", {"order": "O-1"}), ("withdrawn", {"quantity": "100.000", "withdrawal": "W"})],
     "illegal_transition"),
    ([("encumbered", {"order": "O-1"}), ("released", {"order": "O-2"})], "illegal_transition"),
    ([("pledged", {"lender": "M-BANK", "loan": "L-1"}), ("unpledged", {"lender": "M-BANK", "loan": "L-2"})],
     "illegal_transition"),
    ([("pledged", {"lender": "M-BANK", "loan": "L-1"}),
      ("split", {"children": [{"receipt": "R-2", "quantity": "50.000", "holder": "M-A"},
                              {"receipt": "R-3", "quantity": "50.000", "holder": "M-B"}]})], "illegal_transition"),
    ([("unfrozen", {"reason": "x"})], "illegal_transition"),
    ([("transferred", {"from": "M-Z", "to": "M-B", "quantity": "100.000"})], "illegal_transition"),
    ([("transferred", {"from": "M-A", "to": "M-B", "quantity": "40.000"})], "quantity_not_conserved"),
    ([("withdrawn", {"quantity": "40.000", "withdrawal": "W"})], "quantity_not_conserved"),
    ([("withdrawal_requested", {"withdrawal": "W-1"}), ("withdrawn", {"quantity": "100.000", "withdrawal": "W-9"})],
     "illegal_transition"),
    ([("split", {"children": [{"receipt": "R-2", "quantity": "50.000", "holder": "M-A"},
                              {"receipt": "R-3", "quantity": "50.001", "holder": "M-B"}]})], "quantity_not_conserved"),
    ([("split", {"children": [{"receipt": "R-1", "quantity": "50.000", "holder": "M-A"},
                              {"receipt": "R-3", "quantity": "50.000", "holder": "M-B"}]})], "illegal_transition"),
    ([("withdrawn", {"quantity": "100.000", "withdrawal": "W"}), ("frozen", {"reason": "late"})],
     "illegal_transition"),
])
def test_illegal_moves_are_refused(steps: list[tuple[str, dict[str, Any]]], code: str) -> None:
    chain = Builder()
    chain.add("issued", issued())
    with pytest.raises(ProofError) as caught:
        for kind, data in steps:
            chain.add(kind, data)
    assert caught.value.code == code


def test_split_needs_two_distinct_children() -> None:
    for children in ([{"receipt": "R-2", "quantity": "100.000", "holder": "M-A"}],
                     [{"receipt": "R-2", "quantity": "50.000", "holder": "M-A"},
                      {"receipt": "R-2", "quantity": "50.000", "holder": "M-B"}],
                     [{"receipt": "R-2", "quantity": "50.000"}, {"receipt": "R-3", "quantity": "50.000"}]):
        with pytest.raises(ProofError) as caught:
            new_event(receipt="R-1", seq=2, kind="split", at="2026-01-10T09:00:00Z", data={"children": children},
                      prev_hash="ab" * 32)
        assert caught.value.code == "invalid_event"


def test_link_order_and_time_are_checked_on_replay() -> None:
    chain = Builder()
    chain.add("issued", issued())
    chain.add("encumbered", {"order": "O-1"})
    chain.add("released", {"order": "O-1"})
    events = [s["event"] for s in chain.sealed]
    for broken in ([events[0], events[2]], [events[1], events[0]], [events[0], events[1], events[1]],
                   [events[0], dict(events[1], prev_hash="00" * 32)],
                   [events[0], dict(events[1], receipt="R-9")],
                   [events[0], dict(events[1], at="2026-01-09T00:00:00Z")]):
        with pytest.raises(ProofError):
            replay(broken)
    with pytest.raises(ProofError):
        replay([])


def test_partial_sale_is_a_split_and_children_inherit_the_lot() -> None:
    parent = Builder("R-1")
    parent.add("issued", issued())
    parent.add("encumbered", {"order": "O-1"})
    split = parent.add("split", {"trade": "T-1", "children": [
        {"receipt": "R-2", "quantity": "60.000", "holder": "M-A"},
        {"receipt": "R-3", "quantity": "40.000", "holder": "M-B"},
    ]})
    assert split.status == "split"
    with pytest.raises(ProofError) as caught:  # a child cannot open before its parent split
        Builder("R-3", parent=split).add("split_from", {"parent": "R-1", "parent_event_hash": parent.sealed[-1]["hash"],
                                                        "quantity": "40.000", "holder": "M-B"})
    assert "before the parent's split" in caught.value.message
    child = Builder("R-3", parent=split, minute=parent.minute)
    state = child.add("split_from", {"parent": "R-1", "parent_event_hash": parent.sealed[-1]["hash"],
                                     "quantity": "40.000", "holder": "M-B"})
    assert (state.lot, state.grade, state.metal, state.quantity, state.holder) == (
        "SH01/GA-1", "GA-6N", "Ga", Decimal(40), "M-B")
    for data in ({"parent": "R-1", "parent_event_hash": "00" * 32, "quantity": "40.000", "holder": "M-B"},
                 {"parent": "R-9", "parent_event_hash": parent.sealed[-1]["hash"], "quantity": "40.000",
                  "holder": "M-B"},
                 {"parent": "R-1", "parent_event_hash": parent.sealed[-1]["hash"], "quantity": "41.000",
                  "holder": "M-B"}):
        with pytest.raises(ProofError):
            Builder("R-3", parent=split, minute=9).add("split_from", data)
    with pytest.raises(ProofError):  # not listed in the split
        Builder("R-4", parent=split, minute=9).add("split_from", {"parent": "R-1", "parent_event_hash": parent.sealed[-1]["hash"],
                                                        "quantity": "40.000", "holder": "M-B"})
    with pytest.raises(ProofError):  # split_from needs the parent's state
        Builder("R-3").add("split_from", {"parent": "R-1", "parent_event_hash": parent.sealed[-1]["hash"],
                                          "quantity": "40.000", "holder": "M-B"})


def test_transition_map_covers_every_later_kind() -> None:
    assert set(TRANSITIONS) == set(KINDS) - {"issued", "split_from"}


# --- properties ---------------------------------------------------------------------------------

COMMANDS = ["encumber", "release", "pledge", "unpledge", "freeze", "unfreeze", "transfer", "request", "cancel"]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(COMMANDS), max_size=25))
def test_random_legal_histories_replay_to_the_model(commands: list[str]) -> None:
    """Apply whichever commands are legal in a simple model; the chain must agree."""
    chain = Builder()
    chain.add("issued", issued())
    status, holder, before_freeze = "active", "M-A", "active"
    orders = 0
    for command in commands:
        if command == "encumber" and status == "active":
            orders += 1
            chain.add("encumbered", {"order": f"O-{orders}"})
            status = "encumbered"
        elif command == "release" and status == "encumbered":
            chain.add("released", {"order": f"O-{orders}"})
            status = "active"
        elif command == "pledge" and status == "active":
            chain.add("pledged", {"lender": "M-BANK", "loan": "L"})
            status = "pledged"
        elif command == "unpledge" and status == "pledged":
            chain.add("unpledged", {"lender": "M-BANK", "loan": "L"})
            status = "active"
        elif command == "freeze" and status in ("active", "encumbered", "pledged", "withdrawal_requested"):
            chain.add("frozen", {"reason": "review"})
            before_freeze, status = status, "frozen"
        elif command == "unfreeze" and status == "frozen":
            chain.add("unfrozen", {"reason": "cleared"})
            status = before_freeze
        elif command == "transfer" and status in ("active", "encumbered"):
            new_holder = "M-B" if holder == "M-A" else "M-A"
            chain.add("transferred", {"from": holder, "to": new_holder, "quantity": "100.000"})
            holder, status = new_holder, "active"
        elif command == "request" and status == "active":
            chain.add("withdrawal_requested", {"withdrawal": "W"})
            status = "withdrawal_requested"
        elif command == "cancel" and status == "withdrawal_requested":
            chain.add("withdrawal_cancelled", {"withdrawal": "W"})
            status = "active"
    state = replay([s["event"] for s in chain.sealed])
    assert (state.status, state.holder, state.quantity) == (status, holder, Decimal(100))
    for sealed in chain.sealed:
        assert sealed["hash"] == event_hash(sealed["event"])
        assert canonical_bytes(sealed["event"])


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=10**6), min_size=2, max_size=8), st.integers(-2, 2))
def test_splits_conserve_to_the_gram(grams: list[int], error: int) -> None:
    total = sum(grams)
    chain = Builder()
    chain.add("issued", issued(format_kg(Decimal(total).scaleb(-3))))
    children = [{"receipt": f"R-C{i}", "quantity": format_kg(Decimal(g).scaleb(-3)), "holder": "M-A"}
                for i, g in enumerate(grams)]
    if error:
        last = grams[-1] + error
        if last <= 0:
            return
        children[-1]["quantity"] = format_kg(Decimal(last).scaleb(-3))
        with pytest.raises(ProofError) as caught:
            chain.add("split", {"children": children})
        assert caught.value.code == "quantity_not_conserved"
    else:
        state = chain.add("split", {"children": children})
        assert sum(c[1] for c in state.children) == state.quantity
