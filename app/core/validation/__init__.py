"""Validation of AgentRuntime objects: the rules, OCI references, mount paths, field errors.

Pure: no I/O. `validate_documents` serves the offline CLI and the /validate dry run (one function, so
both give the same verdict); `review_agentruntime` is the /validate admission decision;
`stored_object_verdict` checks an object as the cache keeps it; `skills_source` says where an object
declares its skills (spec.skills or the `<domain>/skill-images` annotation).

Names are imported on first use (PEP 562): a reader of one module, such as `oci` for the puller's
reference parsing, does not pay for pydantic and every rule.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "agentruntime": ("ValidationOptions", "review_agentruntime", "stored_object_verdict",
                     "target_group_problem", "validate_agentruntime"),
    "batch": ("BatchReport", "DocumentResult", "validate_documents"),
    "fields": ("ErrorType", "FieldError", "FieldPath", "Key"),
    "findings": ("ValidationReport",),
    "oci": ("ImageReference", "InvalidImageReference", "parse_reference", "parse_registry_prefix", "registry_allowed"),
    "paths": ("is_within", "normalise"),
    "skills": ("BOTH_FORMS_MESSAGE", "MAX_EXAMINED_SKILLS", "SkillsSource", "annotation_path", "check_skills",
               "skills_source"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
