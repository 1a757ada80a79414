"""Validation of AgentRuntime objects: the rules, OCI references, mount paths, field errors.

Pure: no I/O. `batch.validate_documents` serves the offline CLI and the /validate dry run (one function,
so both give the same verdict); `agentruntime.review_agentruntime` is the /validate admission decision;
`agentruntime.stored_object_verdict` checks an object as the cache keeps it; `skills.skills_source` says
where an object declares its skills (spec.skills or the `<domain>/skill-images` annotation).

Each module is imported by name: a reader of one, such as `oci` for the puller's reference parsing, does
not pay for pydantic and every rule.
"""
