"""Can this cluster run image volumes? The decision behind `--image-volumes auto|on|off` (docs/mutation.md "Image volumes").

Image volumes (`spec.volumes[].image`) arrived in Kubernetes 1.31 behind the `ImageVolume` feature gate:
alpha in 1.31-1.32, beta but off by default in 1.33-1.34, on by default from 1.35. The gate matters more
than it seems: an API server with it off does not reject an image volume, it silently drops the volume
and its mounts, so the pod would start without its skills while our annotations and SKILL_FOLDERS claim
them. That is why `auto` stays off on 1.31-1.34 unless the admin, who knows the gate, says `on`.
Off does not mean without skills: `--delivery auto` then delivers them by extraction instead
(app.core.mutation.delivery); only `--delivery image` injects nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

ImageVolumeSetting = Literal["auto", "on", "off"]

FIRST_IMAGE_VOLUME_VERSION = (1, 31)
DEFAULT_ON_VERSION = (1, 35)

_LEADING_DIGITS = re.compile(r"\s*(\d+)")
_GIT_VERSION = re.compile(r"\s*v?(\d+)\.(\d+)")


@dataclass(frozen=True)
class ImageVolumeDecision:
    enabled: bool
    reason: str


def decide_image_volumes(setting: ImageVolumeSetting, server_version: tuple[int, int] | None) -> ImageVolumeDecision:
    """Whether to inject image volumes, and why (the reason is logged at start and put in pod warnings).

    `server_version` is None when there is no API server to ask (the file source): `auto` then means on,
    because whoever runs the webhook without a cluster is previewing what it would do.
    """
    if setting == "on":
        return ImageVolumeDecision(True, _with_server("--image-volumes on", server_version))
    if setting == "off":
        return ImageVolumeDecision(False, _with_server("--image-volumes off", server_version))
    if server_version is None:
        return ImageVolumeDecision(True, "--image-volumes auto without an API server to ask (file source): on")
    shown = _show(server_version)
    if server_version >= DEFAULT_ON_VERSION:
        return ImageVolumeDecision(
            True, f"--image-volumes auto: Kubernetes {shown} enables the ImageVolume feature gate by default (1.35+)"
        )
    if server_version < FIRST_IMAGE_VOLUME_VERSION:
        return ImageVolumeDecision(
            False, f"--image-volumes auto: Kubernetes {shown} has no image volumes (they arrived in 1.31)"
        )
    return ImageVolumeDecision(
        False,
        f"--image-volumes auto: Kubernetes {shown} has the ImageVolume feature gate off by default (1.31-1.34), "
        "and an API server with it off silently drops image volumes; "
        "set --image-volumes on if this cluster enables the gate",
    )


def parse_server_version(major: str | None, minor: str | None, git_version: str | None = None) -> tuple[int, int]:
    """(major, minor) from a /version answer.

    Managed clusters decorate the numbers ("33+" on GKE and EKS), so take the leading digits; when
    major/minor are empty (some distributions leave them out) fall back to gitVersion ("v1.33.2-gke.1").
    Raises ValueError when neither gives a version.
    """
    major_match = _LEADING_DIGITS.match(major or "")
    minor_match = _LEADING_DIGITS.match(minor or "")
    if major_match and minor_match:
        return int(major_match.group(1)), int(minor_match.group(1))
    git_match = _GIT_VERSION.match(git_version or "")
    if git_match:
        return int(git_match.group(1)), int(git_match.group(2))
    raise ValueError(
        f"cannot read a Kubernetes version from major={major!r} minor={minor!r} gitVersion={git_version!r}"
    )


def _show(version: tuple[int, int]) -> str:
    return f"{version[0]}.{version[1]}"


def _with_server(prefix: str, server_version: tuple[int, int] | None) -> str:
    if server_version is None:
        return prefix
    return f"{prefix} (Kubernetes {_show(server_version)})"
