"""How list/watch loops pace themselves: the backoff between attempts and the knobs of a reflector."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Exponential backoff with "equal jitter": half the delay fixed, half random, capped."""

    initial: float
    maximum: float
    rng: random.Random = field(default_factory=random.Random)
    _attempt: int = 0

    def next_delay(self) -> float:
        ceiling = min(self.maximum, self.initial * (2 ** min(self._attempt, 30)))
        self._attempt += 1
        return ceiling / 2 + self.rng.uniform(0, ceiling / 2)

    def reset(self) -> None:
        self._attempt = 0


@dataclass(frozen=True)
class ReflectorTuning:
    """How a reflector lists and watches; the same knobs for every kind it watches.

    `watch_timeout`: the server ends each watch after between this and twice this many seconds
    (randomised like client-go, so that replicas do not re-watch in step)."""

    page_size: int = 500
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    watch_timeout: int = 300
    connect_timeout: float = 10.0
    list_timeout: float = 60.0
    rng: random.Random | None = None
