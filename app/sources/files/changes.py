"""File-change stamps: the one way this project notices that a file it reads was replaced.

Files are polled rather than watched with inotify, so that bind mounts, network filesystems and the
kubelet's ConfigMap/Secret symlink swaps all behave the same.
"""

from __future__ import annotations

import os
from typing import NamedTuple


class FileStamp(NamedTuple):
    """What changes when a file is replaced in any of the usual ways: rewritten in place (size,
    mtime), renamed over (inode), or swapped by the kubelet's `..data` symlink flip (stat follows
    the link, so the inode of the new target shows)."""

    device: int
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, path: str | os.PathLike[str]) -> "FileStamp | None":
        """The stamp of `path`, or None when it cannot be stat'ed (missing, no permission)."""
        try:
            st = os.stat(path)
        except OSError:
            return None
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
