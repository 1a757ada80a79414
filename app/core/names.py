"""Every label and annotation this project reads or writes, under one configurable domain.

The upstream project was renamed (kagenti -> rossoctl) and with it the prefix of its labels and
annotations, so the prefix is a setting (`--domain`, docs/rossoctl.md).
Nothing else in the code spells a domain: it asks a `Domain` for the full key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

DEFAULT_DOMAIN_PREFIX = "kagenti.io"

# Not ours: kubectl's own annotation, and the label the Deployment controller puts on its pods.
ANNOTATION_DEFAULT_CONTAINER = "kubectl.kubernetes.io/default-container"
LABEL_POD_TEMPLATE_HASH = "pod-template-hash"

# A DNS subdomain, as the API server requires for the prefix of a label or annotation key.
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def check_domain(prefix: str) -> str:
    """`prefix` if it can stand before "/" in a label key, else ValueError saying why."""
    if len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix):
        raise ValueError(f'"{prefix}" is not a DNS subdomain (e.g. kagenti.io, rossoctl.io)')
    return prefix


@dataclass(frozen=True)
class Domain:
    """The keys of one domain; `Domain("rossoctl.io").skills` is "rossoctl.io/skills"."""

    prefix: str = DEFAULT_DOMAIN_PREFIX
    # Labels (selectors of the webhook configuration and the pod informer).
    type_label: str = field(init=False)
    skills_inject_label: str = field(init=False)
    # Pod annotations.
    agent_container: str = field(init=False)
    skills: str = field(init=False)
    skills_injected: str = field(init=False)
    skills_metadata: str = field(init=False)
    # AgentRuntime annotations.
    skills_rollout: str = field(init=False)
    skill_images: str = field(init=False)
    skill_delivery: str = field(init=False)

    def __post_init__(self) -> None:
        check_domain(self.prefix)
        for attribute, suffix in (
            ("type_label", "type"),
            ("skills_inject_label", "skills-inject"),
            ("agent_container", "agent-container"),
            ("skills", "skills"),
            ("skills_injected", "skills-injected"),
            ("skills_metadata", "skills-metadata"),
            ("skills_rollout", "skills-rollout"),
            ("skill_images", "skill-images"),
            ("skill_delivery", "skill-delivery"),
        ):
            object.__setattr__(self, attribute, f"{self.prefix}/{suffix}")


DEFAULT_DOMAIN = Domain()
