"""Whether a running pod still has the skills its AgentRuntime would give it now (docs/skill-changes.md).

Pods get skills only when they are created, so after an AgentRuntime changes its running pods keep
the old set. A pod is stale when the fingerprint in its `<domain>/skills-injected` record differs
from the fingerprint of what the mutation would inject now. "What would be injected" is never
defined here: it is matching (`resolve_workload` + `AgentRuntimeIndex.lookup`, as the mutation does)
followed by the delivery plan (app.core.mutation.delivery) and `injected_skills` + `skills_fingerprint`,
the functions the patch builder writes the record with: a skill that would now be delivered another way
(extracted instead of mounted as an image volume, or another `path`) makes the pod stale. Records written
before the fingerprint existed are compared by their `skills` map (name -> image), which is all they
hold; records written before paths and extraction existed have the fingerprint they would have now.

Pure: no I/O. The reconciler and `skill-webhook stale` both call `pod_staleness`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, NamedTuple, Protocol

from app.core.matching.index import AgentRuntimeIndex
from app.core.mutation.delivery import DeliveryPlan, DeliveryPolicy, DeliverySetting, NodeRuntimes, plan_delivery
from app.core.mutation.injection import InjectedRecord, InjectedSkill, injected_skills, read_injected_record, skills_fingerprint
from app.core.model import AgentRuntime, volume_name
from app.core.mutation.review import MutationOptions
from app.core.names import DEFAULT_DOMAIN, Domain
from app.core.mutation.image_policy import ImagePolicy, apply_image_policy
from app.core.matching.workload import resolve_workload
from app.core.objects import list_of, mapping_of, text_of

# What `Staleness.reason` says (also the `reason` of `skill-webhook stale -o json`).
CURRENT = "current"  # the record matches what would be injected now
OPTED_OUT = "opted-out"  # labelled <domain>/skills-inject: disabled: never stale
IMAGE_VOLUMES_OFF = "image-volumes-off"  # delivery forced to image volumes, which are off: nothing is injected
NOT_INJECTED = "not-injected"  # no record and no skills apply: nothing to do
CHANGED = "changed"  # the fingerprint (or, for a legacy record, the skills map) differs
UNRECORDED = "no-record"  # no record while skills now apply
RUNTIME_GONE = "runtime-gone"  # a record while no AgentRuntime matches any more
NO_SKILLS = "no-skills"  # a record while the matched AgentRuntime declares no skills
INVALID = "invalid-agentruntime"  # the matched AgentRuntime has errors: its new pods are denied

# Provides the image reference to inject per skill name for an AgentRuntime (digest pinning); None or
# a missing name: the image as written.
ReferencesProvider = Callable[[AgentRuntime], "Mapping[str, str] | None"]


class _PodLike(Protocol):
    def as_pod(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class StalenessOptions:
    domain: Domain = DEFAULT_DOMAIN
    # As the mutation's options: which way skills are delivered. Where delivery is forced to image
    # volumes and they are off nothing is injected, and judging every injected pod stale for it would
    # only churn pods to take their skills away.
    image_volumes: bool = True
    image_volumes_reason: str = ""
    delivery: DeliverySetting = "auto"
    nodes: NodeRuntimes | None = None
    references: ReferencesProvider | None = None
    # Where no resolver runs (`skill-webhook stale` from a laptop), a recorded `<image>@<digest>` is taken
    # as the current injection of `<image>`: only the registry could say whether the tag moved since.
    # Likewise the delivery the pod's spec shows, and the path it mounts where the skill names none:
    # only the registry (an artifact?) and the serving webhook's view of the cluster decide those.
    trust_recorded_digests: bool = False
    # The ImagePolicy `references` applies, when there is one (its facts also decide deliveries).
    image_policy: Any = None

    @classmethod
    def from_mutation(cls, mutation: MutationOptions) -> "StalenessOptions":
        """The options that judge pods as `mutation` injects them: same domain, same image-volume
        decision, and the references its image policy would pin (one definition of both)."""
        policy = mutation.image_policy
        return cls(domain=mutation.domain, image_volumes=mutation.image_volumes,
                   image_volumes_reason=mutation.image_volumes_reason, delivery=mutation.delivery,
                   nodes=mutation.nodes,
                   references=_pinned_references(policy) if policy is not None else None,
                   image_policy=policy)

    @property
    def policy(self) -> DeliveryPolicy:
        return DeliveryPolicy(self.delivery, self.image_volumes, self.image_volumes_reason, self.nodes)

    def deliveries(self, runtime: AgentRuntime) -> DeliveryPlan:
        """How the mutation would deliver `runtime`'s skills now."""
        images = self.image_policy
        return plan_delivery(self.policy, runtime.spec.skills, runtime.annotation(self.domain.skill_delivery),
                             images.facts if images is not None else None, self.domain.skill_delivery)


def _pinned_references(policy: ImagePolicy) -> ReferencesProvider:
    def references(runtime: AgentRuntime) -> Mapping[str, str]:
        return apply_image_policy(policy, runtime.spec.skills).references

    return references


@dataclass(frozen=True, slots=True)
class Staleness:
    """The verdict on one pod, with what differs in words (`blog-writer: ghcr.io/a:v1 -> ghcr.io/a:v2`)."""

    stale: bool
    reason: str
    namespace: str
    pod: str
    # The AgentRuntime now matched (None when none is), and the name the gauge and report use: the
    # matched one, else the one the record names (a deleted AgentRuntime).
    runtime: AgentRuntime | None
    agent_runtime: str
    differences: tuple[str, ...] = ()
    recorded_fingerprint: str = ""
    expected_fingerprint: str = ""
    # The matched AgentRuntime's validation problems (reason INVALID): its new pods are denied, so
    # rolling its pods would take them down and bring none back.
    problems: tuple[str, ...] = field(default=())


class Expected(NamedTuple):
    """What the mutation would inject now for an AgentRuntime, and its fingerprint ("" for nothing)."""

    skills: tuple[InjectedSkill, ...]
    fingerprint: str


def expected_skills(runtime: AgentRuntime | None, options: StalenessOptions) -> tuple[InjectedSkill, ...]:
    """What the mutation would inject now for `runtime` (empty: nothing)."""
    if runtime is None or not runtime.spec.skills:
        return ()
    plan = options.deliveries(runtime)
    if plan.blocked is not None:
        return ()
    references = options.references(runtime) if options.references is not None else None
    return injected_skills(runtime.spec.skills, references, plan.skills)


def expected_injection(runtime: AgentRuntime | None, options: StalenessOptions) -> Expected:
    wanted = expected_skills(runtime, options)
    return Expected(wanted, skills_fingerprint(wanted) if wanted else "")


def pod_staleness(
    pod: dict[str, Any] | _PodLike,
    index: AgentRuntimeIndex,
    options: StalenessOptions = StalenessOptions(),
    expected: Callable[[AgentRuntime], Expected] | None = None,
) -> Staleness:
    """Judge one pod (a pod dict, or a compact record with `as_pod()`) against the index as it is now.
    `expected` gives what would be injected for the matched AgentRuntime, for callers that judge many
    pods of one AgentRuntime at once (default: `expected_injection`, worked out for this pod)."""
    obj = pod if isinstance(pod, dict) else pod.as_pod()
    metadata = mapping_of(obj.get("metadata"))
    namespace, name = text_of(metadata.get("namespace")), text_of(metadata.get("name"))
    labels = mapping_of(metadata.get("labels"))
    record = read_injected_record(mapping_of(metadata.get("annotations")).get(options.domain.skills_injected))
    recorded_name = record.agent_runtime if record is not None else ""

    def verdict(stale: bool, reason: str, runtime: AgentRuntime | None = None, **rest: Any) -> Staleness:
        label = runtime.metadata.name if runtime is not None else recorded_name
        return Staleness(stale, reason, namespace, name, runtime, label,
                         recorded_fingerprint=record.fingerprint if record is not None else "", **rest)

    if labels.get(options.domain.skills_inject_label) == "disabled":
        return verdict(False, OPTED_OUT)
    runtime = index.lookup(namespace, resolve_workload(obj)).runtime
    if not options.image_volumes and _nothing_injected(runtime, options):
        return verdict(False, IMAGE_VOLUMES_OFF, runtime)
    problems = tuple(getattr(runtime, "problems", ()) or ()) if runtime is not None else ()
    if problems:
        # The cache keeps nothing of an invalid AgentRuntime's skills, and rolling its pods would only
        # take them down: their replacements are denied. Reported, so that someone fixes it.
        head = f'AgentRuntime "{runtime.metadata.name}" is invalid, its new pods are denied: ' + "; ".join(problems)
        return verdict(True, INVALID, runtime, differences=(head,), problems=problems)
    if options.trust_recorded_digests and record is not None:
        in_pod = _injected_in_pod(obj, record)
        wanted = tuple(_as_delivered(_as_recorded(s, record.skills.get(s.name)), in_pod.get(s.name), runtime)
                       for s in expected_skills(runtime, options))
        fingerprint = skills_fingerprint(wanted) if wanted else ""
    elif runtime is not None and expected is not None:
        wanted, fingerprint = expected(runtime)
    else:
        wanted, fingerprint = expected_injection(runtime, options)

    if record is None:
        if not wanted:
            return verdict(False, NOT_INJECTED, runtime)
        lines = ("no record while skills now apply", *(f"+ {s.name}" for s in wanted))
        return verdict(True, UNRECORDED, runtime, differences=lines, expected_fingerprint=fingerprint)
    if not wanted:
        if runtime is None:
            gone = index.get(namespace, recorded_name) is None if recorded_name else True
            head = (f'AgentRuntime "{recorded_name}" deleted' if gone and recorded_name else
                    "AgentRuntime deleted" if gone else
                    f'AgentRuntime "{recorded_name}" no longer targets this pod\'s workload')
            reason = RUNTIME_GONE
        else:
            head, reason = f'AgentRuntime "{runtime.metadata.name}" declares no skills now', NO_SKILLS
        return verdict(True, reason, runtime, differences=(head, *(f"- {n}" for n in record.skills)))

    if record.fingerprint:
        stale = record.fingerprint != fingerprint
    else:  # a record from before the fingerprint: its skills map is all it says
        stale = dict(record.skills) != {s.name: s.image for s in wanted}
    if not stale:
        # One string for both fingerprints (they are equal): thousands of verdicts are kept.
        return Staleness(False, CURRENT, namespace, name, runtime, runtime.metadata.name,
                         recorded_fingerprint=fingerprint if record.fingerprint else "", expected_fingerprint=fingerprint)
    lines = _differences(record, _injected_in_pod(obj, record), wanted)
    if recorded_name and recorded_name != runtime.metadata.name:
        lines = (f'AgentRuntime "{recorded_name}" -> "{runtime.metadata.name}"', *lines)
    return verdict(True, CHANGED, runtime, differences=lines, expected_fingerprint=fingerprint)


def _nothing_injected(runtime: AgentRuntime | None, options: StalenessOptions) -> bool:
    """With image volumes off: whether the mutation injects nothing for `runtime`'s pods (delivery forced
    to image volumes), so that they are not judged at all."""
    if runtime is None or not runtime.spec.skills:
        return options.delivery == "image"
    return options.deliveries(runtime).blocked is not None


def _as_recorded(skill: InjectedSkill, recorded: str | None) -> InjectedSkill:
    if recorded is not None and "@" not in skill.image and recorded.startswith(skill.image + "@"):
        return skill._replace(image=recorded)
    return skill


def _as_delivered(skill: InjectedSkill, seen: _InPod | None, runtime: AgentRuntime | None) -> InjectedSkill:
    if seen is None:
        return skill
    declared = next((s.path for s in runtime.spec.skills if s.name == skill.name), None) if runtime else None
    return skill._replace(delivery=seen.delivery, path=seen.path if declared is None else skill.path)


# -- describing the difference -----------------------------------------------------------------------


class _InPod(NamedTuple):
    """A skill as the pod's spec shows it: the agent's mount path and subPath, the image volume's pull
    policy, and the delivery its volume tells (an emptyDir: extraction)."""

    mount_path: str | None
    pull_policy: str | None
    path: str | None
    delivery: str


def _injected_in_pod(pod: dict[str, Any], record: InjectedRecord) -> dict[str, _InPod]:
    """Per recorded skill, what the pod really has, read from its spec (the record keeps only images).
    Empty when the pod came without its spec (a compact informer record)."""
    spec = mapping_of(pod.get("spec"))
    volumes = {v.get("name"): v for v in list_of(spec.get("volumes")) if isinstance(v, dict)}
    containers = [c for c in list_of(spec.get("containers")) if isinstance(c, dict)]
    container = next((c for c in containers if c.get("name") == record.container), None)
    mounts = {m.get("name"): m for m in list_of(mapping_of(container).get("volumeMounts")) if isinstance(m, dict)}
    found: dict[str, _InPod] = {}
    for skill in record.skills:
        volume = volumes.get(volume_name(skill))
        mount = mounts.get(volume_name(skill))
        if volume is None and mount is None:
            continue
        image = mapping_of(mapping_of(volume).get("image"))
        path, sub_path = mapping_of(mount).get("mountPath"), mapping_of(mount).get("subPath")
        found[skill] = _InPod(
            path if isinstance(path, str) else None,
            text_of(image.get("pullPolicy")) or None,
            sub_path if isinstance(sub_path, str) and sub_path else None,
            "extract" if "emptyDir" in mapping_of(volume) else "image",
        )
    return found


def _differences(
    record: InjectedRecord, in_pod: Mapping[str, _InPod], wanted: tuple[InjectedSkill, ...]
) -> tuple[str, ...]:
    lines: list[str] = []
    wanted_names = [s.name for s in wanted]
    lines += [f"- {n}" for n in record.skills if n not in wanted_names]
    lines += [f"+ {s.name}" for s in wanted if s.name not in record.skills]
    unexplained = False
    for skill in wanted:
        if skill.name not in record.skills:
            continue
        before = record.skills[skill.name]
        if before != skill.image:
            lines.append(f"{skill.name}: {before} -> {skill.image}")
        seen = in_pod.get(skill.name)
        if seen is None:
            unexplained = True
            continue
        if seen.mount_path is not None and seen.mount_path != skill.mountPath:
            lines.append(f"{skill.name}: mountPath {seen.mount_path} -> {skill.mountPath}")
        if seen.delivery != skill.delivery:
            lines.append(f"{skill.name}: delivery {seen.delivery} -> {skill.delivery}")
        elif skill.delivery == "image" and seen.pull_policy != skill.pullPolicy:
            before_policy, now_policy = seen.pull_policy or "(default)", skill.pullPolicy or "(default)"
            lines.append(f"{skill.name}: pullPolicy {before_policy} -> {now_policy}")
        if seen.path != skill.path:
            lines.append(f"{skill.name}: path {seen.path or '(image root)'} -> {skill.path or '(image root)'}")
    kept = [n for n in record.skills if n in wanted_names]
    if kept != [n for n in wanted_names if n in record.skills]:
        lines.append("skill order changed")
    if not lines:
        # The fingerprint moved but neither the record nor the pod's spec at hand says where.
        lines.append("mountPath, pullPolicy, path or delivery changed" if unexplained else "injected skills changed")
    return tuple(lines)
