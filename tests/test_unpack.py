"""Safe streaming unpacking (app.sources.registry.unpack) on tar streams built in memory: what a
layer may hold, what is refused (each refusal naming the entry), whiteouts, limits, truncation."""

from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
from pathlib import Path

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from app.sources.registry.unpack import HEADER_ALLOWANCE, Limits, Unpacker, UnpackError, empty_directory

# -- building layers ------------------------------------------------------------------------------


def file(name: str, data: bytes = b"x", mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    return info, data


def directory(name: str, mode: int = 0o755) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, mode
    return info, None


def link(name: str, target: str, *, hard: bool = False) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = (tarfile.LNKTYPE if hard else tarfile.SYMTYPE), target
    return info, None


def special(name: str, kind: bytes) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    return info, None


def tar(*entries: tuple[tarfile.TarInfo, bytes | None], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=fmt) as archive:
        for info, data in entries:
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return raw.getvalue()


def unpack(root: Path, *layers: bytes, compression: str = "", limits: Limits = Limits(), confine: str = "") -> Unpacker:
    with Unpacker(root, limits, confine=confine) as unpacker:
        for layer in layers:
            unpacker.add_layer(io.BytesIO(layer), compression)
    return unpacker


def tree(root: Path) -> dict[str, object]:
    """path -> bytes (file), "dir", or ("link", target)."""
    found: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                found[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                found[rel] = "dir"
            else:
                found[rel] = path.read_bytes()
    return found


def refused(root: Path, *layers: bytes, **kwargs) -> str:
    with pytest.raises(UnpackError) as caught:
        unpack(root, *layers, **kwargs)
    return str(caught.value)


# -- what a layer may hold ------------------------------------------------------------------------


def test_files_directories_and_links_inside_the_skill(tmp_path):
    layer = tar(
        directory("docs"), file("SKILL.md", b"# skill"), file("docs/guide.md", b"guide"),
        file("bin/run.sh", b"#!/bin/sh", 0o700), link("docs/skill", "../SKILL.md"),
        link("again.md", "docs/guide.md", hard=True), directory("./"),
    )
    unpacker = unpack(tmp_path, gzip.compress(layer), compression="gzip")
    assert tree(tmp_path) == {
        "docs": "dir", "bin": "dir", "SKILL.md": b"# skill", "docs/guide.md": b"guide",
        "bin/run.sh": b"#!/bin/sh", "docs/skill": ("link", "../SKILL.md"), "again.md": b"guide",
    }
    assert (unpacker.files, unpacker.bytes) == (7, len(b"# skill") + len(b"guide") + len(b"#!/bin/sh"))
    assert os.stat(tmp_path / "again.md").st_ino == os.stat(tmp_path / "docs/guide.md").st_ino


def test_modes_are_readable_by_all_and_writable_by_none_but_the_owner(tmp_path):
    layer = tar(directory("private", 0o700), file("private/secret", b"s", 0o600),
                file("tool", b"t", 0o777), file("shared", b"w", 0o666))
    unpack(tmp_path, layer)
    modes = {p: stat.S_IMODE(os.stat(tmp_path / p).st_mode) for p in ("private", "private/secret", "tool", "shared")}
    assert modes == {"private": 0o755, "private/secret": 0o644, "tool": 0o755, "shared": 0o644}


def test_zstd_and_plain_tar_layers(tmp_path):
    layer = tar(file("SKILL.md", b"zstd skill"))
    for name, data, compression in (("z", zstandard.ZstdCompressor().compress(layer), "zstd"), ("t", layer, "")):
        (tmp_path / name).mkdir()
        unpack(tmp_path / name, data, compression=compression)
        assert (tmp_path / name / "SKILL.md").read_bytes() == b"zstd skill"


def test_a_later_layer_replaces_files_directories_and_links(tmp_path):
    lower = tar(directory("x"), file("x/inner", b"1"), file("y", b"file"), link("z", "y"))
    upper = tar(file("x", b"now a file"), directory("y"), file("y/inside", b"2"), file("z", b"no longer a link"))
    unpack(tmp_path, lower, upper)
    assert tree(tmp_path) == {"x": b"now a file", "y": "dir", "y/inside": b"2", "z": b"no longer a link"}


# -- whiteouts ------------------------------------------------------------------------------------


def test_whiteouts_remove_what_lower_layers_put_there(tmp_path):
    lower = tar(file("a/x", b"1"), file("a/y", b"2"), file("b/z", b"3"), file("keep", b"4"))
    upper = tar(file("a/.wh.x", b""), file(".wh.b", b""), file(".wh.never-was", b""))
    unpack(tmp_path, lower, upper)
    assert tree(tmp_path) == {"a": "dir", "a/y": b"2", "keep": b"4"}


def test_a_whiteout_leaves_an_entry_of_its_own_layer(tmp_path):
    unpack(tmp_path, tar(file("new", b"same layer"), file(".wh.new", b"")))
    assert tree(tmp_path) == {"new": b"same layer"}


def test_an_opaque_directory_keeps_only_its_own_layers_entries_wherever_the_marker_sits(tmp_path):
    lower = tar(file("d/old", b"1"), file("d/sub/old", b"2"), file("other", b"3"))
    upper = tar(file("d/sub/new", b"4"), file("d/.wh..wh..opq", b""), file("d/late", b"5"))
    unpack(tmp_path, lower, upper)
    assert tree(tmp_path) == {"d": "dir", "d/sub": "dir", "d/sub/new": b"4", "d/late": b"5", "other": b"3"}


def test_a_whiteout_naming_no_entry_is_refused(tmp_path):
    assert "entry 'd/.wh..'" in refused(tmp_path, tar(file("d/f"), file("d/.wh..", b"")))


# -- hostile layers: each refusal names the entry -------------------------------------------------


@pytest.mark.parametrize(("entries", "entry", "reason"), [
    ([file("../x")], "../x", '".." segment'),
    ([file("a/../../x")], "a/../../x", '".." segment'),
    ([file("/etc/x")], "/etc/x", "absolute"),
    ([link("s", "/etc"), file("s/x")], "s", "absolute"),
    ([link("a/s", "../../etc")], "a/s", "leaves the skill directory"),
    ([directory("sub"), link("s", "sub"), file("s/x")], "s/x", "is a symlink"),
    ([link("s", "sub/../..")], "s", '".." after a name'),
    ([link("s", "")], "s", "empty target"),
    ([link("h", "/etc/shadow", hard=True)], "h", "absolute"),
    ([link("h", "../etc/shadow", hard=True)], "h", '".." segment'),
    ([link("h", "missing", hard=True)], "h", "not a regular file"),
    ([link("s", "f"), file("f"), link("h", "s", hard=True)], "h", "not a regular file"),
    ([special("tty", tarfile.CHRTYPE)], "tty", "device"),
    ([special("disk", tarfile.BLKTYPE)], "disk", "device"),
    ([special("pipe", tarfile.FIFOTYPE)], "pipe", "fifo"),
    ([file("su", b"x", 0o4755)], "su", "setuid"),
    ([directory("sg", 0o2755)], "sg", "setuid/setgid"),
    ([file("."), ], ".", "skill directory itself"),
])
def test_hostile_entries_are_refused_by_name(tmp_path, entries, entry, reason):
    message = refused(tmp_path, tar(*entries))
    assert f"entry {entry!r}" in message and reason in message


def test_nothing_is_written_through_a_symlink_from_a_lower_layer(tmp_path):
    skill = tmp_path / "skill"
    skill.mkdir()
    message = refused(skill, tar(directory("d"), link("s", "d")), tar(file("s/x")))
    assert "entry 's/x'" in message and "'s' is a symlink" in message
    assert not (skill / "d" / "x").exists()


def test_a_symlink_may_not_climb_out_of_the_directory_the_agent_mounts(tmp_path):
    layer = tar(file("skills/a/SKILL.md"), file("skills/b/secret"), link("skills/a/peek", "../b/secret"))
    (tmp_path / "whole").mkdir()
    unpack(tmp_path / "whole", layer)  # the whole image mounted: inside it
    (tmp_path / "sub").mkdir()
    assert "entry 'skills/a/peek'" in refused(tmp_path / "sub", layer, confine="skills/a")


def test_more_entries_than_the_limit(tmp_path):
    """10,001 entries: ten files, 9,990 whiteouts (entries too, and cheap to apply), one more file."""
    entries = [file(f"kept{i}") for i in range(10)] + [file(f".wh.gone{i}", b"") for i in range(9_990)]
    message = refused(tmp_path, tar(*entries, file("one-too-many")))
    assert "entry 'one-too-many'" in message and "more than 10000 entries" in message
    assert sorted(os.listdir(tmp_path)) == sorted(f"kept{i}" for i in range(10))


def test_more_bytes_than_the_limit_is_refused_from_the_header(tmp_path):
    limits = Limits(max_bytes=1000)
    message = refused(tmp_path, tar(file("a", b"x" * 600)), tar(file("b", b"y" * 600)), limits=limits)
    assert "entry 'b'" in message and "1000 bytes" in message
    assert not (tmp_path / "b").exists()


def test_a_gzip_bomb_stops_at_its_first_oversized_header(tmp_path):
    """8 GiB of zeros declared in one entry, a few KB compressed: refused before any of it is read."""
    header = tarfile.TarInfo("bomb")
    header.size = 8 << 30
    zeros = gzip.compress(b"\0" * (1 << 20))
    read = []

    class Layer(io.RawIOBase):
        def __init__(self) -> None:
            self.parts = iter([gzip.compress(header.tobuf(tarfile.PAX_FORMAT))] + [zeros] * 8192)
            self.pending = b""

        def readable(self) -> bool:
            return True

        def readinto(self, buffer) -> int:
            if not self.pending:
                self.pending = next(self.parts, b"")
                read.append(len(self.pending))
            size = min(len(buffer), len(self.pending))
            buffer[:size], self.pending = self.pending[:size], self.pending[size:]
            return size

    with pytest.raises(UnpackError, match="entry 'bomb'.*67108864 bytes"):
        with Unpacker(tmp_path) as unpacker:
            unpacker.add_layer(io.BufferedReader(Layer()), "gzip")
    assert len(read) < 10


def test_oversized_extended_headers_are_refused_before_they_fill_memory(tmp_path):
    info = tarfile.TarInfo("named")
    info.pax_headers = {"comment": "c" * (2 * HEADER_ALLOWANCE)}
    message = refused(tmp_path, tar((info, b"")))
    assert "headers or padding" in message


@pytest.mark.parametrize("cut", ["mid-data", "mid-header", "no end blocks"])
def test_a_truncated_layer_is_an_error(tmp_path, cut):
    whole = tar(file("a", b"1" * 3000), file("b", b"2" * 100), fmt=tarfile.USTAR_FORMAT)
    second_header = 512 + 3072
    at = {"mid-data": 1500, "mid-header": second_header + 200, "no end blocks": second_header + 1024}[cut]
    message = refused(tmp_path, whole[:at])
    assert "ends early" in message or "unexpected end of data" in message


def test_a_cut_compressed_stream_is_an_error(tmp_path):
    layer = gzip.compress(tar(file("a", os.urandom(5000))))
    assert "ends early" in refused(tmp_path, layer[:-30], compression="gzip")


def test_garbage_is_not_a_layer(tmp_path):
    assert "not a valid tar" in refused(tmp_path, b"")
    assert "not valid gzip" in refused(tmp_path, b"not gzip at all", compression="gzip")
    assert "not valid zstd" in refused(tmp_path, b"not zstd at all", compression="zstd")


def test_a_damaged_header_after_the_first_is_not_taken_for_the_end(tmp_path):
    whole = bytearray(tar(file("a", b"1" * 10), file("b", b"2"), fmt=tarfile.USTAR_FORMAT))
    whole[1024 + 148] ^= 0x11  # the second header's checksum
    assert "damaged" in refused(tmp_path, bytes(whole))


def test_empty_directory_removes_everything_inside_but_not_the_directory(tmp_path):
    unpack(tmp_path, tar(file("a/b/c"), link("l", "a"), file("f")))
    (tmp_path / "a" / "b").chmod(0o555)
    empty_directory(tmp_path)
    assert tmp_path.is_dir() and os.listdir(tmp_path) == []


# -- properties -----------------------------------------------------------------------------------

_component = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=1, max_size=12).filter(
    lambda s: s not in (".", "..") and not s.startswith(".wh.")
)
_paths = st.lists(_component, min_size=1, max_size=4).map(tuple)


def _no_prefix_conflicts(files: dict[tuple[str, ...], bytes]) -> bool:
    return not any(other[: len(path)] == path for path in files for other in files if other != path)


@settings(deadline=None)
@given(st.dictionaries(_paths, st.binary(max_size=2000), min_size=1, max_size=25).filter(_no_prefix_conflicts),
       st.sampled_from(["", "gzip", "zstd"]))
def test_any_tar_of_safe_entries_unpacks_to_exactly_its_entries(tmp_path_factory, files, compression):
    root = tmp_path_factory.mktemp("prop")
    layer = tar(*(file("/".join(path), data) for path, data in sorted(files.items())))
    if compression == "gzip":
        layer = gzip.compress(layer)
    elif compression == "zstd":
        layer = zstandard.ZstdCompressor().compress(layer)
    unpacker = unpack(root, layer, compression=compression)
    expected: dict[str, object] = {"/".join(path): data for path, data in files.items()}
    for path in files:
        for depth in range(1, len(path)):
            expected["/".join(path[:depth])] = "dir"
    assert tree(root) == expected
    assert unpacker.bytes == sum(len(d) for d in files.values())


_unsafe_names = st.one_of(
    st.tuples(st.lists(_component, max_size=3), st.lists(_component, max_size=3)).map(
        lambda p: "/".join(p[0] + [".."] + p[1])),
    st.lists(_component, min_size=1, max_size=3).map(lambda p: "/" + "/".join(p)),
)


@settings(deadline=None)
@given(st.lists(_paths, max_size=5, unique=True).filter(lambda ps: _no_prefix_conflicts(dict.fromkeys(ps, b""))),
       _unsafe_names)
def test_any_entry_with_an_unsafe_name_is_refused(tmp_path_factory, safe, unsafe):
    root = tmp_path_factory.mktemp("unsafe")
    layer = tar(*(file("/".join(p)) for p in safe), file(unsafe))
    assert f"entry {unsafe!r}" in refused(root, layer)
    assert all(Path(root, *p).is_file() for p in safe)
