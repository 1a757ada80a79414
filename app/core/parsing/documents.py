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

JSON text goes through app.core.parsing.jsontext (strict, positioned, numbers as the API server holds them).
`open_lists` is the one place where `kind: List` (what `kubectl get -o yaml` prints) stands for its
items.
"""

from __future__ import annotations

import json
import math
from typing import Any, Iterable, Iterator

import yaml
from yaml.composer import Composer
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.events import AliasEvent, CollectionStartEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner

from app.core.parsing.jsontext import (
    INT64_MAX,
    INT64_MIN,
    MAX_DEPTH,
    DocumentError,
    dump_json,
    duplicate_key_message,
    integer_problem,
    line_column,
    load_json,
    out_of_range_message,
)

__all__ = [
    "DocumentError", "MAX_DEPTH", "dump_json", "is_list", "load_documents", "load_json",
    "load_trusted_documents", "media_type", "open_lists",
]

try:  # libyaml: the C parser, ten times faster than the pure-Python one
    from yaml._yaml import CParser
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    CParser = None


JSON_MEDIA_TYPES = frozenset({"application/json"})
YAML_MEDIA_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"})

_STR_TAG, _SEQ_TAG, _MAP_TAG = "tag:yaml.org,2002:str", "tag:yaml.org,2002:seq", "tag:yaml.org,2002:map"
_INT_TAG, _NULL_TAG = "tag:yaml.org,2002:int", "tag:yaml.org,2002:null"
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
        return [load_json(text)]
    if kind in YAML_MEDIA_TYPES:
        return _load_yaml(text)
    if text.lstrip()[:1] in ("{", "["):
        return [load_json(text)]
    return _load_yaml(text)


def load_trusted_documents(text: str) -> list[Any]:
    """Parse an admin-owned YAML/JSON file fast (libyaml); still JSON-compatible values only, still
    no object construction. Raises DocumentError. Empty documents are left out."""
    if text.lstrip()[:1] in ("{", "["):
        # A JSON file (10,000 AgentRuntimes is 10 MB) parses 50 times faster as JSON than through
        # libyaml; when it is not valid JSON after all, YAML (a superset) gets its turn below.
        try:
            return [load_json(text)]
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


# -- YAML ------------------------------------------------------------------------------------------


class _JsonCompatibleResolver(Resolver):
    """YAML 1.1 scalars as Kubernetes reads them: timestamps stay strings (a creationTimestamp is a
    string in every API object), and "=" and "<<" are plain strings rather than special tags.

    `resolve` is PyYAML's, in one dictionary look-up for a scalar whose first character no implicit
    tag starts with (most of them: names, images, paths), and without the path resolvers (there are
    none): libyaml calls it once per node, so it is most of the Python work of a load."""

    yaml_implicit_resolvers = {
        first: [
            (tag, pattern)
            for tag, pattern in resolvers
            if tag not in ("tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:value", "tag:yaml.org,2002:merge")
        ]
        for first, resolvers in Resolver.yaml_implicit_resolvers.items()
    }

    def descend_resolver(self, current_node: Any, current_index: Any) -> None:
        pass  # no path resolvers

    def ascend_resolver(self) -> None:
        pass

    def __init__(self) -> None:
        super().__init__()
        self._plain_tags: dict[str, str] = {}  # for this load: keys and many values repeat

    def resolve(self, kind: type, value: Any, implicit: Any) -> str:
        if kind is ScalarNode:
            if not implicit[0]:
                return _STR_TAG
            return self._plain_tags.get(value) or self.plain_tag(value)
        return _SEQ_TAG if kind is SequenceNode else _MAP_TAG

    def plain_tag(self, value: str) -> str:
        """The tag of a plain scalar, remembered for the rest of the load."""
        tag = _plain_tag(value)
        if len(value) <= _REMEMBERED_SCALAR and len(self._plain_tags) < _REMEMBERED_SCALARS:
            self._plain_tags[value] = tag
        return tag


class _DeferredResolver(_JsonCompatibleResolver):
    """For libyaml's own composer (trusted files): a plain scalar is only marked _PLAIN here and
    resolved by _build, which looks at every scalar anyway; that saves a third of the resolving,
    which is called from C for every node."""

    def resolve(self, kind: type, value: Any, implicit: Any) -> str:
        if kind is ScalarNode:
            return _PLAIN if implicit[0] else _STR_TAG
        return _SEQ_TAG if kind is SequenceNode else _MAP_TAG


# The tag of a plain scalar that _build still has to resolve. Compared by identity: a tag written
# in a document is another string object, however it is spelt, and is refused as unknown.
_PLAIN = "tag:skill-webhook,2026:plain-scalar"
_REMEMBERED_SCALAR = 64  # characters: longer plain scalars are resolved afresh each time
_REMEMBERED_SCALARS = 65_536  # per load


def _plain_tag(value: str) -> str:
    for tag, pattern in _IMPLICIT_BY_FIRST.get(value[:1], _IMPLICIT_ANY_FIRST):
        if pattern.match(value):
            return tag
    return _STR_TAG


# First character -> the implicit resolvers BaseResolver.resolve tries for it, in its order
# (those registered for that character, then those for any character).
_IMPLICIT_ANY_FIRST = tuple(_JsonCompatibleResolver.yaml_implicit_resolvers.get(None, ()))
_IMPLICIT_BY_FIRST = {
    first: tuple(resolvers) + _IMPLICIT_ANY_FIRST
    for first, resolvers in _JsonCompatibleResolver.yaml_implicit_resolvers.items()
    if first is not None
}


class _JsonCompatibleConstructor(SafeConstructor):
    """Only null, booleans, numbers, strings, sequences and mappings with string keys. Any other
    tag (!!binary, !!set, !!timestamp, !!python/..., custom !tags) is an error, never an object.

    Documents are built by one recursive walk (`_build`) instead of PyYAML's generator machinery:
    several times faster, which lets the file source load 10,000 AgentRuntimes quickly. It recurses
    as deep as the document nests, at most MAX_DEPTH."""

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
            return _build(self, node, built, 1)
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
        except KeyError:  # `!!bool maybe`: PyYAML looks the word up and finds nothing
            raise ConstructorError(None, None, f"{node.value[:40]!r} is not a {node.tag.rpartition(':')[2]}", node.start_mark) from None
        if type(value) is int and not INT64_MIN <= value <= INT64_MAX:
            raise ConstructorError(None, None, out_of_range_message(node.value), node.start_mark)
        if type(value) is float and not math.isfinite(value):
            raise ConstructorError(None, None, f"{node.value[:40]} is not a number JSON can hold", node.start_mark)
        return value


def _build(loader: Any, node: Node, built: dict[int, Any], depth: int) -> Any:
    """The JSON-compatible value of `node` at nesting `depth` (1 for a document's root). A plain
    scalar's tag is resolved here when the loader deferred it (_DeferredResolver)."""
    node_type = type(node)
    if node_type is ScalarNode:
        tag = node.tag
        if tag is _PLAIN:
            tag = node.tag = loader._plain_tags.get(node.value) or loader.plain_tag(node.value)
        if tag == _STR_TAG:
            return node.value
        if tag == _NULL_TAG:
            return None
        return loader.construct_object(node)
    done = built.get(id(node))
    if done is not None:
        return done
    if depth > MAX_DEPTH:
        raise ConstructorError(None, None, f"nesting deeper than {MAX_DEPTH} levels", node.start_mark)
    depth += 1
    remembered = loader._plain_tags
    if node_type is MappingNode and node.tag == _MAP_TAG:
        mapping: dict[str, Any] = {}
        built[id(node)] = mapping
        for key_node, value_node in node.value:
            key = None
            if type(key_node) is ScalarNode:
                tag = key_node.tag
                if tag is _PLAIN:
                    tag = key_node.tag = remembered.get(key_node.value) or loader.plain_tag(key_node.value)
                if tag == _STR_TAG:
                    key = key_node.value
            if key is None:
                key = _build(loader, key_node, built, depth)
                if not isinstance(key, str):
                    # JSON keys are strings, as sigs.k8s.io/yaml makes `1:`, `true:`, `null:`; converted
                    # before insertion, since as Python keys 1 and True collide.
                    key = _key_text(key, key_node)
            if key in mapping:
                raise ConstructorError(None, None, duplicate_key_message(key), key_node.start_mark)
            # A string value (most of them) is taken here: one call fewer per scalar.
            if type(value_node) is ScalarNode:
                tag = value_node.tag
                if tag is _PLAIN:
                    tag = value_node.tag = remembered.get(value_node.value) or loader.plain_tag(value_node.value)
                if tag == _STR_TAG:
                    mapping[key] = value_node.value
                    continue
            mapping[key] = _build(loader, value_node, built, depth)
        return mapping
    if node_type is SequenceNode and node.tag == _SEQ_TAG:
        items: list[Any] = []
        built[id(node)] = items
        for child in node.value:
            items.append(_build(loader, child, built, depth))
        return items
    return loader.construct_object(node)  # an explicit tag on a collection: refused there


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

    class _TrustedLoader(_JsonCompatibleConstructor, CParser, _DeferredResolver):
        """libyaml end to end: its composer builds the nodes (anchors allowed), _build the values."""

        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            _JsonCompatibleConstructor.__init__(self)
            _DeferredResolver.__init__(self)

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
        return DocumentError(exc.reason, *line_column(text, exc.position))
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
