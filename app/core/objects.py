"""Fields of raw Kubernetes objects (dicts as orjson or the strict loader read them), taken without
trusting their types: a field of another type reads as empty, so no object can make a reader raise."""

from __future__ import annotations

from typing import Any


def mapping_of(value: Any) -> dict[str, Any]:
    """`value` when it is a JSON object, else an empty one."""
    return value if isinstance(value, dict) else {}


def list_of(value: Any) -> list[Any]:
    """`value` when it is a JSON array, else an empty one."""
    return value if isinstance(value, list) else []


def text_of(value: Any) -> str:
    """`value` when it is a string, else ""."""
    return value if isinstance(value, str) else ""
