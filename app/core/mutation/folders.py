"""The agent container's SKILL_FOLDERS: the skills' mount paths, comma-separated, merged into a value
the container already sets (docs/mutation.md)."""

from __future__ import annotations

from typing import Any

from app.core.model import ENV_SKILL_FOLDERS
# Mutation and validation must agree on when two mount paths are the same ("//a/./b/" is "/a/b").
from app.core.validation.paths import normalise as normalize_mount_path


def skill_folders_ops(
    container: dict[str, Any], env: list[Any] | None, base: str, paths: list[str], warnings: list[str]
) -> list[dict[str, Any]]:
    """The operations that make the container's SKILL_FOLDERS list `paths` (its `env`, already checked to
    be a list or None, at JSON Pointer `base`): added, or extended with the paths it lacks."""
    if env is None:
        return [{"op": "add", "path": f"{base}/env", "value": [_skill_folders_var(paths)]}]
    # Kubernetes lets the last duplicate win, so that is the entry we read and extend.
    position = None
    for i, var in enumerate(env):
        if type(var) is dict and var.get("name") == ENV_SKILL_FOLDERS:
            position = i
    if position is None:
        return [{"op": "add", "path": f"{base}/env/-", "value": _skill_folders_var(paths)}]
    entry = env[position]
    if entry.get("valueFrom") is not None:
        warnings.append(
            f'container "{container.get("name")}" sets {ENV_SKILL_FOLDERS} with valueFrom; left unchanged, '
            f"so it may not list the skill folders {','.join(paths)}"
        )
        return []
    current = entry.get("value")
    listed = _folder_entries(current if isinstance(current, str) else "")
    # A mount path may itself hold a comma, so look for its entries as a consecutive run in the
    # list, never as one entry: else it would be appended again on every reinvocation. Entries are
    # compared as mount paths ("/x/" is "/x"), as validation compares them.
    joined = f",{','.join(map(_same_folder, listed))},"
    missing = [p for p in paths if not _is_listed(p, joined)]
    if not missing:
        return []
    merged = ",".join(listed + missing)
    return [{"op": "add", "path": f"{base}/env/{position}/value", "value": merged}]


def _folder_entries(value: str) -> list[str]:
    """The entries of a comma-separated SKILL_FOLDERS value, as its readers split it."""
    return [p for p in (s.strip() for s in value.split(",")) if p]


def _is_listed(path: str, joined: str) -> bool:
    entries = [_same_folder(e) for e in _folder_entries(path)]
    return not entries or f",{','.join(entries)}," in joined


def _same_folder(entry: str) -> str:
    """An entry as compared: an absolute path normalised ("//x/./" -> "/x"), anything else as it is."""
    return normalize_mount_path(entry) if entry.startswith("/") else entry


def _skill_folders_var(paths: list[str]) -> dict[str, Any]:
    return {"name": ENV_SKILL_FOLDERS, "value": ",".join(paths)}
