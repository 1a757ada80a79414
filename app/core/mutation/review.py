"""The /mutate decision for one pod: match, re-check, choose the container, build the patch
(docs/mutation.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.core.admission import AdmissionDecision, AdmissionRequest
from app.core.matching.container import AgentContainerNotFound, choose_agent_container
from app.core.matching.index import AgentRuntimeIndex
from app.core.mutation.delivery import DeliveryPolicy, DeliverySetting, NodeRuntimes, plan_delivery
from app.core.mutation.injection import read_injected_record
from app.core.mutation.puller import DEFAULT_PULLER, PullerConfig
from app.core.model import DEFAULT_SIDECAR_NAMES
from app.core.names import DEFAULT_DOMAIN, Domain
from app.core.mutation.patch import MalformedPod, SkillConflict, build_skill_patch, pod_containers
from app.core.mutation.image_policy import ImagePolicy, apply_image_policy
from app.core.matching.workload import resolve_workload

NOT_SYNCED_MESSAGE = "skill cache not synchronized yet; retry shortly"


@dataclass(frozen=True)
class MutationOptions:
    sidecar_names: frozenset[str] = frozenset(DEFAULT_SIDECAR_NAMES)
    # Whether the API server keeps image volumes (see app.core.mutation.capability); when it does not,
    # `--delivery auto` extracts every skill, and only `--delivery image` injects nothing (the server
    # would drop the volumes and mounts silently, and the pod would claim skills it does not have).
    image_volumes: bool = True
    image_volumes_reason: str = ""
    domain: Domain = DEFAULT_DOMAIN
    # What the registry resolver knows (digests, mountability, signatures) and what to do with it;
    # None: the resolver is off and images are injected as written.
    image_policy: ImagePolicy | None = None
    # How skills reach pods (app.core.mutation.delivery): `--delivery`, the node informer's last verdict
    # on container runtimes (None: nodes not watched), and how the puller init container is made.
    delivery: DeliverySetting = "auto"
    nodes: NodeRuntimes | None = None
    puller: PullerConfig = DEFAULT_PULLER

    @property
    def delivery_policy(self) -> DeliveryPolicy:
        return DeliveryPolicy(self.delivery, self.image_volumes, self.image_volumes_reason, self.nodes)


def review_pod(request: AdmissionRequest, index: AgentRuntimeIndex, options: MutationOptions) -> AdmissionDecision:
    """Decide an AdmissionReview request sent to /mutate."""
    if request.group or request.kind != "Pod" or request.sub_resource:
        return AdmissionDecision(outcome="ignored")
    if request.operation != "CREATE":
        return AdmissionDecision(outcome="ignored")
    if not isinstance(request.object, dict):
        return AdmissionDecision.deny(400, "request.object must be a Pod object", reason="BadRequest")
    # dryRun needs no special case: the mutation has no side effects, so a dry run gets the same patch.
    return mutate_pod(request.object, request.namespace, index, options)


def mutate_pod(
    pod: dict[str, Any], namespace: str, index: AgentRuntimeIndex, options: MutationOptions
) -> AdmissionDecision:
    """Decide what to do to `pod` (created in `namespace`); the patch is relative to `pod` as given."""
    metadata = pod.get("metadata") if isinstance(pod.get("metadata"), dict) else {}
    labels = metadata.get("labels") if isinstance(metadata.get("labels"), dict) else {}
    domain = options.domain
    if labels.get(domain.skills_inject_label) == "disabled":
        return AdmissionDecision(outcome="opted-out")
    if not index.synced.is_set():
        return _denied(503, NOT_SYNCED_MESSAGE, "ServiceUnavailable", "not-synced")
    if not namespace:
        namespace = metadata.get("namespace") if isinstance(metadata.get("namespace"), str) else ""
    match = index.lookup(namespace, resolve_workload(pod))
    runtime = match.runtime
    if runtime is None:
        return AdmissionDecision(outcome="no-match")
    decision = AdmissionDecision(runtime=runtime.metadata.name, warnings=match.warnings)
    if runtime.problems:
        # Stored before the validating webhook existed, while it was down, or read from a file: its
        # pods get nothing of it rather than a mount at /proc or an image outside the allow-list.
        return _denied(
            422,
            f'AgentRuntime "{runtime.metadata.name}" is invalid: ' + "; ".join(runtime.problems),
            "Invalid",
            "invalid-agentruntime",
            decision,
        )
    skills = runtime.spec.skills
    if not skills:
        decision.outcome = "no-skills"
        return decision
    plan = plan_delivery(
        options.delivery_policy, skills, runtime.annotation(domain.skill_delivery),
        options.image_policy.facts if options.image_policy is not None else None, domain.skill_delivery,
    )
    if plan.blocked is not None:
        decision.outcome = "image-volumes-off"
        decision.warnings.append(f'skills of AgentRuntime "{runtime.metadata.name}" were not injected: {plan.blocked}')
        return decision

    try:
        containers = pod_containers(pod)
    except MalformedPod as err:
        return _deny_malformed(decision, str(err))
    names = [c.get("name") if isinstance(c.get("name"), str) else "" for c in containers]
    annotations = metadata.get("annotations") if isinstance(metadata.get("annotations"), dict) else {}
    record = read_injected_record(annotations.get(domain.skills_injected))
    images = apply_image_policy(options.image_policy, skills)
    decision.warnings += images.warnings
    if images.denial is not None:
        code, reason, message = images.denial
        return _denied(code, f'AgentRuntime "{runtime.metadata.name}": {message}', reason, "supply-denied", decision)
    try:
        choice = choose_agent_container(
            names, annotations, options.sidecar_names, domain, record.container if record else None
        )
        decision.warnings += choice.warnings
        patch = build_skill_patch(
            pod, runtime, choice.position, domain=domain,
            references=images.references, skills_metadata=images.metadata,
            deliveries=plan.skills, puller=options.puller,
        )
    except AgentContainerNotFound as err:
        return _deny_conflict(decision, f'AgentRuntime "{runtime.metadata.name}": {err}')
    except SkillConflict as err:
        return _deny_conflict(decision, str(err))
    except MalformedPod as err:
        return _deny_malformed(decision, str(err))
    decision.patch = patch.operations
    # A skill kept as the pod already has it (reinvocation) is not what the plan warned about.
    decision.warnings += [s.warning for s, done in zip(plan.skills, patch.injected)
                          if s.warning and done.delivery == s.delivery]
    decision.warnings += patch.warnings
    decision.skills = [s.name for s in skills]
    decision.extracted = sum(1 for s in patch.injected if s.delivery == "extract")
    decision.unpinned = images.unpinned
    decision.outcome = "injected" if patch.operations else "already-injected"
    return decision


def _deny_conflict(decision: AdmissionDecision, message: str) -> AdmissionDecision:
    return _denied(409, message, "Conflict", "conflict", decision)


def _deny_malformed(decision: AdmissionDecision, message: str) -> AdmissionDecision:
    return _denied(400, f"pod cannot be patched: {message}", "BadRequest", "malformed", decision)


def _denied(
    code: int, message: str, reason: str, outcome: str, so_far: AdmissionDecision | None = None
) -> AdmissionDecision:
    """A denial that keeps the AgentRuntime and warnings found so far (for the log line and kubectl)."""
    return AdmissionDecision.deny(
        code,
        message,
        reason=reason,
        outcome=outcome,
        runtime=so_far.runtime if so_far else None,
        warnings=so_far.warnings if so_far else [],
    )
