"""Which container is the agent. First match wins: the container of the pod's own injection record
(while it exists), <domain>/agent-container (missing: 409), kubectl's default-container (advisory:
missing is skipped with a warning), a container named "agent", the first non-sidecar (configurable
list), containers[0]. And two webhooks in either order, with reinvocation, keep skills in one place."""

from __future__ import annotations

import pytest

import copy
import json

from app.core.matching.container import AgentContainerNotFound, choose_agent_container
from app.core.model import DEFAULT_SIDECAR_NAMES
from app.core.names import ANNOTATION_DEFAULT_CONTAINER, DEFAULT_DOMAIN, Domain
from app.core.mutation.review import MutationOptions, mutate_pod
from tests.builders import (
    NAMESPACE,
    apply_and_recheck,
    container,
    deployment_pod,
    index_of,
    runtime_object,
    skill,
)

OURS = DEFAULT_DOMAIN.agent_container
KUBECTL = ANNOTATION_DEFAULT_CONTAINER

RULES = [
    # (containers, annotations, sidecar names, expected index)
    pytest.param(["envoy-proxy", "app", "agent"], {OURS: "envoy-proxy"}, DEFAULT_SIDECAR_NAMES, 0,
                 id="our-annotation-even-naming-a-sidecar"),
    pytest.param(["a", "b", "agent"], {OURS: "b", KUBECTL: "a"}, DEFAULT_SIDECAR_NAMES, 1,
                 id="our-annotation-before-kubectl"),
    pytest.param(["a", "b", "agent"], {KUBECTL: "b"}, DEFAULT_SIDECAR_NAMES, 1,
                 id="kubectl-default-container-before-agent-name"),
    pytest.param(["a", "b", "agent"], {OURS: "", KUBECTL: "a"}, DEFAULT_SIDECAR_NAMES, 0,
                 id="empty-annotation-is-ignored"),
    pytest.param(["envoy-proxy", "main", "agent"], {}, DEFAULT_SIDECAR_NAMES, 2,
                 id="container-named-agent-before-first-non-sidecar"),
    pytest.param(["envoy-proxy", "spiffe-helper", "main", "worker"], {}, DEFAULT_SIDECAR_NAMES, 2,
                 id="first-non-sidecar"),
    pytest.param(list(DEFAULT_SIDECAR_NAMES) + ["main"], {}, DEFAULT_SIDECAR_NAMES, len(DEFAULT_SIDECAR_NAMES),
                 id="every-default-sidecar-is-skipped"),
    pytest.param(["istio-proxy", "vault-agent"], {}, DEFAULT_SIDECAR_NAMES, 0,
                 id="only-sidecars-falls-back-to-first"),
    pytest.param(["istio-proxy", "main"], {}, ["main"], 0,
                 id="configured-list-replaces-the-default"),
    pytest.param(["logger", "main"], {}, ["logger"], 1, id="configured-sidecar-skipped"),
    pytest.param(["solo"], {}, DEFAULT_SIDECAR_NAMES, 0, id="single-container"),
    pytest.param(["x", "y"], {"other/annotation": "y", OURS: 3}, DEFAULT_SIDECAR_NAMES, 0,
                 id="non-string-annotation-is-ignored"),
]


@pytest.mark.parametrize(("names", "annotations", "sidecars", "expected"), RULES)
def test_choose_agent_container(names, annotations, sidecars, expected):
    choice = choose_agent_container(names, annotations, sidecars)
    assert (choice.position, choice.warnings) == (expected, ())


@pytest.mark.parametrize(
    ("names", "annotations", "recorded", "expected"),
    [
        pytest.param(["log-shipper", "app"], {}, "app", 1, id="record-beats-first-non-sidecar"),
        pytest.param(["app", "agent"], {OURS: "agent"}, "app", 0, id="record-beats-our-annotation"),
        pytest.param(["x", "app"], {KUBECTL: "x"}, "app", 1, id="record-beats-kubectl"),
        pytest.param(["log-shipper", "app"], {}, "gone", 0, id="missing-recorded-container-falls-through"),
    ],
)
def test_the_recorded_container_wins_while_it_exists(names, annotations, recorded, expected):
    assert choose_agent_container(names, annotations, DEFAULT_SIDECAR_NAMES, recorded=recorded).position == expected


def test_the_annotations_of_another_domain_count():
    rossoctl = Domain("rossoctl.io")
    names = ["a", "b"]
    assert choose_agent_container(names, {"rossoctl.io/agent-container": "b"}, (), rossoctl).position == 1
    assert choose_agent_container(names, {OURS: "b"}, (), rossoctl).position == 0


def test_our_annotation_naming_a_missing_container_raises():
    with pytest.raises(AgentContainerNotFound) as caught:
        choose_agent_container(["agent", "envoy-proxy"], {OURS: "ghost"}, DEFAULT_SIDECAR_NAMES)
    assert caught.value.annotation == OURS
    assert caught.value.container == "ghost"
    assert "ghost" in str(caught.value) and OURS in str(caught.value)


def test_kubectl_default_container_naming_a_missing_container_is_advisory():
    choice = choose_agent_container(["envoy-proxy", "main", "agent"], {KUBECTL: "ghost"}, DEFAULT_SIDECAR_NAMES)
    assert choice.position == 2
    assert len(choice.warnings) == 1 and KUBECTL in choice.warnings[0] and '"ghost"' in choice.warnings[0]


def test_kubectl_default_container_missing_reaches_the_admission_warnings():
    the_pod = deployment_pod(container("envoy-proxy"), container("main"), annotations={KUBECTL: "ghost"})
    index = index_of(runtime_object("rt", skills=[skill("s")]))
    decision = mutate_pod(the_pod, NAMESPACE, index, MutationOptions())
    assert decision.allowed and any("ghost" in w for w in decision.warnings)
    patched = apply_and_recheck(the_pod, decision, index, MutationOptions())
    assert _mounted_containers(patched) == ["main"]


def test_annotation_naming_an_init_container_is_a_missing_container():
    # Init containers never run the agent, so naming one is the same mistake as naming no container.
    the_pod = deployment_pod(container("main"), init_containers=[container("setup")], annotations={OURS: "setup"})
    index = index_of(runtime_object("rt", skills=[skill("s")]))
    decision = mutate_pod(the_pod, NAMESPACE, index, MutationOptions())
    assert not decision.allowed and decision.code == 409 and decision.reason == "Conflict"
    for part in ('AgentRuntime "rt"', OURS, '"setup"'):
        assert part in decision.message


def _mounted_containers(patched: dict) -> list[str]:
    return [c["name"] for c in patched["spec"]["containers"] if c.get("volumeMounts")]


@pytest.mark.parametrize(
    ("containers", "annotations", "sidecars", "agent"),
    [
        pytest.param(["envoy-proxy", "app"], None, DEFAULT_SIDECAR_NAMES, "app", id="default-sidecars"),
        pytest.param(["envoy-proxy", "app"], None, ("app",), "envoy-proxy", id="custom-sidecars"),
        pytest.param(["app", "agent"], {KUBECTL: "app"}, DEFAULT_SIDECAR_NAMES, "app", id="kubectl-annotation"),
        pytest.param(["app", "agent"], {OURS: "app", KUBECTL: "agent"}, DEFAULT_SIDECAR_NAMES, "app",
                     id="our-annotation"),
    ],
)
def test_only_the_chosen_container_gets_mounts_env_and_record(containers, annotations, sidecars, agent):
    the_pod = deployment_pod(*(container(n) for n in containers), annotations=annotations)
    index = index_of(runtime_object("rt", skills=[skill("s")]))
    options = MutationOptions(sidecar_names=frozenset(sidecars))
    decision = mutate_pod(the_pod, NAMESPACE, index, options)
    patched = apply_and_recheck(the_pod, decision, index, options)
    assert _mounted_containers(patched) == [agent]
    assert [c["name"] for c in patched["spec"]["containers"] if c.get("env")] == [agent]
    assert f'"container":"{agent}"' in patched["metadata"]["annotations"]["kagenti.io/skills-injected"]


# -- two webhooks, either order, with reinvocation -------------------------------------------------
#
# The upstream operator's pod webhook adds sidecars and an init container; an unknown webhook adds a
# container this project has never heard of at index 0. Whichever runs first, and however often the
# API server reinvokes us, the skills end in the agent container only and a second pass is empty.

UPSTREAM_SIDECARS = ("authbridge-proxy", "envoy-proxy", "spiffe-helper")


def _upstream_webhook(pod: dict) -> dict:
    out = copy.deepcopy(pod)
    spec = out["spec"]
    spec["containers"] = [container(n) for n in UPSTREAM_SIDECARS] + spec["containers"]
    spec["initContainers"] = [container("proxy-init")] + spec.get("initContainers", [])
    return out


def _log_shipper_webhook(pod: dict) -> dict:
    out = copy.deepcopy(pod)
    out["spec"]["containers"].insert(0, container("log-shipper"))
    return out


def _ours(pod: dict, index, options) -> dict:
    decision = mutate_pod(pod, NAMESPACE, index, options)
    assert decision.allowed, decision.message
    return apply_and_recheck(pod, decision, index, options)


@pytest.mark.parametrize(
    ("other", "annotations"),
    [
        pytest.param(_upstream_webhook, None, id="upstream-operator"),
        # A container nobody told us about, inserted before ours: only the pod can say which is the agent
        # when that webhook runs first (a known sidecar list cannot know every injector).
        pytest.param(_log_shipper_webhook, {OURS: "app"}, id="log-shipper-named-agent"),
    ],
)
@pytest.mark.parametrize("ours_first", [True, False], ids=["ours-first", "other-first"])
def test_two_webhooks_in_either_order_keep_skills_in_the_agent_container(other, annotations, ours_first):
    index = index_of(runtime_object("rt", skills=[skill("s1"), skill("s2")]))
    options = MutationOptions()
    created = deployment_pod(container("app"), annotations=annotations)
    if ours_first:
        pod = other(_ours(created, index, options))
    else:
        pod = _ours(other(created), index, options)
    # Reinvocation: the API server calls us again after the other webhook changed the pod.
    again = mutate_pod(pod, NAMESPACE, index, options)
    assert again.allowed and again.patch == [], again.patch
    assert _mounted_containers(pod) == ["app"]
    assert [c["name"] for c in pod["spec"].get("initContainers", []) if c.get("volumeMounts")] == []
    record = json.loads(pod["metadata"]["annotations"][DEFAULT_DOMAIN.skills_injected])
    assert record["container"] == "app"
    agent = next(c for c in pod["spec"]["containers"] if c["name"] == "app")
    assert [e for e in agent["env"] if e["name"] == "SKILL_FOLDERS"] == [
        {"name": "SKILL_FOLDERS", "value": "/agent/skills/s1,/agent/skills/s2"}
    ]


def test_unknown_container_inserted_after_us_never_gets_the_skills():
    """The defect this guards against: our record names "app"; a reinvocation after another webhook put
    an unknown container at index 0 must not mount the skills there too, nor rewrite the record."""
    index = index_of(runtime_object("rt", skills=[skill("s1")]))
    options = MutationOptions()
    pod = _log_shipper_webhook(_ours(deployment_pod(container("app")), index, options))
    assert mutate_pod(pod, NAMESPACE, index, options).patch == []
    assert _mounted_containers(pod) == ["app"]
