"""Untrusted text -> documents: JSON or multi-document YAML, parsed safely.

`load_documents` is for bodies and files from users. It yields only what JSON can hold (dicts with
string keys, lists, strings, numbers, booleans, null), as sigs.k8s.io/yaml does for kubectl:

- no YAML tag constructs an object, and YAML timestamps stay strings (as in Kubernetes);
- anchors and aliases are refused at the first one, so an alias bomb costs nothing;
- nesting is bounded (MAX_DEPTH) for JSON and YAML alike, so a RecursionError never escapes;
- a mapping with a duplicate key is an error, as the API server's strict decoding says (which of the
  two values would win is a guess no reader should have to make);
- integers must fit in 64 bits and numbers in a double, as the API server reads them: a longer
  integer is an error naming its position, never silently a float or Python's digit-limit text;
- every failure is a DocumentError with the parser's 1-based line and column when it has them.

`load_trusted_documents` is for admin-owned files (the file source's 10,000 AgentRuntimes): the same
JSON-compatible values and the same refusals, but parsed by libyaml end to end when it is available,
anchors allowed.

`open_lists` is the one place where `kind: List` (what `kubectl get -o yaml` prints) stands for its
items; `dump_json` the one place where a value that orjson refuses (a lone surrogate) is still written.
"""

from __future__ import annotations

import json
import re
import math
from typing import Any, Callable, Iterable, Iterator

import orjson
import yaml
from yaml.composer import Composer
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.events import AliasEvent, CollectionStartEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner

try:  # libyaml: the C parser, ten times faster than the pure-Python one
    from yaml._yaml import CParser
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    CParser = None

# Real objects nest 10-15 levels; 100 leaves room and keeps hostile input cheap.
MAX_DEPTH = 100

JSON_MEDIA_TYPES = frozenset({"application/json"})
YAML_MEDIA_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"})

_STR_TAG = "tag:yaml.org,2002:str"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MAP_TAG = "tag:yaml.org,2002:map"
_INT_TAG = "tag:yaml.org,2002:int"
_JSON_CONSTANT_RE = re.compile(r"-?Infinity|NaN")
# The API server decodes JSON integers into int64 (k8s.io/apimachinery/pkg/util/json).
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# An integer of fewer digits always fits in int64: cheaper to look for than to check every number.
_LONG_DIGITS_RE = re.compile(r"\d{19,}")
# Strings (with a ":" after them when they are keys), brackets and numbers, in JSON text that parsed:
# strings are matched whole, so a bracket, digit or quote inside one is never mistaken for syntax.
_JSON_SCAN_RE = re.compile(r'"(?:[^"\\]|\\.)*"(\s*:)?|[\[\]{}]|-?\d+(\.\d+)?([eE][-+]?\d+)?', re.DOTALL)
_STRING_OR_KEY_RE = re.compile(r'"(?:[^"\\]|\\.)*"(\s*:)?', re.DOTALL)


class DocumentError(ValueError):
    """Text that is not a JSON/YAML document we accept; line and column are 1-based (None when the
    problem has no position)."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column

    def __str__(self) -> str:
        if self.line is None:
            return self.message
        return f"line {self.line}, column {self.column}: {self.message}"

    def as_dict(self) -> dict[str, Any]:
        return {"message": self.message, "line": self.line, "column": self.column}


def media_type(content_type: str | None) -> str:
    """"application/json; charset=utf-8" -> "application/json"; "" when absent."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def load_documents(data: bytes | str, content_type: str | None = None) -> list[Any]:
    """Parse untrusted JSON or YAML into its documents; raises DocumentError.

    A JSON or YAML Content-Type (`application/json`, `*+json`, `application/yaml`,
    `application/x-yaml`, `text/yaml`) decides the parser. Any other or none (curl's `-d` sends
    `application/x-www-form-urlencoded`) means: JSON when the text starts with `{` or `[`, else YAML.
    (Broken JSON would often still be YAML, with nulls where values are missing; the JSON parser's
    complaint is the useful answer. Flow-style YAML needs a YAML Content-Type.)
    YAML gives one entry per non-empty document; JSON gives exactly one."""
    text = _decode(data)
    kind = media_type(content_type)
    if kind in JSON_MEDIA_TYPES or kind.endswith("+json"):
        return [_load_json(text)]
    if kind in YAML_MEDIA_TYPES:
        return _load_yaml(text)
    if text.lstrip()[:1] in ("{", "["):
        return [_load_json(text)]
    return _load_yaml(text)


def load_trusted_documents(text: str) -> list[Any]:
    """Parse an admin-owned YAML/JSON file fast (libyaml); still JSON-compatible values only, still
    no object construction. Raises DocumentError. Empty documents are left out."""
    if text.lstrip()[:1] in ("{", "["):
        # A JSON file (10,000 AgentRuntimes is 10 MB) parses 50 times faster as JSON than through
        # libyaml; when it is not valid JSON after all, YAML (a superset) gets its turn below.
        try:
            return [_load_json(text)]
        except DocumentError:
            pass
    loader = _TrustedLoader(text)
    try:
        return _documents(loader)
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, text) from None
    except RecursionError:
        raise DocumentError("nesting too deep") from None
    finally:
        loader.dispose()


# -- JSON ------------------------------------------------------------------------------------------


def load_json(text: str) -> Any:
    """One JSON value from untrusted text (an annotation that holds JSON, a body); raises
    DocumentError with the line and column of the problem."""
    return _load_json(_decode(text))


def _load_json(text: str) -> Any:
    try:
        # orjson is strict (no NaN, no lone surrogates, nesting under 1024) and four times faster;
        # whatever it refuses goes to the standard parser, which says where and why.
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        value = _load_json_slowly(text)
    # Fewer brackets than the limit cannot nest deeper than it: the common case costs two counts.
    if text.count("[") + text.count("{") > MAX_DEPTH and _depth_exceeds(value, MAX_DEPTH):
        raise _too_deep(text)
    if _LONG_DIGITS_RE.search(text):
        # orjson reads an integer beyond int64 as a float (or a uint64): refuse it where it stands.
        _check_numbers(text)
    if type(value) is dict or type(value) is list:
        _check_unique_keys(text, value)
    return value


def _load_json_slowly(text: str) -> Any:
    try:
        value = _JSON_DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise DocumentError(exc.msg, exc.lineno, exc.colno) from None
    except RecursionError:
        raise _too_deep(text) from None
    except _JsonConstantError:
        raise DocumentError("NaN and Infinity are not JSON", *_position(text, _JSON_CONSTANT_RE)) from None
    except _NumberOutOfRange:
        _check_numbers(text)
        raise DocumentError("number out of range") from None  # not reached: the scan finds it
    return value


class _JsonConstantError(ValueError):
    pass


class _NumberOutOfRange(ValueError):
    pass


def _reject_json_constant(name: str) -> Any:
    raise _JsonConstantError(name)


def _int_in_range(token: str) -> int:
    # Checked before int(): a 5,000-digit token would otherwise meet Python's digit limit.
    if len(token.lstrip("-")) > 19 or not INT64_MIN <= int(token) <= INT64_MAX:
        raise _NumberOutOfRange(token)
    return int(token)


def _finite_float(token: str) -> float:
    value = float(token)
    if not math.isfinite(value):
        raise _NumberOutOfRange(token)
    return value


# Made once: json.loads with any option builds a new decoder per call, which doubles its cost.
_JSON_DECODER = json.JSONDecoder(
    parse_constant=_reject_json_constant, parse_int=_int_in_range, parse_float=_finite_float
)


def integer_problem(token: str) -> str | None:
    """Why an integer literal cannot be read as the API server reads it (None when it can)."""
    digits = token.lstrip("-+")
    if len(digits) <= 18 or (len(digits) <= 19 and INT64_MIN <= int(token) <= INT64_MAX):
        return None
    return out_of_range_message(token)


def out_of_range_message(token: str) -> str:
    shown = token if len(token) <= 40 else f"{token[:20]}...({len(token)} characters)"
    return f"integer {shown} is outside the 64-bit range of the API server ({INT64_MIN} to {INT64_MAX})"


def _check_numbers(text: str) -> None:
    """Raise a DocumentError at the first number of (parsed) JSON text that the API server cannot
    hold: an integer beyond int64, a number beyond a double."""
    for match in _JSON_SCAN_RE.finditer(text):
        token = match.group()
        if token[0] in '"[]{}':
            continue
        if match.group(2) is None and match.group(3) is None:
            problem = integer_problem(token)
        else:
            problem = None if math.isfinite(float(token)) else f"number {token[:40]} is outside the range of a double"
        if problem is not None:
            raise DocumentError(problem, *_line_column(text, match.start()))


def _check_unique_keys(text: str, value: Any) -> None:
    """A duplicate key leaves fewer members in the parsed objects than keys in the text; only then is
    the text scanned again to say which key and where."""
    keys = _STRING_OR_KEY_RE.findall(text)
    if len(keys) - keys.count("") == _count_members(value):
        return
    stack: list[set[str] | None] = []
    for match in _JSON_SCAN_RE.finditer(text):
        token = match.group()
        if token in ("{", "["):
            stack.append(set() if token == "{" else None)
        elif token in ("}", "]"):
            if stack:
                stack.pop()
        elif match.group(1) and stack and stack[-1] is not None:
            key = json.loads(token[: match.start(1) - match.start()])  # "a" and "\u0061" are one key
            if key in stack[-1]:
                raise DocumentError(duplicate_key_message(key), *_line_column(text, match.start()))
            stack[-1].add(key)


def duplicate_key_message(key: str) -> str:
    return f"duplicate key {json.dumps(key)[:200]}: the API server's strict decoding refuses it"


def _count_members(value: Any) -> int:
    """Keys of every object in `value`, level by level as in _depth_exceeds."""
    count = 0
    level = [value]
    while level:
        count += sum(len(node) for node in level if type(node) is dict)
        level = [
            child
            for node in level
            for child in (node.values() if type(node) is dict else node)
            if type(child) is dict or type(child) is list
        ]
    return count


def _depth_exceeds(value: Any, limit: int) -> bool:
    """True when containers nest deeper than `limit`. Level by level, one comprehension per level:
    about 15 µs for a 20-skill AdmissionReview, and linear in the number of containers."""
    level = [value] if type(value) is dict or type(value) is list else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        level = [
            child
            for node in level
            for child in (node.values() if type(node) is dict else node)
            if type(child) is dict or type(child) is list
        ]
    return False


_JSON_TOKEN_RE = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


def _too_deep(text: str) -> DocumentError:
    """The error for JSON nested beyond MAX_DEPTH, placed where the limit is crossed."""
    depth = 0
    for token in _JSON_TOKEN_RE.finditer(text):
        char = token.group()[0]
        if char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return DocumentError(f"nesting deeper than {MAX_DEPTH} levels", *_line_column(text, token.start()))
        elif char in "]}":
            depth -= 1
    return DocumentError(f"nesting deeper than {MAX_DEPTH} levels")


# -- YAML ------------------------------------------------------------------------------------------


class _JsonCompatibleResolver(Resolver):
    """YAML 1.1 scalars as Kubernetes reads them: timestamps stay strings (a creationTimestamp is a
    string in every API object), and "=" and "<<" are plain strings rather than special tags."""

    yaml_implicit_resolvers = {
        first: [
            (tag, pattern)
            for tag, pattern in resolvers
            if tag not in ("tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:value", "tag:yaml.org,2002:merge")
        ]
        for first, resolvers in Resolver.yaml_implicit_resolvers.items()
    }


class _JsonCompatibleConstructor(SafeConstructor):
    """Only null, booleans, numbers, strings, sequences and mappings with string keys. Any other
    tag (!!binary, !!set, !!timestamp, !!python/..., custom !tags) is an error, never an object.

    Documents are built by one recursive walk instead of PyYAML's generator machinery: twice as
    fast, which lets the file source load 10,000 AgentRuntimes in well under a second. It recurses
    as deep as the document nests: bounded by the guarded composer for untrusted text."""

    # Scalars only: sequences and mappings are built by _build. A collection with another tag, or a
    # scalar with a collection's tag, finds no constructor here and is refused by construct_undefined.
    yaml_constructors = {
        tag: SafeConstructor.yaml_constructors[tag]
        for tag in (
            "tag:yaml.org,2002:null",
            "tag:yaml.org,2002:bool",
            "tag:yaml.org,2002:int",
            "tag:yaml.org,2002:float",
            "tag:yaml.org,2002:str",
            None,
        )
    }

    def construct_document(self, node: Node) -> Any:
        built: dict[int, Any] = {}  # an aliased collection is built once and shared, as PyYAML does
        try:
            return self._build(node, built)
        finally:
            self.constructed_objects.clear()

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        if node.tag == _INT_TAG and isinstance(node, ScalarNode):
            # Checked on the text, before int(): a 5,000-digit integer must not meet Python's limit.
            digits = node.value.replace("_", "").lstrip("+")
            problem = integer_problem(digits) if digits.lstrip("-").isdigit() else None
            if problem is not None:
                raise ConstructorError(None, None, problem, node.start_mark)
        try:
            value = super().construct_object(node, deep)
        except ValueError as exc:  # int() of a hexadecimal or sexagesimal beyond the digit limit
            raise ConstructorError(None, None, f"number {node.value[:40]!r} cannot be read: {exc}", node.start_mark) from None
        if type(value) is int and not INT64_MIN <= value <= INT64_MAX:
            raise ConstructorError(None, None, out_of_range_message(node.value), node.start_mark)
        if type(value) is float and not math.isfinite(value):
            raise ConstructorError(None, None, f"{node.value[:40]} is not a number JSON can hold", node.start_mark)
        return value

    def _build(self, node: Node, built: dict[int, Any]) -> Any:
        if isinstance(node, ScalarNode):
            return node.value if node.tag == _STR_TAG else self.construct_object(node)
        done = built.get(id(node))
        if done is not None:
            return done
        if isinstance(node, SequenceNode) and node.tag == _SEQ_TAG:
            items: list[Any] = []
            built[id(node)] = items
            items.extend(self._build(child, built) for child in node.value)
            return items
        if isinstance(node, MappingNode) and node.tag == _MAP_TAG:
            mapping: dict[str, Any] = {}
            built[id(node)] = mapping
            for key_node, value_node in node.value:
                key = self._build(key_node, built)
                if not isinstance(key, str):
                    # JSON keys are strings; sigs.k8s.io/yaml turns `1:`, `true:` and `null:` into
                    # "1", "true", "null". Converted before insertion: as Python keys 1 and True collide.
                    key = _key_text(key, key_node)
                if key in mapping:
                    raise ConstructorError(None, None, duplicate_key_message(key), key_node.start_mark)
                mapping[key] = self._build(value_node, built)
            return mapping
        return self.construct_object(node)  # an explicit tag on a collection: refused there


def _key_text(key: Any, node: Node) -> str:
    if key is None or isinstance(key, (bool, int, float)):
        return json.dumps(key)
    raise ConstructorError(None, None, f"mapping keys must be scalars, not {type(key).__name__}", node.start_mark)


class _GuardedComposer(Composer):
    """Refuses anchors and aliases, and collections nested deeper than MAX_DEPTH."""

    _depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        event = self.peek_event()
        if isinstance(event, AliasEvent):
            raise _event_error("YAML aliases are not allowed", event)
        if event.anchor is not None:
            raise _event_error("YAML anchors are not allowed", event)
        if not isinstance(event, CollectionStartEvent):
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _event_error(f"nesting deeper than {MAX_DEPTH} levels", event)
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _event_error(message: str, event: Any) -> DocumentError:
    mark = event.start_mark
    return DocumentError(message, mark.line + 1, mark.column + 1)


if CParser is not None:

    class _UntrustedLoader(_GuardedComposer, CParser, _JsonCompatibleConstructor, _JsonCompatibleResolver):
        """libyaml scans and parses (fast, no recursion); our Python composer builds the nodes, so
        that it can refuse aliases and depth as it goes."""

        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            Composer.__init__(self)
            _JsonCompatibleConstructor.__init__(self)
            _JsonCompatibleResolver.__init__(self)

    class _TrustedLoader(_JsonCompatibleConstructor, CParser, _JsonCompatibleResolver):
        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            _JsonCompatibleConstructor.__init__(self)
            _JsonCompatibleResolver.__init__(self)

else:  # pragma: no cover - PyYAML built without libyaml

    class _UntrustedLoader(  # type: ignore[no-redef]
        Reader, Scanner, Parser, _GuardedComposer, _JsonCompatibleConstructor, _JsonCompatibleResolver
    ):
        def __init__(self, stream: str) -> None:
            Reader.__init__(self, stream)
            Scanner.__init__(self)
            Parser.__init__(self)
            Composer.__init__(self)
            _JsonCompatibleConstructor.__init__(self)
            _JsonCompatibleResolver.__init__(self)

    # Without libyaml there is no fast path to keep: the guarded loader reads admin files too (so
    # they may not use anchors there either).
    _TrustedLoader = _UntrustedLoader  # type: ignore[misc]


def _load_yaml(text: str) -> list[Any]:
    loader = _UntrustedLoader(text)
    try:
        return _documents(loader)
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, text) from None
    except RecursionError:  # cannot happen below MAX_DEPTH; kept so that it can never escape
        raise DocumentError(f"nesting deeper than {MAX_DEPTH} levels") from None
    finally:
        loader.dispose()


def _documents(loader: Any) -> list[Any]:
    documents = []
    while loader.check_data():
        document = loader.get_data()
        if document is not None:  # "---" with nothing after it, a trailing "---"
            documents.append(document)
    return documents


def _yaml_error(exc: yaml.YAMLError, text: str) -> DocumentError:
    if isinstance(exc, yaml.MarkedYAMLError):
        message = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.problem:
            message = f"{exc.problem} ({exc.context})"
        mark = exc.problem_mark or exc.context_mark
        if mark is not None:
            return DocumentError(message, mark.line + 1, mark.column + 1)
        return DocumentError(message)
    if isinstance(exc, yaml.reader.ReaderError):
        return DocumentError(exc.reason, *_line_column(text, exc.position))
    return DocumentError(str(exc))


# -- positions and bytes ---------------------------------------------------------------------------


def _decode(data: bytes | str) -> str:
    if isinstance(data, str):
        return data[1:] if data.startswith("\ufeff") else data
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise DocumentError("not valid UTF-8", line, column) from None
    return text[1:] if text.startswith("\ufeff") else text


def _line_column(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


def _position(text: str, pattern: re.Pattern[str]) -> tuple[int | None, int | None]:
    match = pattern.search(text)
    return _line_column(text, match.start()) if match else (None, None)


# -- lists and writing -----------------------------------------------------------------------------


def is_list(document: Any) -> bool:
    """`kind: List` (kubectl get -o yaml) or a typed list (`AgentRuntimeList`) with its items."""
    if not isinstance(document, dict) or not isinstance(document.get("items"), list):
        return False
    kind = document.get("kind")
    return isinstance(kind, str) and kind.endswith("List")


def open_lists(documents: Iterable[tuple[str, Any]]) -> Iterator[tuple[str, Any]]:
    """(label, document) pairs with each list document replaced by its items, labelled
    `<label>.items[<i>]`. Items are not opened again: a list inside a list is not a manifest."""
    for label, document in documents:
        if is_list(document):
            for i, item in enumerate(document["items"]):
                yield (f"{label}.items[{i}]" if label else f"items[{i}]"), item
        else:
            yield label, document


def dump_json(value: Any, default: Callable[[Any], Any] | None = None) -> bytes:
    """Compact JSON bytes: orjson, or the standard encoder for what orjson refuses (a lone surrogate
    that the YAML or standard JSON parser let through is escaped as \\udXXX)."""
    try:
        return orjson.dumps(value, default=default)
    except TypeError:
        return json.dumps(value, default=default, separators=(",", ":")).encode()
