"""The patch for skills delivered by extraction, beyond the golden cases: the puller's arguments and
mounts, reinvocation when the decision changed between two calls, conflicts with the puller's own
names, and SKILL_FOLDERS entries compared as mount paths."""

from __future__ import annotations

import copy
import json

import pytest

from app.core.mutation.delivery import judge_nodes
from app.core.mutation.puller import (
    PulledSkill,
    PullerConfig,
    pulled_skills,
    puller_container,
    puller_volumes,
    quantity_bytes,
    skill_volume,
)
from app.core.mutation.review import MutationOptions, mutate_pod
from app.core.mutation.image_policy import ImagePolicy
from app.core.names import DEFAULT_DOMAIN
from app.core.registry_facts import ImageFacts
from tests.builders import (
    NAMESPACE,
    apply_and_recheck,
    apply_patch,
    assert_valid_pod,
    container,
    index_of,
    pod,
    runtime_object,
    skill,
)

EXTRACT = MutationOptions(delivery="extract")


def bare_pod(*containers, **kwargs):
    return pod(*(containers or (container("agent"),)), name="solo", **kwargs)


def solo_index(*skills, **kwargs):
    return index_of(runtime_object("rt", kind="Pod", target="solo", skills=skills, **kwargs))


def mutate(the_pod, index, options=EXTRACT):
    return mutate_pod(copy.deepcopy(the_pod), NAMESPACE, index, options)


# -- SKILL_FOLDERS ---------------------------------------------------------------------------------------


def test_skill_folders_entries_are_compared_as_mount_paths():
    """`/x/` already lists the skill at `/x`: only `/y` is appended (it used to become /x/,/a,/x,/y)."""
    the_pod = bare_pod(container("agent", env=[{"name": "SKILL_FOLDERS", "value": "/x/,/a"}]))
    index = solo_index(skill("ex", mount_path="/x"), skill("why", mount_path="/y"))
    decision = mutate(the_pod, index, MutationOptions())
    patched = apply_and_recheck(the_pod, decision, index, MutationOptions())
    assert patched["spec"]["containers"][0]["env"] == [{"name": "SKILL_FOLDERS", "value": "/x/,/a,/y"}]


@pytest.mark.parametrize("listed", ["//x/./", " /x ,/a", "/a,/x//"])
def test_skill_folders_already_listing_every_path_are_left_alone(listed):
    the_pod = bare_pod(container("agent", env=[{"name": "SKILL_FOLDERS", "value": listed}]))
    decision = mutate(the_pod, solo_index(skill("ex", mount_path="/x")), MutationOptions())
    assert not any(op["path"].endswith("/env/0/value") for op in decision.patch)


# -- the puller ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "size"), [("64Mi", 67108864), ("1Gi", 2**30), ("100M", 10**8), ("512", 512), (" 2Ki ", 2048)])
def test_size_limits_in_bytes(text, size):
    assert quantity_bytes(text) == size


@pytest.mark.parametrize("text", ["", "0", "64MB", "1.5Gi", "-1Mi", "lots"])
def test_sizes_that_are_not_refused(text):
    with pytest.raises(ValueError, match="is not a size"):
        quantity_bytes(text)


@pytest.mark.parametrize(("size_limit", "max_files", "volume_limit"), [
    ("64Mi", 10_000, "105536Ki"),  # the defaults: 64 MiB of content and 10,000 blocks of 4 KiB
    ("1Mi", 50, "1224Ki"),
    ("100M", 10, "100040960"),  # not a whole number of KiB: bytes
])
def test_the_emptydir_allows_a_block_per_entry_beyond_the_content_limit(size_limit, max_files, volume_limit):
    config = PullerConfig(size_limit=size_limit, max_files=max_files)
    assert skill_volume(config, "a") == {"name": "skill-a", "emptyDir": {"sizeLimit": volume_limit}}
    # The puller still stops at the content limit itself.
    args = puller_container(config, [PulledSkill("a", "ghcr.io/acme/a:1")], [])["args"]
    assert args[args.index("--max-bytes") + 1] == str(quantity_bytes(size_limit))
    # As many one-byte files as allowed (each a 4 KiB block on disk) beside the full content limit fit.
    assert quantity_bytes(volume_limit) >= quantity_bytes(size_limit) + max_files * 4096


def test_puller_arguments_in_the_contract_order():
    config = PullerConfig(image="registry.local/skill-webhook:1", size_limit="1Mi", max_files=50,
                          insecure_registries=("registry.local:5000", "unused.local"),
                          registry_ca_configmap="registry-ca")
    made = puller_container(config, [
        PulledSkill("a", "registry.local:5000/skills/a:1"),
        PulledSkill("b", "registry.local:5000/skills/b:1@sha256:" + "b" * 64, "b/dir"),
        PulledSkill("c", "ghcr.io/acme/c:1"),
    ], ["regcred", None, "other"])
    assert made["command"] == ["skill-webhook", "pull"] and made["image"] == "registry.local/skill-webhook:1"
    assert made["args"] == [
        "--skill", "a=registry.local:5000/skills/a:1",
        "--skill", "b=registry.local:5000/skills/b:1@sha256:" + "b" * 64, "--skill-path", "b=b/dir",
        "--skill", "c=ghcr.io/acme/c:1",
        "--skills-root", "/skills", "--max-bytes", "1048576", "--max-files", "50",
        "--insecure-registry", "registry.local:5000",
        "--registry-ca", "/var/run/skill-webhook/registry-ca/ca.crt",
        "--registry-auth", "/var/run/skill-webhook/pull-secrets",
    ]
    # An imagePullSecrets entry without a name keeps the index of the others.
    assert made["volumeMounts"] == [
        {"name": "skill-a", "mountPath": "/skills/a"},
        {"name": "skill-b", "mountPath": "/skills/b"},
        {"name": "skill-c", "mountPath": "/skills/c"},
        {"name": "skill-pull-secret-0", "mountPath": "/var/run/skill-webhook/pull-secrets/0", "readOnly": True},
        {"name": "skill-pull-secret-2", "mountPath": "/var/run/skill-webhook/pull-secrets/2", "readOnly": True},
        {"name": "skill-pull-registry-ca", "mountPath": "/var/run/skill-webhook/registry-ca", "readOnly": True},
    ]
    assert [v["name"] for v in puller_volumes(config, ["regcred", None, "other"])] == [
        "skill-pull-secret-0", "skill-pull-secret-2", "skill-pull-registry-ca"]
    assert pulled_skills(made) == {"a": "registry.local:5000/skills/a:1",
                                   "b": "registry.local:5000/skills/b:1@sha256:" + "b" * 64, "c": "ghcr.io/acme/c:1"}


def test_without_secrets_ca_or_insecure_hosts_the_puller_gets_only_its_skills():
    made = puller_container(PullerConfig(), [PulledSkill("a", "ghcr.io/acme/a:1")], [])
    assert made["args"] == ["--skill", "a=ghcr.io/acme/a:1", "--skills-root", "/skills",
                            "--max-bytes", "67108864", "--max-files", "10000"]
    assert made["volumeMounts"] == [{"name": "skill-a", "mountPath": "/skills/a"}]


def test_the_puller_is_hardened_and_runs_first_and_the_pod_stays_valid():
    the_pod = bare_pod(init_containers=[container("setup")])
    the_pod["spec"]["imagePullSecrets"] = [{"name": "regcred"}]
    index = solo_index(skill("a"), skill("b", path="pkg/b"))
    patched = apply_and_recheck(the_pod, mutate(the_pod, index), index, EXTRACT)
    assert_valid_pod(patched)
    puller, setup = patched["spec"]["initContainers"]
    assert (puller["name"], setup) == ("skill-pull", the_pod["spec"]["initContainers"][0])
    assert puller["securityContext"] == {
        "runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532, "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert puller["terminationMessagePolicy"] == "FallbackToLogsOnError" and puller["imagePullPolicy"] == "IfNotPresent"
    assert puller["resources"] == {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "128Mi"}}
    # The secret mounted only into the puller, readable by its non-root user.
    secret = next(v for v in patched["spec"]["volumes"] if v["name"] == "skill-pull-secret-0")
    assert secret == {"name": "skill-pull-secret-0", "secret": {"secretName": "regcred", "optional": True, "defaultMode": 0o444}}
    agent = patched["spec"]["containers"][0]
    assert {m["name"] for m in agent["volumeMounts"]} == {"skill-a", "skill-b"}
    assert next(m for m in agent["volumeMounts"] if m["name"] == "skill-b")["subPath"] == "pkg/b"


# -- reinvocation after the decision changed ------------------------------------------------------------


IMAGE = "ghcr.io/example/skills/alpha:v1"


def artifact_facts() -> ImageFacts:
    base = ImageFacts.unresolved(IMAGE)
    return ImageFacts(**{**base.__dict__, "digest": "sha256:" + "a" * 64, "mountable": False})


def test_an_image_volume_added_before_the_artifact_was_known_is_kept_on_reinvocation():
    index = solo_index(skill("alpha", image=IMAGE))
    the_pod = bare_pod()
    first = apply_patch(the_pod, mutate(the_pod, index, MutationOptions()))
    learned = MutationOptions(image_policy=ImagePolicy({IMAGE: artifact_facts()}.get))
    again = mutate(first, index, learned)
    # Only what the resolver learned is added (its metadata annotation); no warning about an extraction
    # this pod does not get.
    assert again.allowed and [op["path"] for op in again.patch] == ["/metadata/annotations/kagenti.io~1skills-metadata"]
    assert not any("artifact" in w for w in again.warnings)
    fresh = mutate(the_pod, index, learned)  # a new pod is extracted, and told why
    assert fresh.extracted == 1 and any("delivered by extraction" in w for w in fresh.warnings)


def test_an_extracted_skill_is_kept_when_image_volumes_would_be_chosen_on_reinvocation():
    index = solo_index(skill("alpha", image=IMAGE))
    the_pod = bare_pod()
    first = apply_patch(the_pod, mutate(the_pod, index, EXTRACT))
    again = mutate(first, index, MutationOptions())
    assert again.allowed and not again.patch


def test_a_skill_added_between_calls_rebuilds_the_puller_in_place():
    the_pod = bare_pod(init_containers=[container("setup")])
    before = solo_index(skill("a"))
    first = apply_patch(the_pod, mutate(the_pod, before))
    # Another webhook put an init container in front meanwhile, and the AgentRuntime gained a skill.
    first["spec"]["initContainers"].insert(0, container("istio-init"))
    after = solo_index(skill("a"), skill("b"))
    decision = mutate(first, after)
    patched = apply_and_recheck(first, decision, after, EXTRACT)
    names = [c["name"] for c in patched["spec"]["initContainers"]]
    assert names == ["skill-pull", "istio-init", "setup"]
    assert pulled_skills(patched["spec"]["initContainers"][0]) == {"a": skill("a")["image"], "b": skill("b")["image"]}
    assert_valid_pod(patched)


# -- conflicts with the puller's names ------------------------------------------------------------------------


def test_a_container_named_like_the_puller_is_a_conflict():
    the_pod = bare_pod(container("agent"), container("skill-pull"))
    decision = mutate(the_pod, solo_index(skill("a")))
    assert decision.code == 409 and 'container "skill-pull"' in decision.message


def test_a_skill_whose_volume_is_named_like_a_puller_volume_is_a_conflict():
    the_pod = bare_pod()
    the_pod["spec"]["imagePullSecrets"] = [{"name": "regcred"}]
    decision = mutate(the_pod, solo_index(skill("pull-secret-0")))
    assert decision.code == 409 and 'volume "skill-pull-secret-0"' in decision.message


def test_a_puller_name_of_the_admins_choice():
    options = MutationOptions(delivery="extract", puller=PullerConfig(name="fetch-skills"))
    index = solo_index(skill("a"))
    the_pod = bare_pod(init_containers=[container("skill-pull")])  # not ours, and not in the way
    patched = apply_and_recheck(the_pod, mutate(the_pod, index, options), index, options)
    assert [c["name"] for c in patched["spec"]["initContainers"]] == ["fetch-skills", "skill-pull"]


# -- the record -------------------------------------------------------------------------------------------------


def test_nodes_that_cannot_mount_make_auto_extract_and_the_record_says_the_skill_was_extracted():
    options = MutationOptions(nodes=judge_nodes([("old", "containerd://2.0.5")]))
    index = solo_index(skill("a"))
    the_pod = bare_pod()
    decision = mutate(the_pod, index, options)
    patched = apply_and_recheck(the_pod, decision, index, options)
    assert decision.extracted == 1 and patched["spec"]["volumes"] == [
        {"name": "skill-a", "emptyDir": {"sizeLimit": "105536Ki"}}]
    record = json.loads(patched["metadata"]["annotations"][DEFAULT_DOMAIN.skills_injected])
    assert record["skills"] == {"a": skill("a")["image"]}
