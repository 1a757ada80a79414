"""How each skill reaches the pod: an image volume, or extraction into an emptyDir by the puller init
container (docs/delivery.md).

Image volumes are the better delivery (the kubelet pulls and caches, nothing runs in the pod), but
not every cluster or package can use them: an API server with the ImageVolume gate off drops them,
containerd before 2.1 and CRI-O before 1.31 cannot mount them, and an OCI *artifact* (the agentskills
packaging) is mounted as an empty directory. `--delivery auto` extracts exactly where an image volume
would fail; `image` and `extract` force one way, for the whole webhook or (annotation
`<domain>/skill-delivery`) for one AgentRuntime.

Pure: the decision is a function of the policy, the AgentRuntime and what the resolver knows, so the
mutation and the staleness check (which compares fingerprints that include the delivery) agree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterable, Literal, NamedTuple, Sequence

from app.core.model import Skill
from app.core.registry_facts import ImageFacts
from app.core.validation.paths import skill_path_problems
from app.core.validation.skills import DELIVERY_VALUES

Delivery = Literal["image", "extract"]
DeliverySetting = Literal["auto", "image", "extract"]
DELIVERIES: tuple[Delivery, ...] = DELIVERY_VALUES  # type: ignore[assignment]

# The first release of each container runtime that mounts image volumes.
IMAGE_VOLUME_RUNTIMES = {"containerd": (2, 1), "cri-o": (1, 31)}
_RUNTIME_VERSION = re.compile(r"v?(\d+)\.(\d+)")
# Nodes named in a reason, at most: a thousand-node cluster must not make a thousand-name log line.
SHOWN_NODES = 5

FactsLookup = Callable[[str], "ImageFacts | None"]


def runtime_mounts_image_volumes(runtime_version: str) -> bool | None:
    """Whether a node's `containerRuntimeVersion` ("containerd://2.0.5", "cri-o://1.31.2") can mount
    image volumes; None for a runtime or version this does not know (it is not judged)."""
    name, separator, version = runtime_version.partition("://")
    first = IMAGE_VOLUME_RUNTIMES.get(name.strip().lower())
    match = _RUNTIME_VERSION.match(version.strip())
    if not separator or first is None or match is None:
        return None
    return (int(match.group(1)), int(match.group(2))) >= first


@dataclass(frozen=True)
class NodeRuntimes:
    """What the node informer saw: how many nodes, and the (name, containerRuntimeVersion) pairs of
    those that cannot mount image volumes and of those whose runtime is not known here (sorted)."""

    nodes: int = 0
    unable: tuple[tuple[str, str], ...] = ()
    unknown: tuple[tuple[str, str], ...] = ()

    @property
    def can_mount(self) -> bool:
        return not self.unable

    def reason(self) -> str:
        if not self.unable:
            text = f"all {self.nodes} nodes run containerd 2.1+ or CRI-O 1.31+"
            if self.unknown:
                text = (f"{self.nodes - len(self.unknown)} of {self.nodes} nodes run containerd 2.1+ or CRI-O 1.31+; "
                        f"not judged: {_named(self.unknown)}")
            return text
        return (f"{len(self.unable)} of {self.nodes} nodes run a container runtime that cannot mount image volumes "
                f"(containerd < 2.1, CRI-O < 1.31): {_named(self.unable)}")


def judge_nodes(nodes: Iterable[tuple[str, str]]) -> NodeRuntimes:
    """NodeRuntimes of (node name, containerRuntimeVersion) pairs."""
    unable: list[tuple[str, str]] = []
    unknown: list[tuple[str, str]] = []
    count = 0
    for name, version in nodes:
        count += 1
        verdict = runtime_mounts_image_volumes(version)
        if verdict is False:
            unable.append((name, version))
        elif verdict is None:
            unknown.append((name, version))
    return NodeRuntimes(count, tuple(sorted(unable)), tuple(sorted(unknown)))


def _named(pairs: Sequence[tuple[str, str]]) -> str:
    shown = ", ".join(f"{name} ({version or 'no runtime version'})" for name, version in pairs[:SHOWN_NODES])
    more = len(pairs) - SHOWN_NODES
    return shown + (f" and {more} more" if more > 0 else "")


@dataclass(frozen=True)
class DeliveryPolicy:
    """The webhook-wide inputs of the decision: `--delivery`, whether the API server keeps image
    volumes (app.core.mutation.capability) and why, and the nodes' runtimes (None: not watched)."""

    setting: DeliverySetting = "auto"
    image_volumes: bool = True
    image_volumes_reason: str = ""
    nodes: NodeRuntimes | None = None

    def auto_extracts(self) -> str | None:
        """Why `auto` extracts every skill in this cluster (None: only artifacts are extracted)."""
        if not self.image_volumes:
            return f"image volumes are off ({self.image_volumes_reason or 'disabled by configuration'})"
        if self.nodes is not None and not self.nodes.can_mount:
            return self.nodes.reason()
        return None

    def describe(self) -> tuple[str, str]:
        """(what skills without an annotation get, why): for the start-up log and the decision metric."""
        if self.setting == "extract":
            return "extract", "--delivery extract"
        if self.setting == "image":
            if not self.image_volumes:
                return "none", (f"--delivery image, and image volumes are off "
                                f"({self.image_volumes_reason or 'disabled by configuration'}): no skill is injected")
            return "image", "--delivery image"
        why = self.auto_extracts()
        if why is not None:
            return "extract", f"--delivery auto: {why}"
        nodes = f"; {self.nodes.reason()}" if self.nodes is not None else "; nodes not watched"
        return "image", f"--delivery auto: image volumes ({self.image_volumes_reason or 'on'}{nodes}), " \
                        "OCI artifacts extracted"


class SkillDelivery(NamedTuple):
    """How one skill is delivered, and the directory inside its image to mount (None: the root)."""

    delivery: Delivery
    path: str | None = None
    reason: str = ""
    # What the pod's creator should know about it (an artifact that an image volume mounts empty).
    warning: str | None = None


@dataclass(frozen=True)
class DeliveryPlan:
    """The deliveries of one AgentRuntime's skills, in spec order; `blocked` says why nothing can be
    injected at all (delivery forced to image volumes where the API server would drop them)."""

    skills: tuple[SkillDelivery, ...] = ()
    blocked: str | None = None

    @property
    def warnings(self) -> tuple[str, ...]:
        return tuple(s.warning for s in self.skills if s.warning)


def default_path(facts: ImageFacts | None) -> str | None:
    """The directory to mount when a skill names none: an agentskills artifact holds its skill in one
    top-level directory named by `io.agentskills.skill.name` (nothing is stripped when unpacking)."""
    if facts is None or not facts.agentskills_artifact:
        return None
    name = facts.agentskills_name or ""
    return name if not skill_path_problems(name) else None


def plan_delivery(
    policy: DeliveryPolicy,
    skills: Sequence[Skill],
    annotation: str | None = None,
    facts: FactsLookup | None = None,
    annotation_key: str = "skill-delivery",
) -> DeliveryPlan:
    """Decide every skill of one AgentRuntime. `annotation` is its `<domain>/skill-delivery` value
    (`annotation_key` names it in reasons); a value other than image/extract is validation's error and
    is ignored here. `facts` looks up what the resolver knows of an image (None: the resolver is off)."""
    if annotation in DELIVERIES:
        setting: DeliverySetting = annotation  # type: ignore[assignment]
        source = f"annotation {annotation_key}: {annotation}"
    else:
        setting, source = policy.setting, f"--delivery {policy.setting}"
    if setting == "image" and not policy.image_volumes:
        return DeliveryPlan(blocked=(
            f"image volumes are off ({policy.image_volumes_reason or 'disabled by configuration'}) "
            f"and delivery is image ({source}), so nothing is extracted instead"
        ))
    cluster = policy.auto_extracts() if setting == "auto" else None
    planned: list[SkillDelivery] = []
    for skill in skills:
        known = facts(skill.image) if facts is not None else None
        artifact = known is not None and known.mountable is False
        path = skill.path if skill.path is not None else default_path(known)
        warning = None
        if setting == "extract":
            delivery, reason = "extract", source
        elif setting == "image":
            delivery, reason = "image", source
            if artifact:
                warning = (f'skill "{skill.name}": image {skill.image} is an OCI artifact: an image volume of it '
                           f"mounts an empty directory, and its delivery is forced to image ({source})")
        elif cluster is not None:
            delivery, reason = "extract", cluster
        elif artifact:
            delivery, reason = "extract", "an OCI artifact: an image volume of it mounts an empty directory"
            warning = (f'skill "{skill.name}": image {skill.image} is an OCI artifact: an image volume of it would '
                       "mount an empty directory; delivered by extraction")
        else:
            delivery, reason = "image", source
        planned.append(SkillDelivery(delivery, path, reason, warning))
    return DeliveryPlan(tuple(planned))
