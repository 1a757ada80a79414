"""Validation of AgentRuntime objects: the rules, OCI references, mount paths, field errors.

Pure: no I/O. `validate_documents` serves the offline CLI and the /validate dry run (one function, so
both give the same verdict); `review_agentruntime` is the /validate admission decision;
`stored_object_errors` re-checks a cached object at mutation; `skills_source` says where an object
declares its skills (spec.skills or the `<domain>/skill-images` annotation).
"""

from app.core.validation.agentruntime import (
    ValidationOptions,
    review_agentruntime,
    stored_object_errors,
    stored_object_verdict,
    target_group_problem,
    validate_agentruntime,
)
from app.core.validation.batch import BatchReport, DocumentResult, validate_documents
from app.core.validation.fields import ErrorType, FieldError, FieldPath, Key
from app.core.validation.findings import ValidationReport
from app.core.validation.oci import (
    ImageReference,
    InvalidImageReference,
    parse_reference,
    parse_registry_prefix,
    registry_allowed,
)
from app.core.validation.paths import is_within, normalise
from app.core.validation.skills import BOTH_FORMS_MESSAGE, MAX_EXAMINED_SKILLS, SkillsSource, annotation_path, check_skills, skills_source

__all__ = [
    "BOTH_FORMS_MESSAGE",
    "MAX_EXAMINED_SKILLS",
    "BatchReport",
    "DocumentResult",
    "Key",
    "SkillsSource",
    "annotation_path",
    "check_skills",
    "skills_source",
    "stored_object_errors",
    "stored_object_verdict",
    "target_group_problem",
    "validate_documents",
    "ErrorType",
    "FieldError",
    "FieldPath",
    "ImageReference",
    "InvalidImageReference",
    "ValidationOptions",
    "ValidationReport",
    "is_within",
    "normalise",
    "parse_reference",
    "parse_registry_prefix",
    "registry_allowed",
    "review_agentruntime",
    "validate_agentruntime",
]
