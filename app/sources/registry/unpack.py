"""Safe, streaming unpacking of image layers into one skill directory.

A layer is read once, as it arrives: decompressed (gzip, zstd, or none) in bounded reads, parsed by
`tarfile` in stream mode, each entry written with `*at` system calls relative to descriptors of
real directories beneath the skill directory, never following a symlink. So no layer can write,
link or delete outside the skill directory, whatever it holds, and memory stays bounded whatever
its size. Every refusal names the entry; nothing is skipped silently:

- names that are absolute or hold a `..` segment, and anything below a symlink (`s -> /etc` then
  `s/x`): the parent of each entry is opened component by component with O_NOFOLLOW;
- symlinks whose target is absolute or climbs out of the skill directory (or out of `confine`,
  the sub-directory the agent mounts, for entries below it: the kernel resolves `..` at the mount);
  hard links to anything but a regular file of the skill;
- device, fifo and other special entries, and setuid/setgid bits;
- more than `max_files` entries or `max_bytes` of file content over all layers of a skill, decided
  from each entry's header before its data is read (a gzip bomb stops at its first header); the
  tar stream may hold at most HEADER_ALLOWANCE bytes between the end of one entry's data and the
  next entry, so oversized extended headers cannot fill memory either;
- a layer that ends early (mid-entry, mid-header, or without its end-of-archive block).

Whiteouts follow the OCI layer rules: `.wh.NAME` removes NAME and `.wh..wh..opq` empties its
directory, of what LOWER layers put there; entries of the same layer stay, wherever the marker sits.

Ownership is not kept (the puller runs as an unprivileged user) and modes are normalised so that
whoever mounts the skill can read it: directories 0755, files 0644, or 0755 when the entry had
any execute bit. Nothing is group- or world-writable.
"""

from __future__ import annotations

import errno
import gzip
import os
import shutil
import stat
import tarfile
import zlib
from dataclasses import dataclass
from typing import BinaryIO, Callable

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_FILES = 10_000
# Headers (extended pax and GNU long-name records) between two entries' data, plus tarfile's
# read-ahead; the tar format pads what follows the end-of-archive block to at most a record.
HEADER_ALLOWANCE = 1024 * 1024
_CHUNK = 256 * 1024
_BLOCK = 512
# zstd frames may ask for windows of up to 2 GiB; image tooling writes at most 8 MiB (level 19).
ZSTD_MAX_WINDOW = 8 * 1024 * 1024

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"

# Layer media type -> compression ("" for none).
LAYER_COMPRESSION = {
    "application/vnd.oci.image.layer.v1.tar": "",
    "application/vnd.oci.image.layer.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd": "zstd",
    "application/vnd.docker.image.rootfs.diff.tar": "",
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "gzip",
    "application/vnd.agentskills.skill.content.v1.tar+gzip": "gzip",
}

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class UnpackError(Exception):
    """A layer refused or broken; the message names the entry when one is at fault."""


@dataclass(frozen=True)
class Limits:
    max_bytes: int = DEFAULT_MAX_BYTES
    max_files: int = DEFAULT_MAX_FILES


def show(name: str) -> str:
    """An entry name as messages print it: quoted, control characters escaped."""
    return repr(name)


def entry_parts(name: str) -> list[str]:
    """The components of an entry name (`./a//b/` -> [a, b]); raises ValueError for an absolute
    name or a `..` segment."""
    if name.startswith("/"):
        raise ValueError("an absolute path leaves the skill directory")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ValueError('a ".." segment leaves the skill directory')
    return parts


class Unpacker:
    """Unpacks the layers of one image, in order, into `root` (an existing, empty directory).

    `files` and `bytes` count entries and file content over all layers so far. `confine` is the
    sub-directory the agent will mount, if not the whole skill (see the module docstring)."""

    def __init__(self, root: str | os.PathLike, limits: Limits = Limits(), *, confine: str = "") -> None:
        self.limits = limits
        self.files = 0
        self.bytes = 0
        self._confine = entry_parts(confine)
        self._root = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._layer_paths: set[str] = set()

    def close(self) -> None:
        if self._root >= 0:
            os.close(self._root)
            self._root = -1

    def __enter__(self) -> "Unpacker":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one layer --------------------------------------------------------------------------------

    def add_layer(self, source: BinaryIO, compression: str) -> None:
        """Unpack one layer read from `source` (its bytes as stored: compressed, if it is)."""
        self._layer_paths = set()
        stream = _TarStream(_decompressed(source, compression))
        try:
            tar = tarfile.open(fileobj=stream, mode="r|")  # type: ignore[call-overload]
            for member in tar:
                parts = self._check(member)
                # This entry's data, then what the next headers may take.
                stream.allow(tar.offset + HEADER_ALLOWANCE)
                if parts:
                    self._apply(tar, member, parts)
            end = tar.offset
            stream.drain()
        except UnpackError:
            raise
        except EOFError:
            raise UnpackError("the layer ends early (its compressed stream is cut short)") from None
        except tarfile.TarError as exc:
            raise UnpackError(f"the layer is not a valid tar archive ({exc})") from None
        except (zlib.error, gzip.BadGzipFile) as exc:
            raise UnpackError(f"the layer is not valid gzip ({exc})") from None
        if stream.position < end + _BLOCK or stream.last_data_end > end:
            # tarfile ends quietly at a cut or damaged header; a whole archive ends with zero blocks.
            raise UnpackError("the layer ends early or is damaged (no end-of-archive block after the last entry)")

    def _check(self, member: tarfile.TarInfo) -> list[str]:
        """The entry's name components, once it passes the checks that need no file system."""
        name = member.name
        self.files += 1
        if self.files > self.limits.max_files:
            raise UnpackError(f"entry {show(name)}: more than {self.limits.max_files} entries")
        try:
            parts = entry_parts(name)
        except ValueError as exc:
            raise UnpackError(f"entry {show(name)}: {exc}") from None
        if member.mode & (stat.S_ISUID | stat.S_ISGID):
            raise UnpackError(f"entry {show(name)}: setuid/setgid bits are refused")
        if member.ischr() or member.isblk() or member.isfifo():
            raise UnpackError(f"entry {show(name)}: a device or fifo is refused")
        if member.issparse() or not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
            raise UnpackError(f"entry {show(name)}: unsupported entry type {member.type!r}")
        if not parts and not member.isdir():
            raise UnpackError(f"entry {show(name)}: names the skill directory itself")
        if member.isreg() and self.bytes + member.size > self.limits.max_bytes:
            raise UnpackError(f"entry {show(name)}: the skill would exceed {self.limits.max_bytes} bytes unpacked")
        return parts

    def _apply(self, tar: tarfile.TarFile, member: tarfile.TarInfo, parts: list[str]) -> None:
        try:
            if member.isreg() and parts[-1].startswith(WHITEOUT_PREFIX):
                self._whiteout(member.name, parts)
                return
            parent = self._open_parent(member.name, parts, create=True)
            try:
                self._make(tar, member, parts, parent)
            finally:
                os.close(parent)
        except OSError as exc:
            raise UnpackError(f"entry {show(member.name)}: {exc.strerror or exc}") from None
        # The entry and the directories it is in are this layer's: its whiteouts leave them.
        for depth in range(1, len(parts) + 1):
            self._layer_paths.add("/".join(parts[:depth]))

    def _make(self, tar: tarfile.TarFile, member: tarfile.TarInfo, parts: list[str], parent: int) -> None:
        base = parts[-1]
        if member.isdir():
            self._make_dir(parent, base)
        elif member.issym():
            self._check_symlink(member.name, parts, member.linkname)
            _remove(parent, base)
            os.symlink(member.linkname, base, dir_fd=parent)
        elif member.islnk():
            self._hard_link(member, parts, parent)
        else:
            self._write_file(tar, member, parent, base)

    # -- entries ----------------------------------------------------------------------------------

    def _open_parent(self, name: str, parts: list[str], *, create: bool) -> int:
        """A descriptor of the entry's parent directory, walked from the root without following a
        symlink; missing directories are made when `create`, else -1 is returned."""
        fd = os.dup(self._root)
        try:
            for depth, part in enumerate(parts[:-1]):
                try:
                    child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        os.close(fd)
                        return -1
                    os.mkdir(part, 0o755, dir_fd=fd)
                    child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                        raise
                    where = "/".join(parts[: depth + 1])
                    if stat.S_ISLNK(os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode):
                        raise UnpackError(
                            f"entry {show(name)}: {show(where)} is a symlink; nothing is written through a symlink"
                        ) from None
                    raise UnpackError(f"entry {show(name)}: {show(where)} is not a directory") from None
                os.close(fd)
                fd = child
            return fd
        except BaseException:
            if fd >= 0:
                os.close(fd)
            raise

    def _make_dir(self, parent: int, base: str) -> None:
        try:
            if stat.S_ISDIR(os.stat(base, dir_fd=parent, follow_symlinks=False).st_mode):
                return
            _remove(parent, base)
        except FileNotFoundError:
            pass
        os.mkdir(base, 0o755, dir_fd=parent)

    def _check_symlink(self, name: str, parts: list[str], target: str) -> None:
        """Only a relative target whose `..` segments all lead, and climb no higher than the
        directory the agent mounts: the kernel resolves `a/../b` through `a` if `a` is a symlink,
        so a `..` after a name is refused rather than normalised away."""
        if not target:
            raise UnpackError(f"entry {show(name)}: a symlink with an empty target")
        if target.startswith("/"):
            raise UnpackError(f"entry {show(name)}: symlink target {show(target)} is absolute and leaves the skill directory")
        segments = [s for s in target.split("/") if s not in ("", ".")]
        climbs = 0
        while climbs < len(segments) and segments[climbs] == "..":
            climbs += 1
        if ".." in segments[climbs:]:
            raise UnpackError(f"entry {show(name)}: symlink target {show(target)} has a \"..\" after a name")
        depth = len(parts) - 1
        if self._confine and parts[: len(self._confine)] == self._confine and len(parts) > len(self._confine):
            depth -= len(self._confine)
        if climbs > depth:
            raise UnpackError(f"entry {show(name)}: symlink target {show(target)} leaves the skill directory")

    def _hard_link(self, member: tarfile.TarInfo, parts: list[str], parent: int) -> None:
        name, target = member.name, member.linkname
        try:
            target_parts = entry_parts(target)
        except ValueError as exc:
            raise UnpackError(f"entry {show(name)}: hard link target {show(target)}: {exc}") from None
        if target_parts == parts:
            return  # a link to itself changes nothing
        source = self._open_parent(name, target_parts, create=False) if target_parts else -1
        try:
            mode = 0
            if source >= 0:
                try:
                    mode = os.stat(target_parts[-1], dir_fd=source, follow_symlinks=False).st_mode
                except FileNotFoundError:
                    pass
            if not stat.S_ISREG(mode):
                raise UnpackError(
                    f"entry {show(name)}: hard link target {show(target)} is not a regular file of the skill"
                )
            _remove(parent, parts[-1])
            os.link(target_parts[-1], parts[-1], src_dir_fd=source, dst_dir_fd=parent, follow_symlinks=False)
        finally:
            if source >= 0:
                os.close(source)

    def _write_file(self, tar: tarfile.TarFile, member: tarfile.TarInfo, parent: int, base: str) -> None:
        _remove(parent, base)
        fd = os.open(base, _NEW_FILE_FLAGS, 0o600, dir_fd=parent)
        with open(fd, "wb", buffering=0) as out:
            data = tar.extractfile(member)
            if data is not None:
                while chunk := data.read(_CHUNK):
                    out.write(chunk)
            os.fchmod(fd, 0o755 if member.mode & 0o111 else 0o644)
        self.bytes += member.size

    # -- whiteouts --------------------------------------------------------------------------------

    def _whiteout(self, name: str, parts: list[str]) -> None:
        parent = self._open_parent(name, parts, create=False)
        if parent < 0:
            return  # nothing below there to remove
        try:
            directory = parts[:-1]
            if parts[-1] == OPAQUE_MARKER:
                self._clear_lower(parent, directory)
                return
            victim = parts[-1][len(WHITEOUT_PREFIX):]
            if victim in ("", ".", ".."):
                raise UnpackError(f"entry {show(name)}: a whiteout that names no entry")
            if "/".join(directory + [victim]) not in self._layer_paths:
                _remove(parent, victim)
        finally:
            os.close(parent)

    def _clear_lower(self, fd: int, directory: list[str]) -> None:
        """Remove what lower layers put below `fd`, keeping this layer's entries."""
        for child in os.listdir(fd):
            path = "/".join(directory + [child])
            if path not in self._layer_paths:
                _remove(fd, child)
                continue
            try:
                sub = os.open(child, _DIR_FLAGS, dir_fd=fd)
            except OSError:
                continue  # this layer's file or symlink
            try:
                self._clear_lower(sub, directory + [child])
            finally:
                os.close(sub)


def _remove(parent: int, name: str) -> None:
    """Remove `name` below `parent` whatever it is, never following a symlink."""
    try:
        os.unlink(name, dir_fd=parent)
    except FileNotFoundError:
        pass
    except IsADirectoryError:
        shutil.rmtree(name, dir_fd=parent)


def empty_directory(path: str | os.PathLike) -> None:
    """Remove everything inside `path` (a mounted volume cannot be removed itself)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for name in os.listdir(fd):
            _remove(fd, name)
    finally:
        os.close(fd)


# -- streams --------------------------------------------------------------------------------------


class _TarStream:
    """The uncompressed tar stream as tarfile reads it: counted, never read past the allowance,
    remembering where its last non-zero byte ended (the end-of-archive check)."""

    def __init__(self, read: Callable[[int], bytes]) -> None:
        self._read = read
        self.position = 0
        self.last_data_end = 0
        self._limit = HEADER_ALLOWANCE

    def allow(self, limit: int) -> None:
        self._limit = limit

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            size = _CHUNK
        room = self._limit - self.position
        if room <= 0:
            if self._read(1):
                raise UnpackError(
                    f"more than {HEADER_ALLOWANCE} bytes of headers or padding at offset {self.position} of the layer"
                )
            return b""
        data = self._read(min(size, room))
        if data:
            kept = len(data.rstrip(b"\0"))
            if kept:
                self.last_data_end = self.position + kept
            self.position += len(data)
        return data

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass


def _decompressed(source: BinaryIO, compression: str) -> Callable[[int], bytes]:
    """A bounded `read(n)` of the layer's uncompressed bytes."""
    if compression == "":
        return source.read
    if compression == "gzip":
        return gzip.GzipFile(fileobj=source, mode="rb").read
    if compression == "zstd":
        import zstandard  # only zstd layers pay for it

        reader = zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW).stream_reader(
            source, read_across_frames=True, closefd=False,
        )

        def read(size: int) -> bytes:
            try:
                return reader.read(size)
            except zstandard.ZstdError as exc:
                raise UnpackError(f"the layer is not valid zstd ({exc})") from None

        return read
    raise UnpackError(f"unknown compression {compression!r}")
