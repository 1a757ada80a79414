"""Field paths and field errors in the style of k8s.io/apimachinery/pkg/util/validation/field.

An error renders exactly like the API server's: `spec.skills[1].mountPath: Invalid value: "/proc/x":
must not be /proc or beneath it`, so users who know `kubectl apply` errors read ours without a manual.
Values are quoted with JSON quoting (Go's %q and JSON agree for everything users type), ASCII-only,
so that no input (a lone surrogate, a control character) can make a message unprintable.
"""

from __future__ import annotations

import enum
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

# A hostile object can carry a 3 MiB string; an error message must stay readable and bounded.
MAX_RENDERED_VALUE = 256
_PLAIN_FIELD_RE = re.compile(r"[A-Za-z0-9_$-]+")


class Key(str):
    """A key of a map (labels, annotations), rendered in brackets as the API server does:
    `metadata.annotations[kagenti.io/skill-images]`."""

    __slots__ = ()


# A map key printed bare in brackets; anything else (brackets, quotes, spaces, control characters) is
# JSON-quoted so that it can neither forge another path nor break the line.
_PLAIN_KEY_RE = re.compile(r"[A-Za-z0-9_.$/-]+")


class FieldPath(tuple):
    """A path into an object: field names (str), map keys (Key) and list indices (int). `str()`
    renders it as `spec.skills[1].mountPath`; the root path renders as "<root>"."""

    __slots__ = ()

    def child(self, *names: str) -> "FieldPath":
        return FieldPath((*self, *names))

    def key(self, name: str) -> "FieldPath":
        return FieldPath((*self, Key(name)))

    def index(self, i: int) -> "FieldPath":
        return FieldPath((*self, i))

    def __str__(self) -> str:
        if not self:
            return "<root>"
        out: list[str] = []
        for part in self:
            if isinstance(part, int):
                out.append(f"[{part}]")
            elif isinstance(part, Key):
                out.append(f"[{part}]" if _PLAIN_KEY_RE.fullmatch(part) else f"[{json.dumps(str(part))}]")
            elif not _PLAIN_FIELD_RE.fullmatch(str(part)):
                # A user-supplied key with dots, spaces or control characters must neither forge
                # another path nor break the line.
                out.append(f"[{json.dumps(str(part))}]")
            else:
                out.append(f".{part}" if out else str(part))
        return "".join(out)

    def __repr__(self) -> str:
        return f"FieldPath({str(self)!r})"


class ErrorType(str, enum.Enum):
    """The API server's error types and their exact words."""

    REQUIRED = "Required value"
    INVALID = "Invalid value"
    NOT_SUPPORTED = "Unsupported value"
    DUPLICATE = "Duplicate value"
    TOO_MANY = "Too many"
    FORBIDDEN = "Forbidden"


# Types whose bad value the API server leaves out of the message (the detail says it all).
_VALUELESS = frozenset({ErrorType.REQUIRED, ErrorType.FORBIDDEN})
_OMIT = object()
_UNKNOWN_FIELD_RANK = 1_000


@dataclass(frozen=True)
class FieldError:
    type: ErrorType
    path: FieldPath
    bad_value: Any = _OMIT
    detail: str = ""

    def body(self) -> str:
        """The message without the field: `Invalid value: "x": detail`."""
        text = self.type.value
        if self.type not in _VALUELESS and self.bad_value is not _OMIT:
            text += ": " + render_value(self.bad_value)
        if self.detail:
            text += ": " + self.detail
        return text

    def __str__(self) -> str:
        return f"{self.path}: {self.body()}"


def render_value(value: Any) -> str:
    """A bad value as the API server prints it: strings JSON-quoted, numbers and booleans bare,
    null as null, anything else as compact JSON; never raises, never longer than about 256 chars."""
    if isinstance(value, str):
        return _quote(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        text = _int_text(value)
    elif isinstance(value, float):
        text = repr(value) if math.isfinite(value) else str(value)
    else:
        text = _json_or_repr(value)
    return text if len(text) <= MAX_RENDERED_VALUE else text[:MAX_RENDERED_VALUE] + "...(truncated)"


def quote_all(values: Iterable[str]) -> str:
    return ", ".join(_quote(v) for v in values)


def _quote(text: str) -> str:
    if len(text) > MAX_RENDERED_VALUE:
        return json.dumps(text[:MAX_RENDERED_VALUE]) + "...(truncated)"
    return json.dumps(text)


def _int_text(value: int) -> str:
    try:
        return str(value)
    except ValueError:  # more digits than Python will print (sys.int_info.str_digits_check_threshold)
        return f"<integer of about {int(value.bit_length() * 0.30103)} digits>"


def _json_or_repr(value: Any) -> str:
    try:
        return json.dumps(value, separators=(",", ":"), default=repr)
    except (ValueError, TypeError, RecursionError):
        # Circular structures and keys JSON cannot hold: the type is all that is worth printing.
        return f"<{type(value).__name__}>"


def field_order_key(path: FieldPath, order: Mapping[str, Mapping[str, int]]) -> tuple:
    """Sort key that puts paths in the order the fields appear in an object's schema.

    `order[parent][child]` ranks a field among its siblings ("" is the parent of top-level
    fields); list items keep their index order; fields the table does not know come last, by name.
    A path sorts before the paths beneath it, so `spec.skills: Too many` leads the item errors."""
    key: list[tuple] = []
    parent = ""
    for part in path:
        if isinstance(part, int):
            key.append((1, part, ""))
        else:
            key.append((0, order.get(parent, {}).get(part, _UNKNOWN_FIELD_RANK), str(part)))
            parent = str(part)
    return tuple(key)


# -- constructors named after the Go functions ------------------------------------------------------


def required(path: FieldPath, detail: str = "") -> FieldError:
    return FieldError(ErrorType.REQUIRED, path, detail=detail)


def invalid(path: FieldPath, value: Any, detail: str) -> FieldError:
    return FieldError(ErrorType.INVALID, path, value, detail)


def not_supported(path: FieldPath, value: Any, supported: Iterable[str]) -> FieldError:
    return FieldError(ErrorType.NOT_SUPPORTED, path, value, "supported values: " + quote_all(supported))


def duplicate(path: FieldPath, value: Any, detail: str = "") -> FieldError:
    return FieldError(ErrorType.DUPLICATE, path, value, detail)


def too_many(path: FieldPath, actual: int, limit: int) -> FieldError:
    noun = "item" if limit == 1 else "items"
    return FieldError(ErrorType.TOO_MANY, path, actual, f"must have at most {limit} {noun}")


def forbidden(path: FieldPath, detail: str) -> FieldError:
    return FieldError(ErrorType.FORBIDDEN, path, detail=detail)
