"""Text from people -> documents: JSON or multi-document YAML, read strictly by the standard parsers.

Dry runs on /validate, `skill-webhook validate` and `mutate`, and the files the file source reads all
come through `load_documents`, so one text gives the same documents, or the same error, everywhere.
It yields only what JSON can hold (dicts with string keys, lists, strings, numbers, booleans, null),
as sigs.k8s.io/yaml does for kubectl, and refuses what the API server's strict decoding would not
take or what no reader should have to guess about:

- a mapping with a duplicate key (which of the two values wins is a guess);
- an integer beyond 64 bits, a number beyond a double, NaN and Infinity;
- YAML anchors and aliases (so an alias bomb costs nothing), and every YAML tag but null, bool,
  int, float, str, seq and map: no tag constructs an object, and timestamps stay strings;
- nesting deeper than MAX_DEPTH, and lone surrogates (`"\\ud800"`), which are not text.

Every failure is a DocumentError. YAML problems and JSON syntax errors carry the parser's 1-based
line and column; a JSON value that the standard parser reads but the hooks refuse is named by its
place in the document instead (`(at spec.skills[1])`), since the hooks are not told where they are.

Text from the API server (AdmissionReviews, informer objects) does not come here: orjson reads it
as it is. `open_lists` is the one place where `kind: List` (what `kubectl get -o yaml` prints)
stands for its items.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Iterable, Iterator

import yaml
from yaml.composer import Composer
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.events import AliasEvent, CollectionStartEvent
from yaml.nodes import MappingNode, Node, ScalarNode
from yaml.resolver import Resolver

# Real objects nest 10-15 levels; 100 leaves room and keeps hostile input cheap.
MAX_DEPTH = 100
# The API server decodes JSON integers into int64 (k8s.io/apimachinery/pkg/util/json).
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

JSON_MEDIA_TYPES = frozenset({"application/json"})
YAML_MEDIA_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"})
_FILE_MEDIA_TYPES = {".json": "application/json", ".yaml": "application/yaml", ".yml": "application/yaml"}

_SURROGATE_RE = re.compile("[\ud800-\udfff]")
_SURROGATE_MESSAGE = "a lone surrogate (\\ud800-\\udfff) is not text"
_PLAIN_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


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


def file_media_type(name: str) -> str | None:
    """What a file name's suffix says its text is ("x.yml" -> "application/yaml"); None when it says
    nothing, and the text then decides, as for a body without a Content-Type."""
    return _FILE_MEDIA_TYPES.get(name[name.rfind(".") :].lower()) if "." in name else None


def load_documents(data: bytes | str, content_type: str | None = None) -> list[Any]:
    """Parse JSON or YAML from a person into its documents; raises DocumentError.

    A JSON or YAML Content-Type (`application/json`, `*+json`, `application/yaml`,
    `application/x-yaml`, `text/yaml`) decides the parser. Any other or none (curl's `-d` sends
    `application/x-www-form-urlencoded`) means: JSON when the text starts with `{` or `[`, else YAML.
    (Broken JSON would often still be YAML, with nulls where values are missing; the JSON parser's
    complaint is the useful answer. Flow-style YAML needs a YAML Content-Type.)
    YAML gives one entry per non-empty document; JSON gives exactly one."""
    text = _decode(data)
    kind = media_type(content_type)
    if kind in JSON_MEDIA_TYPES or kind.endswith("+json"):
        return [load_json(text)]
    if kind in YAML_MEDIA_TYPES:
        return _load_yaml(text)
    if text.lstrip()[:1] in ("{", "["):
        return [load_json(text)]
    return _load_yaml(text)


def duplicate_key_message(key: str) -> str:
    return f"duplicate key {json.dumps(key)[:200]}: the API server's strict decoding refuses it"


def out_of_range_message(token: str) -> str:
    shown = token if len(token) <= 40 else f"{token[:20]}...({len(token)} characters)"
    return f"integer {shown} is outside the 64-bit range of the API server ({INT64_MIN} to {INT64_MAX})"


# -- JSON: the standard parser, its hooks, one walk --------------------------------------------------


class _Refused:
    """Put by a parser hook where the text holds something we refuse; `_check_json` finds it, with
    its place in the document."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


class _Found(Exception):
    """A refused value, with its path gathered (innermost first) on the way out of the walk."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.path: list[str | int] = []


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any] | _Refused:
    value = dict(pairs)
    if len(value) == len(pairs):
        return value
    seen: set[str] = set()
    for key, _ in pairs:  # "a" and "\u0061" are one key: the parser has decoded both
        if key in seen:
            break
        seen.add(key)
    return _Refused(duplicate_key_message(key))


def _int64(token: str) -> int | _Refused:
    # The length first: a 5,000-digit token must not meet Python's digit limit.
    value = int(token) if len(token) <= 20 else None
    if value is None or not INT64_MIN <= value <= INT64_MAX:
        return _Refused(out_of_range_message(token))
    return value


def _double(token: str) -> float | _Refused:
    value = float(token)
    return value if math.isfinite(value) else _Refused(f"number {token[:40]} is outside the range of a double")


def _not_json(name: str) -> _Refused:
    return _Refused(f"{name}: NaN and Infinity are not JSON")


# Made once: json.loads with any option builds a new decoder per call.
_JSON_DECODER = json.JSONDecoder(object_pairs_hook=_unique_object, parse_int=_int64, parse_float=_double,
                                 parse_constant=_not_json)


def load_json(text: str) -> Any:
    """One JSON value from a person's text (a body, a file, an annotation that holds JSON); raises
    DocumentError with the line and column of a syntax error, or the place of a refused value."""
    try:
        value = _JSON_DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise DocumentError(exc.msg, exc.lineno, exc.colno) from None
    except RecursionError:  # deeper than the interpreter's limit, far beyond ours
        raise DocumentError(f"nesting deeper than {MAX_DEPTH} levels") from None
    try:
        _check_json({"": value}, 0)
    except _Found as found:
        path = _render_path(found.path[-2::-1])  # without the wrapper's key
        raise DocumentError(f"{found.message} (at {path})" if path else found.message) from None
    return value


def _check_json(value: dict[str, Any] | list[Any], depth: int) -> None:
    """Raise _Found at the first refused value, lone surrogate or level beyond MAX_DEPTH."""
    if depth > MAX_DEPTH:
        raise DocumentError(f"nesting deeper than {MAX_DEPTH} levels")
    for key, child in value.items() if type(value) is dict else enumerate(value):
        kind = type(child)
        try:
            if kind is dict or kind is list:
                _check_json(child, depth + 1)
            elif kind is _Refused:
                raise _Found(child.message)
            elif kind is str and not child.isascii() and _SURROGATE_RE.search(child):
                raise _Found(_SURROGATE_MESSAGE)
            if type(key) is str and not key.isascii() and _SURROGATE_RE.search(key):
                raise _Found(_SURROGATE_MESSAGE)
        except _Found as found:
            found.path.append(key)
            raise


def _render_path(parts: Iterable[str | int]) -> str:
    """("spec", "skills", 1) -> "spec.skills[1]"; keys that are not names are quoted."""
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _PLAIN_KEY_RE.fullmatch(part):
            text += f".{part}" if text else part
        else:
            text += f"[{json.dumps(part)}]"
    return text


# -- YAML: PyYAML's safe loader, narrowed --------------------------------------------------------

# libyaml's scanner and parser when PyYAML was built with it (ten times faster), else PyYAML's own.
_SafeLoader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_TAG = "tag:yaml.org,2002:"
# Kubernetes reads YAML 1.1 scalars as sigs.k8s.io/yaml does: timestamps stay strings (every
# creationTimestamp is one), and "=" and "<<" are plain strings rather than the value and merge keys.
_STRING_SCALARS = {_TAG + "timestamp", _TAG + "value", _TAG + "merge"}
_JSON_TAGS = ("null", "bool", "int", "float", "str", "seq", "map")


class _GuardedComposer(Composer):
    """PyYAML's composer, refusing anchors, aliases and nesting beyond MAX_DEPTH where it meets them.
    (libyaml's composer would resolve every alias before anything could refuse it.)"""

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


class _StrictLoader(_GuardedComposer, _SafeLoader):
    """The safe loader with the JSON tags only, unique string keys, and numbers the API server holds."""

    yaml_implicit_resolvers = {
        first: [(tag, pattern) for tag, pattern in resolvers if tag not in _STRING_SCALARS]
        for first, resolvers in Resolver.yaml_implicit_resolvers.items()
    }
    # Any other tag finds no constructor (the None entry), and is an error, never an object.
    yaml_constructors = {tag: SafeConstructor.yaml_constructors[tag] for tag in [_TAG + t for t in _JSON_TAGS] + [None]}

    def __init__(self, stream: str) -> None:
        _SafeLoader.__init__(self, stream)
        Composer.__init__(self)

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            value = super().construct_object(node, deep)
        except (ValueError, KeyError):  # `!!int x`, `!!bool maybe`, Python's digit limit
            raise ConstructorError(None, None, _unreadable(node), node.start_mark) from None
        if type(value) is int and not INT64_MIN <= value <= INT64_MAX:
            raise ConstructorError(None, None, out_of_range_message(node.value), node.start_mark)
        if type(value) is float and not math.isfinite(value):
            raise ConstructorError(None, None, f"{node.value[:40]} is not a number JSON can hold", node.start_mark)
        if type(value) is str and not value.isascii() and _SURROGATE_RE.search(value):
            raise ConstructorError(None, None, _SURROGATE_MESSAGE, node.start_mark)
        return value

    def construct_mapping(self, node: Node, deep: bool = False) -> dict[str, Any]:
        if not isinstance(node, MappingNode):
            raise ConstructorError(None, None, f"expected a mapping, but found {node.id}", node.start_mark)
        mapping: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                raise ConstructorError(None, None, "mapping keys must be scalars", key_node.start_mark)
            key = self.construct_object(key_node)
            if not isinstance(key, str):
                # JSON keys are strings, as sigs.k8s.io/yaml writes `1:`, `true:`, `null:`; converted
                # before insertion, since as Python keys 1 and True collide.
                key = json.dumps(key)
            if key in mapping:
                raise ConstructorError(None, None, duplicate_key_message(key), key_node.start_mark)
            mapping[key] = self.construct_object(value_node, deep)
        return mapping


def _unreadable(node: Node) -> str:
    kind = str(node.tag).rpartition(":")[2]
    text = str(node.value)
    if kind == "int" and text.replace("_", "").lstrip("+-").isdigit():
        return out_of_range_message(text)  # thousands of digits: Python's limit, far beyond int64
    return f"{text[:40]!r} is not a {kind}"


def _event_error(message: str, event: Any) -> DocumentError:
    mark = event.start_mark
    return DocumentError(message, mark.line + 1, mark.column + 1)


def _load_yaml(text: str) -> list[Any]:
    try:
        loader = _StrictLoader(text)
    except UnicodeEncodeError:  # a str holding a lone surrogate: libyaml reads UTF-8
        raise DocumentError(_SURROGATE_MESSAGE) from None
    try:
        documents = []
        while loader.check_data():
            document = loader.get_data()
            if document is not None:  # "---" with nothing after it, a trailing "---"
                documents.append(document)
        return documents
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, text) from None
    finally:
        loader.dispose()


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
        offset = exc.position
        line, column = text.count("\n", 0, offset) + 1, offset - (text.rfind("\n", 0, offset) + 1) + 1
        return DocumentError(exc.reason, line, column)
    return DocumentError(str(exc))


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


# -- lists -------------------------------------------------------------------------------------------


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
