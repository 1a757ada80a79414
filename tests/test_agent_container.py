"""SPEC §4: which container is the agent. First match wins: kagenti.io/agent-container, kubectl's
default-container, a container named "agent", the first non-sidecar (configurable list), containers[0]."""

from __future__ import annotations

import pytest

from app.core.container import AgentContainerNotFound, choose_agent_container
from app.core.model import ANNOTATION_AGENT_CONTAINER, ANNOTATION_DEFAULT_CONTAINER, DEFAULT_SIDECAR_NAMES
from app.core.mutation import MutationOptions, mutate_pod
from tests.builders import (
    NAMESPACE,
    apply_and_recheck,
    container,
    deployment_pod,
    index_of,
    runtime_object,
    skill,
)

OURS = ANNOTATION_AGENT_CONTAINER
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
    assert choose_agent_container(names, annotations, sidecars) == expected


def test_no_containers_means_no_agent():
    assert choose_agent_container([], {OURS: "agent"}, DEFAULT_SIDECAR_NAMES) is None


@pytest.mark.parametrize("annotation", [OURS, KUBECTL])
def test_annotation_naming_a_missing_container_raises(annotation):
    with pytest.raises(AgentContainerNotFound) as caught:
        choose_agent_container(["agent", "envoy-proxy"], {annotation: "ghost"}, DEFAULT_SIDECAR_NAMES)
    assert caught.value.annotation == annotation
    assert caught.value.container == "ghost"
    assert "ghost" in str(caught.value) and annotation in str(caught.value)


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
