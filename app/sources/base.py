"""The one small interface every source of AgentRuntimes implements."""

from __future__ import annotations

import abc

from app.core.matching.index import AgentRuntimeIndex


class AgentRuntimeSource(abc.ABC):
    """Keeps an AgentRuntimeIndex equal to some source of truth, in the background.

    A source fills `index` (replace_all / upsert / delete) and sets `index.synced` once it has
    delivered its first complete view. The core never knows which source it reads.
    """

    #: short name for logs and metrics ("file", "kube")
    name: str = "source"

    def __init__(self, index: AgentRuntimeIndex) -> None:
        self.index = index

    @abc.abstractmethod
    def start(self) -> None:
        """Begin filling the index; returns at once (work happens on a daemon thread)."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop the background work; safe to call twice."""

    def server_version(self) -> tuple[int, int] | None:
        """(major, minor) of the Kubernetes API server, or None when there is no server to ask."""
        return None
