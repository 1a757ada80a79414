"""The one small interface every source of AgentRuntimes implements."""

from __future__ import annotations

import abc
import contextlib
import gc
from typing import Iterator

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


@contextlib.contextmanager
def bulk_load() -> Iterator[None]:
    """Around building a whole cache (a LIST, a file load): no cyclic GC while thousands of models are
    made, then a freeze, so later collections never walk the cache again. Without it 10,000
    AgentRuntimes take five times longer to load and every full collection stalls admissions for
    ~0.2 s. No collection first: decoding leaves no reference cycles (its garbage is freed by
    reference counting as it goes; a test holds the loaders to that), and a full collection over the
    fresh cache would cost ~0.2 s of start-up to find nothing. Frozen before collection is enabled
    again, so the first young collection does not walk the new objects either."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()
