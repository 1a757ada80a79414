"""Raw AgentRuntime objects (from the API server or a file) -> what the index caches.

Every source decodes through `cached_runtime`, once per object version, so the hot path never parses
or validates: the skills come from `spec.skills` or, where the installed CRD has none, from the
`<domain>/skill-images` annotation (docs/rossoctl.md); and the verdict of
the rules that need no other object is recorded on the cached runtime, because an object can be
stored without the validating webhook having seen it (docs/mutation.md).
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from app.core.model import AgentRuntime
from app.core.validation.agentruntime import ValidationOptions, stored_object_verdict
from app.core.validation.skills import SKILLS_PATH


def cached_runtime(obj: dict[str, Any], options: ValidationOptions) -> AgentRuntime | None:
    """The cacheable AgentRuntime of `obj`, carrying its problems; None when not even its name and
    target can be read (such an object can match no pod). One reading of the object: the rules that
    need no other object, and where it declares its skills, in the same pass."""
    problems, source = stored_object_verdict(obj, options)
    try:
        if problems:
            # Nothing of an invalid object is injected: keep what matching needs, and the verdict.
            # Without a usable target it can match no pod, so there is nothing to keep.
            runtime = AgentRuntime.for_cache(obj, options.domain, skills=[])
            return runtime.with_problems(problems) if runtime.targets_a_workload else None
        # Validation has said that the annotation, when it holds the skills, parses and that
        # spec.skills is not declared too; its list then replaces spec.skills.
        skills = source.raw if source.path != SKILLS_PATH else None
        return AgentRuntime.for_cache(obj, options.domain, skills=skills)
    except ValidationError:
        if not problems:
            raise  # validation passed, so the model must accept it: a disagreement is a bug
        return None

