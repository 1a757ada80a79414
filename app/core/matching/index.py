"""AgentRuntimeIndex: the in-memory lookup every admission reads.

Fed by a source (file or informer) from one thread, read by the request handlers from another. Writers
hold a lock and publish fresh dicts/tuples; readers never lock: a dict `get` and the tuple it returns
are atomic under the GIL, so a reader sees either the old or the new state, never half of an update.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable, Iterable

from app.core.model import AgentRuntime, WorkloadRef

# (namespace, group, kind, name) of a target workload.
TargetKey = tuple[str, str, str, str]


@dataclass(frozen=True)
class LookupResult:
    """The AgentRuntime that applies to a workload, and the others that target it too (if any)."""

    runtime: AgentRuntime | None
    shadowed: tuple[AgentRuntime, ...] = ()

    @property
    def warnings(self) -> list[str]:
        if self.runtime is None or not self.shadowed:
            return []
        others = ", ".join(f'"{r.metadata.name}"' for r in self.shadowed)
        return [
            f'several AgentRuntimes target this workload: using the oldest, "{self.runtime.metadata.name}"; '
            f"ignoring {others}"
        ]


NO_MATCH = LookupResult(None)


@dataclass
class AgentRuntimeIndex:
    """AgentRuntimes by (namespace, name) and by the workload they target."""

    _by_key: dict[tuple[str, str], AgentRuntime] = field(default_factory=dict)
    _by_target: dict[TargetKey, tuple[AgentRuntime, ...]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    # Set once the source has delivered its first complete view (first LIST, first file load).
    synced: threading.Event = field(default_factory=threading.Event)
    # Called with (old, new) after every change, on the writer's thread, like an informer's handlers:
    # (None, new) added, (old, new) changed, (old, None) deleted. The controllers that follow
    # AgentRuntimes (the image resolver, the stale-pod reconciler) enqueue keys there; they must return fast.
    _listeners: tuple[Callable[[AgentRuntime | None, AgentRuntime | None], None], ...] = ()

    def add_listener(self, listener: Callable[[AgentRuntime | None, AgentRuntime | None], None]) -> None:
        self._listeners = (*self._listeners, listener)

    def _changed(self, old: AgentRuntime | None, new: AgentRuntime | None) -> None:
        for listener in self._listeners:
            listener(old, new)

    # -- reads (hot path, lock-free) -------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._by_key)

    def get(self, namespace: str, name: str) -> AgentRuntime | None:
        return self._by_key.get((namespace, name))

    def all(self) -> list[AgentRuntime]:
        return list(self._by_key.values())

    def targeting(self, namespace: str, workload: WorkloadRef) -> tuple[AgentRuntime, ...]:
        """Every AgentRuntime in `namespace` that targets `workload`, oldest first."""
        return self._by_target.get((namespace, *workload), ())

    def lookup(self, namespace: str, workloads: Iterable[WorkloadRef]) -> LookupResult:
        """The AgentRuntime for a pod whose owner chain names `workloads` (see resolve_workload)."""
        found: list[AgentRuntime] = []
        for workload in workloads:
            found.extend(self._by_target.get((namespace, *workload), ()))
        if not found:
            return NO_MATCH
        if len(found) > 1:
            found = sorted({r.key: r for r in found}.values(), key=lambda r: r.age_key)
        return LookupResult(found[0], tuple(found[1:]))

    # -- writes (source thread) ------------------------------------------------------------------

    def upsert(self, runtime: AgentRuntime) -> AgentRuntime | None:
        """Add or replace one AgentRuntime; returns the version it replaced.

        Readers never lock, so every change is published by single assignments, each leaving a state a
        lookup may see: the target entry is replaced by a new tuple in one assignment (never "unlink
        the old version, then link the new one", between which a lookup would find nothing and admit a
        pod without its skills). A runtime that moves to another workload is linked at the new target
        before it is unlinked from the old one, so each target answers either the old or the new truth.
        """
        with self._lock:
            old = self._by_key.get(runtime.key)
            new_target, old_target = _target_key(runtime), _target_key(old) if old is not None else None
            if new_target is not None:
                self._by_target[new_target] = _with(self._by_target.get(new_target, ()), runtime)
            self._by_key[runtime.key] = runtime
            if old_target is not None and old_target != new_target:
                self._set_target(old_target, _without(self._by_target.get(old_target, ()), old.key))
        self._changed(old, runtime)
        return old

    def delete(self, namespace: str, name: str) -> AgentRuntime | None:
        with self._lock:
            old = self._by_key.pop((namespace, name), None)
            target = _target_key(old) if old is not None else None
            if target is not None:
                self._set_target(target, _without(self._by_target.get(target, ()), old.key))
        if old is not None:
            self._changed(old, None)
        return old

    def replace_all(self, runtimes: Iterable[AgentRuntime]) -> None:
        """Swap in a complete new view at once (after a re-LIST or a file reload)."""
        by_key = {r.key: r for r in runtimes}
        by_target: dict[TargetKey, list[AgentRuntime]] = {}
        for runtime in by_key.values():
            target = _target_key(runtime)
            if target is not None:
                by_target.setdefault(target, []).append(runtime)
        frozen = {k: tuple(sorted(v, key=lambda r: r.age_key)) for k, v in by_target.items()}
        with self._lock:
            before, self._by_key = self._by_key, by_key
            self._by_target = frozen
        if self._listeners:  # what changed, as the events a watch would have delivered
            for key, runtime in by_key.items():
                old = before.get(key)
                if old is None or _differs(old, runtime):
                    self._changed(old, runtime)
            for key in before.keys() - by_key.keys():
                self._changed(before[key], None)

    def _set_target(self, target: TargetKey, runtimes: tuple[AgentRuntime, ...]) -> None:
        if runtimes:
            self._by_target[target] = runtimes
        else:
            self._by_target.pop(target, None)


def _with(current: tuple[AgentRuntime, ...], runtime: AgentRuntime) -> tuple[AgentRuntime, ...]:
    """`current` with `runtime` in place of any version of it, oldest first."""
    kept = [r for r in current if r.key != runtime.key]
    return tuple(sorted((*kept, runtime), key=lambda r: r.age_key))


def _without(current: tuple[AgentRuntime, ...], key: tuple[str, str]) -> tuple[AgentRuntime, ...]:
    return tuple(r for r in current if r.key != key)


def _differs(old: AgentRuntime, new: AgentRuntime) -> bool:
    version = old.metadata.resourceVersion
    return version != new.metadata.resourceVersion if version else old != new


def _target_key(runtime: AgentRuntime) -> TargetKey | None:
    if not runtime.targets_a_workload:
        return None
    return (runtime.metadata.namespace, *runtime.workload)
