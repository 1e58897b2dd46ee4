"""Reads ESG rule-pack files (YAML) into `RulePack`s, refusing a bad file with `file:line: problem`.

Values are read from the composed YAML node tree, so every error can name the line it comes from.
"""

from __future__ import annotations

import csv
import io
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Final

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from compliance.esg import (
    RULE_KINDS,
    SEVERITIES,
    SMELTER_ID_RE,
    AssayMaxAge,
    CarbonIntensityMax,
    CbamPolicy,
    CompiledPack,
    FootprintDeclaredVerified,
    NoOpenStorageIncident,
    RecycledContentMin,
    Rule,
    RulePack,
    RuleParams,
    SmelterConformant,
    compile_pack,
)

RULEPACK_DIR: Final = Path(__file__).resolve().parent / "rulepacks"

_TAG: Final = "tag:yaml.org,2002:"
_TAG_NAMES: Final = {
    _TAG + "str": "a string",
    _TAG + "int": "an integer",
    _TAG + "float": "a number",
    _TAG + "bool": "a boolean",
    _TAG + "null": "null",
    _TAG + "timestamp": "a date",
}
_PACK_ID_RE: Final = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
_RULE_ID_RE: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_LABEL_RE: Final = re.compile(r"[A-Z][A-Z0-9]{0,7}")  # becomes an instrument suffix, e.g. GA-6N-CN-LC
_SEMVER_RE: Final = re.compile(r"\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.-]+)?")
_METAL_RE: Final = re.compile(r"[A-Z][a-z]?")
CARBON_UNIT: Final = "kgCO2e/kg"


class RulePackError(ValueError):
    """A rule pack (or a file it refers to) is malformed; str() is `file:line: problem`."""

    def __init__(self, source: str, line: int | None, problem: str) -> None:
        self.source = source
        self.line = line
        self.problem = problem
        super().__init__(f"{source}:{line}: {problem}" if line is not None else f"{source}: {problem}")


def _line(node: Node) -> int:
    return node.start_mark.line + 1


def _describe(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    return _TAG_NAMES.get(node.tag, node.tag)


@dataclass
class _Reader:
    """Typed reads from YAML nodes; every failure carries the node's line."""

    source: str

    def fail(self, node: Node, problem: str) -> RulePackError:
        return RulePackError(self.source, _line(node), problem)

    def mapping(
        self, node: Node, what: str, *, required: tuple[str, ...] = (), optional: tuple[str, ...] = ()
    ) -> dict[str, tuple[ScalarNode, Node]]:
        if not isinstance(node, MappingNode):
            raise self.fail(node, f"{what} must be a mapping, got {_describe(node)}")
        entries: dict[str, tuple[ScalarNode, Node]] = {}
        for key, value in node.value:
            if key.tag == _TAG + "merge":
                raise self.fail(key, f"merge keys (<<) are not supported in {what}")
            if not isinstance(key, ScalarNode) or key.tag != _TAG + "str":
                raise self.fail(key, f"keys of {what} must be strings, got {_describe(key)}")
            if key.value in entries:
                first = _line(entries[key.value][0])
                raise self.fail(key, f"duplicate key {key.value!r} in {what} (first at line {first})")
            entries[key.value] = (key, value)
        if required or optional:
            allowed = set(required) | set(optional)
            for name, (key, _) in entries.items():
                if name not in allowed:
                    raise self.fail(
                        key, f"unknown key {name!r} in {what}; allowed: {', '.join(sorted(allowed))}"
                    )
            missing = [name for name in required if name not in entries]
            if missing:
                raise self.fail(node, f"{what} is missing required key(s): {', '.join(missing)}")
        return entries

    def scalar_of(self, node: Node, tag: str, what: str) -> ScalarNode:
        if not isinstance(node, ScalarNode) or node.tag != _TAG + tag:
            raise self.fail(node, f"{what} must be {_TAG_NAMES[_TAG + tag]}, got {_describe(node)}")
        return node

    def string(self, node: Node, what: str, *, pattern: re.Pattern[str] | None = None) -> str:
        value = self.scalar_of(node, "str", what).value.strip()
        if not value:
            raise self.fail(node, f"{what} must not be empty")
        if pattern is not None and not pattern.fullmatch(value):
            raise self.fail(node, f"{what} {value!r} must match {pattern.pattern}")
        return value

    def optional_string(self, node: Node, what: str, *, pattern: re.Pattern[str] | None = None) -> str | None:
        if isinstance(node, ScalarNode) and node.tag == _TAG + "null":
            return None
        return self.string(node, what, pattern=pattern)

    def integer(self, node: Node, what: str, *, low: int, high: int) -> int:
        scalar = self.scalar_of(node, "int", what)
        value = int(SafeConstructor().construct_yaml_int(scalar))
        if not low <= value <= high:
            raise self.fail(node, f"{what} must be between {low} and {high}, got {value}")
        return value

    def decimal(self, node: Node, what: str, *, low: Decimal, high: Decimal | None = None) -> Decimal:
        if not isinstance(node, ScalarNode) or node.tag not in (_TAG + "int", _TAG + "float"):
            raise self.fail(node, f"{what} must be a number, got {_describe(node)}")
        # Read the text, not the float YAML would build: 0.1 stays exactly 0.1.
        try:
            value = Decimal(node.value.replace("_", ""))
        except InvalidOperation:
            raise self.fail(node, f"{what} must be a plain decimal number, got {node.value!r}") from None
        if not value.is_finite():
            raise self.fail(node, f"{what} must be finite, got {node.value!r}")
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f">= {low}"
            raise self.fail(node, f"{what} must be {bound}, got {node.value}")
        return value

    def string_list(self, node: Node, what: str, *, pattern: re.Pattern[str] | None = None) -> list[str]:
        if not isinstance(node, SequenceNode):
            raise self.fail(node, f"{what} must be a list, got {_describe(node)}")
        values: list[str] = []
        seen: dict[str, Node] = {}
        for item in node.value:
            value = self.string(item, f"entry of {what}", pattern=pattern)
            if value in seen:
                raise self.fail(item, f"duplicate entry {value!r} in {what} (first at line {_line(seen[value])})")
            seen[value] = item
            values.append(value)
        return values


# --------------------------------------------------------------------------- parameters per kind

# (reader, params by name, "rule 'x'", directory of the pack file, the rule's node for error lines)
_Params = dict[str, tuple[ScalarNode, Node]]
_ParamsReader = Callable[[_Reader, _Params, str, "Path | None", Node], RuleParams]

_PARAM_KEYS: Final[dict[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    # kind: (required params, optional params)
    "assay_max_age": (("months",), ()),
    "footprint_declared_verified": ((), ("recognised_standards",)),
    "recycled_content_min": (("min_percent",), ()),
    "carbon_intensity_max": (("thresholds",), ("default", "unit")),
    "smelter_conformant": ((), ("conformant", "conformant_list")),
    "no_open_storage_incident": ((), ()),
}


def _assay_max_age(r: _Reader, p: _Params, what: str, base: Path | None, at: Node) -> RuleParams:
    return AssayMaxAge(months=r.integer(p["months"][1], f"{what} months", low=1, high=120))


def _footprint(r: _Reader, p: _Params, what: str, base: Path | None, at: Node) -> RuleParams:
    standards: list[str] = []
    if "recognised_standards" in p:
        standards = r.string_list(p["recognised_standards"][1], f"{what} recognised_standards")
    return FootprintDeclaredVerified(recognised_standards=tuple(standards))


def _recycled(r: _Reader, p: _Params, what: str, base: Path | None, at: Node) -> RuleParams:
    node = p["min_percent"][1]
    return RecycledContentMin(
        min_percent=r.decimal(node, f"{what} min_percent", low=Decimal(0), high=Decimal(100))
    )


def _carbon(r: _Reader, p: _Params, what: str, base: Path | None, at: Node) -> RuleParams:
    if "unit" in p:
        unit = r.string(p["unit"][1], f"{what} unit")
        if unit != CARBON_UNIT:
            raise r.fail(p["unit"][1], f"{what} unit must be {CARBON_UNIT!r}, got {unit!r}")
    thresholds: list[tuple[str, Decimal]] = []
    for metal, (key, value) in r.mapping(p["thresholds"][1], f"{what} thresholds").items():
        if not _METAL_RE.fullmatch(metal):
            raise r.fail(key, f"{what} thresholds: {metal!r} is not an element symbol like 'Ga'")
        thresholds.append((metal, r.decimal(value, f"{what} threshold for {metal}", low=Decimal(0))))
    default = None
    if "default" in p:
        node = p["default"][1]
        if not (isinstance(node, ScalarNode) and node.tag == _TAG + "null"):
            default = r.decimal(node, f"{what} default", low=Decimal(0))
    if not thresholds and default is None:
        raise r.fail(p["thresholds"][1], f"{what} needs at least one threshold or a default")
    return CarbonIntensityMax(thresholds=tuple(thresholds), default=default)


def _smelter(r: _Reader, p: _Params, what: str, base: Path | None, at: Node) -> RuleParams:
    ids: set[str] = set()
    if "conformant" in p:
        ids.update(r.string_list(p["conformant"][1], f"{what} conformant", pattern=SMELTER_ID_RE))
    list_file = None
    if "conformant_list" in p:
        node = p["conformant_list"][1]
        list_file = r.string(node, f"{what} conformant_list")
        if base is None:
            raise r.fail(node, f"{what} conformant_list needs the pack to be read from a file")
        ids.update(load_conformant_smelters(base / list_file))
    if "conformant" not in p and list_file is None:
        raise r.fail(at, f"{what} is missing params: conformant or conformant_list")
    return SmelterConformant(conformant=frozenset(ids), list_file=list_file)


def _no_incident(r: _Reader, p: _Params, what: str, base: Path | None, at: Node) -> RuleParams:
    return NoOpenStorageIncident()


_PARAM_READERS: Final[dict[str, _ParamsReader]] = {
    "assay_max_age": _assay_max_age,
    "footprint_declared_verified": _footprint,
    "recycled_content_min": _recycled,
    "carbon_intensity_max": _carbon,
    "smelter_conformant": _smelter,
    "no_open_storage_incident": _no_incident,
}
assert set(_PARAM_READERS) == set(RULE_KINDS) == set(_PARAM_KEYS)


# --------------------------------------------------------------------------- packs


def _read_rule(r: _Reader, node: Node, index: int, base: Path | None) -> tuple[Rule, Node]:
    fields = r.mapping(
        node,
        f"rule #{index}",
        required=("id", "kind", "description", "severity"),
        optional=("params",),
    )
    id_node = fields["id"][1]
    rule_id = r.string(id_node, f"rule #{index} id", pattern=_RULE_ID_RE)
    what = f"rule {rule_id!r}"
    kind_node = fields["kind"][1]
    kind = r.string(kind_node, f"{what} kind")
    if kind not in RULE_KINDS:
        raise r.fail(kind_node, f"{what}: unknown rule kind {kind!r}; known: {', '.join(sorted(RULE_KINDS))}")
    severity_node = fields["severity"][1]
    severity = r.string(severity_node, f"{what} severity")
    if severity not in SEVERITIES:
        raise r.fail(severity_node, f"{what} severity must be one of {', '.join(SEVERITIES)}, got {severity!r}")
    description = r.string(fields["description"][1], f"{what} description")

    required, optional = _PARAM_KEYS[kind]
    if "params" in fields:
        params_node = fields["params"][1]
        if isinstance(params_node, ScalarNode) and params_node.tag == _TAG + "null":
            params_node = MappingNode(_TAG + "map", [], params_node.start_mark, params_node.end_mark)
        params = r.mapping(params_node, f"{what} params", required=required, optional=optional)
        if not required and not optional and params:
            first_key = next(iter(params.values()))[0]
            raise r.fail(first_key, f"{what}: kind {kind} takes no params")
    elif required:
        raise r.fail(node, f"{what} ({kind}) is missing params: {', '.join(required)}")
    else:
        params = {}
    rule = Rule(
        id=rule_id,
        kind=kind,
        description=description,
        severity=severity,
        params=_PARAM_READERS[kind](r, params, what, base, node),
    )
    return rule, id_node


def _read_cbam(r: _Reader, node: Node) -> CbamPolicy:
    fields = r.mapping(
        node,
        "cbam",
        required=("eur_per_tonne_low", "eur_per_tonne_high"),
        optional=("recognised_standards", "description"),
    )
    low = r.decimal(fields["eur_per_tonne_low"][1], "cbam eur_per_tonne_low", low=Decimal(0))
    high_node = fields["eur_per_tonne_high"][1]
    high = r.decimal(high_node, "cbam eur_per_tonne_high", low=Decimal(0))
    if high < low:
        raise r.fail(high_node, f"cbam eur_per_tonne_high ({high}) is below eur_per_tonne_low ({low})")
    standards: list[str] = []
    if "recognised_standards" in fields:
        standards = r.string_list(fields["recognised_standards"][1], "cbam recognised_standards")
    description = ""
    if "description" in fields:
        description = r.string(fields["description"][1], "cbam description")
    return CbamPolicy(
        eur_per_tonne_low=low,
        eur_per_tonne_high=high,
        recognised_standards=tuple(standards),
        description=description,
    )


def _read_version(r: _Reader, node: Node) -> int | str:
    if isinstance(node, ScalarNode) and node.tag == _TAG + "int":
        return r.integer(node, "version", low=1, high=10**9)
    if isinstance(node, ScalarNode) and node.tag == _TAG + "str":
        return r.string(node, "version", pattern=_SEMVER_RE)
    raise r.fail(node, f"version must be an integer or a semver string such as \"1.2.0\", got {_describe(node)}")


def _compose(text: str, source: str) -> Node:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = " ".join(p for p in (exc.context, exc.problem) if p)
        raise RulePackError(source, mark.line + 1 if mark else None, f"YAML syntax error: {problem}") from None
    except yaml.YAMLError as exc:
        raise RulePackError(source, None, f"YAML error: {exc}") from None
    if root is None:
        raise RulePackError(source, None, "file is empty")
    return root


def parse_rulepack(text: str, *, source: str = "<string>", base_dir: Path | None = None) -> RulePack:
    """Parse and validate pack text; `base_dir` resolves a smelter list file named in the pack."""
    r = _Reader(source)
    root = _compose(text, source)
    fields = r.mapping(
        root,
        "rule pack",
        required=("id", "version", "title", "market", "label", "rules"),
        optional=("description", "cbam"),
    )
    pack_id = r.string(fields["id"][1], "pack id", pattern=_PACK_ID_RE)
    version = _read_version(r, fields["version"][1])
    title = r.string(fields["title"][1], "title")
    market = r.string(fields["market"][1], "market")
    label = r.optional_string(fields["label"][1], "label", pattern=_LABEL_RE)
    description = r.string(fields["description"][1], "description") if "description" in fields else ""
    cbam = _read_cbam(r, fields["cbam"][1]) if "cbam" in fields else None

    rules_node = fields["rules"][1]
    if not isinstance(rules_node, SequenceNode):
        raise r.fail(rules_node, f"rules must be a list, got {_describe(rules_node)}")
    if not rules_node.value:
        raise r.fail(rules_node, "rules must not be empty")
    rules: list[Rule] = []
    first_seen: dict[str, Node] = {}
    for index, rule_node in enumerate(rules_node.value, start=1):
        rule, id_node = _read_rule(r, rule_node, index, base_dir)
        if rule.id in first_seen:
            raise r.fail(
                id_node, f"duplicate rule id {rule.id!r} (first at line {_line(first_seen[rule.id])})"
            )
        first_seen[rule.id] = id_node
        rules.append(rule)

    return RulePack(
        id=pack_id,
        version=version,
        title=title,
        market=market,
        label=label,
        rules=tuple(rules),
        description=description,
        cbam=cbam,
        source=source,
    )


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise RulePackError(str(path), None, f"cannot read file: {exc.strerror or exc}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise RulePackError(str(path), line, "file is not valid UTF-8") from None


def load_rulepack(path: str | Path) -> RulePack:
    """Load one pack file. Its `id` must equal the file name without `.yaml`."""
    path = Path(path)
    pack = parse_rulepack(_read_text(path), source=str(path), base_dir=path.parent)
    if pack.id != path.stem:
        id_line = _id_line(_read_text(path))
        raise RulePackError(str(path), id_line, f"pack id {pack.id!r} does not match the file name {path.name!r}")
    return pack


def _id_line(text: str) -> int | None:
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if isinstance(root, MappingNode):
        for key, value in root.value:
            if key.value == "id":
                return _line(value)
    return None


def load_rulepacks(directory: str | Path = RULEPACK_DIR) -> dict[str, RulePack]:
    """Every `*.yaml` pack in a directory, by pack id."""
    packs: dict[str, RulePack] = {}
    for path in sorted(Path(directory).glob("*.yaml")):
        pack = load_rulepack(path)
        packs[pack.id] = pack  # ids equal file names, so they cannot collide
    return packs


# --------------------------------------------------------------------------- conformant smelters


def _csv_lines(text: str) -> Iterator[tuple[int, str]]:
    """Physical lines with their numbers, leading `#` comment lines and blank lines skipped."""
    header_seen = False
    for number, line in enumerate(io.StringIO(text, newline=""), start=1):
        if not line.strip():
            continue
        if not header_seen and line.lstrip().startswith("#"):
            continue
        header_seen = True
        yield number, line


def load_conformant_smelters(path: str | Path) -> frozenset[str]:
    """Smelter ids from a CSV with a `smelter_id` column (other columns are for people)."""
    path = Path(path)
    source = str(path)
    text = _read_text(path)
    lines = _csv_lines(text)
    current = [0]

    def numbered() -> Iterator[str]:
        for number, line in lines:
            current[0] = number
            yield line

    reader = csv.reader(numbered())
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        raise RulePackError(source, None, "file has no header row") from None
    except csv.Error as exc:
        raise RulePackError(source, current[0], f"CSV error: {exc}") from None
    if "smelter_id" not in header:
        raise RulePackError(source, current[0], f"missing required column: smelter_id (found: {', '.join(header)})")
    column = header.index("smelter_id")
    ids: dict[str, int] = {}
    try:
        for row in reader:
            if len(row) != len(header):
                raise RulePackError(source, current[0], f"row has {len(row)} fields, header has {len(header)}")
            smelter_id = row[column].strip()
            if not SMELTER_ID_RE.fullmatch(smelter_id):
                raise RulePackError(source, current[0], f"{smelter_id!r} is not an RMI smelter id (CID + 6 digits)")
            if smelter_id in ids:
                raise RulePackError(
                    source, current[0], f"duplicate smelter id {smelter_id} (first at line {ids[smelter_id]})"
                )
            ids[smelter_id] = current[0]
    except csv.Error as exc:
        raise RulePackError(source, current[0], f"CSV error: {exc}") from None
    if not ids:
        raise RulePackError(source, None, "no smelter ids in file")
    return frozenset(ids)


# --------------------------------------------------------------------------- packs as stored


def pack_from_canonical(canonical: dict[str, Any], *, source: str = "<canonical>") -> RulePack:
    """Rebuild a pack from `esg.pack_canonical` (as stored on a loaded version): the database, not the
    repo's files, says what a stored version means, so a worker evaluates exactly the version it names.

    The result has the same content hash as the pack that was stored (a smelter list file is resolved
    into ids in the canonical form, so only its name, kept for messages, is lost)."""
    try:
        rules = []
        for rule in canonical["rules"]:
            kind, params = rule["kind"], rule.get("params") or {}
            built: RuleParams
            if kind == "assay_max_age":
                built = AssayMaxAge(months=int(params["months"]))
            elif kind == "footprint_declared_verified":
                built = FootprintDeclaredVerified(recognised_standards=tuple(params.get("recognised_standards", ())))
            elif kind == "recycled_content_min":
                built = RecycledContentMin(min_percent=Decimal(params["min_percent"]))
            elif kind == "carbon_intensity_max":
                default = params.get("default")
                built = CarbonIntensityMax(
                    thresholds=tuple((m, Decimal(v)) for m, v in sorted(params["thresholds"].items())),
                    default=None if default is None else Decimal(default))
            elif kind == "smelter_conformant":
                built = SmelterConformant(conformant=frozenset(params["conformant"]))
            elif kind == "no_open_storage_incident":
                built = NoOpenStorageIncident()
            else:
                raise RulePackError(source, None, f"unknown rule kind {kind!r}")
            rules.append(Rule(id=rule["id"], kind=kind, description=rule["description"], severity=rule["severity"],
                              params=built))
        cbam = canonical.get("cbam")
        return RulePack(
            id=canonical["id"], version=canonical["version"], title=canonical["title"], market=canonical["market"],
            label=canonical.get("label"), rules=tuple(rules), description=canonical.get("description", ""),
            cbam=None if cbam is None else CbamPolicy(
                eur_per_tonne_low=Decimal(cbam["eur_per_tonne_low"]),
                eur_per_tonne_high=Decimal(cbam["eur_per_tonne_high"]),
                recognised_standards=tuple(cbam.get("recognised_standards", ())),
                description=cbam.get("description", "")),
            source=source)
    except (KeyError, TypeError, ValueError, InvalidOperation) as exc:
        if isinstance(exc, RulePackError):
            raise
        raise RulePackError(source, None, f"malformed canonical pack: {type(exc).__name__}: {exc}") from None


_compiled_cache: dict[tuple[Any, str], CompiledPack] = {}
_compiled_lock = threading.Lock()


def compiled_from_canonical(key: Any, content_hash: str, canonical: dict[str, Any]) -> CompiledPack:
    """The compiled pack of a stored version, built once per process (key: e.g. the row's pk).

    Refuses a stored version whose canonical form no longer hashes to its recorded hash: a result must
    always name the exact rules it was judged by."""
    cached = _compiled_cache.get((key, content_hash))
    if cached is not None:
        return cached
    pack = pack_from_canonical(canonical, source=f"stored pack {key}")
    if pack.content_hash != content_hash:
        raise RulePackError(f"stored pack {key}", None,
                            f"canonical form hashes to {pack.content_hash}, the version says {content_hash}")
    compiled = compile_pack(pack)
    with _compiled_lock:
        if len(_compiled_cache) > 256:  # versions are few; bound the cache anyway
            _compiled_cache.clear()
        _compiled_cache[(key, content_hash)] = compiled
    return compiled
