"""The options several commands share, declared once, and the rules their values must follow.

`serve` builds its flags from the settings object (app.service.settings), whose fields for these
options take their default, description and rule from `SHARED` below; the other subcommands add the
same options with `add(parser, ...)` and check them with `checked`. So `--domain` (or
`SKILL_WEBHOOK_DOMAIN`) means the same, defaults the same and is refused for the same reason
whichever command reads it: one line on stderr naming the flag (or the variable), exit 2.

Light on purpose: every command imports this module, and `validate` and `mutate` must start fast, so
nothing here imports pydantic-settings, the Kubernetes client or the web stack.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from app.core.model import DEFAULT_AGENTRUNTIME_API, DEFAULT_SIDECAR_NAMES
from app.core.names import DEFAULT_DOMAIN_PREFIX, check_domain

ENV_PREFIX = "SKILL_WEBHOOK_"
PROG = "skill-webhook"
USAGE_ERROR = 2

# Where an AgentRuntime group is known, the label/annotation domain that goes with it (for hints).
KNOWN_DOMAINS = {"agent.kagenti.dev": "kagenti.io", "agent.rossoctl.dev": "rossoctl.io"}

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


class UsageError(ValueError):
    """A value that cannot work; `str()` names the flag (or variable) and says why."""


# -- the rules -------------------------------------------------------------------------------------


def split_list(value: str) -> tuple[str, ...]:
    """The entries of a comma-separated setting, trimmed, empty ones dropped."""
    return tuple(item.strip() for item in value.split(",") if item.strip())


def parse_duration(value: object) -> float:
    """Seconds from a Go/Kubernetes duration ("500ms", "1m30s", "1h") or a plain number of seconds."""
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 30s, 5m or 1h, or a number of seconds")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = str(value).strip()
        try:
            seconds = float(text)
        except ValueError:
            parts = _DURATION_PART.findall(text)
            if not text or "".join(n + u for n, u in parts) != text:
                raise ValueError(f'"{text}" is not a duration such as 500ms, 30s, 5m or 1h') from None
            seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    if not seconds >= 0 or seconds == float("inf"):
        raise ValueError("must be a finite duration of zero or more")
    return seconds


def check_group_version(value: str) -> str:
    if value.count("/") != 1 or not all(value.split("/")):
        raise ValueError(f'"{value}" is not "<group>/<version>", e.g. agent.kagenti.dev/v1alpha1')
    return value


def check_registry_allow(value: str) -> str:
    # An entry that can match no image would silently deny every skill (or, mistyped, allow none of
    # the intended ones): refuse it, naming it.
    from app.core.validation.oci import InvalidImageReference, parse_registry_prefix

    for entry in split_list(value):
        try:
            parse_registry_prefix(entry)
        except InvalidImageReference as err:
            raise ValueError(str(err)) from None
    return value


def check_insecure_registries(value: str) -> str:
    # A scheme or a path here would never equal the registry of an image: the registry would be
    # reached over TLS after all, and fail with a TLS error that hides the typo.
    from app.core.validation.oci import InvalidImageReference, parse_registry_prefix

    for entry in split_list(value):
        problem = f"{entry!r} is not a registry host[:port] (e.g. localhost:5000, without scheme or path)"
        if "/" in entry:
            raise ValueError(problem)
        try:
            prefix = parse_registry_prefix(entry)
        except InvalidImageReference:
            raise ValueError(problem) from None
        if prefix.path:
            raise ValueError(problem)
    return value


# -- the shared options ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shared:
    """One option: the settings field it is (`name`), its default, what it means, its rule."""

    name: str
    default: Any
    help: str
    check: Callable[[Any], Any] | None = None
    choices: tuple[str, ...] = ()
    is_path: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    def convert(self, raw: str) -> Any:
        """The value of `raw` as a command reads it; ValueError saying why it cannot work."""
        if self.choices and raw not in self.choices:
            raise ValueError(f'"{raw}" is not one of {", ".join(self.choices)}')
        if self.is_path:
            return Path(raw) if raw else None
        return self.check(raw) if self.check is not None else raw


SHARED: dict[str, Shared] = {s.name: s for s in (
    Shared("domain", DEFAULT_DOMAIN_PREFIX,
           "prefix of every label and annotation read or written (rossoctl.io for rossoctl)", check_domain),
    Shared("agentruntime_api", DEFAULT_AGENTRUNTIME_API,
           "group/version of AgentRuntime to read (agent.rossoctl.dev/v1alpha1 for rossoctl)", check_group_version),
    Shared("registry_allow", "", "comma-separated registry/prefix allow-list for skill images (empty: any)",
           check_registry_allow),
    Shared("sidecar_names", ",".join(DEFAULT_SIDECAR_NAMES),
           "comma-separated container names never chosen as the agent"),
    Shared("kubeconfig", None, "kubeconfig for the informer (implies --source kube under auto)", is_path=True),
    Shared("registry_auth", None, "docker config.json with registry credentials (reloaded on change)", is_path=True),
    Shared("registry_ca", None, "PEM CA bundle trusted for registries, besides the system's", is_path=True),
    Shared("insecure_registries", "", "comma-separated registries reached over plain HTTP (host[:port])",
           check_insecure_registries),
    Shared("pin_digests", "off",
           "inject <repo>:<tag>@<digest>: on (when known), required (deny 503 while unknown), off",
           choices=("off", "on", "required")),
    Shared("resolve_timeout", 5.0, "timeout of one registry request", parse_duration),
)}


def add(parser: argparse.ArgumentParser, *names: str, help: dict[str, str] | None = None, **aliases: str) -> None:
    """Add the shared options `names` to a subcommand's parser. Their values are read by `checked`:
    the flag, else its SKILL_WEBHOOK_ variable, else the default. `help` replaces the text of some
    (what the option means to this command); `aliases` gives an option a second flag."""
    help = help or {}
    for name in names:
        option = SHARED[name]
        shown = "none" if option.default is None else str(option.default)
        text = f"{help.get(name, option.help)} [{option.env}; default: {shown}]".replace("%", "%%")
        flags = [option.flag] + ([aliases[name]] if name in aliases else [])
        # No argparse `choices` or `type`: the value is checked by `resolve`, like one from the
        # environment, so that a bad one is the same single line whichever way it came.
        parser.add_argument(*flags, dest=name, default=None, metavar=name.upper(), help=text)
    declared = parser.get_default("shared_options") or ()
    parser.set_defaults(shared_options=(*declared, *names))


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Replace each shared option's raw value in `args` by its checked value (idempotent); raises
    UsageError naming the flag or the variable the bad value came from."""
    if getattr(args, "shared_options_resolved", False):
        return args
    for name in getattr(args, "shared_options", ()):
        option = SHARED[name]
        raw, source = getattr(args, name, None), option.flag
        if raw is None:
            raw, source = os.environ.get(option.env), f"{option.env} ({option.flag})"
        if raw is None:
            setattr(args, name, option.default)
            continue
        try:
            setattr(args, name, option.convert(raw))
        except ValueError as err:
            raise UsageError(f"{source}: {err}") from None
    args.shared_options_resolved = True
    return args


def checked(command: str) -> Callable[[Callable[[argparse.Namespace], int]], Callable[[argparse.Namespace], int]]:
    """Decorator of a subcommand's `run(args)`: the shared options are resolved and checked first;
    a bad one is one line on stderr, `skill-webhook COMMAND: --flag: why`, and exit 2."""

    def decorate(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        @functools.wraps(run)
        def wrapper(args: argparse.Namespace) -> int:
            try:
                resolve(args)
            except UsageError as err:
                fail(command, err)
                return USAGE_ERROR
            return run(args)

        return wrapper

    return decorate


# -- saying what went wrong, one way everywhere -------------------------------------------------------


def fail(command: str, message: object) -> None:
    """The one line a command prints when it stops: `skill-webhook COMMAND: message`."""
    print(f"{PROG} {command}: {message}", file=sys.stderr)


def os_problem(path: object, err: OSError) -> str:
    """`PATH: no such file` (and the like) for an OSError, without errno numbers or repr quotes."""
    if isinstance(err, FileNotFoundError):
        return f"{path}: no such file"
    if isinstance(err, IsADirectoryError):
        return f"{path}: is a directory"
    if isinstance(err, PermissionError):
        return f"{path}: permission denied"
    return f"{path}: {(err.strerror or str(err)).lower()}"


def missing_file(flag: str, path: Path | None) -> str | None:
    """`--flag PATH: no such file` when a file option names no file (None when it does, or is unset).
    The value itself is fine, the file is not: the caller stops with exit 1, not the usage error 2."""
    if path is None or path.is_file():
        return None
    return f"{flag} {path}: {'is a directory' if path.is_dir() else 'no such file'}"


def registry_files_problem(auth: Path | None, ca: Path | None) -> str | None:
    """Why --registry-auth or --registry-ca cannot be used (None: both can, or are unset). The resolver
    in `serve` goes on without a broken file's credentials and waits for it to be fixed; a one-shot
    command that did so would report "unauthorized" or a TLS failure and hide the real problem."""
    for flag, path in (("--registry-auth", auth), ("--registry-ca", ca)):
        problem = missing_file(flag, path)
        if problem is not None:
            return problem
    if auth is not None:
        from app.sources.registry.client import parse_docker_config

        try:
            parse_docker_config(auth.read_bytes())
        except (OSError, ValueError) as exc:
            return f"--registry-auth {auth}: not a usable docker config.json: {exc}"
    if ca is not None:
        import ssl

        try:
            ssl.create_default_context().load_verify_locations(cafile=str(ca))
        except (OSError, ssl.SSLError):
            return f"--registry-ca {ca}: not a PEM CA bundle"
    return None


def agentruntime_api_hint(api_version: str) -> str:
    """What to pass to read AgentRuntimes of `api_version` (another group than the configured one)."""
    group = api_version.split("/")[0]
    hint = f"--agentruntime-api {api_version}"
    domain = KNOWN_DOMAINS.get(group)
    if domain is not None and domain != DEFAULT_DOMAIN_PREFIX:
        hint += f" --domain {domain}"
    return hint


def network_problem(err: BaseException) -> str:
    """What went wrong talking to a server, in a few words ("connection refused", "HTTP 403
    Forbidden: ...", "TLS: certificate verify failed: ...", "timed out") rather than the client
    library's nested exception text."""
    import socket
    import ssl

    chain: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__ or getattr(current, "reason", None)
        if not isinstance(current, BaseException):
            current = None
    for cause in chain:  # an answer from the server says more than how the client failed
        if type(cause).__name__ == "ApiException" and isinstance(getattr(cause, "status", None), int):
            return _api_answer(cause)
    for cause in reversed(chain):  # the innermost cause says the most
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"TLS: certificate verify failed: {cause.verify_message}"
        if isinstance(cause, ssl.SSLError):
            return f"TLS: {(cause.reason or str(cause)).lower().replace('_', ' ')}"
        if isinstance(cause, socket.gaierror):
            return f"cannot resolve the host name: {cause.strerror}"
        if isinstance(cause, (TimeoutError, socket.timeout)) or "Timeout" in type(cause).__name__:
            return "timed out"
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror[0].lower() + cause.strerror[1:]
    return f"{type(err).__name__}: {err}"


def _api_answer(err: BaseException) -> str:
    import json

    body = getattr(err, "body", None)
    try:
        message = json.loads(body).get("message", "") if isinstance(body, (str, bytes)) and body else ""
    except (ValueError, AttributeError):
        message = ""
    return f"HTTP {getattr(err, 'status')} {getattr(err, 'reason', '')}".rstrip() + (f": {message}" if message else "")
