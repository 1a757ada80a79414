"""What one validation found: field errors and warnings, collected and then put in field order."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from pydantic import ValidationError

from app.core.model import validated
from app.core.validation import fields as f
from app.core.validation.fields import FieldError, FieldPath

_PYDANTIC_TYPE_DETAILS = {
    "string_type": "must be a string",
    "string_unicode": "must be a string",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "dict_type": "must be an object",
    "list_type": "must be a list",
}


@dataclass
class ValidationReport:
    errors: list[str]  # rendered "field: problem" strings, in field order
    warnings: list[str]

    @property
    def allowed(self) -> bool:
        return not self.errors

    def as_dict(self) -> dict[str, Any]:
        return {"allowed": self.allowed, "errors": list(self.errors), "warnings": list(self.warnings)}


@dataclass
class Findings:
    errors: list[FieldError] = field(default_factory=list)
    warnings: list[tuple[FieldPath, str]] = field(default_factory=list)

    def add(self, error: FieldError) -> None:
        self.errors.append(error)

    def warn(self, path: FieldPath, text: str) -> None:
        self.warnings.append((path, text))

    def typed(self, model: type, raw: dict, base: tuple[str | int, ...]) -> Any:
        """`raw` as the shared pydantic model, or None after reporting each of its type errors as
        a field error beneath `base`."""
        try:
            return validated(model, raw)
        except ValidationError as exc:
            self.errors.extend(pydantic_field_errors(exc, FieldPath(base)))
            return None

    def error_texts(self, order: Mapping[str, Mapping[str, int]]) -> tuple[str, ...]:
        """The errors of `report`, rendered and in the same order, without the warnings."""
        if not self.errors:
            return ()
        return tuple(str(e) for e in sorted(self.errors, key=lambda error: f.field_order_key(error.path, order)))

    def report(self, order: Mapping[str, Mapping[str, int]]) -> ValidationReport:
        """Errors and warnings rendered, each sorted by field (stable: one field keeps its order)."""

        def key(path: FieldPath) -> tuple:
            return f.field_order_key(path, order)

        errors = sorted(self.errors, key=lambda error: key(error.path))
        warnings = sorted(self.warnings, key=lambda warning: key(warning[0]))
        return ValidationReport([str(e) for e in errors], [f"{path}: {text}" for path, text in warnings])


def pydantic_field_errors(exc: ValidationError, base: FieldPath) -> list[FieldError]:
    """Pydantic's errors as API-server field errors (loc ("skills", 1, "name") -> "...skills[1].name")."""
    found: list[FieldError] = []
    for error in exc.errors(include_url=False, include_context=False):
        kind, loc = error["type"], error["loc"]
        if kind == "invalid_key":  # loc is the offending key itself, not a field
            found.append(f.invalid(base, type_name(error["input"]), "field names must be strings"))
            continue
        path = FieldPath((*base, *loc))
        if kind == "missing":
            found.append(f.required(path))
        else:
            found.append(f.invalid(path, short_value(error["input"]), _PYDANTIC_TYPE_DETAILS.get(kind, error["msg"])))
    return found


def type_name(value: Any) -> str:
    """How a wrong-typed value is shown: its JSON type, not its (possibly huge) content."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def short_value(value: Any) -> Any:
    """Scalars are shown as they are; containers by their type (a nested object is no help)."""
    return value if value is None or isinstance(value, (str, int, float, bool)) else type_name(value)
