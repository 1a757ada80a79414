"""Validation of AgentRuntime objects (SPEC §5): the rules, OCI references, mount paths, field errors.

Pure: no I/O. `validate_agentruntime` serves the offline CLI and bare-object dry runs;
`review_agentruntime` is the /validate admission decision.
"""

from .agentruntime import ValidationOptions, review_agentruntime, validate_agentruntime
from .fields import ErrorType, FieldError, FieldPath
from .findings import ValidationReport
from .oci import (
    ImageReference,
    InvalidImageReference,
    is_pinned,
    parse_reference,
    parse_registry_prefix,
    registry_allowed,
)
from .paths import is_beneath, is_within, normalise
from .skills import MAX_EXAMINED_SKILLS

__all__ = [
    "MAX_EXAMINED_SKILLS",
    "ErrorType",
    "FieldError",
    "FieldPath",
    "ImageReference",
    "InvalidImageReference",
    "ValidationOptions",
    "ValidationReport",
    "is_beneath",
    "is_pinned",
    "is_within",
    "normalise",
    "parse_reference",
    "parse_registry_prefix",
    "registry_allowed",
    "review_agentruntime",
    "validate_agentruntime",
]
