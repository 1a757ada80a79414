"""Pull one skill image into a directory: every digest verified, layers streamed and unpacked safely.

The reference is resolved to a manifest (for an index, the entry for the wanted platform, else the
first one); a digest in the reference must match the manifest's bytes, and each entry and layer
is fetched by digest and checked against its descriptor: the digest over the bytes as stored
(compressed), computed while they stream, and the size. A layer is unpacked while it arrives
(app.sources.registry.unpack) and its digest is compared at its end, so a mismatch is found only
after its entries were written: callers therefore unpack where a failure leaves nothing that
could pass for a skill (`pull_by_hand`: beside the target, renamed into place when whole and
verified; `pull_into_volume`: a volume emptied again on failure).

The registry client is async (httpx); tarfile reads synchronously. A layer is unpacked in a
worker thread that takes each chunk from the event loop as it needs it, so at most one chunk of
the blob is held, and a stalled unpack stalls the download rather than buffering it.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterable, Mapping

from app.core.registry_facts import INDEXES, IMAGE_MANIFESTS, choose_platform_entry
from app.core.validation.oci import InvalidImageReference, parse_reference
from app.sources.registry.client import Manifest, RegistryClient, RegistryError, parse_docker_config
from app.sources.registry.unpack import LAYER_COMPRESSION, Limits, Unpacker, UnpackError, empty_directory, entry_parts

SKILL_FILE = "SKILL.md"
MAX_LAYERS = 128  # Docker's own limit is 127
_MAX_INDEX_DEPTH = 4
_DIGEST = re.compile(r"(sha256):([a-f0-9]{64})|(sha512):([a-f0-9]{128})")
_ARCHES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "armv6l": "arm", "i686": "386",
           "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}


class PullError(Exception):
    """A pull that failed; the message is one line saying why."""


@dataclass(frozen=True)
class Pulled:
    """What one pull unpacked: `digest` is the manifest (or index) the reference resolved to."""

    reference: str
    digest: str
    bytes: int
    files: int
    seconds: float


def default_platform() -> str:
    machine = os.uname().machine
    return f"linux/{_ARCHES.get(machine, machine)}"


def check_skill_path(path: str) -> list[str]:
    """The components of a skill's `path` (relative, no `..`, not the root); raises PullError."""
    try:
        parts = entry_parts(path)
    except ValueError as exc:
        raise PullError(f"path {path!r}: {exc}") from None
    if not parts:
        raise PullError(f"path {path!r} names the image's root; leave it out for that")
    return parts


def load_credentials(paths: Iterable[Path], warn: Callable[[str], None]) -> dict[str, tuple[str, str]]:
    """Registry credentials from docker config.json files, or directories of mounted pull secrets
    (`<dir>/<i>/.dockerconfigjson` or `.dockercfg`, in the order of the pod's imagePullSecrets).
    The first file naming a registry wins. A missing path gives nothing (the secrets are optional);
    an unreadable or invalid file is skipped with a warning, as the kubelet skips a broken secret."""
    found: dict[str, tuple[str, str]] = {}
    for path in paths:
        try:
            if path.is_dir():
                children = sorted((c for c in path.iterdir() if c.is_dir()), key=_secret_order)
                files = [f for c in children for f in (c / ".dockerconfigjson", c / ".dockercfg") if f.is_file()]
            else:
                files = [path] if path.exists() else []
        except OSError as exc:
            warn(f"pull secrets {path} ignored: {exc.strerror or exc}")
            continue
        for file in files:
            try:
                credentials = parse_docker_config(file.read_bytes(), legacy=file.name == ".dockercfg")
            except (OSError, ValueError) as exc:
                warn(f"pull secret {file} ignored: {exc}")
                continue
            for registry, pair in credentials.items():
                found.setdefault(registry, pair)
    return found


def _secret_order(child: Path) -> tuple[int, str]:
    return (int(child.name), "") if child.name.isdigit() else (1 << 30, child.name)


# -- the two ways to place a skill ----------------------------------------------------------------


async def pull_by_hand(client: RegistryClient, reference: str, into: Path, *, path: str = "",
                       limits: Limits = Limits(), platform: str | None = None) -> Pulled:
    """Unpack into a new directory beside `into` and rename it into place only when the whole image
    is verified; `into` must not exist or be an empty directory."""
    if path:
        check_skill_path(path)
    if into.is_symlink() or (into.exists() and (not into.is_dir() or any(into.iterdir()))):
        raise PullError(f"{into} exists and is not an empty directory")
    if not into.parent.is_dir():
        raise PullError(f"{into.parent} is not a directory")
    partial = Path(tempfile.mkdtemp(prefix=f".{into.name}.partial-", dir=into.parent))
    try:
        pulled = await pull_into(client, reference, partial, path=path, limits=limits, platform=platform)
        os.chmod(partial, 0o755)
        os.rename(partial, into)  # replaces an empty directory in one step
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return pulled


async def pull_into_volume(client: RegistryClient, reference: str, directory: Path, *, path: str = "",
                           limits: Limits = Limits(), platform: str | None = None) -> Pulled:
    """Empty `directory` (a mounted volume: it cannot be replaced, and a re-run puller finds the
    last attempt's files), unpack into it, and empty it again if anything fails."""
    if path:
        check_skill_path(path)
    directory.mkdir(mode=0o755, exist_ok=True)
    empty_directory(directory)
    try:
        return await pull_into(client, reference, directory, path=path, limits=limits, platform=platform)
    except BaseException:
        empty_directory(directory)
        raise


# -- one pull -------------------------------------------------------------------------------------


async def pull_into(client: RegistryClient, reference: str, directory: Path, *, path: str = "",
                    limits: Limits = Limits(), platform: str | None = None) -> Pulled:
    """Unpack the image `reference` names into `directory` (existing and empty); with `path`,
    check that `path/SKILL.md` is there."""
    started = time.monotonic()
    try:
        parsed = parse_reference(reference)
    except InvalidImageReference as exc:
        raise PullError(f"{reference!r} is not an image reference: {exc}") from None
    registry, repository = parsed.registry, parsed.repository
    try:
        top = await client.get_manifest(registry, repository, parsed.digest or parsed.tag or "latest")
        if parsed.digest is not None:
            _verify(top.body, parsed.digest, "the manifest")
        image = await _image_manifest(client, registry, repository, top, platform or default_platform())
        layers = _layers(image)
        with Unpacker(directory, limits, confine=path) as unpacker:
            for number, layer in enumerate(layers, 1):
                where = f"layer {number} of {len(layers)} ({layer['digest'][:19]})"
                try:
                    await _unpack_layer(client, registry, repository, layer, unpacker)
                except (UnpackError, PullError) as exc:
                    raise PullError(f"{where}: {exc}") from None
                except RegistryError as exc:
                    raise PullError(f"{reference}: {where}: {exc}") from None
    except RegistryError as exc:
        raise PullError(f"{reference}: {exc}") from None
    if path:
        _check_skill_file(directory, path)
    return Pulled(reference, parsed.digest or top.digest, unpacker.bytes, unpacker.files,
                  round(time.monotonic() - started, 3))


async def _image_manifest(client: RegistryClient, registry: str, repository: str,
                          manifest: Manifest, platform: str) -> Manifest:
    """The image manifest to unpack: `manifest` itself, or its index entry for `platform`."""
    for _ in range(_MAX_INDEX_DEPTH):
        media_type = manifest.document.get("mediaType") or manifest.media_type
        if media_type in IMAGE_MANIFESTS:
            return manifest
        if media_type not in INDEXES:
            raise PullError(f"manifest media type {media_type or 'none'} is neither an image nor an index")
        os_name, _, architecture = platform.partition("/")
        entry = choose_platform_entry(manifest.document, (os_name, architecture.split("/")[0]))
        if entry is None:
            raise PullError("the index lists no image")
        digest = _descriptor_digest(entry, "index entry")
        child = await client.get_manifest(registry, repository, digest)
        _verify(child.body, digest, f"index entry {digest[:19]}")
        manifest = child
    raise PullError(f"indexes nested more than {_MAX_INDEX_DEPTH} deep")


def _layers(manifest: Manifest) -> list[Mapping[str, Any]]:
    layers = manifest.document.get("layers")
    if not isinstance(layers, list) or not all(isinstance(layer, Mapping) for layer in layers):
        raise PullError("the image manifest has no list of layers")
    if len(layers) > MAX_LAYERS:
        raise PullError(f"the image has {len(layers)} layers, more than {MAX_LAYERS}")
    for layer in layers:
        _descriptor_digest(layer, "layer")
        if not isinstance(layer.get("size"), int) or layer["size"] < 0:
            raise PullError(f"layer {layer['digest'][:19]} has no valid size")
        if layer.get("mediaType") not in LAYER_COMPRESSION:
            raise PullError(f"layer {layer['digest'][:19]} has media type {layer.get('mediaType')!r}, "
                            "not a tar layer (tar, tar+gzip or tar+zstd)")
    return layers


def _descriptor_digest(descriptor: Mapping[str, Any], what: str) -> str:
    digest = descriptor.get("digest")
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise PullError(f"{what} has no valid digest ({digest!r})")
    return digest


def _verify(body: bytes, digest: str, what: str) -> None:
    algorithm, _, expected = digest.partition(":")
    if hashlib.new(algorithm, body).hexdigest() != expected:
        raise PullError(f"{what} does not match its digest {digest}")


async def _unpack_layer(client: RegistryClient, registry: str, repository: str,
                        layer: Mapping[str, Any], unpacker: Unpacker) -> None:
    loop = asyncio.get_running_loop()
    async with client.open_blob(registry, repository, layer["digest"]) as chunks:
        blob = VerifiedBlob(chunks, loop, layer["digest"], layer["size"], wait=2 * client.timeout + 5)

        def unpack() -> None:
            unpacker.add_layer(blob, LAYER_COMPRESSION[layer["mediaType"]])
            blob.finish()

        await asyncio.to_thread(unpack)


class VerifiedBlob:
    """A blob read from a worker thread, chunk by chunk from the event loop, hashed as it goes: at
    its end (or as soon as it is longer than its descriptor says) a wrong size or digest raises."""

    def __init__(self, chunks: AsyncIterator[bytes], loop: asyncio.AbstractEventLoop, digest: str, size: int,
                 *, wait: float) -> None:
        self._chunks, self._loop, self._wait = chunks, loop, wait
        self.digest, self.size = digest, size
        algorithm, _, self._expected = digest.partition(":")
        self._hash = hashlib.new(algorithm)
        self._seen = 0
        self._buffer = memoryview(b"")
        self._done = False

    def read(self, size: int = -1) -> bytes:
        while not self._buffer:
            if self._done:
                return b""
            # The client's own timeout fires first; this one only keeps the thread from outliving a
            # loop that stopped (an interrupted pull).
            try:
                chunk = asyncio.run_coroutine_threadsafe(_next(self._chunks), self._loop).result(self._wait)
            except TimeoutError:
                raise PullError(f"blob {self.digest[:19]}: no bytes for {self._wait:g}s") from None
            if chunk is None:
                self._end()
                continue
            self._seen += len(chunk)
            if self._seen > self.size:
                raise PullError(f"blob {self.digest[:19]} is longer than the {self.size} bytes its descriptor says")
            self._hash.update(chunk)
            self._buffer = memoryview(chunk)
        if size < 0 or size >= len(self._buffer):
            data, self._buffer = self._buffer, memoryview(b"")
        else:
            data, self._buffer = self._buffer[:size], self._buffer[size:]
        return bytes(data)

    def finish(self) -> None:
        """Read what the unpacker left (padding) and check the whole blob."""
        while self.read(1 << 16):
            pass

    def _end(self) -> None:
        self._done = True
        if self._seen != self.size:
            raise PullError(f"blob {self.digest[:19]} has {self._seen} bytes, its descriptor says {self.size}")
        if self._hash.hexdigest() != self._expected:
            raise PullError(f"blob does not match its digest {self.digest}")


async def _next(chunks: AsyncIterator[bytes]) -> bytes | None:
    return await anext(chunks, None)


def _check_skill_file(directory: Path, path: str) -> None:
    """`path/SKILL.md` is a regular file reached through real directories (the mount's subPath)."""
    parts = check_skill_path(path)
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts:
            try:
                child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except OSError:
                raise PullError(f"path {path!r} is not a directory of the image") from None
            os.close(fd)
            fd = child
        try:
            mode = os.stat(SKILL_FILE, dir_fd=fd, follow_symlinks=False).st_mode
        except FileNotFoundError:
            mode = 0
        if not stat.S_ISREG(mode):
            raise PullError(f"path {path!r} holds no {SKILL_FILE}")
    finally:
        os.close(fd)
