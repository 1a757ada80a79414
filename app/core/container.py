"""Which container is the agent (SPEC §4), in the spirit of kubectl's default-container handling."""

from __future__ import annotations

from typing import Any, Iterable

from .model import ANNOTATION_AGENT_CONTAINER, ANNOTATION_DEFAULT_CONTAINER

AGENT_CONTAINER_NAME = "agent"


class AgentContainerNotFound(LookupError):
    """An annotation names a container the pod does not have."""

    def __init__(self, annotation: str, container: str) -> None:
        super().__init__(f'annotation {annotation} names container "{container}", which the pod does not have')
        self.annotation = annotation
        self.container = container


def choose_agent_container(
    container_names: list[str], annotations: dict[str, Any], sidecar_names: Iterable[str]
) -> int | None:
    """Index of the agent container in spec.containers (None when there are no containers).

    First match wins: our own annotation, kubectl's default-container annotation, a container
    named "agent", the first container that is not a known sidecar, else the first container.
    Skills go into the agent container only: sidecars (proxies, credential helpers) must not see
    the agent's tools, and init/ephemeral containers never run the agent.
    """
    if not container_names:
        return None
    for annotation in (ANNOTATION_AGENT_CONTAINER, ANNOTATION_DEFAULT_CONTAINER):
        wanted = annotations.get(annotation)
        if isinstance(wanted, str) and wanted:
            if wanted not in container_names:
                raise AgentContainerNotFound(annotation, wanted)
            return container_names.index(wanted)
    if AGENT_CONTAINER_NAME in container_names:
        return container_names.index(AGENT_CONTAINER_NAME)
    sidecars = frozenset(sidecar_names)
    for position, name in enumerate(container_names):
        if name not in sidecars:
            return position
    return 0
