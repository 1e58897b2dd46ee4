"""Sanctions / denied-party screening of names against a loadable list, fuzzy-matched (pure).

Hits are for an officer to review; this module never decides that a member is the listed party.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final

from rapidfuzz import fuzz, process

# Legal-form words carry no identity: "Acme Ltd" and "ACME Limited" are the same party. Tuples
# are matched as whole tokens after punctuation is gone, so "S.A." arrives here as ("sa",) and
# "S. A." as ("s", "a").
_LEGAL_FORMS: Final[frozenset[tuple[str, ...]]] = frozenset(
    tuple(form.split())
    for form in (
        # English-speaking
        "ltd", "limited", "llc", "llp", "lp", "plc", "inc", "incorporated", "corp", "corporation",
        "co", "company", "co ltd", "pte", "pty", "pvt", "private",
        # German, Dutch, Nordic, Baltic, Central and Eastern Europe
        "gmbh", "ag", "kg", "ug", "ohg", "ev", "bv", "nv", "vof", "ab", "publ", "oy", "oyj", "as", "a s",
        "asa", "aps", "k s", "i s", "ou", "uab", "sia", "kft", "zrt", "nyrt", "sro", "doo", "dd", "ad",
        "ead", "sp z o o", "spzoo", "sa", "s a", "se",
        # Romance languages
        "sarl", "sas", "sasu", "srl", "spa", "s p a", "sl", "sau", "ltda", "sca", "snc", "scs",
        # Russian and CIS, Latin transliteration and Cyrillic
        "ooo", "zao", "oao", "pao", "ao", "jsc", "pjsc", "ojsc", "cjsc", "too",
        "ооо", "зао", "оао", "пао", "ао", "тоо",
        # Asia
        "kk", "k k", "gk", "yk", "bhd", "sdn bhd", "tbk", "pt",
        # Gulf free zones
        "fze", "fzco", "fzc", "fz llc", "wll",
    )
)
_CONNECTORS: Final = frozenset({"and", "und", "et"})
_MAX_FORM_TOKENS: Final = max(len(f) for f in _LEGAL_FORMS)
# Forms written before the name ("OOO Romashka", "PT Timah"): stripped from the front as well.
_LEADING_FORMS: Final[frozenset[tuple[str, ...]]] = frozenset(
    (f,) for f in ("ooo", "zao", "oao", "pao", "ao", "jsc", "pjsc", "ojsc", "cjsc", "too", "pt",
                   "ооо", "зао", "оао", "пао", "ао", "тоо")
)
# CJK names have no spaces: their legal forms are cut off the string, longest first.
_CJK_FORMS: Final = (
    "股份有限公司", "有限责任公司", "有限責任公司", "有限公司", "株式会社", "有限会社", "合同会社", "公司",
)
# Letters that NFKD does not decompose into a base letter plus a mark.
_FOLD: Final = str.maketrans({
    "ø": "o", "Ø": "o", "æ": "ae", "Æ": "ae", "œ": "oe", "Œ": "oe", "ð": "d", "Ð": "d", "þ": "th",
    "Þ": "th", "ł": "l", "Ł": "l", "đ": "d", "Đ": "d", "ı": "i", "ß": "ss", "&": " and ",
})
_JOINERS: Final = re.compile(r"[.'’`´]")  # "S.A." -> "sa", "O'Neil" -> "oneil"
_SEPARATORS: Final = re.compile(r"[^\w]+|_")  # what remains of punctuation and symbols

REQUIRED_COLUMNS: Final = ("name", "aliases", "country", "source")
_COUNTRY_RE: Final = re.compile(r"[A-Z]{2}")

COUNTRY_BONUS: Final = 5.0
# Containment ("Baltic Rare Metals Trading" holds the listed "Rare Metals Trading") is scored
# by token_set_ratio, discounted as rapidfuzz's WRatio discounts it, so a full containment is 95.
TOKEN_SET_WEIGHT: Final = 0.95
# A token shared with more than this share of the list ("metals", "trading") cannot make two
# names related: such tokens do not select containment candidates.
COMMON_TOKEN_SHARE: Final = 0.02


def _strip_forms(tokens: list[str]) -> list[str]:
    """Drop legal forms from the end (and a few from the front), never the last remaining token."""
    changed = True
    while changed:
        changed = False
        for size in range(min(_MAX_FORM_TOKENS, len(tokens) - 1), 0, -1):
            if tuple(tokens[-size:]) in _LEGAL_FORMS:
                del tokens[-size:]
                # "GmbH & Co. KG", "Smith & Co": the "and" belonged to the legal form.
                if len(tokens) > 1 and tokens[-1] in _CONNECTORS:
                    del tokens[-1]
                changed = True
                break
    while len(tokens) > 1 and (tokens[0],) in _LEADING_FORMS:
        del tokens[0]
    return tokens


def normalise_name(name: str) -> str:
    """Casefold, strip accents, drop punctuation and legal forms, collapse whitespace.

    "Baltic Rare Metals Trading OÜ" -> "baltic rare metals trading"; "Ŝanghaj Co., Ltd." -> "sanghaj".
    No transliteration: a Cyrillic or Chinese name matches only a listed alias in the same script.
    """
    text = unicodedata.normalize("NFKC", name).strip()
    cjk_cut = True
    while cjk_cut:
        cjk_cut = False
        for form in _CJK_FORMS:
            if len(text) > len(form) and text.endswith(form):
                text = text[: -len(form)].rstrip()
                cjk_cut = True
                break
            if len(text) > len(form) and text.startswith(form):
                text = text[len(form):].lstrip()
                cjk_cut = True
                break
    # casefold first: it can itself produce combining marks ("İ" -> "i̇"), which the next step drops.
    # The letters folded by hand go last: an accented one ("Ǽ" -> "ǽ") is only "æ" once its accent is dropped.
    text = text.casefold()
    text = "".join(ch for ch in unicodedata.normalize("NFKD", text) if not unicodedata.combining(ch))
    text = text.translate(_FOLD)
    text = _JOINERS.sub("", text)
    tokens = _SEPARATORS.sub(" ", text).split()
    return " ".join(_strip_forms(tokens))


def _sort_key(normalised: str) -> str:
    # ratio() on token-sorted strings is token_sort_ratio, with the sort paid once per list entry.
    return " ".join(sorted(normalised.split()))


class ScreeningListError(ValueError):
    """A screening list file is malformed; nothing of it was loaded."""

    def __init__(self, source: str, problem: str, *, line: int | None = None, row: int | None = None) -> None:
        self.source = source
        self.problem = problem
        self.line = line
        self.row = row
        where = f"line {line} (row {row}): " if line is not None else ""
        super().__init__(f"{source}: {where}{problem}")


@dataclass(frozen=True, slots=True)
class ListEntry:
    name: str
    aliases: tuple[str, ...]
    country: str | None  # ISO 3166-1 alpha-2, None when the list does not say
    source: str  # the list it comes from: "OFAC SDN", "EU FSF", "DEMO" ...
    row: int  # data row number in the file (1 = first row after the header)


@dataclass(frozen=True, slots=True)
class Hit:
    entry: ListEntry
    matched_alias: str  # the entry's name or alias, as listed, that matched
    query: str  # the screened name or alias, as given, that matched
    score: float  # 0-100 after the country bonus
    method: str  # "exact" | "token_sort" | "token_set"
    country_match: bool


@dataclass(frozen=True, eq=False)
class ScreeningList:
    """A loaded list with its match keys precomputed; build with `load_list_csv` or `from_entries`."""

    entries: tuple[ListEntry, ...]
    source: str
    content_hash: str  # sha256 of the file's bytes: a changed list means members need rescreening
    _keys: list[str] = field(repr=False)  # token-sorted normalised names and aliases
    _normalised: list[str] = field(repr=False)
    _owners: list[int] = field(repr=False)  # _keys[i] belongs to entries[_owners[i]]
    _labels: list[str] = field(repr=False)  # _keys[i] as written in the list
    _token_index: dict[str, list[int]] = field(repr=False)  # distinctive token -> key positions

    @classmethod
    def from_entries(
        cls, entries: Iterable[ListEntry], *, source: str = "<entries>", content_hash: str = ""
    ) -> ScreeningList:
        entries = tuple(entries)
        keys: list[str] = []
        normalised: list[str] = []
        owners: list[int] = []
        labels: list[str] = []
        for position, entry in enumerate(entries):
            seen: set[str] = set()
            for label in (entry.name, *entry.aliases):
                norm = normalise_name(label)
                if norm and norm not in seen:
                    seen.add(norm)
                    keys.append(_sort_key(norm))
                    normalised.append(norm)
                    owners.append(position)
                    labels.append(label)
        postings: dict[str, list[int]] = {}
        for i, norm in enumerate(normalised):
            for token in set(norm.split()):
                postings.setdefault(token, []).append(i)
        limit = max(5, int(len(keys) * COMMON_TOKEN_SHARE))
        token_index = {t: p for t, p in postings.items() if len(p) <= limit}
        return cls(entries, source, content_hash, keys, normalised, owners, labels, token_index)

    def __len__(self) -> int:
        return len(self.entries)

    def screen(
        self,
        name: str,
        aliases: Sequence[str] = (),
        country: str | None = None,
        threshold: float = 88,
    ) -> list[Hit]:
        """Entries resembling `name` or any alias, best first, one hit per entry.

        Score = max(token_sort_ratio, 0.95 x token_set_ratio for names sharing a distinctive
        token) on normalised names, plus 5 when the member's country equals the entry's (capped
        at 100). A different country subtracts nothing: listed parties trade through fronts abroad.
        """
        if not 0 <= threshold <= 100:
            raise ValueError("threshold must be between 0 and 100")
        country = country.strip().upper() if country else None
        queries: dict[str, str] = {}
        for label in (name, *aliases):
            norm = normalise_name(label)
            if norm and norm not in queries:
                queries[norm] = label
        if not queries:
            raise ValueError(f"name {name!r} has nothing left to screen after normalisation")

        # A same-country candidate may reach the threshold with the bonus: search that far down.
        cutoff = max(0.0, threshold - COUNTRY_BONUS) if country else threshold
        best: dict[int, Hit] = {}
        for norm, label in queries.items():
            for key_pos, score, method in self._candidates(norm, cutoff):
                entry_pos = self._owners[key_pos]
                entry = self.entries[entry_pos]
                country_match = country is not None and entry.country == country
                final = min(100.0, score + COUNTRY_BONUS) if country_match else score
                if final < threshold:
                    continue
                known = best.get(entry_pos)
                if known is None or final > known.score:
                    best[entry_pos] = Hit(
                        entry=entry,
                        matched_alias=self._labels[key_pos],
                        query=label,
                        score=round(final, 1),
                        method=method,
                        country_match=country_match,
                    )
        return sorted(best.values(), key=lambda h: (-h.score, h.entry.row))

    def _candidates(self, norm: str, cutoff: float) -> Iterator[tuple[int, float, str]]:
        scores: dict[int, tuple[float, str]] = {}
        for _, score, key_pos in process.extract(
            _sort_key(norm), self._keys, scorer=fuzz.ratio, score_cutoff=cutoff, limit=None
        ):
            scores[key_pos] = (100.0, "exact") if self._normalised[key_pos] == norm else (score, "token_sort")
        # token_set_ratio on the whole list is ~10x slower; containment needs a shared
        # distinctive token, so only those keys are scored.
        related: set[int] = set()
        for token in set(norm.split()):
            related.update(self._token_index.get(token, ()))
        for key_pos in related:
            score = TOKEN_SET_WEIGHT * fuzz.token_set_ratio(norm, self._normalised[key_pos])
            if score >= cutoff and score > scores.get(key_pos, (-1.0, ""))[0]:
                scores[key_pos] = (score, "token_set")
        for key_pos, (score, method) in scores.items():
            yield key_pos, score, method


def _numbered_lines(text: str) -> Iterator[tuple[int, str]]:
    """Physical lines with numbers; `#` comment lines before the header and blank lines skipped."""
    header_seen = False
    for number, line in enumerate(io.StringIO(text, newline=""), start=1):
        if not line.strip():
            continue
        if not header_seen and line.lstrip().startswith("#"):
            continue
        header_seen = True
        yield number, line


class _RowProblem(Exception):
    """What is wrong with one row; the caller adds the file, line and row number."""


def _entry_from_row(row: list[str], width: int, at: dict[str, int], row_number: int) -> ListEntry:
    if len(row) != width:
        raise _RowProblem(f"row has {len(row)} fields, header has {width}")
    name = row[at["name"]].strip()
    if not name:
        raise _RowProblem("name is empty")
    if not normalise_name(name):
        raise _RowProblem(f"name {name!r} has no letters or digits")
    aliases = tuple(a.strip() for a in row[at["aliases"]].split(";") if a.strip())
    country = row[at["country"]].strip().upper() or None
    if country is not None and not _COUNTRY_RE.fullmatch(country):
        raise _RowProblem(f"country {row[at['country']]!r} is not an ISO 3166 alpha-2 code")
    list_source = row[at["source"]].strip()
    if not list_source:
        raise _RowProblem("source is empty")
    return ListEntry(name=name, aliases=aliases, country=country, source=list_source, row=row_number)


def load_list_csv(path_or_file: str | Path | IO[str] | IO[bytes]) -> ScreeningList:
    """Load a list CSV with columns name, aliases (';'-separated), country, source.

    All or nothing: any problem raises `ScreeningListError` naming the file, and for a bad row its
    line and row number; extra columns are ignored.
    """
    if isinstance(path_or_file, str | Path):
        source = str(path_or_file)
        try:
            raw: bytes | str = Path(path_or_file).read_bytes()
        except OSError as exc:
            raise ScreeningListError(source, f"cannot read file: {exc.strerror or exc}") from None
    else:
        source = str(getattr(path_or_file, "name", "<stream>"))
        raw = path_or_file.read()
    data = raw if isinstance(raw, bytes) else raw.encode("utf-8")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ScreeningListError(source, "file is not valid UTF-8", line=line) from None

    current = [0]

    def physical() -> Iterator[str]:
        for number, line in _numbered_lines(text):
            current[0] = number
            yield line

    reader = csv.reader(physical())
    try:
        header = [column.strip().lower() for column in next(reader)]
    except StopIteration:
        raise ScreeningListError(source, "file is empty: no header row") from None
    except csv.Error as exc:
        raise ScreeningListError(source, f"CSV error: {exc}", line=current[0]) from None
    missing = [column for column in REQUIRED_COLUMNS if column not in header]
    if missing:
        raise ScreeningListError(
            source, f"missing required column(s): {', '.join(missing)} (found: {', '.join(header) or 'none'})"
        )
    duplicated = sorted({c for c in header if c and header.count(c) > 1})
    if duplicated:
        raise ScreeningListError(source, f"duplicate column(s): {', '.join(duplicated)}")
    at = {column: header.index(column) for column in REQUIRED_COLUMNS}

    entries: list[ListEntry] = []
    row_number = 0
    try:
        for row in reader:
            row_number += 1
            try:
                entries.append(_entry_from_row(row, len(header), at, row_number))
            except _RowProblem as problem:
                raise ScreeningListError(source, str(problem), line=current[0], row=row_number) from None
    except csv.Error as exc:
        raise ScreeningListError(source, f"CSV error: {exc}", line=current[0], row=row_number + 1) from None
    if not entries:
        raise ScreeningListError(source, "no entries: refusing an empty list, it would clear everyone")
    return ScreeningList.from_entries(entries, source=source, content_hash=hashlib.sha256(data).hexdigest())
