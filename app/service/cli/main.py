"""The `skill-webhook` command: the parser of every subcommand, and dispatch (docs/configuration.md).

A command must start fast (`--help`, `validate` and `mutate` within a few tenths of a second), so
this module imports no subcommand: `COMMANDS` says which module holds each one and what it does, and
only the chosen one is imported, with the libraries it needs. Without a command of ours (`--help`, a
mistyped one) every command is listed by name and help line, and none is imported.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any, Sequence

PROG = "skill-webhook"

# command -> (module in this package, what it does). The module has `add_parser(subparsers)` (which
# may add several commands) and `run(args)`, unless its parsers set their own `handler`.
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("serve", "run the webhook (HTTPS) and the health/metrics listener (HTTP)"),
    "validate": ("validate", "validate AgentRuntime YAML/JSON files offline, with the rules of /validate"),
    "mutate": ("mutate", "preview what the mutating webhook would do to a Pod (offline)"),
    "certs": ("certs", "write a CA and a serving certificate for <service>.<namespace>.svc"),
    "ca-bundle": ("certs", "print the webhook configurations with caBundle filled in"),
    "manifests": ("manifests", "print the install manifests (or write them into a directory)"),
    "stale": ("stale", "list running pods whose injected skills differ from their AgentRuntime's now"),
    "inspect": ("inspect", "resolve skill images in the registry: digest, mountable, skill metadata, signature"),
    "pull": ("pull", "fetch skill images, verify every digest and unpack them safely (the puller init container)"),
}


class _Subcommands:
    """What a subcommand module's `add_parser` is given: adds its parsers with the help line of
    `COMMANDS` (declared once, here) and remembers them, so an error is reported by the right one."""

    def __init__(self, subparsers: Any) -> None:
        self._subparsers = subparsers
        self.parsers: dict[str, argparse.ArgumentParser] = {}

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        kwargs.setdefault("help", COMMANDS[name][1])
        parser = self._subparsers.add_parser(name, **kwargs)
        self.parsers[name] = parser
        return parser


def _build(command: str | None) -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Admission webhooks that mount AI-agent skills (OCI images) into agent pods. "
        "`skill-webhook COMMAND --help` shows the options of a command.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    wanted = None if command is None else COMMANDS.get(command, ("",))[0]
    commands = _Subcommands(subparsers)
    for name, (module_name, help_line) in COMMANDS.items():
        if name in subparsers.choices:
            continue
        if wanted is not None and module_name != wanted:
            if not wanted:  # no command given, or not one of ours: the list is what argparse shows
                subparsers.add_parser(name, help=help_line, add_help=False)
            continue
        module = importlib.import_module(f"{__package__}.{module_name}")
        before = set(commands.parsers)
        module.add_parser(commands)
        for added in set(commands.parsers) - before:
            if commands.parsers[added].get_default("handler") is None:
                commands.parsers[added].set_defaults(handler=module.run)
    return parser, commands.parsers


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; with `command`, only that command (or, if it is not one, the list)."""
    return _build(command)[0]


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # The top level has no option that takes a value, so the first word is the command.
    command = next((word for word in argv if not word.startswith("-")), "")
    parser, parsers = _build(command)
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        # A typo in a subcommand's option is that subcommand's error, shown with its usage.
        parsers[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
