"""Structured logging: one JSON object per line (or readable text), fields passed as `extra={"fields": {...}}`."""

from __future__ import annotations

import functools
import json
import logging
import sys
import time
from typing import Any, BinaryIO

import orjson

ADMISSION_LOGGER = "skill_webhook.admission"


def json_line(entry: dict[str, Any]) -> bytes:
    """One JSON log line, without its newline: what orjson cannot write itself is written as str()."""
    return orjson.dumps(entry, default=str, option=orjson.OPT_NON_STR_KEYS)


def utc_timestamp(when: float) -> str:
    """RFC 3339 with milliseconds."""
    second = int(when)
    return f"{_utc_second(second)}.{int((when - second) * 1000):03d}Z"


# Formatted once per second: strftime on every admission line measured 3-4 % of /mutate's time in
# process (10,000 AgentRuntimes cached, eight requests per event-loop pass).
@functools.lru_cache(maxsize=1)
def _utc_second(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": utc_timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json_line(entry).decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict) and fields:
            line += " " + " ".join(f"{k}={json.dumps(v, default=str)}" for k, v in fields.items())
        return line


class AdmissionLog:
    """The one line per admission (docs/configuration.md "Service surface"), on the hot path of every pod creation.

    In JSON mode it writes the line itself, with one orjson call and one write: the logging machinery
    (record, caller lookup, formatter, handler lock) costs about a sixth of /mutate's time in process
    (measured side by side with 10,000 AgentRuntimes cached). Otherwise, and until `configure_logging`
    runs (tests, embedding), it goes through the `skill_webhook.admission` logger.
    """

    def __init__(self) -> None:
        self.enabled = True
        self._stream: BinaryIO | None = None
        self._logger = logging.getLogger(ADMISSION_LOGGER)

    def direct(self, stream: BinaryIO | None, enabled: bool) -> None:
        self._stream = stream
        self.enabled = enabled

    def write(self, fields: dict[str, Any]) -> None:
        if not self.enabled:
            return
        stream = self._stream
        if stream is None:
            if self._logger.isEnabledFor(logging.INFO):
                self._logger.info("admission", extra={"fields": fields})
            return
        entry = {"ts": utc_timestamp(time.time()), "level": "info", "logger": ADMISSION_LOGGER, "msg": "admission"}
        entry.update(fields)
        try:
            stream.write(json_line(entry) + b"\n")
            stream.flush()
        except (OSError, ValueError):  # stderr closed or gone: a lost log line must not stop admission
            pass


ADMISSION_LOG = AdmissionLog()


# uvicorn lines that repeat ours or say nothing an operator can act on: "Started server process" once
# per listener (the "starting" line gives the pid), "Finished server process", and one warning per
# client that speaks something else than HTTP to a listener (a TLS client on the metrics port, a
# scanner): kept at debug level only.
_REPEATED = ("Started server process", "Finished server process")
_DEBUG_ONLY = ("Invalid HTTP request received.",)


def _uvicorn_chatter(record: logging.LogRecord) -> bool:
    message = str(record.msg)
    if message.startswith(_REPEATED):
        return False
    if message in _DEBUG_ONLY:
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger().isEnabledFor(logging.DEBUG)
    return True


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    info = logging.getLevelName(level.upper()) <= logging.INFO
    ADMISSION_LOG.direct(getattr(sys.stderr, "buffer", None) if fmt == "json" else None, info)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn's own loggers go through ours (one format); its access log would double every admission line.
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("uvicorn.error").addFilter(_uvicorn_chatter)
    # The Kubernetes client's urllib3 logs every retry of a refused connection as a warning (three per
    # request); the caller's own message says once what failed.
    logging.getLogger("urllib3").setLevel(logging.ERROR)
