"""Golden cases as data: tests/cases/*.yaml, each an input pod, the AgentRuntimes cached, and either the
whole pod expected after the patch or the expected denial.

Each case goes through the whole envelope (AdmissionReview in, AdmissionReview response out), the
returned patch is applied with jsonpatch and the result compared with the expected pod as a whole,
then the mutation runs again on the result (the API server's reinvocation) and must return no patch.

Every case runs three ways: as written (kagenti.io keys), on a rossoctl cluster (`--domain rossoctl.io`,
group agent.rossoctl.dev: every key and group in the case renamed), and there with the skills declared
in the `rossoctl.io/skill-images` annotation instead of spec.skills (the rossoctl CRD prunes spec.skills).
The AgentRuntimes reach the index through the sources' own decoding (`cached_runtime`).

Case keys: description, pod, runtimes, optional namespace (default team-a), optional options
(sidecars: [...], imageVolumes: bool, synced: bool, delivery: auto|image|extract, puller: {fields of
PullerConfig}), then either expected (a whole Pod; a YAML alias of `pod` says "unchanged") or denied
({code, messageContains: [...]}), and optional warningsContain."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import json
from dataclasses import replace

import jsonpatch
import pytest
import yaml

from app.core.decode import cached_runtime
from app.core.matching.index import AgentRuntimeIndex
from app.core.mutation.injection import read_injected_record
from app.core.mutation.puller import PullerConfig
from app.core.mutation.review import MutationOptions
from app.core.names import Domain
from app.core.validation.agentruntime import ValidationOptions
from tests.builders import (
    decode_patch,
    NAMESPACE,
    apply_and_recheck,
    assert_valid_pod_public_api,
    review,
)

ROOT = Path(__file__).resolve().parent.parent
CASES_DIR = Path(__file__).resolve().parent / "cases"
CASE_FILES = sorted(CASES_DIR.glob("*.yaml"))
CASE_KEYS = {"description", "pod", "runtimes", "namespace", "options", "expected", "denied", "warningsContain"}
OPTION_KEYS = {"sidecars", "imageVolumes", "synced", "delivery", "puller"}


VARIANTS = ("kagenti", "rossoctl", "rossoctl-annotation")
ROSSOCTL = Domain("rossoctl.io")
ROSSOCTL_API = "agent.rossoctl.dev/v1alpha1"


def _load(path: Path, variant: str = "kagenti") -> dict[str, Any]:
    text = path.read_text()
    if variant != "kagenti":
        text = text.replace("kagenti.io/", "rossoctl.io/").replace("agent.kagenti.dev/", "agent.rossoctl.dev/")
    case = yaml.safe_load(text)
    if variant == "rossoctl-annotation":
        for runtime in case["runtimes"]:
            skills = runtime["spec"].pop("skills", None)
            if skills is not None:
                annotations = runtime["metadata"].setdefault("annotations", {})
                annotations[ROSSOCTL.skill_images] = json.dumps(skills)
    assert isinstance(case, dict), f"{path.name}: a case is a map"
    assert set(case) <= CASE_KEYS, f"{path.name}: unknown keys {sorted(set(case) - CASE_KEYS)}"
    assert {"description", "pod", "runtimes"} <= set(case), f"{path.name}: description, pod, runtimes required"
    assert ("expected" in case) != ("denied" in case), f"{path.name}: exactly one of expected / denied"
    assert set(case.get("options") or {}) <= OPTION_KEYS, f"{path.name}: unknown options"
    return case


def _options(case: dict[str, Any]) -> MutationOptions:
    options = case.get("options") or {}
    kwargs: dict[str, Any] = {}
    if "sidecars" in options:
        kwargs["sidecar_names"] = frozenset(options["sidecars"])
    if "imageVolumes" in options:
        kwargs["image_volumes"] = bool(options["imageVolumes"])
        # What app.core.mutation.capability says for `--image-volumes off`; the case checks it reaches the warning.
        kwargs["image_volumes_reason"] = "--image-volumes off"
    if "delivery" in options:
        kwargs["delivery"] = options["delivery"]
    if "puller" in options:
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in options["puller"].items()}
        kwargs["puller"] = PullerConfig(**fields)
    return MutationOptions(**kwargs)


def _as_list(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value or [])


def _index(case: dict[str, Any], validation: ValidationOptions) -> AgentRuntimeIndex:
    index = AgentRuntimeIndex()
    cached = [cached_runtime(obj, validation) for obj in case["runtimes"]]
    assert all(r is not None and not r.problems for r in cached), [r and r.problems for r in cached]
    index.replace_all(cached)
    if (case.get("options") or {}).get("synced", True):
        index.synced.set()
    return index


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("path", CASE_FILES, ids=[p.stem for p in CASE_FILES])
def test_golden_case(path, variant):
    case = _load(path, variant)
    namespace = case.get("namespace", NAMESPACE)
    options = _options(case)
    validation = ValidationOptions()
    if variant != "kagenti":
        options = replace(options, domain=ROSSOCTL)
        validation = replace(validation, domain=ROSSOCTL, agentruntime_api=ROSSOCTL_API)
    index = _index(case, validation)

    decision, response = review(case["pod"], index, options, namespace=namespace)

    for part in _as_list(case.get("warningsContain")):
        assert any(part in w for w in response["response"].get("warnings", [])), (
            f"no warning contains {part!r}: {decision.warnings}"
        )
    if not case.get("warningsContain"):
        assert decision.warnings == [], f"unexpected warnings: {decision.warnings}"

    if "denied" in case:
        denied = case["denied"]
        assert response["response"]["allowed"] is False
        assert "patch" not in response["response"]
        assert response["response"]["status"]["code"] == denied["code"]
        for part in _as_list(denied.get("messageContains")):
            assert part in response["response"]["status"]["message"]
        return

    assert response["response"]["allowed"] is True
    assert decode_patch(response) == (decision.patch or [])
    patched = apply_and_recheck(case["pod"], decision, index, options, namespace)
    assert patched == case["expected"], _difference(patched, case["expected"])
    assert_valid_pod_public_api(case["expected"])
    _only_the_agent_and_the_puller_change(case["pod"], patched, options)


def _only_the_agent_and_the_puller_change(before: dict[str, Any], after: dict[str, Any], options: MutationOptions) -> None:
    """Every container but the agent (the one the record names) is as it was, the only container added is
    the puller, and where there is a puller it is the first init container."""
    annotations = (after.get("metadata") or {}).get("annotations") or {}
    record = read_injected_record(annotations.get(options.domain.skills_injected))
    changed = {options.puller.name, record.container if record is not None else None}
    for kind in ("containers", "initContainers", "ephemeralContainers"):
        old = {c["name"]: c for c in before["spec"].get(kind) or []}
        new = {c["name"]: c for c in after["spec"].get(kind) or []}
        assert set(new) - set(old) <= {options.puller.name}, (kind, set(new) - set(old))
        for name, container in old.items():
            assert name in changed or new.get(name) == container, f"{kind} {name} changed"
    init = [c["name"] for c in after["spec"].get("initContainers") or []]
    if options.puller.name in init:
        assert init[0] == options.puller.name, init


def _difference(actual: dict[str, Any], expected: dict[str, Any]) -> str:
    """The JSON patch that would turn the actual pod into the expected one: a readable diff."""
    return "actual -> expected: " + jsonpatch.make_patch(actual, expected).to_string()


def test_there_are_enough_cases_and_both_outcomes():
    cases = [_load(p) for p in CASE_FILES]
    assert len(cases) >= 12
    # Both deliveries: some expected pods have the puller, some image volumes.
    expected = [c["expected"]["spec"] for c in cases if "expected" in c]
    assert any(c.get("initContainers") and c["initContainers"][0]["name"] == "skill-pull" for c in expected)
    assert any("image" in v for c in expected for v in c.get("volumes") or [])
    assert any("denied" in c for c in cases) and any(c.get("expected") != c["pod"] for c in cases if "expected" in c)


def test_the_sample_case_is_the_shipped_sample():
    """Case 01 is manifests/samples/ itself, so the README's curl and this test show the same thing."""
    case = _load(CASES_DIR / "01-sample-deployment-pod.yaml")
    samples = ROOT / "manifests" / "samples"
    assert case["pod"] == yaml.safe_load((samples / "pod.yaml").read_text())
    assert case["runtimes"] == [d for d in yaml.safe_load_all((samples / "agentruntimes.yaml").read_text()) if d]
