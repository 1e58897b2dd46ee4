"""Canonical bytes of signed documents: RFC 8785 (JSON Canonicalization Scheme), byte for
byte what the `rfc8785` library produces, restricted to the JSON we sign.

Signed documents carry every number that matters (money, mass, purity, shares) as a
decimal string, so floats are refused outright (ProofError "float_in_signed_document"):
a float would be re-serialised through binary rounding and two honest parties could
disagree on the bytes. Decimals are refused too; format them as strings deliberately
("12.500" and "12.5" are different bytes). Integers must lie in the IEEE-754 safe range
(|n| <= 2**53 - 1), as RFC 8785 requires.

Speed: `rfc8785.dumps` is pure Python and, per document, costs a sizeable fraction of
the Ed25519 verification it feeds (bench/bundle_verify.py measures it). For the subset
we accept (objects with string keys, arrays, strings, safe integers, booleans, null),
RFC 8785 output equals orjson's with sorted keys (compact, raw UTF-8, JSON's short escapes
and the lowercase "\\u00XX" form for other control characters), with one exception: keys
sort by UTF-16 code units in RFC 8785 but by code points in orjson, which differ only for
characters above U+FFFF. So: a fast structural type check (orjson would write floats,
which we refuse), orjson, and any output holding such a character is redone by `rfc8785`
itself. tests/receipts/test_signing.py proves the equivalence against `rfc8785.dumps`
with hypothesis. A document nested deeper than the structural check looks (255 levels)
takes the slow path: the located walk and the stdlib encoder.
"""

from __future__ import annotations

import gc
import hashlib
import json
import re
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import orjson
import rfc8785

from receipts.errors import FLOAT_IN_SIGNED_DOCUMENT, NOT_CANONICALISABLE, ProofError

_INT_MAX = 2**53 - 1
_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True, allow_nan=False).encode


_PLAIN_TYPES = frozenset({dict, list, str, int, bool, type(None)})
_MAX_DEPTH = 255  # deeper than orjson's limit (254): such a document goes the slow way
_referents = gc.get_referents


def is_plain(obj: Any) -> bool:
    """Fast structural test: only exact dicts, lists, str, int, bool and None, anywhere in the tree.
    A caller that has checked a whole tree may encode any part of it with `plain_canonical_bytes`.
    Anything else (floats, Decimals, tuples, subclasses) sends the document to the slow,
    path-reporting walk, which either accepts it or says exactly where it fails.

    It goes level by level with C-speed steps instead of a Python call per node: the types of
    a whole level in one `set(map(type, ...))`, and the next level from `gc.get_referents`,
    which lists what the C traversal of a dict (its values, and its keys unless they are all
    str) or a list (its items) visits. Dict keys and the integer range are not looked at here:
    orjson refuses non-str keys and, with OPT_STRICT_INTEGER, integers outside +-(2**53 - 1).
    A tree deeper than _MAX_DEPTH (or one that refers to itself) is not plain."""
    level = [obj]
    for _ in range(_MAX_DEPTH):
        kinds = set(map(type, level))
        if not kinds <= _PLAIN_TYPES:
            return False
        if dict not in kinds and list not in kinds:
            return True
        level = _referents(*level)
    return False


# `gc.get_referents` reports what tp_traverse visits; CPython 3.11's dict and list visit every value and
# item (the project is pinned to 3.11). An interpreter that skipped atomic ones would let floats through
# unseen: refuse to start rather than sign what cannot be canonicalised.
if is_plain({"e": {"f": {"g": 1.5}}}) or not is_plain({"a": [{"b": "c", "d": [1, None, True]}]}):
    raise RuntimeError("gc.get_referents does not visit every dict value on this interpreter: "
                       "receipts.canonical's structural check must be rewritten for it")


def _walk(obj: Any, path: str) -> None:
    """The strict type check with locations, for documents the fast test declined."""
    if obj is None or isinstance(obj, (str, bool)):
        return
    if isinstance(obj, float):
        raise ProofError(
            FLOAT_IN_SIGNED_DOCUMENT,
            f"{path}: floats are not allowed in signed documents; send {obj!r} as a decimal string",
            {"path": path},
        )
    if isinstance(obj, int):
        if -_INT_MAX <= obj <= _INT_MAX:
            return
        raise ProofError(
            NOT_CANONICALISABLE,
            f"{path}: integer {obj} is outside the JSON safe range; send it as a decimal string",
            {"path": path},
        )
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, str):
                raise ProofError(NOT_CANONICALISABLE, f"{path}: object key {key!r} is not a string", {"path": path})
            _walk(value, f"{path}.{key}")
        return
    if isinstance(obj, (list, tuple)):
        for index, value in enumerate(obj):
            _walk(value, f"{path}[{index}]")
        return
    raise ProofError(
        NOT_CANONICALISABLE,
        f"{path}: {type(obj).__name__} cannot be signed; use strings, integers, booleans, null, lists, objects",
        {"path": path, "type": type(obj).__name__},
    )


# Documents that pass `is_plain` are encoded by orjson: for that subset (str keys, str, safe int,
# bool, None, dict, list) its sorted, compact output with raw UTF-8 and JSON's short escapes is
# byte for byte RFC 8785 (tests/receipts/test_signing.py checks it against rfc8785.dumps with
# hypothesis), and it costs about an eighth of the stdlib's C encoder with sorted keys. Anything
# else (tuples, subclasses) is accepted by `_walk` and goes through the stdlib encoder.
_ORJSON_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER
_orjson_dumps = orjson.dumps

# A 4-byte UTF-8 sequence is a character above U+FFFF: the only place Python's code-point key
# order and RFC 8785's UTF-16 order can disagree. The same characters in the stdlib encoder's text.
_ASTRAL_UTF8 = re.compile(b"[\xf0-\xf4]")
_ASTRAL = re.compile("[\U00010000-\U0010FFFF]")


def canonical_bytes(obj: Any) -> bytes:
    """RFC 8785 canonical UTF-8 bytes of `obj` (see the module docstring for what is
    refused and why)."""
    if is_plain(obj):
        try:
            return plain_canonical_bytes(obj)
        except ProofError:
            _located(obj)  # a non-str key or an unsafe integer: say where
            raise
    _located(obj)  # raises with the location, or accepts tuples and subclasses
    text = _ENCODE(obj)
    if not text.isascii() and _ASTRAL.search(text):
        return reference_canonical_bytes(obj)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ProofError(NOT_CANONICALISABLE, "a string holds a lone surrogate (not UTF-8 encodable)", {}) from exc


def _located(obj: Any) -> None:
    try:
        _walk(obj, "$")
    except RecursionError as exc:
        raise ProofError(NOT_CANONICALISABLE, "the document is nested too deeply (or refers to itself)", {}) from exc


def plain_canonical_bytes(obj: Any) -> bytes:
    """`canonical_bytes` of a part of a tree that passed `is_plain` (the bundle verifier checks
    a bundle once instead of once per signed part). Non-str keys, unsafe integers, lone
    surrogates and over-deep nesting are still refused here, by orjson."""
    try:
        data = _orjson_dumps(obj, option=_ORJSON_OPTIONS)
    except TypeError as exc:  # orjson.JSONEncodeError: key not str, integer out of range, surrogate, depth
        raise ProofError(NOT_CANONICALISABLE, f"not canonicalisable: {exc}", {}) from exc
    if not data.isascii() and _ASTRAL_UTF8.search(data):
        return reference_canonical_bytes(obj)
    return data


def reference_canonical_bytes(obj: Any) -> bytes:
    """The same bytes via the `rfc8785` library (same refusals); the yardstick the fast
    path is tested against."""
    _walk(obj, "$")
    try:
        return rfc8785.dumps(obj)
    except rfc8785.CanonicalizationError as exc:
        raise ProofError(NOT_CANONICALISABLE, str(exc), {}) from exc


def content_hash(obj: Any) -> str:
    """Lowercase hex SHA-256 of the canonical bytes: how a receipt event binds a lot,
    a grade spec or an attestation."""
    return hashlib.sha256(canonical_bytes(obj)).hexdigest()


# Every time in a signed document is UTC written 'YYYY-MM-DDTHH:MM:SS[.f{1,6}]Z': no
# offsets, so ordering and validity windows never depend on the signer's time zone.
_UTC_STAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?Z")


def parse_utc(text: Any) -> datetime | None:
    """A timezone-aware datetime from a canonical UTC stamp, else None."""
    if type(text) is not str:
        return None
    return _parse_stamp(text)


@lru_cache(maxsize=4096)
def _parse_stamp(text: str) -> datetime | None:
    # Memoised: a bundle repeats its stamps (key validity, event times read by several
    # checks), and str -> datetime is a pure function of immutable values.
    if not _UTC_STAMP.fullmatch(text):
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def utc_stamp(moment: datetime) -> str:
    """The canonical stamp of an aware datetime (microseconds kept only when non-zero)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("naive datetime: receipts record aware UTC times only")
    utc = moment.astimezone(UTC)
    text = utc.strftime("%Y-%m-%dT%H:%M:%S")
    if utc.microsecond:
        text += f".{utc.microsecond:06d}"
    return text + "Z"
