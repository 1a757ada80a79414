"""The fast paths of parsing and validation give what the slow, explaining paths give.

JSON bodies are checked for duplicate keys and long numbers only when a C-speed count cannot prove
them absent; skills are type-checked off the dict instead of through the pydantic model, and a skill
with nothing to report is decided by one cached verdict; YAML scalars are resolved by a table and a
per-load memo. Each property here runs the same input through both ways and wants the same documents,
the same error (message and place), or the same report.
"""

from __future__ import annotations

import json
import random

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from yaml.nodes import ScalarNode
from yaml.resolver import BaseResolver

from app.core.parsing import documents, jsontext
from app.core.parsing.documents import DocumentError, load_documents, load_trusted_documents
from app.core.model import ObjectMeta, Skill, TargetRef
from app.core.validation import ValidationOptions, skills, validate_agentruntime
from app.core.validation.findings import string_fields, well_typed

# -- JSON: generated text, duplicate keys and all ---------------------------------------------------

# Few distinct keys, so that duplicates are common; quotes, backslashes and colons inside strings are
# what could fool a key count.
_keys = st.sampled_from(["a", "b", "name", 'q"', "c:", "\\", "\\\\", ":", "", "é"])
_strings = st.sampled_from(["x", '":', '\\":', 'a":"b', "\\", "\\\\", ":", " : ", "{}", "[]", "1234567890123456789", "ü"])
_numbers = st.integers(min_value=-(2**70), max_value=2**70) | st.floats(allow_nan=False, allow_infinity=False)
# A JSON value whose objects are lists of (key, value) pairs, so that a key may repeat.
_values = st.recursive(
    st.none() | st.booleans() | _numbers | _strings,
    lambda children: st.lists(children, max_size=4).map(lambda items: ("list", items))
    | st.lists(st.tuples(_keys, children), max_size=4).map(lambda pairs: ("object", pairs)),
    max_leaves=20,
)
_SPACES = ["", "", "", " ", "\n", "\t", "\r\n  "]


def _render(value, rng: random.Random, escape: bool) -> str:
    """JSON text of a generated value, with random whitespace, and (with `escape`) keys and strings
    sometimes written with \\u escapes."""

    def ws() -> str:
        return rng.choice(_SPACES)

    def text(s: str) -> str:
        if escape and rng.random() < 0.3:
            return '"' + "".join(f"\\u{ord(c):04x}" for c in s) + '"'
        return json.dumps(s, ensure_ascii=rng.random() < 0.5)

    if isinstance(value, tuple) and value[0] == "list":
        return "[" + ws() + ",".join(ws() + _render(v, rng, escape) + ws() for v in value[1]) + "]"
    if isinstance(value, tuple):
        members = [ws() + text(k) + ws() + ":" + ws() + _render(v, rng, escape) + ws() for k, v in value[1]]
        return "{" + ",".join(members) + ws() + "}"
    if isinstance(value, str):
        return text(value)
    return json.dumps(value)


class _Duplicate(Exception):
    pass


def _refuse_duplicates(pairs):
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise _Duplicate
    return dict(pairs)


def _slow_load_json(text: str):
    """jsontext.load_json with every fast gate open: the number scan and the positional duplicate-key
    scan run on every text, whatever a count says."""
    try:
        value = jsontext.orjson.loads(text)
    except jsontext.orjson.JSONDecodeError:
        value = jsontext._load_json_slowly(text)
    if not isinstance(value, (dict, list)):
        jsontext._check_numbers(text)
        return value
    if jsontext._tree_shape(value)[1] > jsontext.MAX_DEPTH:
        raise jsontext._too_deep(text)
    jsontext._check_numbers(text)
    jsontext._check_unique_keys(text, -1)  # no count matches -1: always the scan that names the place
    return value


def _outcome(load, text):
    try:
        return ("value", load(text))
    except DocumentError as error:
        return ("error", error.message, error.line, error.column)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=_values, seed=st.integers(0, 2**32), escape=st.booleans())
def test_json_fast_checks_agree_with_the_full_scans_and_the_standard_parser(value, seed, escape) -> None:
    text = _render(value, random.Random(seed), escape)
    fast = _outcome(jsontext.load_json, text)
    assert fast == _outcome(_slow_load_json, text)
    assert _outcome(lambda t: load_documents(t, "application/json")[0], text) == fast
    # The standard parser, told to refuse duplicates, agrees on whether there is one.
    try:
        json.loads(text, object_pairs_hook=_refuse_duplicates)
        duplicate = False
    except _Duplicate:
        duplicate = True
    if fast[0] == "value":
        assert not duplicate
        assert fast[1] == json.loads(text)
    elif fast[1].startswith("duplicate key"):
        assert duplicate
    else:
        assert "64-bit range" in fast[1] or "range of a double" in fast[1]


@pytest.mark.parametrize(
    "text, problem",
    [
        ('{"a": 1, "a" : 2}', "duplicate key"),  # whitespace before the colon: not counted cheaply
        ('{"a":1,"b":"x\\":","a":2}', "duplicate key"),  # an escaped quote and a colon in a string
        ('{"a\\\\":1,"a\\\\":2}', "duplicate key"),  # keys ending in an escaped backslash
        ('{"k":"{\\"a\\":1,\\"a\\":2}"}', None),  # a JSON text inside a string is not parsed
        ('{"a":":","b":":"}', None),  # strings that start with ":" make the count high, not wrong
        ('{"n": 9223372036854775807, "m": -9223372036854775808}', None),
        ('{"n": 9223372036854775808}', "outside the 64-bit range"),
        ('{"s": "12345678901234567890"}', None),  # a long run of digits in a string is no number
    ],
)
def test_json_corner_cases(text: str, problem: str | None) -> None:
    if problem is None:
        assert jsontext.load_json(text) == json.loads(text)
    else:
        with pytest.raises(DocumentError, match=problem) as caught:
            jsontext.load_json(text)
        assert caught.value.line == 1 and caught.value.column is not None


# -- YAML: the resolver table and memo, the build, both loaders --------------------------------------

_plain = st.text(st.sampled_from("0123456789+-._:eEoxXabfnNtTrueYyOLl~ "), max_size=12) | st.sampled_from(
    ["", "~", "null", "Null", "NULL", "true", "True", "yes", "No", "on", "OFF", "1_000", "0x1F", "0o17", "017",
     "1:30", ".5", "-.inf", ".NaN", "1e3", "+12", "=", "<<", "2026-01-02", "2026-01-02T03:04:05Z", "y", "n"]
)


@settings(max_examples=500, deadline=None)
@given(value=_plain)
def test_the_resolver_table_resolves_as_pyyaml_does(value: str) -> None:
    loader = documents._JsonCompatibleResolver()
    for implicit in ((True, False), (False, True)):
        expected = BaseResolver.resolve(loader, ScalarNode, value, implicit)
        assert loader.resolve(ScalarNode, value, implicit) == expected
        assert loader.resolve(ScalarNode, value, implicit) == expected  # from the memo the second time


_text = st.text(st.characters(exclude_characters="\x85\u2028\u2029", exclude_categories=("Cs",)), max_size=8)
_yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | _text | _plain,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_text | _plain, children, max_size=4),
    max_leaves=25,
)


@settings(max_examples=200, deadline=None)
@given(value=_yaml_values, flow=st.booleans())
def test_both_yaml_loaders_read_back_what_was_written(value, flow: bool) -> None:
    text = yaml.safe_dump(value, allow_unicode=True, default_flow_style=flow)
    expected = [value] if value is not None else []
    assert load_trusted_documents(text) == expected
    assert load_documents(text, "application/yaml") == expected


@settings(max_examples=200, deadline=None)
@given(keys=st.lists(st.sampled_from(["a", "b", "'a'", '"a"', "1", "true", "null"]), min_size=1, max_size=5))
def test_both_yaml_loaders_refuse_a_duplicate_key_alike(keys: list[str]) -> None:
    text = "".join(f"{key}: {n}\n" for n, key in enumerate(keys))
    outcomes = [_outcome(lambda t: load_documents(t, "application/yaml"), text), _outcome(load_trusted_documents, text)]
    assert outcomes[0] == outcomes[1]
    # "a", 'a' and "a" are one key; so are 1 and "1" once keys are strings.
    names = [json.dumps(yaml.safe_load(f"k: {key}")["k"]).strip('"') for key in keys]
    assert (outcomes[0][0] == "error") == (len(set(names)) != len(names))
    if outcomes[0][0] == "error":
        assert outcomes[0][1].startswith("duplicate key")


def test_the_trusted_loader_bounds_nesting_and_reads_tags_it_cannot_build_as_errors() -> None:
    deep = "a: " + "[" * (jsontext.MAX_DEPTH + 5) + "]" * (jsontext.MAX_DEPTH + 5)
    for load in (load_trusted_documents, lambda t: load_documents(t, "application/yaml")):
        with pytest.raises(DocumentError, match="nesting deeper than"):
            load(deep)
        with pytest.raises(DocumentError, match="'maybe' is not a bool"):
            load("a: !!bool maybe\n")
    assert load_trusted_documents("a: " + "[" * 50 + "]" * 50)[0]["a"]


# -- skills: the model's types off the dict, and the cached clean-skill verdict -----------------------

_field_values = st.sampled_from(["x", "", None, 1, 2.5, True, [], {}, "IfNotPresent", "Always"])


@settings(max_examples=400, deadline=None)
@given(
    model=st.sampled_from([Skill, ObjectMeta, TargetRef]),
    raw=st.dictionaries(
        st.sampled_from(["name", "image", "mountPath", "pullPolicy", "namespace", "uid", "kind", "apiVersion", "extra"]),
        _field_values,
        max_size=6,
    ),
    odd_key=st.booleans(),
)
def test_well_typed_means_pydantic_accepts_the_fields_as_they_stand(model, raw: dict, odd_key: bool) -> None:
    if odd_key:
        raw = {**raw, 7: "x"}
    assert string_fields(model) is not None  # the models validation reads this way
    try:
        built = model.model_validate(raw)
    except ValidationError:
        assert not well_typed(model, raw)
        return
    if well_typed(model, raw):
        for name in model.model_fields:
            if name in raw:
                assert getattr(built, name) == raw[name]


_skill_names = st.sampled_from(["a", "b", "web-search", "Bad_Name", "", "x" * 58, "b"])
_images = st.sampled_from([
    "ghcr.io/o/a:v1", "ghcr.io/o/b:latest", "ghcr.io/o/c", "docker.io/evil/x:v1", "ghcr.io/o/d@sha256:" + "a" * 64,
    "Ghcr.io/O/X", "ghcr.io/o/e@sha1:abc", "", "ghcr.io/o/f:v1 ",
])
_mount_paths = st.sampled_from(["/skills/a", "/skills/a/", "/skills", "/skills/b", "relative", "/proc/x", "/a,b", "", "/etc", "/s/../x"])
_skill_entries = st.fixed_dictionaries(
    {"name": _skill_names, "image": _images, "mountPath": _mount_paths},
    optional={"pullPolicy": st.sampled_from(["Always", "IfNotPresent", "Never", "Sometimes", None, 3]), "extra": st.just(1)},
) | st.dictionaries(st.sampled_from(["name", "image", "mountPath"]), _field_values, max_size=3)


def _report(obj, options):
    return validate_agentruntime(obj, operation="CREATE", options=options).as_dict()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entries=st.lists(_skill_entries, max_size=8), allow=st.sampled_from([(), ("ghcr.io/o",)]))
def test_check_skills_fast_path_gives_the_field_by_field_report(monkeypatch, entries, allow) -> None:
    obj = {
        "apiVersion": "agent.kagenti.dev/v1alpha1", "kind": "AgentRuntime",
        "metadata": {"name": "rt", "namespace": "ns"},
        "spec": {"type": "agent", "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "d"},
                 "skills": entries},
    }
    options = ValidationOptions(registry_allow=allow)
    fast = _report(obj, options)
    with monkeypatch.context() as patched:
        # Every skill through the pydantic model and every rule field by field.
        patched.setattr(skills, "well_typed", lambda model, raw: False)
        patched.setattr(skills, "clean_skill", lambda *args: None)
        slow = _report(obj, options)
    assert fast == slow
