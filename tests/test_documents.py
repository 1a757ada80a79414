"""Parsing text from people: JSON or multi-document YAML, strictly and safely, with the parser's line and
column (or, for a JSON value the parser's hooks refuse, its place in the document)."""

from __future__ import annotations

import json
import time

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from app.core.parsing.documents import MAX_DEPTH, DocumentError, file_media_type, load_documents, media_type

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
    "text, message, line, column",
    [
        # The API server decodes integers into int64: anything longer is refused where it stands,
        # never turned into a float or into Python's digit-limit text (5,000 digits).
        ("a:\n  n: " + "9" * 5000 + "\n", "integer 99999999999999999999...(5000 characters)", 2, 6),
        ("n: 9223372036854775808\n", "integer 9223372036854775808 is outside the 64-bit range", 1, 4),
        ("n: 0x" + "f" * 17 + "\n", "is outside the 64-bit range", 1, 4),
        ("f: .inf\n", ".inf is not a number JSON can hold", 1, 4),
        ("a: !!bool maybe\n", "'maybe' is not a bool", 1, 4),
        ("a: !!int x\n", "'x' is not a int", 1, 4),
    ],
)
def test_yaml_numbers_the_api_server_cannot_hold_are_errors_with_a_position(
    text: str, message: str, line: int, column: int
) -> None:
    with pytest.raises(DocumentError) as caught:
        load_documents(text, "application/yaml")
    assert message in caught.value.message and "int_max_str_digits" not in caught.value.message
    assert (caught.value.line, caught.value.column) == (line, column)


@pytest.mark.parametrize(
    "text, problem, place",
    [
        ("[9223372036854775808]", "integer 9223372036854775808 is outside the 64-bit range", "[0]"),
        ("[-9223372036854775809]", "integer -9223372036854775809 is outside the 64-bit range", "[0]"),
        ("[18446744073709551615]", "is outside the 64-bit range of the API server", "[0]"),
        ('{"a": "x",\n "n": ' + "9" * 5000 + "}", "integer 99999999999999999999...(5000 characters)", "n"),
        ('{"spec": {"skills": [{"n": 1e999}]}}', "number 1e999 is outside the range of a double", "spec.skills[0].n"),
        ('{"a": NaN}', "NaN: NaN and Infinity are not JSON", "a"),
        ("[1, -Infinity]", "-Infinity: NaN and Infinity are not JSON", "[1]"),
        ('{"x y": ["\\ud800"]}', "a lone surrogate (\\ud800-\\udfff) is not text", '["x y"][0]'),
        ('"\\udc00"', "a lone surrogate", None),
        ("NaN", "NaN and Infinity are not JSON", None),
    ],
)
def test_json_values_the_api_server_cannot_hold_are_errors_naming_their_place(
    text: str, problem: str, place: str | None
) -> None:
    with pytest.raises(DocumentError) as caught:
        load_documents(text, "application/json")
    message = caught.value.message
    assert problem in message and "int_max_str_digits" not in message
    assert message.endswith(f" (at {place})") if place else "(at " not in message
    assert caught.value.line is None


def test_the_int64_bounds_themselves_are_integers() -> None:
    text = '{"min": -9223372036854775808, "max": 9223372036854775807, "s": "99999999999999999999999"}'
    assert load_documents(text) == [{"min": -(2**63), "max": 2**63 - 1, "s": "99999999999999999999999"}]
    assert load_documents("max: 9223372036854775807\n") == [{"max": 2**63 - 1}]


@pytest.mark.parametrize(
    "text, key, line, column",
    [
        ("a: 1\nb:\n  c: 1\n  c: 2\n", "c", 4, 3),
        ("{a: 1, a: 2}\n", "a", 1, 8),
        ("a: 1\n'a': 2\n", "a", 2, 1),  # quoting does not make another key
        ("1: a\n'1': b\n", "1", 2, 1),  # keys are strings, as in JSON
    ],
)
def test_yaml_duplicate_keys_are_errors_at_their_position(text: str, key: str, line: int, column: int) -> None:
    with pytest.raises(DocumentError) as caught:
        load_documents(text, "application/yaml")
    assert caught.value.message == f'duplicate key "{key}": the API server\'s strict decoding refuses it'
    assert (caught.value.line, caught.value.column) == (line, column)


@pytest.mark.parametrize(
    "text, key, place",
    [
        ('{"a": 1, "a": 2}', "a", None),
        ('{"x": {"b": 1}, "y": [{"b": 2,\n "b": 3}]}', "b", "y[0]"),
        ('{"a": "\\"a\\":", "\\u0061": 1}', "a", None),  # escapes name the same key
        ('{"a": 1, "a" : 2}', "a", None),  # whitespace before the colon
        ('{"o": {"a\\\\":1,"a\\\\":2}}', "a\\\\", "o"),  # keys ending in an escaped backslash
    ],
)
def test_json_duplicate_keys_are_errors_naming_the_object(text: str, key: str, place: str | None) -> None:
    with pytest.raises(DocumentError) as caught:
        load_documents(text, "application/json")
    message = f"duplicate key \"{key}\": the API server's strict decoding refuses it"
    assert caught.value.message == (f"{message} (at {place})" if place else message)


def test_same_key_in_different_objects_is_fine() -> None:
    text = '{"a": {"k": 1}, "b": {"k": 2}, "l": [{"k": 3}, {"k": 4}], "s": "\\"k\\": \\"k\\":"}'
    assert load_documents(text) == [{"a": {"k": 1}, "b": {"k": 2}, "l": [{"k": 3}, {"k": 4}], "s": '"k": "k":'}]
    assert load_documents('{"k": "{\\"a\\":1,\\"a\\":2}"}') == [{"k": '{"a":1,"a":2}'}]  # JSON inside a string


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
    if content_type or text[0] not in "[{":  # YAML says where; the JSON parser's recursion does not
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


def test_file_media_type() -> None:
    assert file_media_type("runtimes.JSON") == "application/json"
    assert file_media_type("a/b.yml") == file_media_type("x.yaml") == "application/yaml"
    assert file_media_type("runtimes") is None and file_media_type("notes.txt") is None


# -- properties -------------------------------------------------------------------------------------

# YAML line breaks (NEL, LS, PS) inside plain text do not survive PyYAML's emitter -> libyaml.
_characters = st.characters(exclude_characters="\x85\u2028\u2029", exclude_categories=("Cs",))
# Strings that YAML 1.1 would read as something else unless written quoted.
_yaml_words = st.sampled_from(["", "~", "null", "yes", "No", "on", "1_000", "0x1F", "017", "1:30", ".5", "-.inf",
                               ".NaN", "1e3", "=", "<<", "2026-01-02", "2026-01-02T03:04:05Z", "y", "n"])
_text = st.text(_characters) | _yaml_words
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


@settings(deadline=None)
@given(value=_json_values, flow=st.booleans())
def test_what_json_and_yaml_write_loads_back_equal(value, flow: bool) -> None:
    assert load_documents(json.dumps(value), "application/json") == [value]
    assert load_documents(json.dumps(value, ensure_ascii=False).encode(), "application/json") == [value]
    dumped = yaml.safe_dump(value, allow_unicode=True, default_flow_style=flow)
    assert load_documents(dumped, "application/yaml") == ([value] if value is not None else [])


def _objects(value) -> list[dict]:
    """Every non-empty object in a value, outermost first."""
    found = [value] if isinstance(value, dict) and value else []
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return found + [o for child in children for o in _objects(child)]


def _json_text(value, repeat: dict) -> str:
    """JSON text of `value` in which the object `repeat` has its first key once more (ASCII only, so
    that the text is YAML flow style too)."""
    if isinstance(value, dict):
        pairs = list(value.items()) + ([next(iter(value.items()))] if value is repeat else [])
        return "{" + ", ".join(f"{json.dumps(k)}: {_json_text(v, repeat)}" for k, v in pairs) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_json_text(v, repeat) for v in value) + "]"
    return json.dumps(value)


# Strings within the length of a YAML implicit key, and in the Basic Multilingual Plane (an escaped
# astral character is a surrogate pair, which YAML's escapes do not take).
_keys = st.text(st.characters(max_codepoint=0xFFFF, exclude_categories=("Cs",)), max_size=20) | _yaml_words
_values_with_an_object = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | _keys,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_keys, children, max_size=3),
    max_leaves=15,
).map(lambda value: value if _objects(value) else {"k": value})


@settings(deadline=None)
@given(value=_values_with_an_object, data=st.data())
def test_a_duplicate_key_anywhere_is_always_refused(value, data) -> None:
    repeat = data.draw(st.sampled_from(_objects(value)))
    text = _json_text(value, repeat)
    for content_type in ("application/json", "application/yaml"):
        with pytest.raises(DocumentError) as caught:
            load_documents(text, content_type)
        assert caught.value.message.startswith("duplicate key "), (content_type, caught.value.message)
    if value is repeat:  # the same in block style: the first key written again at the end
        block = yaml.safe_dump(value, allow_unicode=True) + yaml.safe_dump(dict([next(iter(value.items()))]))
        with pytest.raises(DocumentError) as caught:
            load_documents(block, "application/yaml")
        assert caught.value.message.startswith("duplicate key ") and caught.value.line is not None


@settings(deadline=None)
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


@settings(deadline=None)
@given(text=_yaml_soup)
def test_yaml_soup_parses_or_is_a_document_error(text: str) -> None:
    try:
        documents = load_documents(text, "application/yaml")
    except DocumentError:
        return
    json.dumps(documents)


@pytest.mark.parametrize("value", ["0E0", "1e3", "0x1F", "0o17", "1_000", ".inf", "yes", "~", "2026-12-06"])
@pytest.mark.parametrize("flow", [True, False])
def test_strings_that_look_like_other_yaml_11_scalars_read_back_as_strings(value: str, flow: bool) -> None:
    # '0E0' once made a saved hypothesis example fail every later run of the same checkout: what
    # PyYAML writes quoted (a YAML 1.1 float, int, bool, null or date) must come back as that string.
    assert load_documents(yaml.safe_dump([value], default_flow_style=flow), "application/yaml") == [[value]]
