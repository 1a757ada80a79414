"""The staleness function on a table of cases. Old pods are made by the real mutation (mutate_pod on a
pod, patch applied), or written literally; what "now" is comes from a second index. Nothing here builds
an expected record with the code under test."""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.core.matching.index import AgentRuntimeIndex
from app.core.model import AgentRuntime
from app.core.mutation.review import MutationOptions, mutate_pod
from app.core.names import DEFAULT_DOMAIN, Domain
from app.core.staleness import pods as S
from app.core.staleness.pods import StalenessOptions, expected_injection, pod_staleness
from tests.builders import apply_patch, deployment_pod, index_of, pod, runtime_object, skill

INJECTED = DEFAULT_DOMAIN.skills_injected
A = skill("blog-writer", "ghcr.io/a/blog-writer:v1", "/skills/blog")
B = skill("resume-reviewer", "ghcr.io/a/resume-reviewer:v1", "/skills/resume")


def rt(*skills: dict[str, Any], name: str = "writer", target: str = "my-agent") -> dict[str, Any]:
    return runtime_object(name, target=target, skills=skills)


def injected_pod(index: AgentRuntimeIndex, base: dict[str, Any] | None = None, domain: Domain = DEFAULT_DOMAIN) -> dict[str, Any]:
    """The pod as the API server stores it after the real mutation ran on it."""
    base = base if base is not None else deployment_pod(name="my-agent-5d8f7c9b6-abcde")
    decision = mutate_pod(copy.deepcopy(base), "team-a", index, MutationOptions(domain=domain))
    assert decision.allowed, decision.message
    return apply_patch(base, decision)


class Compact:
    """A pod record without its spec, as the reconciler's informer keeps pods (only `as_pod()` is read)."""

    def __init__(self, full: dict[str, Any]) -> None:
        self._pod = {"metadata": copy.deepcopy(full["metadata"])}

    def as_pod(self) -> dict[str, Any]:
        return self._pod


# (case, AgentRuntimes when the pod was created, AgentRuntimes now, stale, reason, differences)
CASES = [
    ("unchanged", [rt(A, B)], [rt(A, B)], False, S.CURRENT, ()),
    ("skill added", [rt(A)], [rt(A, B)], True, S.CHANGED, ("+ resume-reviewer",)),
    ("skill removed", [rt(A, B)], [rt(A)], True, S.CHANGED, ("- resume-reviewer",)),
    ("image changed", [rt(A)], [rt({**A, "image": "ghcr.io/a/blog-writer:v2"})], True, S.CHANGED,
     ("blog-writer: ghcr.io/a/blog-writer:v1 -> ghcr.io/a/blog-writer:v2",)),
    ("mount path changed", [rt(A)], [rt({**A, "mountPath": "/skills/blog2"})], True, S.CHANGED,
     ("blog-writer: mountPath /skills/blog -> /skills/blog2",)),
    ("pullPolicy set", [rt(A)], [rt({**A, "pullPolicy": "Always"})], True, S.CHANGED,
     ("blog-writer: pullPolicy (default) -> Always",)),
    ("pullPolicy changed", [rt({**A, "pullPolicy": "Always"})], [rt({**A, "pullPolicy": "IfNotPresent"})], True,
     S.CHANGED, ("blog-writer: pullPolicy Always -> IfNotPresent",)),
    ("order changed", [rt(A, B)], [rt(B, A)], True, S.CHANGED, ("skill order changed",)),
    ("AgentRuntime deleted", [rt(A, B)], [], True, S.RUNTIME_GONE,
     ('AgentRuntime "writer" deleted', "- blog-writer", "- resume-reviewer")),
    ("AgentRuntime retargeted", [rt(A)], [rt(A, target="other")], True, S.RUNTIME_GONE,
     ('AgentRuntime "writer" no longer targets this pod\'s workload', "- blog-writer")),
    ("skills emptied", [rt(A)], [rt()], True, S.NO_SKILLS,
     ('AgentRuntime "writer" declares no skills now', "- blog-writer")),
    ("AgentRuntime created for a workload without one", [], [rt(A)], True, S.UNRECORDED,
     ("no record while skills now apply", "+ blog-writer")),
    ("no AgentRuntime then or now", [], [], False, S.NOT_INJECTED, ()),
    ("another AgentRuntime, same skills", [rt(A)], [rt(A, name="older")], False, S.CURRENT, ()),
    ("another AgentRuntime, other skills", [rt(A)], [rt(B, name="older")], True, S.CHANGED,
     ('AgentRuntime "writer" -> "older"', "- blog-writer", "+ resume-reviewer")),
]


@pytest.mark.parametrize("case,then,now,stale,reason,differences", CASES, ids=[c[0] for c in CASES])
def test_staleness_table(case, then, now, stale, reason, differences) -> None:
    running = injected_pod(index_of(*then))
    verdict = pod_staleness(running, index_of(*now))
    assert (verdict.stale, verdict.reason, verdict.differences) == (stale, reason, differences)
    assert verdict.namespace == "team-a" and verdict.pod == "my-agent-5d8f7c9b6-abcde"
    # The compact informer record reaches the same verdict (it may say less about what differs).
    compact = pod_staleness(Compact(running), index_of(*now))
    assert (compact.stale, compact.reason) == (stale, reason)


def test_compact_record_cannot_see_which_of_path_or_policy_moved() -> None:
    running = injected_pod(index_of(rt(A)))
    verdict = pod_staleness(Compact(running), index_of(rt({**A, "mountPath": "/skills/elsewhere"})))
    assert verdict.stale and verdict.differences == ("mountPath, pullPolicy, path or delivery changed",)


def test_the_gauge_label_is_the_matched_runtime_else_the_recorded_one() -> None:
    running = injected_pod(index_of(rt(A)))
    assert pod_staleness(running, index_of(rt(B, name="older"))).agent_runtime == "older"
    assert pod_staleness(running, index_of()).agent_runtime == "writer"


def literal_fingerprint(*entries: str) -> str:
    """sha256 of the canonical JSON written out by hand: sorted keys, no spaces, spec order."""
    return "sha256:" + hashlib.sha256(("[" + ",".join(entries) + "]").encode()).hexdigest()


def recorded(record: dict[str, Any], *, labels: dict[str, str] | None = None, domain: Domain = DEFAULT_DOMAIN) -> dict[str, Any]:
    return deployment_pod(name="my-agent-5d8f7c9b6-abcde", labels=labels,
                          annotations={domain.skills_injected: json.dumps(record)})


def test_a_literal_record_with_the_right_fingerprint_is_current() -> None:
    fingerprint = literal_fingerprint(
        '{"image":"ghcr.io/a/blog-writer:v1","mountPath":"/skills/blog","name":"blog-writer"}',
        '{"image":"ghcr.io/a/resume-reviewer:v1","mountPath":"/skills/resume","name":"resume-reviewer",'
        '"pullPolicy":"Always"}',
    )
    record = {"agentRuntime": "writer", "container": "agent",
              "skills": {"blog-writer": "ghcr.io/a/blog-writer:v1", "resume-reviewer": "ghcr.io/a/resume-reviewer:v1"},
              "fingerprint": fingerprint}
    now = index_of(rt(A, {**B, "pullPolicy": "Always"}))
    verdict = pod_staleness(recorded(record), now)
    assert (verdict.stale, verdict.reason, verdict.expected_fingerprint) == (False, S.CURRENT, fingerprint)
    # And the real mutation writes exactly that fingerprint.
    written = json.loads(injected_pod(now)["metadata"]["annotations"][INJECTED])
    assert written["fingerprint"] == fingerprint


LEGACY = {"agentRuntime": "writer", "container": "agent", "skills": {"blog-writer": "ghcr.io/a/blog-writer:v1"}}


def test_legacy_record_with_the_same_skills_map_is_current() -> None:
    # Only the images were recorded before the fingerprint: a moved mount path cannot be seen there.
    verdict = pod_staleness(recorded(LEGACY), index_of(rt({**A, "mountPath": "/skills/moved"})))
    assert (verdict.stale, verdict.reason) == (False, S.CURRENT)


def test_legacy_record_with_another_image_is_stale() -> None:
    verdict = pod_staleness(recorded(LEGACY), index_of(rt({**A, "image": "ghcr.io/a/blog-writer:v3"})))
    assert verdict.stale and verdict.differences == ("blog-writer: ghcr.io/a/blog-writer:v1 -> ghcr.io/a/blog-writer:v3",)


def test_legacy_record_with_another_skill_set_is_stale() -> None:
    verdict = pod_staleness(recorded(LEGACY), index_of(rt(A, B)))
    assert verdict.stale and verdict.differences == ("+ resume-reviewer",)


def test_opted_out_pods_are_never_stale() -> None:
    labels = {DEFAULT_DOMAIN.skills_inject_label: "disabled"}
    for now in ([], [rt(B)], [rt({**A, "image": "ghcr.io/a/blog-writer:v9"})]):
        assert pod_staleness(recorded(LEGACY, labels=labels), index_of(*now)).reason == S.OPTED_OUT
        assert not pod_staleness(deployment_pod(name="p", labels=labels), index_of(*now)).stale


def test_pod_without_record_and_without_skills_is_not_stale() -> None:
    assert pod_staleness(deployment_pod(name="p"), index_of(rt())).reason == S.NOT_INJECTED
    assert pod_staleness(deployment_pod(name="p"), index_of()).reason == S.NOT_INJECTED


def test_image_volumes_off_with_delivery_image_judges_nothing() -> None:
    options = StalenessOptions(image_volumes=False, delivery="image")
    assert pod_staleness(deployment_pod(name="p"), index_of(rt(A)), options).reason == S.IMAGE_VOLUMES_OFF
    # Under auto the skills would be extracted: a pod without them is stale.
    assert pod_staleness(deployment_pod(name="p"), index_of(rt(A)), StalenessOptions(image_volumes=False)).stale


def test_the_record_is_read_under_the_configured_domain() -> None:
    rossoctl = Domain("rossoctl.io")
    running = injected_pod(index_of(rt(A)), domain=rossoctl)
    assert rossoctl.skills_injected in running["metadata"]["annotations"]
    options = StalenessOptions(domain=rossoctl)
    assert pod_staleness(running, index_of(rt(A)), options).reason == S.CURRENT
    # Read under the default domain the pod has no record at all.
    assert pod_staleness(running, index_of(rt(A))).reason == S.UNRECORDED
    opted_out = deployment_pod(name="p", labels={rossoctl.skills_inject_label: "disabled"})
    assert pod_staleness(opted_out, index_of(rt(A)), options).reason == S.OPTED_OUT


def test_a_moved_tag_makes_pinned_pods_stale() -> None:
    old = "ghcr.io/a/blog-writer:v1@sha256:" + "1" * 64
    new = "ghcr.io/a/blog-writer:v1@sha256:" + "2" * 64
    fingerprint = literal_fingerprint(f'{{"image":"{old}","mountPath":"/skills/blog","name":"blog-writer"}}')
    record = {"agentRuntime": "writer", "container": "agent", "skills": {"blog-writer": old}, "fingerprint": fingerprint}
    pinned_old = StalenessOptions(references=lambda runtime: {"blog-writer": old})
    pinned_new = StalenessOptions(references=lambda runtime: {"blog-writer": new})
    assert pod_staleness(recorded(record), index_of(rt(A)), pinned_old).reason == S.CURRENT
    verdict = pod_staleness(recorded(record), index_of(rt(A)), pinned_new)
    assert verdict.stale and verdict.differences == (f"blog-writer: {old} -> {new}",)
    # Unknown digest (no reference): the tag as written, which differs from the pinned record.
    assert pod_staleness(recorded(record), index_of(rt(A)), StalenessOptions(references=lambda r: None)).stale


def test_recorded_digests_can_be_trusted_where_no_resolver_runs() -> None:
    pinned = "ghcr.io/a/blog-writer:v1@sha256:" + "3" * 64
    fingerprint = literal_fingerprint(f'{{"image":"{pinned}","mountPath":"/skills/blog","name":"blog-writer"}}')
    record = {"agentRuntime": "writer", "container": "agent", "skills": {"blog-writer": pinned}, "fingerprint": fingerprint}
    trusting = StalenessOptions(trust_recorded_digests=True)
    assert pod_staleness(recorded(record), index_of(rt(A))).stale
    assert pod_staleness(recorded(record), index_of(rt(A)), trusting).reason == S.CURRENT
    # A new tag is still a change.
    moved = pod_staleness(recorded(record), index_of(rt({**A, "image": "ghcr.io/a/blog-writer:v2"})), trusting)
    assert moved.stale and moved.differences == (f"blog-writer: {pinned} -> ghcr.io/a/blog-writer:v2",)


def test_options_follow_the_mutation_options() -> None:
    options = StalenessOptions.from_mutation(MutationOptions(image_volumes=False, domain=Domain("rossoctl.io")))
    assert options.domain == Domain("rossoctl.io") and options.image_volumes is False and options.references is None


def test_an_invalid_runtime_is_reported_with_its_problems() -> None:
    running = injected_pod(index_of(rt(A)))
    # As the cache keeps an AgentRuntime that fails validation: no skills, and the verdict.
    invalid = AgentRuntime.from_object(rt()).with_problems(("spec.skills[0].mountPath: Invalid value",))
    now = AgentRuntimeIndex()
    now.replace_all([invalid])
    verdict = pod_staleness(running, now)
    assert (verdict.stale, verdict.reason, verdict.problems) == (True, S.INVALID, ("spec.skills[0].mountPath: Invalid value",))
    assert verdict.differences == (
        'AgentRuntime "writer" is invalid, its new pods are denied: spec.skills[0].mountPath: Invalid value',)


def test_bare_pod_matches_by_name() -> None:
    bare = pod(name="solo")
    now = index_of(runtime_object("solo-rt", kind="Pod", target="solo", skills=[A]))
    verdict = pod_staleness(bare, now)
    assert (verdict.stale, verdict.reason, verdict.agent_runtime) == (True, S.UNRECORDED, "solo-rt")


def test_an_expectation_shared_by_many_pods_gives_their_own_verdicts() -> None:
    now = index_of(rt(A))
    asked: list[str] = []

    def expect(runtime):
        asked.append(runtime.metadata.name)
        return expected_injection(runtime, StalenessOptions())

    stale_pod, fresh_pod = injected_pod(index_of(rt(B))), injected_pod(now)
    assert pod_staleness(stale_pod, now, expected=expect) == pod_staleness(stale_pod, now)
    assert pod_staleness(fresh_pod, now, expected=expect) == pod_staleness(fresh_pod, now)
    assert asked == ["writer", "writer"]
    assert pod_staleness(stale_pod, now, expected=expect).stale


skill_entries = st.lists(
    st.builds(
        lambda name, tag, path, policy: {"name": name, "image": f"ghcr.io/x/{name}:{tag}", "mountPath": f"/s/{path}",
                                         **({"pullPolicy": policy} if policy else {})},
        st.sampled_from(["a", "b", "c", "d"]),
        st.sampled_from(["v1", "v2"]),
        st.sampled_from(["p", "q", "r", "t"]),
        st.sampled_from([None, "Always", "IfNotPresent"]),
    ),
    max_size=4,
    unique_by=(lambda s: s["name"], lambda s: s["mountPath"]),
)


@given(then=skill_entries, now=skill_entries)
def test_stale_exactly_when_the_mutation_would_inject_something_else(then, now) -> None:
    running = injected_pod(index_of(rt(*then)))
    verdict = pod_staleness(running, index_of(rt(*now)))
    # What the mutation would write now, on a fresh pod, compared with what it wrote then.
    fresh = injected_pod(index_of(rt(*now)))
    before = running["metadata"].get("annotations", {}).get(INJECTED)
    after = fresh["metadata"].get("annotations", {}).get(INJECTED)
    fingerprints_differ = (json.loads(before)["fingerprint"] if before else None) != (
        json.loads(after)["fingerprint"] if after else None)
    assert verdict.stale == fingerprints_differ
    assert bool(verdict.differences) == verdict.stale
    # After a roll the replacement is current.
    assert not pod_staleness(fresh, index_of(rt(*now))).stale


# -- delivery and path (docs/delivery.md) ----------------------------------------------------------------

from app.core.mutation.delivery import judge_nodes  # noqa: E402
from app.core.mutation.image_policy import ImagePolicy  # noqa: E402
from app.core.registry_facts import ImageFacts  # noqa: E402

OLD_NODES = judge_nodes([("node-a", "containerd://2.0.5")])
NEW_NODES = judge_nodes([("node-a", "containerd://2.1.0")])


def delivered_pod(index: AgentRuntimeIndex, options: MutationOptions) -> dict[str, Any]:
    base = deployment_pod(name="my-agent-5d8f7c9b6-abcde")
    decision = mutate_pod(copy.deepcopy(base), "team-a", index, options)
    assert decision.allowed, decision.message
    return apply_patch(base, decision)


def known(image: str, mountable: bool) -> ImagePolicy:
    facts = ImageFacts(**{**ImageFacts.unresolved(image).__dict__, "digest": "sha256:" + "c" * 64, "mountable": mountable})
    return ImagePolicy({image: facts}.get)


@pytest.mark.parametrize("options", [
    StalenessOptions(),
    StalenessOptions(delivery="image"),
    StalenessOptions(nodes=NEW_NODES),
    StalenessOptions(image_policy=known(A["image"], mountable=True)),
], ids=["auto", "image", "nodes-can-mount", "known-image"])
def test_a_record_made_before_delivery_and_path_existed_stays_current(options) -> None:
    """Written by hand as the code before extraction wrote it: no path, no delivery in the fingerprint."""
    fingerprint = literal_fingerprint('{"image":"ghcr.io/a/blog-writer:v1","mountPath":"/skills/blog","name":"blog-writer"}')
    record = {"agentRuntime": "writer", "container": "agent", "skills": {"blog-writer": A["image"]},
              "fingerprint": fingerprint}
    verdict = pod_staleness(recorded(record), index_of(rt(A)), options)
    assert (verdict.stale, verdict.reason, verdict.expected_fingerprint) == (False, S.CURRENT, fingerprint)


def test_a_skill_delivered_another_way_than_now_is_stale() -> None:
    index = index_of(rt(A))
    mounted = delivered_pod(index, MutationOptions())
    extracted = delivered_pod(index, MutationOptions(delivery="extract"))
    verdict = pod_staleness(mounted, index, StalenessOptions(delivery="extract"))
    assert (verdict.stale, verdict.reason, verdict.differences) == (True, S.CHANGED, ("blog-writer: delivery image -> extract",))
    verdict = pod_staleness(extracted, index)
    assert (verdict.stale, verdict.differences) == (True, ("blog-writer: delivery extract -> image",))
    assert pod_staleness(Compact(extracted), index).stale
    assert pod_staleness(extracted, index, StalenessOptions(delivery="extract")).reason == S.CURRENT


def test_an_artifact_learned_after_admission_makes_auto_pods_stale() -> None:
    index = index_of(rt(A))
    running = delivered_pod(index, MutationOptions())  # not resolved yet: an image volume
    now = StalenessOptions(image_policy=known(A["image"], mountable=False))
    verdict = pod_staleness(running, index, now)
    assert (verdict.stale, verdict.differences) == (True, ("blog-writer: delivery image -> extract",))
    # Forced to image volumes the artifact changes nothing for the pod.
    assert not pod_staleness(running, index, StalenessOptions(delivery="image", image_policy=now.image_policy)).stale


def test_a_node_that_cannot_mount_makes_image_volume_pods_stale() -> None:
    index = index_of(rt(A))
    running = delivered_pod(index, MutationOptions(nodes=NEW_NODES))
    assert not pod_staleness(running, index, StalenessOptions(nodes=NEW_NODES)).stale
    assert pod_staleness(running, index, StalenessOptions(nodes=OLD_NODES)).stale


def test_a_changed_path_is_stale() -> None:
    running = injected_pod(index_of(rt(A)))
    verdict = pod_staleness(running, index_of(rt({**A, "path": "blog-writer"})))
    assert (verdict.stale, verdict.differences) == (True, ("blog-writer: path (image root) -> blog-writer",))
    moved = injected_pod(index_of(rt({**A, "path": "a"})))
    assert pod_staleness(moved, index_of(rt({**A, "path": "b"}))).differences == ("blog-writer: path a -> b",)
    assert pod_staleness(moved, index_of(rt({**A, "path": "a"}))).reason == S.CURRENT


def test_options_follow_the_mutations_delivery() -> None:
    options = StalenessOptions.from_mutation(MutationOptions(delivery="extract", nodes=OLD_NODES))
    assert (options.delivery, options.nodes) == ("extract", OLD_NODES)


def test_without_a_resolver_the_delivery_the_pod_has_is_taken_as_current() -> None:
    """`skill-webhook stale` from a laptop knows neither the artifacts nor the nodes the webhook saw."""
    index = index_of(rt(A))
    extracted = delivered_pod(index, MutationOptions(delivery="extract"))
    trusting = StalenessOptions(trust_recorded_digests=True)
    assert pod_staleness(extracted, index, trusting).reason == S.CURRENT
    # What the AgentRuntime itself says still counts.
    verdict = pod_staleness(extracted, index_of(rt({**A, "mountPath": "/skills/moved"})), trusting)
    assert verdict.stale and verdict.differences == ("blog-writer: mountPath /skills/blog -> /skills/moved",)
