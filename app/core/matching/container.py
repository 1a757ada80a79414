"""Which container is the agent, in the spirit of kubectl's default-container handling."""

from __future__ import annotations

from typing import Any, Iterable, NamedTuple

from app.core.names import ANNOTATION_DEFAULT_CONTAINER, DEFAULT_DOMAIN, Domain

AGENT_CONTAINER_NAME = "agent"


class AgentContainerNotFound(LookupError):
    """Our annotation names a container the pod does not have."""

    def __init__(self, annotation: str, container: str) -> None:
        super().__init__(f'annotation {annotation} names container "{container}", which the pod does not have')
        self.annotation = annotation
        self.container = container


class AgentContainerChoice(NamedTuple):
    position: int
    warnings: tuple[str, ...] = ()


def choose_agent_container(
    container_names: list[str],
    annotations: dict[str, Any],
    sidecar_names: Iterable[str],
    domain: Domain = DEFAULT_DOMAIN,
    recorded: str | None = None,
) -> AgentContainerChoice:
    """The agent container in spec.containers, which must not be empty.

    First match wins: the container named in the pod's own injection record (`recorded`), while it
    still exists: on reinvocation another webhook may have inserted containers since our first call,
    and the skills must stay where they were put, never spread to a second container; our
    `<domain>/agent-container` annotation (naming a missing container is a conflict: the author
    said which one and it is not there); kubectl's default-container annotation (advisory, as kubectl
    treats it: a missing one is skipped with a warning); a container named "agent"; the first
    container that is not a known sidecar; else the first container.
    Skills go into the agent container only: sidecars (proxies, credential helpers) must not see the
    agent's tools, and init/ephemeral containers never run the agent.
    """
    if recorded and recorded in container_names:
        return AgentContainerChoice(container_names.index(recorded))
    wanted = annotations.get(domain.agent_container)
    if isinstance(wanted, str) and wanted:
        if wanted not in container_names:
            raise AgentContainerNotFound(domain.agent_container, wanted)
        return AgentContainerChoice(container_names.index(wanted))
    warnings: tuple[str, ...] = ()
    advisory = annotations.get(ANNOTATION_DEFAULT_CONTAINER)
    if isinstance(advisory, str) and advisory:
        if advisory in container_names:
            return AgentContainerChoice(container_names.index(advisory))
        warnings = (
            f'annotation {ANNOTATION_DEFAULT_CONTAINER} names container "{advisory}", which the pod does not '
            f"have; choosing the agent container without it",
        )
    if AGENT_CONTAINER_NAME in container_names:
        return AgentContainerChoice(container_names.index(AGENT_CONTAINER_NAME), warnings)
    sidecars = frozenset(sidecar_names)
    for position, name in enumerate(container_names):
        if name not in sidecars:
            return AgentContainerChoice(position, warnings)
    return AgentContainerChoice(0, warnings)
