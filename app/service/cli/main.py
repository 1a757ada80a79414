"""The `skill-webhook` command: every subcommand (README "Commands and settings")."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any, Sequence

from pydantic import ValidationError

from app.service.settings import Settings

# The other subcommands, each a module with `add_parser(subparsers)` and `run(args)`. Imported only
# when the command line is not `serve`: they bring the registry client, cryptography and the
# manifests, which `serve` does not need to start (it imports what it uses itself).
SUBCOMMAND_MODULES = ("validate", "mutate", "certs", "manifests", "inspect", "stale")


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
    from app.service.logs import configure_logging
    from app.service.http.server import StartupError, serve

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


def build_parser(*, serve_only: bool = False) -> argparse.ArgumentParser:
    """The whole command line; with `serve_only`, just enough to parse a `serve` command."""
    parser = argparse.ArgumentParser(
        prog="skill-webhook",
        description="Admission webhooks that mount AI-agent skills (OCI images) into agent pods.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_serve_parser(subparsers)
    if serve_only:
        return parser
    for name in SUBCOMMAND_MODULES:
        module = importlib.import_module(f"{__package__}.{name}")
        before = set(subparsers.choices)
        module.add_parser(subparsers)
        for name in set(subparsers.choices) - before:
            if subparsers.choices[name].get_default("handler") is None:
                subparsers.choices[name].set_defaults(handler=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # `skill-webhook serve ...` is parsed by the serve parser alone; anything else (`--help`, another
    # subcommand, a mistake) sees every subcommand.
    args = build_parser(serve_only=bool(argv) and argv[0] == "serve").parse_args(argv)
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
