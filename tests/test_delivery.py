"""Which way each skill reaches the pod (app.core.mutation.delivery), branch by branch: the container
runtimes of nodes, `--delivery`, the per-AgentRuntime annotation, the image-volume capability, what the
resolver knows (artifacts, agentskills names), and the default `path`."""

from __future__ import annotations

import pytest

from app.core.model import Skill
from app.core.mutation.delivery import (
    SHOWN_NODES,
    DeliveryPolicy,
    NodeRuntimes,
    SkillDelivery,
    judge_nodes,
    plan_delivery,
    runtime_mounts_image_volumes,
)
from app.core.registry_facts import ImageFacts

IMAGE = "ghcr.io/acme/skills/notes:1.0"
ARTIFACT_IMAGE = "ghcr.io/acme/agentskills/blog-writer:1.0"
NOTES = Skill(name="notes", image=IMAGE, mountPath="/skills/notes")
BLOG = Skill(name="blog-writer", image=ARTIFACT_IMAGE, mountPath="/skills/blog-writer")
OLD_NODES = judge_nodes([("node-a", "containerd://2.1.1"), ("node-b", "containerd://1.7.24")])
NEW_NODES = judge_nodes([("node-a", "containerd://2.1.1"), ("node-c", "cri-o://1.31.2")])


def facts(reference: str, **fields) -> ImageFacts:
    base = ImageFacts.unresolved(reference)
    return ImageFacts(**{**base.__dict__, "digest": "sha256:" + "a" * 64, **fields})


def artifact(reference: str = ARTIFACT_IMAGE, name: str | None = "blog-writer") -> ImageFacts:
    return facts(reference, mountable=False, mount_reason="an OCI artifact (artifactType application/vnd.agentskills.skill.v1)",
                 config_media_type="application/vnd.agentskills.skill.config.v1+json", agentskills_name=name)


def lookup(*known: ImageFacts):
    table = {f.reference: f for f in known}
    return table.get


def deliveries(plan) -> list[str]:
    return [s.delivery for s in plan.skills]


# -- node container runtimes --------------------------------------------------------------------------


@pytest.mark.parametrize(("version", "mounts"), [
    ("containerd://2.1.0", True),
    ("containerd://2.3.4", True),
    ("containerd://2.0.5", False),
    ("containerd://1.7.24", False),
    ("containerd://v2.1.3", True),
    ("containerd://2.1.0-rc.1", True),
    ("cri-o://1.31.0", True),
    ("cri-o://1.30.2", False),
    ("CRI-O://1.32.1", True),
    ("docker://27.3.1", None),
    ("containerd://unknown", None),
    ("containerd", None),
    ("", None),
])
def test_runtime_versions_that_mount_image_volumes(version, mounts):
    assert runtime_mounts_image_volumes(version) is mounts


def test_judging_nodes_names_those_that_cannot_mount_and_those_not_judged():
    verdict = judge_nodes([("z", "containerd://2.0.5"), ("a", "cri-o://1.30.2"), ("m", "containerd://2.2.0"),
                           ("d", "docker://27.3.1")])
    assert (verdict.nodes, verdict.unable, verdict.unknown) == (
        4, (("a", "cri-o://1.30.2"), ("z", "containerd://2.0.5")), (("d", "docker://27.3.1"),))
    assert not verdict.can_mount
    assert verdict.reason() == ("2 of 4 nodes run a container runtime that cannot mount image volumes "
                                "(containerd < 2.1, CRI-O < 1.31): a (cri-o://1.30.2), z (containerd://2.0.5)")
    fine = judge_nodes([("a", "containerd://2.1.0"), ("d", "docker://27.3.1")])
    assert fine.can_mount and "not judged: d (docker://27.3.1)" in fine.reason()
    assert judge_nodes([("a", "containerd://2.1.0")]).reason() == "all 1 nodes run containerd 2.1+ or CRI-O 1.31+"


def test_a_reason_names_a_few_nodes_and_counts_the_rest():
    many = judge_nodes([(f"node-{i:02d}", "containerd://1.7.0") for i in range(SHOWN_NODES + 3)])
    reason = many.reason()
    assert reason.count("containerd://1.7.0") == SHOWN_NODES and reason.endswith("and 3 more")


# -- the decision, branch by branch -------------------------------------------------------------------


def test_forced_extraction_extracts_every_skill_even_where_image_volumes_would_do():
    plan = plan_delivery(DeliveryPolicy("extract", nodes=NEW_NODES), [NOTES, BLOG], facts=lookup(artifact()))
    assert deliveries(plan) == ["extract", "extract"] and plan.blocked is None
    assert plan.skills[0].reason == "--delivery extract" and plan.warnings == ()


def test_forced_image_volumes_keep_image_volumes_and_warn_about_an_artifact():
    plan = plan_delivery(DeliveryPolicy("image", nodes=OLD_NODES), [NOTES, BLOG], facts=lookup(artifact()))
    assert deliveries(plan) == ["image", "image"]
    [warning] = plan.warnings
    assert 'skill "blog-writer"' in warning and "empty directory" in warning and "forced to image" in warning


def test_forced_image_volumes_where_the_api_server_drops_them_inject_nothing():
    plan = plan_delivery(DeliveryPolicy("image", image_volumes=False, image_volumes_reason="--image-volumes off"),
                         [NOTES])
    assert plan.skills == () and "image volumes are off (--image-volumes off)" in plan.blocked
    assert "--delivery image" in plan.blocked


def test_auto_extracts_everything_where_the_api_server_drops_image_volumes():
    policy = DeliveryPolicy(image_volumes=False, image_volumes_reason="Kubernetes 1.33 has the gate off by default")
    plan = plan_delivery(policy, [NOTES, BLOG])
    assert deliveries(plan) == ["extract", "extract"]
    assert plan.skills[0].reason == "image volumes are off (Kubernetes 1.33 has the gate off by default)"


def test_auto_extracts_everything_when_a_node_cannot_mount_image_volumes():
    plan = plan_delivery(DeliveryPolicy(nodes=OLD_NODES), [NOTES])
    assert deliveries(plan) == ["extract"] and "node-b (containerd://1.7.24)" in plan.skills[0].reason


@pytest.mark.parametrize("nodes", [NEW_NODES, None], ids=["nodes-can-mount", "nodes-not-watched"])
def test_auto_uses_image_volumes_where_they_work(nodes):
    plan = plan_delivery(DeliveryPolicy(nodes=nodes), [NOTES])
    assert plan.skills == (SkillDelivery("image", None, "--delivery auto"),) and plan.warnings == ()


def test_auto_extracts_an_artifact_once_known_and_says_what_an_image_volume_would_do():
    plan = plan_delivery(DeliveryPolicy(), [NOTES, BLOG], facts=lookup(facts(IMAGE, mountable=True), artifact()))
    assert deliveries(plan) == ["image", "extract"]
    [warning] = plan.warnings
    assert warning == (f'skill "blog-writer": image {ARTIFACT_IMAGE} is an OCI artifact: an image volume of it would '
                       "mount an empty directory; delivered by extraction")


def test_auto_sends_an_image_not_resolved_yet_as_an_image_volume():
    assert deliveries(plan_delivery(DeliveryPolicy(), [BLOG], facts=lookup())) == ["image"]
    assert deliveries(plan_delivery(DeliveryPolicy(), [BLOG], facts=None)) == ["image"]


@pytest.mark.parametrize(("setting", "image_volumes", "annotation", "expected"), [
    ("image", True, "extract", ["extract"]),
    ("image", False, "extract", ["extract"]),  # not blocked: this AgentRuntime extracts
    ("auto", True, "extract", ["extract"]),
    ("extract", True, "image", ["image"]),
    ("auto", True, "image", ["image"]),
    ("auto", True, "Extract", ["image"]),  # not a value: validation's error, the setting decides here
    ("extract", True, "sometimes", ["extract"]),
])
def test_the_annotation_overrides_the_setting_for_its_own_agentruntime(setting, image_volumes, annotation, expected):
    plan = plan_delivery(DeliveryPolicy(setting, image_volumes), [NOTES], annotation, annotation_key="kagenti.io/skill-delivery")
    assert deliveries(plan) == expected
    if annotation in ("image", "extract"):
        assert plan.skills[0].reason == f"annotation kagenti.io/skill-delivery: {annotation}"


def test_an_annotation_forcing_image_volumes_where_they_are_off_injects_nothing():
    plan = plan_delivery(DeliveryPolicy("extract", image_volumes=False), [NOTES], "image", annotation_key="kagenti.io/skill-delivery")
    assert plan.blocked is not None and "annotation kagenti.io/skill-delivery: image" in plan.blocked


# -- paths -----------------------------------------------------------------------------------------------


def test_a_written_path_is_kept_for_either_delivery():
    bundle = Skill(name="pdf-tools", image=IMAGE, mountPath="/skills/pdf", path="skills/pdf-tools")
    for policy in (DeliveryPolicy("image"), DeliveryPolicy("extract")):
        assert plan_delivery(policy, [bundle]).skills[0].path == "skills/pdf-tools"
    # Also over the default an agentskills artifact would give.
    written = Skill(name="blog-writer", image=ARTIFACT_IMAGE, mountPath="/skills/b", path="other")
    assert plan_delivery(DeliveryPolicy(), [written], facts=lookup(artifact())).skills[0].path == "other"


def test_an_agentskills_artifact_mounts_its_one_top_level_directory_by_default():
    plan = plan_delivery(DeliveryPolicy(), [BLOG], facts=lookup(artifact()))
    assert (plan.skills[0].delivery, plan.skills[0].path) == ("extract", "blog-writer")


@pytest.mark.parametrize("known", [
    facts(ARTIFACT_IMAGE, mountable=True, agentskills_name="blog-writer"),  # an image: mounted as before
    artifact(name=None),  # an artifact without the name annotation
    artifact(name="../escape"),  # a name that is no path inside the image
    artifact(name="/abs"),
], ids=["mountable-image", "no-name", "dot-dot", "absolute"])
def test_no_default_path_without_an_agentskills_artifact_and_a_usable_name(known):
    assert plan_delivery(DeliveryPolicy(), [BLOG], facts=lookup(known)).skills[0].path is None


# -- what is said at start and in the metric -----------------------------------------------------------


@pytest.mark.parametrize(("policy", "delivery", "part"), [
    (DeliveryPolicy("extract"), "extract", "--delivery extract"),
    (DeliveryPolicy("image"), "image", "--delivery image"),
    (DeliveryPolicy("image", image_volumes=False, image_volumes_reason="1.33"), "none", "no skill is injected"),
    (DeliveryPolicy(image_volumes=False, image_volumes_reason="1.30 has none"), "extract", "image volumes are off (1.30 has none)"),
    (DeliveryPolicy(nodes=OLD_NODES), "extract", "node-b (containerd://1.7.24)"),
    (DeliveryPolicy(nodes=NEW_NODES), "image", "all 2 nodes run containerd 2.1+ or CRI-O 1.31+"),
    (DeliveryPolicy(), "image", "nodes not watched"),
])
def test_the_policy_says_what_skills_get_and_why(policy, delivery, part):
    said, reason = policy.describe()
    assert said == delivery and part in reason


def test_node_verdicts_compare_by_value():
    """The mutation's options are replaced when the verdict changes (compared by value)."""
    assert judge_nodes([("a", "containerd://2.0.5")]) == NodeRuntimes(1, (("a", "containerd://2.0.5"),), ())
    assert DeliveryPolicy(nodes=judge_nodes([("a", "containerd://2.0.5")])) != DeliveryPolicy(nodes=OLD_NODES)


# -- what the resolver reads of bundles -----------------------------------------------------------------

from app.core.registry_facts import SKILLIMAGE_BUNDLE, SKILLIMAGE_BUNDLE_SKILLS, bundle_skills  # noqa: E402


@pytest.mark.parametrize(("annotations", "skills"), [
    ({SKILLIMAGE_BUNDLE: "true", SKILLIMAGE_BUNDLE_SKILLS: "pdf-tools, csv-tools,"}, ("pdf-tools", "csv-tools")),
    ({SKILLIMAGE_BUNDLE: "True", SKILLIMAGE_BUNDLE_SKILLS: '["pdf-tools", "csv-tools"]'}, ("pdf-tools", "csv-tools")),
    ({SKILLIMAGE_BUNDLE: "true"}, ()),
    ({SKILLIMAGE_BUNDLE: "true", SKILLIMAGE_BUNDLE_SKILLS: "[broken"}, ()),
    ({SKILLIMAGE_BUNDLE: "false", SKILLIMAGE_BUNDLE_SKILLS: "pdf-tools"}, None),
    ({SKILLIMAGE_BUNDLE_SKILLS: "pdf-tools"}, None),
])
def test_bundle_annotations(annotations, skills):
    assert bundle_skills(annotations) == skills
