"""File source: AgentRuntimes from a YAML/JSON file or directory, for running without a cluster.

The files are polled (app.sources.files.changes) rather than watched with inotify, so the source behaves the
same on bind mounts, ConfigMap symlink swaps and network filesystems. A file that stops parsing is
logged and its last good content kept: a typo while editing must not drop every skill at once.

`document_files` is the one rule for which files a path stands for; `skill-webhook validate DIR` and
`skill-webhook mutate --runtimes DIR` use it too, so all three read the same files.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from app.core.decode import cached_runtime
from app.core.parsing.documents import DocumentError, file_media_type, load_documents, open_lists
from app.core.matching.index import AgentRuntimeIndex
from app.core.model import AgentRuntime, is_agentruntime
from app.core.validation.agentruntime import ValidationOptions

from app.sources.base import AgentRuntimeSource
from app.sources.files.changes import FileStamp

log = logging.getLogger("skill_webhook.sources.file")

SUFFIXES = (".yaml", ".yml", ".json")
DEFAULT_NAMESPACE = "default"


def document_files(path: Path) -> list[Path]:
    """The files `path` stands for: itself when it is a file (whatever its name), else every
    `.yaml`, `.yml` and `.json` file beneath it (suffix in any case), recursively, sorted. Names
    starting with "." are skipped at every level: editors' swap files, and the kubelet's `..data`
    and `..<timestamp>` directories of a mounted ConfigMap, which hold the same files again.
    Symbolic links to files are read; links to directories are not followed (no loops)."""
    path = Path(path)
    if not path.is_dir():
        return [path] if path.is_file() else []
    found: list[Path] = []
    for directory, subdirectories, names in os.walk(path):
        subdirectories[:] = [d for d in subdirectories if not d.startswith(".")]
        for name in names:
            candidate = Path(directory, name)
            if not name.startswith(".") and candidate.suffix.lower() in SUFFIXES and candidate.is_file():
                found.append(candidate)
    return sorted(found)


class RuntimesFileError(ValueError):
    """A runtimes file that cannot be read or parsed; `str()` is `FILE:LINE:COLUMN: problem`."""

    def __init__(self, file: Path, error: Exception) -> None:
        self.file = file
        self.error = error
        if isinstance(error, DocumentError) and error.line is not None:
            text = f"{file}:{error.line}:{error.column}: {error.message}"
        elif isinstance(error, DocumentError):
            text = f"{file}: {error.message}"
        elif isinstance(error, OSError):
            text = f"{file}: cannot read: {error.strerror or error}"
        else:
            text = f"{file}: {error}"
        super().__init__(text)


def read_runtimes_file(file: Path, options: ValidationOptions = ValidationOptions()) -> list[AgentRuntime]:
    """The AgentRuntimes of one file (other kinds skipped, `kind: List` opened, a missing namespace
    read as "default"), decoded as every source decodes them (`cached_runtime`: an invalid one is kept
    with its problems, so its pods are denied rather than admitted without skills); raises
    RuntimesFileError when the file cannot be read or parsed."""
    try:
        # Read as `skill-webhook validate` reads it: what serve accepts, validate accepts.
        documents = load_documents(file.read_bytes(), file_media_type(file.name))
    except (OSError, DocumentError) as err:
        raise RuntimesFileError(file, err) from None
    runtimes = []
    labelled = list(open_lists((str(i), d) for i, d in enumerate(documents)))
    del documents
    # Popped from the end below, so each parsed dict is freed once converted and its memory holds the
    # next cached objects: a plain loop keeps every parsed document to the end, and the process stays
    # 5 MB larger (10,000 AgentRuntimes from one JSON file: 47 instead of 41 MB of growth).
    labelled.reverse()
    while labelled:
        position, document = labelled.pop()
        if not is_agentruntime(document, options.agentruntime_api):
            continue
        metadata = document.get("metadata")
        if isinstance(metadata, dict) and not metadata.get("namespace"):
            metadata["namespace"] = DEFAULT_NAMESPACE
        runtime = cached_runtime(document, options)
        if runtime is None:
            log.error("skipping AgentRuntime without a usable name or target",
                      extra={"fields": {"file": str(file), "document": position}})
            continue
        if runtime.problems:
            log.error("invalid AgentRuntime: its pods will be denied until it is fixed",
                      extra={"fields": {"file": str(file), "document": position, "agentRuntime": runtime.metadata.name,
                                        "errors": list(runtime.problems)}})
        runtimes.append(runtime)
    return runtimes


class FileSource(AgentRuntimeSource):
    name = "file"

    def __init__(
        self,
        index: AgentRuntimeIndex,
        path: Path,
        *,
        options: ValidationOptions = ValidationOptions(),
        poll_interval: float = 1.0,
    ) -> None:
        super().__init__(index)
        self.path = Path(path)
        self.options = options
        self.poll_interval = poll_interval
        self._stamps: dict[Path, FileStamp] = {}
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

    def reload(self, *, strict: bool = False) -> bool:
        """Re-read changed files; True when the index was replaced. With `strict` (a one-shot
        preview, which has no last good content to keep) a broken file raises RuntimesFileError."""
        files = self._files()
        stamps = {f: s for f in files if (s := FileStamp.of(f)) is not None}
        if stamps == self._stamps:
            return False
        for gone in set(self._good) - set(stamps):
            del self._good[gone]
        for file, stamp in stamps.items():
            if self._stamps.get(file) != stamp:
                runtimes = self._load_file(file, strict)
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
        if not self.path.exists():
            # `serve` refuses a missing path at start; this is one that went away while running.
            log.warning("runtimes path does not exist", extra={"fields": {"path": str(self.path)}})
        return document_files(self.path)

    def _load_file(self, file: Path, strict: bool = False) -> list[AgentRuntime] | None:
        """The AgentRuntimes in `file`, or None when it cannot be read (the last good content stays)."""
        try:
            return read_runtimes_file(file, self.options)
        except RuntimesFileError as err:
            if strict:
                raise
            log.error("cannot load runtimes file; keeping its last good content",
                      extra={"fields": {"file": str(file), "error": str(err.error)}})
            return None

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_interval):
            try:
                self.reload()
            except Exception:  # the poller must outlive any surprise in a file
                log.exception("file source reload failed")
