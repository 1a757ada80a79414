"""A cache for checks of one string value (a name, an image, a mount path).

The same few values come back on every UPDATE, dry run and stored object, and a profile of /validate
with 20 skills shows these checks as most of its cost when made afresh (about three times the
validation time), so their verdicts are cached. A hostile request can carry a 3 MiB string, though,
and a cache of thousands of those would hold gigabytes: values longer than any valid one are checked
afresh every time instead.
"""

from __future__ import annotations

import functools
from typing import Callable, TypeVar

R = TypeVar("R")


def cached_when_short(maxsize: int, longest: int) -> Callable[[Callable[..., R]], Callable[..., R]]:
    """lru_cache for a function whose first argument is a string, used only while it is at most
    `longest` characters long."""

    def decorate(check: Callable[..., R]) -> Callable[..., R]:
        cached = functools.lru_cache(maxsize=maxsize)(check)

        @functools.wraps(check)
        def wrapper(value: str, *args: object) -> R:
            return cached(value, *args) if len(value) <= longest else check(value, *args)

        wrapper.cache_info = cached.cache_info  # type: ignore[attr-defined]
        return wrapper

    return decorate
