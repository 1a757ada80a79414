"""JSON text from users: parsed strictly, with the position of every problem, as the API server
would read it.

- orjson parses (four times faster); what it refuses goes to the standard parser, which says where;
- nesting is bounded (MAX_DEPTH), so a RecursionError never escapes;
- a duplicate key is an error, as the API server's strict decoding says (which of the two values
  would win is a guess no reader should have to make);
- integers must fit in 64 bits and numbers in a double, as the API server reads them: a longer
  integer is an error naming its position, never silently a float or Python's digit-limit text.

`dump_json` is the one place where a value that orjson refuses (a lone surrogate) is still written.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Callable

import orjson

# Real objects nest 10-15 levels; 100 leaves room and keeps hostile input cheap.
MAX_DEPTH = 100

_JSON_CONSTANT_RE = re.compile(r"-?Infinity|NaN")
# The API server decodes JSON integers into int64 (k8s.io/apimachinery/pkg/util/json).
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# An integer of fewer than 19 digits always fits in int64: cheaper to look for than to check every
# number. Looked for in bytes with every ASCII digit as "0" and everything else as " " (C speed, ten times
# faster than the regular expression); JSON numbers are ASCII, so no number can hide from it.
_DIGITS_AS_ZERO = bytes(0x30 if 0x30 <= i <= 0x39 else 0x20 for i in range(256))
_LONG_RUN = b"0" * 19
# A key followed by whitespace before its ":": the cheap key count below cannot see such a key.
_SPACE_BEFORE_COLON_RE = re.compile(r'"[ \t\r\n]+:')
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


# -- JSON ------------------------------------------------------------------------------------------


def load_json(text: str) -> Any:
    """One JSON value from untrusted text (an annotation that holds JSON, a body); raises
    DocumentError with the line and column of the problem."""
    try:
        # orjson is strict (no NaN, no lone surrogates, nesting under 1024) and four times faster;
        # whatever it refuses goes to the standard parser, which says where and why.
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        value = _load_json_slowly(text)
    if type(value) is not dict and type(value) is not list:
        if _has_long_digit_run(text):
            _check_numbers(text)
        return value
    if _plainly_unique(text, value):
        if _has_long_digit_run(text):
            _check_numbers(text)
        return value
    # One walk of the parsed tree: how many keys its objects hold, and how deep it nests.
    members, depth = _tree_shape(value)
    if depth > MAX_DEPTH:
        raise _too_deep(text)
    if _has_long_digit_run(text):
        # orjson reads an integer beyond int64 as a float (or a uint64): refuse it where it stands.
        _check_numbers(text)
    if _key_bound(text) != members:
        # Only text that may hold a duplicate pays for the scan that finds it (and names its place).
        _check_unique_keys(text, members)
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
            raise DocumentError(problem, *line_column(text, match.start()))


def _has_long_digit_run(text: str) -> bool:
    """True when the text holds 19 or more ASCII digits in a row (anywhere, strings included): only
    then can a number in it be beyond int64, and only then is every number looked at."""
    return _LONG_RUN in text.encode("utf-8", "surrogatepass").translate(_DIGITS_AS_ZERO)


def _key_bound(text: str) -> int:
    """At least the number of keys in (parsed) JSON text, counted at C speed; -1 when this count
    cannot bound it. Equal to the members of the parsed objects, it proves that no key repeats.

    A key is a string, optional whitespace, then ":". Without whitespace there (checked first) every
    key ends in `":` with its closing quote preceded by an even number of backslashes (none, or escaped
    backslashes). Inside a string `":` can only follow an escaped quote, an odd number of backslashes:
    all `\\":` are taken off, those with two or more backslashes put back (over-counting three or
    more, which costs only the slow scan), and a string that starts with ":" counts once too many."""
    if _SPACE_BEFORE_COLON_RE.search(text):
        return -1
    bound = text.count('":')
    if "\\" in text:
        bound += text.count('\\\\":') - text.count('\\":')
    return bound


def _plainly_unique(text: str, value: Any) -> bool:
    """True when the text can be proven, at C speed, to nest at most MAX_DEPTH levels and to repeat
    no key (the common case: an AdmissionReview as the API server writes it), so that the parsed tree
    need not be walked. Brackets bound the depth. Without a backslash every string of the text is
    literal, so orjson writes the same strings back and `":` counts the same keys plus the same
    strings that start with ":"; a dropped duplicate (and its value) can only lower the count of the
    re-written text. Anything else takes the walk below."""
    if "\\" in text or text.count("{") + text.count("[") > MAX_DEPTH:
        return False
    bound = _key_bound(text)
    if bound < 0:
        return False
    try:
        return bound == orjson.dumps(value).count(b'":')
    except TypeError:  # a value orjson cannot write back (a lone surrogate): the walk decides
        return False


def _check_unique_keys(text: str, members: int) -> None:
    """A duplicate key leaves fewer members in the parsed objects than keys in the text: the keys
    are counted exactly, and only when they are more is the text scanned again to say which key and
    where."""
    keys = _STRING_OR_KEY_RE.findall(text)
    if len(keys) - keys.count("") == members:
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
                raise DocumentError(duplicate_key_message(key), *line_column(text, match.start()))
            stack[-1].add(key)


def duplicate_key_message(key: str) -> str:
    return f"duplicate key {json.dumps(key)[:200]}: the API server's strict decoding refuses it"


def _tree_shape(value: Any) -> tuple[int, int]:
    """(keys of every object, nesting depth) of a parsed JSON value, level by level: about 10 µs for a
    20-skill AdmissionReview, linear in the number of containers and never recursive. The depth
    stops being counted past MAX_DEPTH (orjson allows 1024 levels; the standard parser more)."""
    members = 0
    depth = 0
    level = [value] if type(value) is dict or type(value) is list else []
    while level:
        depth += 1
        if depth > MAX_DEPTH:
            break
        members += sum(len(node) for node in level if type(node) is dict)
        level = [
            child
            for node in level
            for child in (node.values() if type(node) is dict else node)
            if type(child) is dict or type(child) is list
        ]
    return members, depth


_JSON_TOKEN_RE = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


def _too_deep(text: str) -> DocumentError:
    """The error for JSON nested beyond MAX_DEPTH, placed where the limit is crossed."""
    depth = 0
    for token in _JSON_TOKEN_RE.finditer(text):
        char = token.group()[0]
        if char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return DocumentError(f"nesting deeper than {MAX_DEPTH} levels", *line_column(text, token.start()))
        elif char in "]}":
            depth -= 1
    return DocumentError(f"nesting deeper than {MAX_DEPTH} levels")


# -- positions and writing -------------------------------------------------------------------------


def line_column(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


def _position(text: str, pattern: re.Pattern[str]) -> tuple[int | None, int | None]:
    match = pattern.search(text)
    return line_column(text, match.start()) if match else (None, None)


def dump_json(value: Any, default: Callable[[Any], Any] | None = None) -> bytes:
    """Compact JSON bytes: orjson, or the standard encoder for what orjson refuses (a lone surrogate
    that the YAML or standard JSON parser let through is escaped as \\udXXX)."""
    try:
        return orjson.dumps(value, default=default)
    except TypeError:
        return json.dumps(value, default=default, separators=(",", ":")).encode()
