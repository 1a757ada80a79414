"""`skill-webhook serve`: its flags are generated from the settings object, so flag, variable and
default can never disagree; the web stack is imported only once the settings are known to be good."""

from __future__ import annotations

import argparse
from typing import Any

from pydantic import ValidationError

from app.service.cli.options import USAGE_ERROR, fail
from app.service.settings import Settings

COMMAND = "serve"


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        COMMAND,
        description="Every flag can also be set by its environment variable; a flag wins over the variable.",
    )
    for name, info in Settings.model_fields.items():
        default = info.default
        shown = "none" if default is None else str(default)
        env = f"{Settings.model_config['env_prefix']}{name.upper()}"
        parser.add_argument(
            flag(name), dest=name, default=None, metavar=name.upper(),
            help=f"{info.description} [{env}; default: {shown}]".replace("%", "%%"),
        )
    parser.set_defaults(handler=run)
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    """The settings of a parsed `serve` command line (flags win over the environment)."""
    given = {k: v for k, v in vars(args).items() if k in Settings.model_fields and v is not None}
    return Settings(**given)


def problems(err: ValidationError) -> list[str]:
    """One `--flag: why` per problem, in the user's words: the rule's own message, without pydantic's
    "Value error," prefix or documentation links."""
    lines = []
    for problem in err.errors(include_url=False):
        field = str(problem["loc"][0]) if problem["loc"] else "settings"
        cause = (problem.get("ctx") or {}).get("error")
        message = str(cause) if problem["type"] == "value_error" and cause is not None else problem["msg"]
        lines.append(f"{flag(field)}: {message}")
    return lines


def run(args: argparse.Namespace) -> int:
    try:
        settings = settings_from(args)
    except ValidationError as err:
        for line in problems(err):
            fail(COMMAND, line)
        return USAGE_ERROR
    from app.service.http.server import StartupError, serve
    from app.service.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    try:
        return serve(settings)
    except StartupError as err:
        fail(COMMAND, err)
        return 1
