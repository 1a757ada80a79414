"""Building the JSON patch that mounts an AgentRuntime's skills into a pod (README "What the mutating webhook does").

Pure functions over the pod dict as the API server sent it. Every operation is computed against
that exact object, so the patch applies cleanly: whole arrays/maps are added where they are absent,
existing entries are appended to or replaced, and nothing already equal is touched, which makes a
second call on the patched pod (reinvocation) return an empty patch.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from app.core.mutation.injection import InjectedSkill, injected_record
from app.core.parsing.jsontext import dump_json
from app.core.model import ENV_SKILL_FOLDERS, AgentRuntime, volume_name
from app.core.names import DEFAULT_DOMAIN, Domain
# Mutation and validation must agree on when two mount paths are the same ("//a/./b/" is "/a/b").
from app.core.validation.paths import normalise as normalize_mount_path

Operation = dict[str, Any]


class SkillConflict(Exception):
    """The pod already holds something a skill needs (a volume name, a mount path): deny with 409."""


class MalformedPod(ValueError):
    """A field the patch must extend has the wrong type: deny with 400 rather than emit a bad patch."""


@dataclass
class SkillPatch:
    operations: list[Operation] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def compact_json(value: Any) -> str:
    """JSON without spaces, as annotation values are written (and compared on reinvocation)."""
    return dump_json(value).decode()


def escape_pointer(segment: str) -> str:
    """One JSON Pointer segment (RFC 6901): "~" and "/" must be escaped, in that order."""
    return segment.replace("~", "~0").replace("/", "~1")


def volume_for(skill: InjectedSkill) -> dict[str, Any]:
    image: dict[str, Any] = {"reference": skill.image}
    if skill.pullPolicy:
        image["pullPolicy"] = skill.pullPolicy
    return {"name": volume_name(skill.name), "image": image}


def pod_containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    """spec.containers, checked once for the whole mutation: a non-empty list of objects, else
    MalformedPod (a 400 naming the field, rather than a patch that cannot apply)."""
    spec = _field(pod, "spec", dict, "spec")
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers or not all(isinstance(c, dict) for c in containers):
        raise MalformedPod("spec.containers must be a non-empty list of containers")
    return containers


def build_skill_patch(
    pod: dict[str, Any],
    runtime: AgentRuntime,
    container_index: int,
    *,
    domain: Domain = DEFAULT_DOMAIN,
    references: Mapping[str, str] | None = None,
    skills_metadata: Mapping[str, Mapping[str, str]] | None = None,
) -> SkillPatch:
    """The patch that gives the container at `container_index` the skills of `runtime`.

    `references` maps a skill name to the image reference to inject instead of the one written
    (a digest-pinned `<repo>:<tag>@<digest>`); a volume already there with either reference is kept,
    and the record names the one the pod really has. `skills_metadata` is written as the
    `<domain>/skills-metadata` annotation when not empty.
    Raises SkillConflict (naming the AgentRuntime, the skill and what collided) or MalformedPod.
    """
    containers = pod_containers(pod)
    spec = pod["spec"]
    container = containers[container_index]
    skills = runtime.spec.skills
    refs = references or {}
    result = SkillPatch()
    where = f'AgentRuntime "{runtime.metadata.name}"'

    # 1. volumes
    volumes = _optional_list(spec, "volumes", "spec.volumes")
    present = {v["name"]: v for v in volumes or () if isinstance(v, dict) and isinstance(v.get("name"), str)}
    new_volumes: list[dict[str, Any]] = []
    injected: list[InjectedSkill] = []
    for skill in skills:
        wanted = refs.get(skill.name, skill.image)
        existing = present.get(skill.volume_name)
        if existing is None:
            entry = InjectedSkill(skill.name, wanted, skill.mountPath, skill.pullPolicy)
            volume = volume_for(entry)
            new_volumes.append(volume)
            present[skill.volume_name] = volume
        elif (reference := _image_reference(existing)) in (wanted, skill.image):
            entry = InjectedSkill(skill.name, reference, skill.mountPath, skill.pullPolicy)
        else:
            holder = (
                "another skill of the same name already uses"  # only when validation was bypassed
                if any(existing is v for v in new_volumes)
                else "the pod already has"
            )
            raise SkillConflict(
                f'{where}: skill "{skill.name}": {holder} a volume "{skill.volume_name}" '
                f"with another source ({_describe_source(existing)}), not image {wanted}"
            )
        injected.append(entry)
    result.operations += _append_all("/spec/volumes", volumes, new_volumes)

    # 2. mounts, agent container only
    base = f"/spec/containers/{container_index}"
    field_base = f"spec.containers[{container_index}]"
    container_name = container.get("name")
    mounts = _optional_list(container, "volumeMounts", f"{field_base}.volumeMounts")
    by_path = {
        normalize_mount_path(m["mountPath"]): m.get("name")
        for m in mounts or ()
        if isinstance(m, dict) and isinstance(m.get("mountPath"), str)
    } if mounts else {}
    # A block device at a skill's path: the API server would refuse the pod with a message that names
    # neither the AgentRuntime nor the skill, so say it here.
    device_list = _optional_list(container, "volumeDevices", f"{field_base}.volumeDevices")
    devices = {
        normalize_mount_path(d["devicePath"]): d.get("name")
        for d in device_list
        if isinstance(d, dict) and isinstance(d.get("devicePath"), str)
    } if device_list else {}
    new_mounts: list[dict[str, Any]] = []
    for skill, entry in zip(skills, injected):
        path = skill.normal_mount_path
        if path in devices:
            raise SkillConflict(
                f'{where}: skill "{entry.name}": mountPath {entry.mountPath} in container '
                f'"{container_name}" is already the devicePath of volumeDevice "{devices[path]}"'
            )
        holder = by_path.get(path)
        if holder is None:
            new_mounts.append({"name": skill.volume_name, "mountPath": entry.mountPath, "readOnly": True})
            by_path[path] = skill.volume_name
        elif holder != skill.volume_name:
            raise SkillConflict(
                f'{where}: skill "{entry.name}": mountPath {entry.mountPath} in container '
                f'"{container_name}" is already taken by volume "{holder}"'
            )
    result.operations += _append_all(f"{base}/volumeMounts", mounts, new_mounts)

    # 3. SKILL_FOLDERS
    paths = [s.mountPath for s in skills]
    result.operations += _skill_folders_ops(container, base, field_base, paths, result.warnings)

    # 4 + 5. annotations
    record = record_json(runtime.metadata.name, str(container.get("name", "")), tuple(injected))
    result.operations += _annotation_ops(pod, domain, [s.name for s in skills], record, skills_metadata, result.warnings)
    return result


@functools.lru_cache(maxsize=4096)
def record_json(runtime_name: str, container: str, injected: tuple[InjectedSkill, ...]) -> str:
    """The `skills-injected` annotation value. A pure function of its arguments, memoised: the same
    AgentRuntime injected into the same container gives the same record for every pod, and hashing
    its fingerprint per pod would be most of the mutation's own cost."""
    return compact_json(injected_record(runtime_name, container, injected))


@functools.lru_cache(maxsize=4096)
def _names_json(names: tuple[str, ...]) -> str:
    return compact_json(list(names))


def _skill_folders_ops(
    container: dict[str, Any], base: str, field_base: str, paths: list[str], warnings: list[str]
) -> list[Operation]:
    env = _optional_list(container, "env", f"{field_base}.env")
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
    # list, never as one entry: else it would be appended again on every reinvocation.
    joined = f",{','.join(listed)},"
    missing = [p for p in paths if not _is_listed(p, joined)]
    if not missing:
        return []
    merged = ",".join(listed + missing)
    return [{"op": "add", "path": f"{base}/env/{position}/value", "value": merged}]


def _folder_entries(value: str) -> list[str]:
    """The entries of a comma-separated SKILL_FOLDERS value, as its readers split it."""
    return [p for p in (s.strip() for s in value.split(",")) if p]


def _is_listed(path: str, joined: str) -> bool:
    entries = _folder_entries(path)
    return not entries or f",{','.join(entries)}," in joined


def _skill_folders_var(paths: list[str]) -> dict[str, Any]:
    return {"name": ENV_SKILL_FOLDERS, "value": ",".join(paths)}


def _annotation_ops(
    pod: dict[str, Any],
    domain: Domain,
    names: list[str],
    record: str,
    skills_metadata: Mapping[str, Mapping[str, str]] | None,
    warnings: list[str],
) -> list[Operation]:
    metadata = pod.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise MalformedPod("metadata must be an object")
    annotations = _optional_map(metadata or {}, "annotations", "metadata.annotations")
    wanted = {
        domain.skills: _names_json(tuple(_merge_names(annotations or {}, domain.skills, names, warnings))),
        domain.skills_injected: record,
    }
    if skills_metadata:
        wanted[domain.skills_metadata] = compact_json(skills_metadata)
    if metadata is None:
        return [{"op": "add", "path": "/metadata", "value": {"annotations": wanted}}]
    if annotations is None:
        return [{"op": "add", "path": "/metadata/annotations", "value": wanted}]
    return [
        {"op": "add", "path": f"/metadata/annotations/{escape_pointer(key)}", "value": value}
        for key, value in wanted.items()
        if annotations.get(key) != value
    ]


def _merge_names(annotations: dict[str, Any], key: str, names: list[str], warnings: list[str]) -> list[str]:
    raw = annotations.get(key)
    existing: list[str] = []
    if raw is not None:
        try:
            parsed = json.loads(raw) if isinstance(raw, str) else None
        except ValueError:
            parsed = None
        if isinstance(parsed, list) and all(isinstance(n, str) for n in parsed):
            existing = parsed
        else:
            warnings.append(f"annotation {key} was not a JSON array of names; replaced")
    merged = list(dict.fromkeys(existing))
    merged += [n for n in names if n not in merged]
    return merged


def _append_all(path: str, current: list[Any] | None, new: list[Any]) -> list[Operation]:
    if not new:
        return []
    if current is None:
        return [{"op": "add", "path": path, "value": new}]
    return [{"op": "add", "path": f"{path}/-", "value": item} for item in new]


def _field(obj: dict[str, Any], key: str, kind: type, where: str) -> Any:
    value = obj.get(key)
    if not isinstance(value, kind):
        raise MalformedPod(f"{where} must be {'a list' if kind is list else 'an object'}")
    return value


def _optional(obj: dict[str, Any], key: str, kind: type, where: str) -> Any:
    """The list/map at `key`, or None when absent (JSON null counts as absent: it is added whole)."""
    value = obj.get(key)
    return None if value is None else _field(obj, key, kind, where)


def _optional_list(obj: dict[str, Any], key: str, where: str) -> list[Any] | None:
    return _optional(obj, key, list, where)


def _optional_map(obj: dict[str, Any], key: str, where: str) -> dict[str, Any] | None:
    return _optional(obj, key, dict, where)


def _image_reference(volume: dict[str, Any]) -> str | None:
    image = volume.get("image")
    return image.get("reference") if isinstance(image, dict) else None


def _describe_source(volume: dict[str, Any]) -> str:
    sources = [k for k in volume if k != "name"]
    if "image" in sources:
        return f"image {_image_reference(volume)}"
    return ", ".join(sources) or "no source"
