"""Building the JSON patch that mounts an AgentRuntime's skills into a pod (docs/mutation.md).

Pure functions over the pod dict as the API server sent it. Every operation is computed against
that exact object, so the patch applies cleanly: whole arrays/maps are added where they are absent,
existing entries are appended to or replaced, and nothing already equal is touched, which makes a
second call on the patched pod (reinvocation) return an empty patch.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import orjson

from app.core.mutation.delivery import SkillDelivery
from app.core.mutation.folders import skill_folders_ops
from app.core.mutation.injection import InjectedSkill, injected_record
from app.core.mutation.puller import (
    DEFAULT_PULLER,
    PulledSkill,
    PullerConfig,
    is_puller,
    pulled_skills,
    puller_container,
    puller_volumes,
    skill_volume,
)
from app.core.model import AgentRuntime, volume_name
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
    # The skills as the pod has them after the patch (delivery and reference as really injected).
    injected: tuple[InjectedSkill, ...] = ()


def compact_json(value: Any) -> str:
    """JSON without spaces, as annotation values are written (and compared on reinvocation)."""
    return orjson.dumps(value).decode()


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
    deliveries: Sequence[SkillDelivery] | None = None,
    puller: PullerConfig = DEFAULT_PULLER,
) -> SkillPatch:
    """The patch that gives the container at `container_index` the skills of `runtime`.

    `references` maps a skill name to the image reference to inject instead of the one written
    (a digest-pinned `<repo>:<tag>@<digest>`); a volume already there with either reference is kept,
    and the record names the one the pod really has. `skills_metadata` is written as the
    `<domain>/skills-metadata` annotation when not empty. `deliveries` (spec order; None: image volumes
    of each skill's own `path`) says which skills the `puller` extracts; a skill volume already there in
    either delivery is kept as it is (a reinvocation after the resolver learned something).
    Raises SkillConflict (naming the AgentRuntime, the skill and what collided) or MalformedPod.
    """
    containers = pod_containers(pod)
    spec = pod["spec"]
    container = containers[container_index]
    skills = runtime.spec.skills
    refs = references or {}
    plans = list(deliveries) if deliveries is not None else [SkillDelivery("image", s.path) for s in skills]
    result = SkillPatch()
    where = f'AgentRuntime "{runtime.metadata.name}"'
    init_containers = _optional_list(spec, "initContainers", "spec.initContainers")
    ours = next((i for i, c in enumerate(init_containers or ()) if isinstance(c, dict) and is_puller(c, puller)), None)
    pulled = pulled_skills(init_containers[ours]) if ours is not None else {}

    # 1. volumes
    volumes = _optional_list(spec, "volumes", "spec.volumes")
    present = {v["name"]: v for v in volumes or () if isinstance(v, dict) and isinstance(v.get("name"), str)}
    new_volumes: list[dict[str, Any]] = []
    injected: list[InjectedSkill] = []
    for skill, plan in zip(skills, plans):
        wanted = refs.get(skill.name, skill.image)
        name = volume_name(skill.name)
        existing = present.get(name)
        if existing is None:
            entry = InjectedSkill(skill.name, wanted, skill.mountPath, skill.pullPolicy, plan.path, plan.delivery)
            volume = skill_volume(puller, skill.name) if plan.delivery == "extract" else volume_for(entry)
            new_volumes.append(volume)
            present[name] = volume
        elif (reference := _image_reference(existing)) in (wanted, skill.image):
            entry = InjectedSkill(skill.name, reference, skill.mountPath, skill.pullPolicy, plan.path)
        elif "emptyDir" in existing and skill.name in pulled:
            entry = InjectedSkill(skill.name, pulled[skill.name], skill.mountPath, skill.pullPolicy, plan.path,
                                  "extract")
        else:
            holder = (
                "another skill of the same name already uses"  # only when validation was bypassed
                if any(existing is v for v in new_volumes)
                else "the pod already has"
            )
            wanted_source = f"image {wanted}" if plan.delivery == "image" else f'an emptyDir filled by "{puller.name}"'
            raise SkillConflict(
                f'{where}: skill "{skill.name}": {holder} a volume "{name}" '
                f"with another source ({_describe_source(existing)}), not {wanted_source}"
            )
        injected.append(entry)
    extracted = [e for e in injected if e.delivery == "extract"]
    puller_ops: list[Operation] = []
    if extracted:
        puller_ops = _puller_ops(spec, containers, init_containers, ours, pulled, extracted, puller, present,
                                 new_volumes, where)
    result.operations += _append_all("/spec/volumes", volumes, new_volumes)
    result.operations += puller_ops

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
    for entry in injected:
        path, name = normalize_mount_path(entry.mountPath), volume_name(entry.name)
        if path in devices:
            raise SkillConflict(
                f'{where}: skill "{entry.name}": mountPath {entry.mountPath} in container '
                f'"{container_name}" is already the devicePath of volumeDevice "{devices[path]}"'
            )
        holder = by_path.get(path)
        if holder is None:
            mount = {"name": name, "mountPath": entry.mountPath, "readOnly": True}
            if entry.path is not None:
                mount["subPath"] = entry.path
            new_mounts.append(mount)
            by_path[path] = name
        elif holder != name:
            raise SkillConflict(
                f'{where}: skill "{entry.name}": mountPath {entry.mountPath} in container '
                f'"{container_name}" is already taken by volume "{holder}"'
            )
    result.operations += _append_all(f"{base}/volumeMounts", mounts, new_mounts)

    # 3. SKILL_FOLDERS
    paths = [s.mountPath for s in skills]
    env = _optional_list(container, "env", f"{field_base}.env")
    result.operations += skill_folders_ops(container, env, base, paths, result.warnings)

    # 4 + 5. annotations
    result.injected = tuple(injected)
    record = record_json(runtime.metadata.name, str(container.get("name", "")), result.injected)
    result.operations += _annotation_ops(pod, domain, [s.name for s in skills], record, skills_metadata, result.warnings)
    return result


def _puller_ops(
    spec: dict[str, Any],
    containers: list[dict[str, Any]],
    init_containers: list[Any] | None,
    ours: int | None,
    pulled: Mapping[str, str],
    extracted: list[InjectedSkill],
    config: PullerConfig,
    present: dict[str, dict[str, Any]],
    new_volumes: list[dict[str, Any]],
    where: str,
) -> list[Operation]:
    """The puller for the `extracted` skills, first among the init containers: added with its volumes,
    kept as it is when it already fetches them all (reinvocation: its arguments are never rewritten),
    rebuilt when a skill switched to extraction since it was added, moved back to the front when
    another webhook put an init container before it."""
    others = [*containers, *(c for i, c in enumerate(init_containers or ()) if isinstance(c, dict) and i != ours)]
    if any(c.get("name") == config.name for c in others):
        raise SkillConflict(
            f'{where}: skills delivered by extraction need the init container "{config.name}", and the pod already '
            f'has a container "{config.name}" that is not the skill puller'
        )
    if ours is not None and all(e.name in pulled for e in extracted):
        return [] if ours == 0 else [_to_front(ours)]
    secrets = _pull_secret_names(spec)
    container = puller_container(config, [PulledSkill(e.name, e.image, e.path) for e in extracted], secrets)
    if ours is not None:  # rebuilt in place, then moved to the front
        ops: list[Operation] = [{"op": "replace", "path": f"/spec/initContainers/{ours}", "value": container}]
        return ops + [_to_front(ours)] if ours != 0 else ops
    for volume in puller_volumes(config, secrets):
        existing = present.get(volume["name"])
        if existing is None:
            new_volumes.append(volume)
            present[volume["name"]] = volume
        elif existing != volume:
            raise SkillConflict(
                f'{where}: the skill puller needs a volume "{volume["name"]}", and the pod already has one '
                f"with another source ({_describe_source(existing)})"
            )
    if init_containers is None:
        return [{"op": "add", "path": "/spec/initContainers", "value": [container]}]
    return [{"op": "add", "path": "/spec/initContainers/0", "value": container}]


def _to_front(index: int) -> Operation:
    return {"op": "move", "from": f"/spec/initContainers/{index}", "path": "/spec/initContainers/0"}


def _pull_secret_names(spec: dict[str, Any]) -> list[str | None]:
    """The names in spec.imagePullSecrets by position (None for an entry without one)."""
    secrets = _optional_list(spec, "imagePullSecrets", "spec.imagePullSecrets") or []
    return [s["name"] if isinstance(s, dict) and isinstance(s.get("name"), str) and s["name"] else None
            for s in secrets]


@functools.lru_cache(maxsize=4096)
def record_json(runtime_name: str, container: str, injected: tuple[InjectedSkill, ...]) -> str:
    """The `skills-injected` annotation value. A pure function of its arguments, memoised: the same
    AgentRuntime injected into the same container gives the same record for every pod, and the
    canonical JSON and sha256 of its fingerprint, made afresh per pod, are a sixth of /mutate's time in
    process (three skills, measured side by side)."""
    return compact_json(injected_record(runtime_name, container, injected))


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
        domain.skills: compact_json(_merge_names(annotations or {}, domain.skills, names, warnings)),
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
