"""Mount paths: normalisation, component-wise containment, and the paths a skill may not take."""

from __future__ import annotations

import posixpath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.core.validation.paths import (
    components,
    first_enclosing,
    first_owners,
    is_within,
    mount_path_problems,
    normalise,
)


@pytest.mark.parametrize(
    "path, normalised",
    [
        ("/a/b", "/a/b"),
        ("/a//b", "/a/b"),
        ("/a/./b/", "/a/b"),
        ("//a///b/.//", "/a/b"),
        ("/", "/"),
        ("//", "/"),
        ("/./", "/"),
        ("/.hidden/..x", "/.hidden/..x"),
    ],
)
def test_normalise(path: str, normalised: str) -> None:
    assert normalise(path) == normalised


@pytest.mark.parametrize(
    "path, parent, beneath",
    [
        ("/dev/x", "/dev", True),
        ("/devices", "/dev", False),
        ("/dev", "/dev", False),
        ("/a/b", "/a", True),
        ("/ab", "/a", False),
        ("/a", "/ab", False),
        ("/a//b/", "/a/", True),
        ("/a", "/", True),
        ("/", "/", False),
    ],
)
def test_containment_compares_whole_components(path: str, parent: str, beneath: bool) -> None:
    assert (is_within(components(path), components(parent)) and normalise(path) != normalise(parent)) is beneath
    assert is_within(components(path), components(parent)) is (beneath or normalise(path) == normalise(parent))


@pytest.mark.parametrize(
    "path, problems",
    [
        ("/agent/skills/x", ()),
        ("/devices/x", ()),
        ("/etc/skills", ()),
        ("/var/lib/skills", ()),
        ("/run/secrets-not", ()),
        ("/proc", ("must not be /proc or beneath it",)),
        ("/proc/self", ("must not be /proc or beneath it",)),
        ("/sys/", ("must not be /sys or beneath it",)),
        ("/dev/shm", ("must not be /dev or beneath it",)),
        ("//dev", ("must not be /dev or beneath it",)),
        ("/var/run/secrets", ("must not be /var/run/secrets or beneath it",)),
        ("/var/run/secrets/kubernetes.io/serviceaccount", ("must not be /var/run/secrets or beneath it",)),
        ("/run/secrets/x", ("must not be /run/secrets or beneath it",)),
        ("/", ("must not be the root directory",)),
        ("/./", ("must not be the root directory",)),
        ("/etc", ("must not be the system directory /etc",)),
        ("/lib64/", ("must not be the system directory /lib64",)),
        ("/run", ("must not be the system directory /run",)),
        ("/var", ("must not be the system directory /var",)),
        ("relative", ("must be an absolute path",)),
        ("./x", ("must be an absolute path",)),
        ("/a/../b", ("must not contain '..'",)),
        ("/a/..", ("must not contain '..'",)),
        ("../a", ("must be an absolute path", "must not contain '..'")),
        ("/" + "a" * 4096, ("must be no more than 4096 characters",)),
        ("/" + "a" * 4095, ()),
        ("/var/run", ("must not be the system directory /var/run",)),
        ("/var//run/", ("must not be the system directory /var/run",)),
        ("/var/run/skills", ()),
        ("/etc/hosts", ("must not be /etc/hosts, a file the kubelet writes into every container",)),
        ("/etc/hostname", ("must not be /etc/hostname, a file the kubelet writes into every container",)),
        ("/etc/./resolv.conf", ("must not be /etc/resolv.conf, a file the kubelet writes into every container",)),
        ("/etc/hosts.allow", ()),
        ("/x/\x00", ("must not contain control characters (found NUL at offset 3)",)),
        ("/x\ny", ("must not contain control characters (found newline at offset 2)",)),
        ("/x/\t", ("must not contain control characters (found tab at offset 3)",)),
        ("/x\x7f", ("must not contain control characters (found DEL at offset 2)",)),
        ("/x\x1f", ("must not contain control characters (found U+001F at offset 2)",)),
        ("/x/ y", ("path components must not begin or end with whitespace",)),
        ("/x /y", ("path components must not begin or end with whitespace",)),
        ("/x/y\u00a0", ("path components must not begin or end with whitespace",)),
        ("/x/a b", ()),
    ],
)
def test_mount_path_problems(path: str, problems: tuple[str, ...]) -> None:
    assert mount_path_problems(path) == problems


@given(
    before=st.text(st.characters(min_codepoint=0x30, max_codepoint=0x7a), max_size=8),
    char=st.sampled_from([chr(c) for c in range(0x20)] + ["\x7f"]),
    after=st.text(st.characters(min_codepoint=0x30, max_codepoint=0x7a), max_size=8),
)
def test_any_control_character_is_an_error(before: str, char: str, after: str) -> None:
    problems = mount_path_problems(f"/skills/{before}{char}{after}")
    assert any(p.startswith("must not contain control characters") for p in problems)


def test_first_enclosing_finds_the_outermost_owner() -> None:
    owners = first_owners([(0, components("/a")), (1, components("/a/b")), (2, components("/c")), (3, components("/a"))])
    assert owners == {("a",): 0, ("a", "b"): 1, ("c",): 2}
    assert first_enclosing(components("/a/b/c"), owners) == 0
    assert first_enclosing(components("/a"), owners) is None
    assert first_enclosing(components("/ab"), owners) is None


_paths = st.lists(st.sampled_from(["a", "b", "ab", ".", "", "dev", "devices"]), max_size=6).map(lambda p: "/" + "/".join(p))


@given(path=_paths, parent=_paths)
def test_containment_agrees_with_posix_normalisation(path: str, parent: str) -> None:
    norm, norm_parent = posixpath.normpath(path), posixpath.normpath(parent)
    # posixpath keeps a leading "//" (POSIX leaves it implementation-defined); Linux treats it as "/".
    norm, norm_parent = "/" + norm.lstrip("/"), "/" + norm_parent.lstrip("/")
    assert normalise(path) == norm
    assert normalise(normalise(path)) == normalise(path)
    expected = norm != norm_parent and (norm_parent == "/" or norm.startswith(norm_parent + "/"))
    assert (is_within(components(path), components(parent)) and norm != norm_parent) is expected
