"""decide_image_volumes and parse_server_version: the table of docs/mutation.md "Image volumes", row by row."""

from __future__ import annotations

import pytest

from app.core.mutation.capability import decide_image_volumes, parse_server_version

DECISIONS = [
    # setting, server version, enabled, words the reason must contain
    ("auto", None, True, "file source"),
    ("auto", (1, 29), False, "1.29 has no image volumes"),
    ("auto", (1, 30), False, "1.30 has no image volumes"),
    ("auto", (1, 31), False, "gate off by default"),
    ("auto", (1, 32), False, "gate off by default"),
    ("auto", (1, 33), False, "--image-volumes on"),
    ("auto", (1, 34), False, "silently drops"),
    ("auto", (1, 35), True, "1.35"),
    ("auto", (1, 36), True, "by default"),
    ("auto", (2, 0), True, "2.0"),
    ("auto", (0, 99), False, "no image volumes"),
    ("on", None, True, "--image-volumes on"),
    ("on", (1, 30), True, "Kubernetes 1.30"),
    ("on", (1, 33), True, "--image-volumes on"),
    ("on", (1, 36), True, "--image-volumes on"),
    ("off", None, False, "--image-volumes off"),
    ("off", (1, 33), False, "--image-volumes off"),
    ("off", (1, 36), False, "Kubernetes 1.36"),
]


@pytest.mark.parametrize(("setting", "version", "enabled", "reason_part"), DECISIONS)
def test_decide_image_volumes(setting, version, enabled, reason_part):
    decision = decide_image_volumes(setting, version)
    assert decision.enabled is enabled
    assert reason_part in decision.reason


VERSIONS = [
    # major, minor, gitVersion, expected
    ("1", "33", "v1.33.1", (1, 33)),
    ("1", "33+", "v1.33.5-gke.1", (1, 33)),
    ("1", "30+", "v1.30.14-eks-931bdca", (1, 30)),
    ("1", "35", None, (1, 35)),
    ("", "", "v1.34.2+k3s1", (1, 34)),
    (None, None, "1.31.0", (1, 31)),
    ("1", "", "v1.32.0", (1, 32)),
]


@pytest.mark.parametrize(("major", "minor", "git_version", "expected"), VERSIONS)
def test_parse_server_version(major, minor, git_version, expected):
    assert parse_server_version(major, minor, git_version) == expected


@pytest.mark.parametrize(("major", "minor", "git_version"), [("", "", ""), (None, None, None), ("x", "y", "vZ")])
def test_parse_server_version_rejects_what_is_not_a_version(major, minor, git_version):
    with pytest.raises(ValueError, match="cannot read a Kubernetes version"):
        parse_server_version(major, minor, git_version)
