"""The `skill-webhook` command: every subcommand (README "Commands and settings")."""

from __future__ import annotations

import argparse
import sys
from typing import Any, Sequence

from pydantic import ValidationError

from . import cli_certs, cli_inspect, cli_manifests, cli_mutate, cli_stale, cli_validate
from .settings import Settings


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_serve_parser(subparsers: argparse._SubParsersAction) -> None:
    """`serve` flags are generated from Settings, so flag, variable and default can never disagree."""
    parser = subparsers.add_parser(
        "serve",
        help="run the webhook (HTTPS) and the health/metrics listener (HTTP)",
        description="Every flag can also be set by its environment variable; a flag wins over the variable.",
    )
    for name, info in Settings.model_fields.items():
        default = info.default
        shown = "none" if default is None else str(default)
        env = f"{Settings.model_config['env_prefix']}{name.upper()}"
        parser.add_argument(
            _flag(name), dest=name, default=None, metavar=name.upper(),
            help=f"{info.description} [{env}; default: {shown}]".replace("%", "%%"),
        )
    parser.set_defaults(handler=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    from .logs import configure_logging
    from .server import StartupError, serve

    given: dict[str, Any] = {
        k: v for k, v in vars(args).items() if k in Settings.model_fields and v is not None
    }
    try:
        settings = Settings(**given)
    except ValidationError as err:
        for problem in err.errors(include_url=False):
            field = problem["loc"][0] if problem["loc"] else "settings"
            print(f"skill-webhook serve: {_flag(str(field))}: {problem['msg']}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    try:
        return serve(settings)
    except StartupError as err:
        print(f"skill-webhook serve: {err}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="skill-webhook",
        description="Admission webhooks that mount AI-agent skills (OCI images) into agent pods.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_serve_parser(subparsers)
    for module in (cli_validate, cli_mutate, cli_certs, cli_manifests, cli_inspect, cli_stale):
        before = set(subparsers.choices)
        module.add_parser(subparsers)
        for name in set(subparsers.choices) - before:
            if subparsers.choices[name].get_default("handler") is None:
                subparsers.choices[name].set_defaults(handler=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
