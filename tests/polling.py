"""The one way tests wait for something that happens in another thread or process: poll for the
condition with a deadline. A bare `time.sleep(N)` before an assertion either waits too long on an
idle machine or too little on a busy one (these machines are two shared cores); this returns as soon
as the condition holds and fails, naming what it waited for, when the deadline passes.
"""

from __future__ import annotations

import inspect
import time
from typing import Callable, TypeVar

T = TypeVar("T")

DEFAULT_TIMEOUT = 5.0


def wait_until(predicate: Callable[[], T], timeout: float = DEFAULT_TIMEOUT, what: str | None = None,
               interval: float = 0.02, explain: Callable[[], str] | None = None) -> T:
    """Call `predicate` until it returns something truthy, and return that. After `timeout` seconds
    raise AssertionError naming `what` (or the predicate's source), the last exception the predicate
    raised, and `explain()` if given (the state that differs, computed only on failure).

    An exception from the predicate counts as "not yet" (the thing it reads may not exist yet), except
    AssertionError, which ends the wait at once: the predicate has seen that the condition never will
    hold (the process it waits for has exited)."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = predicate()
            if result:
                return result
            last_error = None
        except AssertionError:
            raise
        except Exception as exc:  # noqa: BLE001 - "not yet"; reported on timeout
            last_error = exc
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    message = f"timed out after {timeout:g} s waiting for {what or _describe(predicate)}"
    if last_error is not None:
        message += f" (last error: {type(last_error).__name__}: {last_error})"
    if explain is not None:
        message += f": {explain()}"
    raise AssertionError(message)


def _describe(predicate: Callable[[], object]) -> str:
    name = getattr(predicate, "__qualname__", "")
    if name and "<lambda>" not in name:
        return name
    try:
        return inspect.getsource(predicate).strip()
    except (OSError, TypeError):
        return repr(predicate)
