"""File source: AgentRuntimes from a YAML/JSON file or directory, for running without a cluster.

The files are polled (mtime, size, inode) rather than watched with inotify, so the source behaves the
same on bind mounts, ConfigMap symlink swaps and network filesystems. A file that stops parsing is
logged and its last good content kept: a typo while editing must not drop every skill at once.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from app.core.documents import DocumentError, load_trusted_documents
from app.core.index import AgentRuntimeIndex
from app.core.model import DEFAULT_AGENTRUNTIME_API, AgentRuntime, is_agentruntime

from .base import AgentRuntimeSource, bulk_load

log = logging.getLogger("skill_webhook.sources.file")

SUFFIXES = (".yaml", ".yml", ".json")
DEFAULT_NAMESPACE = "default"


@dataclass(frozen=True)
class _Stamp:
    mtime_ns: int
    size: int
    inode: int


class FileSource(AgentRuntimeSource):
    name = "file"

    def __init__(
        self,
        index: AgentRuntimeIndex,
        path: Path,
        *,
        agentruntime_api: str = DEFAULT_AGENTRUNTIME_API,
        poll_interval: float = 1.0,
    ) -> None:
        super().__init__(index)
        self.path = Path(path)
        self.agentruntime_api = agentruntime_api
        self.poll_interval = poll_interval
        self._stamps: dict[Path, _Stamp] = {}
        self._good: dict[Path, list[AgentRuntime]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Load once synchronously (so `serve` is ready as soon as it listens), then poll."""
        self.reload()
        self.index.synced.set()
        self._thread = threading.Thread(target=self._poll, name="file-source", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def reload(self) -> bool:
        """Re-read changed files; True when the index was replaced."""
        files = self._files()
        stamps = {f: s for f in files if (s := _stamp(f)) is not None}
        if stamps == self._stamps:
            return False
        for gone in set(self._good) - set(stamps):
            del self._good[gone]
        with bulk_load():
            for file, stamp in stamps.items():
                if self._stamps.get(file) != stamp:
                    runtimes = self._load_file(file)
                    if runtimes is not None:
                        self._good[file] = runtimes
            self._stamps = stamps
            merged: dict[tuple[str, str], AgentRuntime] = {}
            for file in sorted(self._good):
                for runtime in self._good[file]:
                    if runtime.key in merged:
                        log.warning("duplicate AgentRuntime %s/%s; %s wins", *runtime.key, file)
                    merged[runtime.key] = runtime
            self.index.replace_all(merged.values())
        log.info("loaded AgentRuntimes", extra={"fields": {"path": str(self.path), "count": len(merged)}})
        return True

    def _files(self) -> list[Path]:
        if self.path.is_dir():
            return sorted(
                p for p in self.path.rglob("*") if p.suffix in SUFFIXES and p.is_file() and not p.name.startswith(".")
            )
        if self.path.is_file():
            return [self.path]
        log.warning("runtimes path does not exist", extra={"fields": {"path": str(self.path)}})
        return []

    def _load_file(self, file: Path) -> list[AgentRuntime] | None:
        """The AgentRuntimes in `file`, or None when it cannot be read (the last good content stays)."""
        try:
            documents = load_trusted_documents(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, DocumentError) as err:
            log.error("cannot load runtimes file; keeping its last good content",
                      extra={"fields": {"file": str(file), "error": str(err)}})
            return None
        runtimes = []
        documents = _flatten(documents)
        documents.reverse()  # popped from the end below, so each parsed dict is freed once converted
        position = -1
        while documents:
            document = documents.pop()
            position += 1
            if not is_agentruntime(document, self.agentruntime_api):
                continue
            try:
                runtime = AgentRuntime.for_cache(document)
            except ValidationError as err:
                log.error("skipping malformed AgentRuntime",
                          extra={"fields": {"file": str(file), "document": position,
                                            "error": err.errors(include_url=False)[:3]}})
                continue
            if not runtime.metadata.namespace:
                runtime = runtime.model_copy(
                    update={"metadata": runtime.metadata.model_copy(update={"namespace": DEFAULT_NAMESPACE})}
                )
            runtimes.append(runtime)
        return runtimes

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_interval):
            try:
                self.reload()
            except Exception:  # the poller must outlive any surprise in a file
                log.exception("file source reload failed")


def _flatten(documents: list[Any]) -> list[Any]:
    """Documents, with `kind: List` (kubectl get -o yaml) opened up."""
    out: list[Any] = []
    for doc in documents:
        if isinstance(doc, dict) and doc.get("kind") == "List" and isinstance(doc.get("items"), list):
            out.extend(doc["items"])
        else:
            out.append(doc)
    return out


def _stamp(file: Path) -> _Stamp | None:
    try:
        st = os.stat(file)
    except OSError:
        return None
    return _Stamp(st.st_mtime_ns, st.st_size, st.st_ino)
