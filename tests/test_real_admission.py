"""The real admission chain of a real control plane: `skill-webhook serve --source kube` registered with
the product's own webhook configurations (by URL), the AgentRuntime CRD from manifests/crd.yaml, a
Deployment turned into Pods by kube-controller-manager, and the pods as the API server stored them.
Also the rossoctl layout: the operator's CRD prunes spec.skills, the annotation carries them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.kube_cluster import (
    KubeCluster,
    agentruntime,
    deployment,
    kube,
    pods,
    registered,
    serving,
    skill,
    skill_volumes,
    wait_until,
)

pytestmark = kube

ROSSOCTL_CRD = "agentruntimes.agent.rossoctl.dev"


def two_pods_created(cluster: KubeCluster, namespace: str, app: str) -> list[dict]:
    return wait_until(lambda: (lambda p: p if len(p) == 2 else None)(pods(cluster, namespace, f"app={app}")),
                      60, f"two pods of Deployment {app} in {namespace}")


def agent_container(pod: dict) -> dict:
    return next(c for c in pod["spec"]["containers"] if c["name"] == "agent")


def test_deployment_pods_get_their_skills_through_the_real_admission_chain(
    kube_controllers: KubeCluster, agentruntime_crd: str, kube_namespace: str, tmp_path: Path
) -> None:
    cluster, ns = kube_controllers, kube_namespace
    skills = [skill("resume-reviewer", "ghcr.io/example/resume-reviewer:v1.0.0", "/agent/skills/resume-reviewer"),
              skill("blog-writer", "ghcr.io/example/blog-writer:v2", "/app/.claude/skills/blog-writer")]
    with serving(tmp_path, cluster.kubeconfig) as served, registered(cluster, served, ns):
        cluster.apply(agentruntime("writer", ns, "web", skills))
        # The informer must hold the AgentRuntime before the ReplicaSet's first pod is admitted
        # (otherwise the pod would be created without skills, which is what this test would then show).
        wait_until(lambda: served.metric("skill_webhook_agentruntimes_cached") == 1, 10, "the AgentRuntime cached")
        cluster.apply(deployment("web", ns, replicas=2))
        # A pod of another workload in scope of the webhook, with no AgentRuntime: untouched.
        cluster.apply(deployment("plain", ns, replicas=2))

        created = two_pods_created(cluster, ns, "web")
        for pod in created:
            assert pod["status"]["phase"] == "Pending"  # no kubelet: what we see is what admission stored
            assert skill_volumes(pod) == {"skill-resume-reviewer": "ghcr.io/example/resume-reviewer:v1.0.0",
                                          "skill-blog-writer": "ghcr.io/example/blog-writer:v2"}
            container = agent_container(pod)
            mounts = {m["name"]: (m["mountPath"], m.get("readOnly")) for m in container["volumeMounts"]
                      if m["name"].startswith("skill-")}
            assert mounts == {"skill-resume-reviewer": ("/agent/skills/resume-reviewer", True),
                              "skill-blog-writer": ("/app/.claude/skills/blog-writer", True)}
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            assert env["SKILL_FOLDERS"] == "/agent/skills/resume-reviewer,/app/.claude/skills/blog-writer"
            annotations = pod["metadata"]["annotations"]
            assert json.loads(annotations["kagenti.io/skills"]) == ["resume-reviewer", "blog-writer"]
            record = json.loads(annotations["kagenti.io/skills-injected"])
            assert record["agentRuntime"] == "writer" and record["container"] == "agent"
            assert record["fingerprint"].startswith("sha256:")

        for pod in two_pods_created(cluster, ns, "plain"):
            assert skill_volumes(pod) == {}
            assert "kagenti.io/skills-injected" not in pod["metadata"].get("annotations", {})


def test_a_bad_agentruntime_is_refused_by_the_real_validating_webhook(
    kube_cluster: KubeCluster, agentruntime_crd: str, kube_namespace: str, tmp_path: Path
) -> None:
    cluster, ns = kube_cluster, kube_namespace
    bad = agentruntime("bad", ns, "web", [skill("procfs", "ghcr.io/example/procfs:v1", "/proc/x")])
    # The CRD's own schema lets this one through (an absolute path without ".."): only the webhook knows.
    cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(bad))

    with serving(tmp_path, cluster.kubeconfig) as served, registered(cluster, served, ns):
        refused = cluster.kubectl("apply", "-f", "-", input=json.dumps(bad), check=False)
        assert refused.returncode != 0
        assert 'admission webhook "validate-agentruntimes.agent.kagenti.dev" denied the request' in refused.stderr
        assert 'spec.skills[0].mountPath: Invalid value: "/proc/x"' in refused.stderr, refused.stderr
        assert cluster.kubectl("get", "agentruntime", "bad", "-n", ns, check=False).returncode != 0

        # A good one passes the same webhook, and a second one on the same workload is refused (a rule
        # that needs the informer's cache, so this also shows the cache is live).
        cluster.apply(agentruntime("good", ns, "web", [skill("ok", mount="/skills/ok")]))
        wait_until(lambda: served.metric("skill_webhook_agentruntimes_cached") == 1, 10, "the good one cached")
        twin = cluster.kubectl("apply", "-f", "-", check=False,
                               input=json.dumps(agentruntime("twin", ns, "web", [skill("ok", mount="/skills/ok")])))
        assert twin.returncode != 0 and "good" in twin.stderr and "denied the request" in twin.stderr, twin.stderr


# -- rossoctl: the operator's CRD, which has no spec.skills and prunes unknown fields ---------------------------


def rossoctl_crd() -> dict:
    """The shape of the rossoctl operator's CRD that matters here: spec without `skills` and without
    x-kubernetes-preserve-unknown-fields (so the API server prunes what it does not know)."""
    target_ref = {"type": "object", "required": ["apiVersion", "kind", "name"],
                  "properties": {k: {"type": "string"} for k in ("apiVersion", "kind", "name")}}
    spec = {"type": "object", "required": ["targetRef"], "properties": {
        "type": {"type": "string", "enum": ["agent", "tool"]}, "targetRef": target_ref,
        "authBridgeMode": {"type": "string"}, "mtlsMode": {"type": "string"}}}
    schema = {"type": "object", "properties": {
        "apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"},
        "spec": spec, "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": ROSSOCTL_CRD},
        "spec": {"group": "agent.rossoctl.dev", "scope": "Namespaced",
                 "names": {"plural": "agentruntimes", "singular": "agentruntime", "kind": "AgentRuntime",
                           "listKind": "AgentRuntimeList"},
                 "versions": [{"name": "v1alpha1", "served": True, "storage": True,
                               "schema": {"openAPIV3Schema": schema}, "subresources": {"status": {}}}]},
    }


@pytest.fixture(scope="module")
def rossoctl_crd_applied(kube_cluster: KubeCluster) -> str:
    kube_cluster.apply(rossoctl_crd())
    kube_cluster.kubectl("wait", "--for=condition=Established", f"crd/{ROSSOCTL_CRD}", "--timeout=60s")
    return ROSSOCTL_CRD


def test_rossoctl_crd_prunes_spec_skills_and_the_annotation_carries_them(
    kube_controllers: KubeCluster, rossoctl_crd_applied: str, kube_namespace: str, tmp_path: Path
) -> None:
    cluster, ns = kube_controllers, kube_namespace
    api, domain = "agent.rossoctl.dev/v1alpha1", "rossoctl.io"
    annotated = [skill("resume-reviewer", "ghcr.io/example/resume-reviewer:v1.0.0", "/agent/skills/resume-reviewer")]
    pruned = [skill("pruned", "ghcr.io/example/pruned:v1", "/agent/skills/pruned")]

    # spec.skills is pruned by the API server itself: what the operator's schema does not know is gone.
    # (kubectl's default strict field validation would refuse it; client-go only warns, as here.)
    written = agentruntime("spec-only", ns, "spec-only", pruned, api=api, spec_extra={"authBridgeMode": "proxy"})
    applied = cluster.kubectl("apply", "--validate=warn", "-f", "-", input=json.dumps(written))
    assert 'unknown field "spec.skills"' in applied.stderr, applied.stderr
    stored = cluster.get(f"/apis/agent.rossoctl.dev/v1alpha1/namespaces/{ns}/agentruntimes/spec-only")
    assert "skills" not in stored["spec"] and stored["spec"]["authBridgeMode"] == "proxy"

    with serving(tmp_path, cluster.kubeconfig, "--domain", domain, "--agentruntime-api", api) as served, \
            registered(cluster, served, ns, domain=domain, api=api):
        cluster.apply(agentruntime("writer", ns, "web", api=api,
                                   annotations={"rossoctl.io/skill-images": json.dumps(annotated)}))
        wait_until(lambda: served.metric("skill_webhook_agentruntimes_cached") == 2, 10, "both AgentRuntimes cached")
        cluster.apply([deployment("web", ns, replicas=2, domain=domain),
                       deployment("spec-only", ns, replicas=2, domain=domain)])

        for pod in two_pods_created(cluster, ns, "web"):
            assert skill_volumes(pod) == {"skill-resume-reviewer": "ghcr.io/example/resume-reviewer:v1.0.0"}
            mounts = [m["mountPath"] for m in agent_container(pod)["volumeMounts"] if m["name"].startswith("skill-")]
            assert mounts == ["/agent/skills/resume-reviewer"]
            assert json.loads(pod["metadata"]["annotations"]["rossoctl.io/skills"]) == ["resume-reviewer"]
            assert "kagenti.io/skills" not in pod["metadata"]["annotations"]
        # The pruned spec.skills never reaches a pod.
        for pod in two_pods_created(cluster, ns, "spec-only"):
            assert skill_volumes(pod) == {}

        # The validating webhook checks the annotation with the same rules, naming the annotation's field.
        bad = agentruntime("bad", ns, "other", api=api, annotations={
            "rossoctl.io/skill-images": json.dumps([skill("procfs", "ghcr.io/example/procfs:v1", "/proc/x")])})
        refused = cluster.kubectl("apply", "-f", "-", input=json.dumps(bad), check=False)
        assert refused.returncode != 0
        assert "metadata.annotations[rossoctl.io/skill-images][0].mountPath" in refused.stderr, refused.stderr
