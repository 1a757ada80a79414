"""Parsing untrusted text: JSON or multi-document YAML, safely, with the parser's line and column."""

from __future__ import annotations

import json
import time

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from app.core.parsing.documents import MAX_DEPTH, DocumentError, load_documents, load_trusted_documents, media_type

THREE_MIB = 3 * 1024 * 1024


@pytest.mark.parametrize(
    "content_type, text, documents",
    [
        (None, '{"a": 1}', [{"a": 1}]),
        (None, '  \n[1, 2]', [[1, 2]]),
        (None, "a: 1\n---\nb: 2\n", [{"a": 1}, {"b": 2}]),
        (None, "---\na: 1\n---\n---\n", [{"a": 1}]),  # empty documents are left out
        (None, "", []),
        ("application/x-www-form-urlencoded", '{"a": 1}', [{"a": 1}]),  # what curl -d sends
        ("text/plain", "a: 1", [{"a": 1}]),
        ("application/json", '{"a": 1}', [{"a": 1}]),
        ("Application/JSON; charset=utf-8", '{"a": 1}', [{"a": 1}]),
        ("application/merge-patch+json", "null", [None]),
        ("application/yaml", '{"a": 1}', [{"a": 1}]),
        ("application/x-yaml", "a: 1", [{"a": 1}]),
        ("text/yaml", "- 1", [[1]]),
        (None, "\ufeffa: 1", [{"a": 1}]),
        ("application/yaml", "{a: 1, b: [x, y]}", [{"a": 1, "b": ["x", "y"]}]),  # flow-style YAML
    ],
)
def test_format_by_content_type_then_content(content_type: str | None, text: str, documents: list) -> None:
    assert load_documents(text, content_type) == documents
    assert load_documents(text.encode(), content_type) == documents


def test_json_content_type_is_honoured() -> None:
    with pytest.raises(DocumentError) as caught:
        load_documents("a: 1", "application/json")
    assert (caught.value.line, caught.value.column) == (1, 1)


@pytest.mark.parametrize(
    "text, content_type, message, line, column",
    [
        ('{\n  "a": 1,\n  "b": }', None, "Expecting value", 3, 8),
        ('{"a": 1} {"b": 2}', None, "Extra data", 1, 10),
        ('{"a": NaN}', None, "NaN and Infinity are not JSON", 1, 7),
        ('[1, -Infinity]', None, "NaN and Infinity are not JSON", 1, 5),
        ("a: 1\nb: [1, 2\n", None, "expected ',' or ']'", 3, 1),
        ("a: 1\n  b: 2\n", None, "mapping values are not allowed", 2, 4),
        ("a: 'x\n", None, "found unexpected end of stream", 2, 1),
        ("a: \x07", None, "control characters are not allowed", 1, 4),
        ('{"a": [1, {"b": 2,]}', "application/yaml", "expected node content", 1, 19),
        ('{"a": [1, {"b": 2,]}', None, "Expecting property name", 1, 19),
    ],
)
def test_malformed_input_reports_line_and_column(
    text: str, content_type: str | None, message: str, line: int, column: int
) -> None:
    with pytest.raises(DocumentError) as caught:
        load_documents(text, content_type)
    error = caught.value
    assert message in error.message
    assert (error.line, error.column) == (line, column)
    assert str(error) == f"line {line}, column {column}: {error.message}"
    assert error.as_dict() == {"message": error.message, "line": line, "column": column}


def test_invalid_utf8_is_placed() -> None:
    with pytest.raises(DocumentError) as caught:
        load_documents(b"a: 1\nb: \xff\n")
    assert (caught.value.message, caught.value.line, caught.value.column) == ("not valid UTF-8", 2, 4)


@pytest.mark.parametrize(
    "text",
    [
        "a: !!python/object/apply:os.system ['true']",
        "a: !!python/name:os.system",
        "!!python/object:builtins.dict {}",
        "a: !!binary aGVsbG8=",
        "a: !!set {x, y}",
        "a: !!omap [x: 1]",
        "a: !!timestamp 2024-01-01",
        "a: !custom x",
        "!<tag:example.com,2024:thing> {a: 1}",
    ],
)
def test_no_tag_constructs_an_object(text: str) -> None:
    with pytest.raises(DocumentError, match="could not determine a constructor"):
        load_documents(text)


def test_values_are_what_json_can_hold() -> None:
    text = (
        "created: 2026-01-02T03:04:05Z\nday: 2026-01-02\nyes: no\n1: one\n~: nothing\n1.5: x\n"
        "n: !!int '7'\ns: !!str 8\neq: =\nmerge: <<\n"
    )
    (document,) = load_documents(text)
    assert document == {
        "created": "2026-01-02T03:04:05Z",  # timestamps stay strings, as in every Kubernetes object
        "day": "2026-01-02",
        "true": False,  # YAML 1.1 booleans, as kubectl reads them; keys become strings
        "1": "one",
        "null": "nothing",
        "1.5": "x",
        "n": 7,
        "s": "8",
        "eq": "=",
        "merge": "<<",
    }


@pytest.mark.parametrize(
    "text, content_type, message, line, column",
    [
        # The API server decodes integers into int64: anything longer is refused where it stands,
        # never turned into a float (JSON) or into Python's digit-limit text (5,000 digits).
        ("[9223372036854775808]", "application/json", "integer 9223372036854775808 is outside the 64-bit range", 1, 2),
        ("[-9223372036854775809]", "application/json", "integer -9223372036854775809 is outside the 64-bit range", 1, 2),
        ("[18446744073709551615]", "application/json", "is outside the 64-bit range", 1, 2),
        ('{"a": "x",\n "n": ' + "9" * 5000 + "}", "application/json", "integer 99999999999999999999...(5000 characters)", 2, 7),
        ("a:\n  n: " + "9" * 5000 + "\n", "application/yaml", "integer 99999999999999999999...(5000 characters)", 2, 6),
        ("n: 9223372036854775808\n", "application/yaml", "integer 9223372036854775808 is outside the 64-bit range", 1, 4),
        ("n: 0x" + "f" * 17 + "\n", "application/yaml", "is outside the 64-bit range", 1, 4),
        ("[1e999]", "application/json", "number 1e999 is outside the range of a double", 1, 2),
        ("f: .inf\n", "application/yaml", ".inf is not a number JSON can hold", 1, 4),
    ],
)
def test_numbers_the_api_server_cannot_hold_are_errors_with_a_position(
    text: str, content_type: str, message: str, line: int, column: int
) -> None:
    with pytest.raises(DocumentError) as caught:
        load_documents(text, content_type)
    assert message in caught.value.message and "int_max_str_digits" not in caught.value.message
    assert (caught.value.line, caught.value.column) == (line, column)


def test_the_int64_bounds_themselves_are_integers() -> None:
    text = '{"min": -9223372036854775808, "max": 9223372036854775807, "s": "99999999999999999999999"}'
    assert load_documents(text) == [{"min": -(2**63), "max": 2**63 - 1, "s": "99999999999999999999999"}]
    assert load_documents("max: 9223372036854775807\n") == [{"max": 2**63 - 1}]


@pytest.mark.parametrize(
    "text, content_type, key, line, column",
    [
        ('{"a": 1, "a": 2}', "application/json", "a", 1, 10),
        ('{"x": {"b": 1}, "y": [{"b": 2,\n "b": 3}]}', "application/json", "b", 2, 2),
        ('{"a": "\\"a\\":", "\\u0061": 1}', "application/json", "a", 1, 17),  # escapes name the same key
        ("a: 1\nb:\n  c: 1\n  c: 2\n", "application/yaml", "c", 4, 3),
        ("{a: 1, a: 2}\n", "application/yaml", "a", 1, 8),
    ],
)
def test_duplicate_keys_are_errors_as_in_strict_decoding(
    text: str, content_type: str, key: str, line: int, column: int
) -> None:
    for load in (lambda t: load_documents(t, content_type), load_trusted_documents):
        with pytest.raises(DocumentError) as caught:
            load(text)
        assert caught.value.message.startswith(f'duplicate key "{key}"')
        assert (caught.value.line, caught.value.column) == (line, column)


def test_same_key_in_different_objects_is_fine() -> None:
    text = '{"a": {"k": 1}, "b": {"k": 2}, "l": [{"k": 3}, {"k": 4}], "s": "\\"k\\": \\"k\\":"}'
    assert load_documents(text) == [{"a": {"k": 1}, "b": {"k": 2}, "l": [{"k": 3}, {"k": 4}], "s": '"k": "k":'}]


def test_colliding_keys_do_not_merge() -> None:
    # As Python keys 1 and True are equal; as JSON keys "1" and "true" are not.
    assert load_documents("1: a\ntrue: b\n") == [{"1": "a", "true": "b"}]


@pytest.mark.parametrize("text", ["? [a, b]\n: c\n", "{[1]: 2}", "? {a: 1}\n: b\n"])
def test_collection_keys_are_refused(text: str) -> None:
    with pytest.raises(DocumentError, match="mapping keys must be scalars"):
        load_documents(text, "application/yaml")


def _alias_bomb(levels: int = 9) -> str:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def test_alias_bomb_is_refused_at_once() -> None:
    start = time.perf_counter()
    with pytest.raises(DocumentError, match="YAML anchors are not allowed") as caught:
        load_documents(_alias_bomb())
    assert time.perf_counter() - start < 0.1
    assert (caught.value.line, caught.value.column) == (1, 5)


def test_alias_without_anchor_is_refused() -> None:
    with pytest.raises(DocumentError, match="found undefined alias|YAML aliases are not allowed"):
        load_documents("a: *x\n")


@pytest.mark.parametrize(
    "text, content_type",
    [
        ("[" * THREE_MIB, None),
        ("[" * THREE_MIB, "application/yaml"),
        ('{"a":' * (THREE_MIB // 5), None),
        ("{a: " * (THREE_MIB // 4), "application/yaml"),
        ("- " * (THREE_MIB // 2), None),
        ("a:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 400)), None),
        ("[" * 990 + "]" * 990, None),  # under Python's recursion limit, over ours
        ("[1, " * 101 + "1" + "]" * 101, None),
    ],
    ids=["json-arrays", "yaml-flow", "json-objects", "yaml-flow-maps", "yaml-block-seq", "yaml-block-maps", "json-990", "json-101"],
)
def test_deep_nesting_is_refused_fast(text: str, content_type: str | None) -> None:
    start = time.perf_counter()
    with pytest.raises(DocumentError, match="nesting depth|deeper than") as caught:
        load_documents(text.encode(), content_type)
    assert time.perf_counter() - start < 0.5
    assert caught.value.line is not None


def test_nesting_up_to_the_limit_is_fine() -> None:
    text = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert load_documents(text) == [json.loads(text)]
    assert load_documents(text, "application/yaml") == [json.loads(text)]


def test_a_large_flat_json_body_is_not_slow() -> None:
    body = json.dumps({"items": [{"name": f"n{i}", "value": i} for i in range(60_000)]})
    assert len(body) > 1_500_000
    start = time.perf_counter()
    (document,) = load_documents(body)
    assert len(document["items"]) == 60_000
    assert time.perf_counter() - start < 1.0


def test_media_type() -> None:
    assert media_type(None) == ""
    assert media_type(" Application/YAML ; charset=utf-8") == "application/yaml"


# -- the trusted loader ------------------------------------------------------------------------------


def _runtime(i: int) -> str:
    return (
        f"apiVersion: agent.kagenti.dev/v1alpha1\nkind: AgentRuntime\nmetadata:\n  name: r{i}\n  namespace: ns\n"
        f"  creationTimestamp: 2026-01-02T03:04:05Z\nspec:\n  type: agent\n"
        f"  targetRef: {{apiVersion: apps/v1, kind: Deployment, name: d{i}}}\n"
        f"  skills:\n  - name: s\n    image: ghcr.io/x/y:v1\n    mountPath: /skills/s\n"
    )


def test_trusted_loader_reads_what_the_untrusted_one_reads() -> None:
    text = "---\n".join(_runtime(i) for i in range(3)) + "---\n"
    assert load_trusted_documents(text) == load_documents(text)
    assert load_trusted_documents(text)[0]["metadata"]["creationTimestamp"] == "2026-01-02T03:04:05Z"


def test_trusted_loader_allows_anchors_but_no_objects() -> None:
    assert load_trusted_documents("a: &x [1]\nb: *x\n") == [{"a": [1], "b": [1]}]
    with pytest.raises(DocumentError, match="could not determine a constructor"):
        load_trusted_documents("a: !!python/object/apply:os.system ['true']")
    with pytest.raises(DocumentError) as caught:
        load_trusted_documents("a: [1\n")
    assert caught.value.line == 2


def test_trusted_loader_reads_ten_thousand_agentruntimes_quickly() -> None:
    text = "---\n".join(_runtime(i) for i in range(10_000))
    start = time.perf_counter()
    documents = load_trusted_documents(text)
    elapsed = time.perf_counter() - start
    assert len(documents) == 10_000 and documents[-1]["metadata"]["name"] == "r9999"
    assert elapsed < 5.0  # about 1 s on a 2-core machine; the pure-Python loader takes 6 s or more


# -- properties -------------------------------------------------------------------------------------

# YAML line breaks (NEL, LS, PS) inside plain text do not survive PyYAML's emitter -> libyaml.
_text = st.text(st.characters(exclude_characters="\x85\u2028\u2029", exclude_categories=("Cs",)))
# Integers as the API server holds them (int64); longer ones are errors, tested above.
_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_text, children, max_size=4),
    max_leaves=25,
)


@settings(max_examples=150, deadline=None)
@given(value=_json_values)
def test_json_and_yaml_round_trip(value) -> None:
    assert load_documents(json.dumps(value), "application/json") == [value]
    dumped = yaml.safe_dump(value, allow_unicode=True)
    assert load_documents(dumped, "application/yaml") == ([value] if value is not None else [])


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=200) | st.text(max_size=200).map(str.encode), content_type=st.sampled_from([None, "application/json", "application/yaml"]))
def test_any_input_parses_or_is_a_document_error(data: bytes, content_type: str | None) -> None:
    try:
        documents = load_documents(data, content_type)
    except DocumentError as error:
        assert error.message
        assert error.line is None or (error.line >= 1 and error.column >= 1)
    else:
        json.dumps(documents)  # JSON-compatible values only


_yaml_soup = st.lists(
    st.sampled_from(["a", ":", " ", "\n", "- ", "[", "]", "{", "}", ",", "&x ", "*x", "!!str ", "!t ", "'", '"', "#", "---\n", "? ", "|\n", "  ", "1", "~"]),
    max_size=40,
).map("".join)


@settings(max_examples=500, deadline=None)
@given(text=_yaml_soup)
def test_yaml_soup_parses_or_is_a_document_error(text: str) -> None:
    try:
        documents = load_documents(text, "application/yaml")
    except DocumentError:
        return
    json.dumps(documents)
