"""The AgentRuntime CRD: its own step, only for clusters without one (never over the operator's)."""

from __future__ import annotations

from typing import Iterable

from app.core.model import AGENTRUNTIME_KIND, PULL_POLICIES, TARGET_KINDS
from app.core.validation.paths import MAX_SKILL_PATH_LENGTH

from app.service.install.manifests.common import CRD_FILE, Document, InstallOptions, meta


def _one_of(values: Iterable[str]) -> str:
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


def crd(o: InstallOptions) -> list[Document]:
    """The AgentRuntime CRD for clusters that have none. Its schema checks what the API server can
    check alone; /validate checks the rest. Where both check a rule they agree (tests/test_crd.py
    evaluates these CEL rules on the webhook's own test cases)."""
    kinds = ", ".join(TARGET_KINDS)
    policies = ", ".join(PULL_POLICIES)
    skill = {
        "type": "object",
        "required": ["name", "image", "mountPath"],
        "properties": {
            "name": {
                "description": 'DNS-1123 label of at most 57 characters: the volume is named "skill-<name>" and a '
                "volume name has at most 63.",
                "type": "string",
                "maxLength": 63,
                "x-kubernetes-validations": [
                    {
                        "rule": "size(self) >= 1 && size(self) <= 57",
                        "message": "must be 1 to 57 characters (the volume name skill-<name> must fit 63)",
                    },
                    # Three plain regexes rather than one anchored one: "$" differs between RE2 and
                    # other engines on a trailing newline; these do not.
                    {
                        "rule": "!self.matches('[^-a-z0-9]') && self.matches('^[a-z0-9]') && self.matches('[a-z0-9]$')",
                        "message": "must be a lowercase RFC 1123 label: lower case alphanumeric characters or '-', "
                        "starting and ending with an alphanumeric character",
                    },
                ],
            },
            "image": {
                "description": "OCI image reference, [registry[:port]/]path[:tag][@sha256:hex or @sha512:hex].",
                "type": "string",
                "minLength": 1,
                # The longest valid reference: 255 (name) + 1 + 128 (tag) + 1 + 135 (a sha512 digest).
                "maxLength": 520,
            },
            "mountPath": {
                "description": "Absolute directory in the agent container where the skill appears.",
                "type": "string",
                "maxLength": 4096,
                "x-kubernetes-validations": [
                    {"rule": "self.startsWith('/')", "message": "must be an absolute path"},
                    {
                        "rule": "!(self == '..' || self.startsWith('../') || self.endsWith('/..') || self.contains('/../'))",
                        "message": "must not contain '..'",
                    },
                ],
            },
            "path": {
                "description": "Optional directory inside the image to mount instead of its root (the mount's "
                "subPath): relative, without '..', at most 255 characters.",
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_SKILL_PATH_LENGTH,
                "x-kubernetes-validations": [
                    {"rule": "!self.startsWith('/')", "message": "must be a relative path inside the image (no leading '/')"},
                    {
                        "rule": "!(self == '..' || self.startsWith('../') || self.endsWith('/..') || self.contains('/../'))",
                        "message": "must not contain '..'",
                    },
                    # C0 control characters and DEL, as the webhook refuses them.
                    {"rule": r"!self.matches('[\\x00-\\x1f\\x7f]')", "message": "must not contain control characters"},
                ],
            },
            "pullPolicy": {
                "description": f"{policies.replace(', Never', ' or Never')}; when absent, the Kubernetes default.",
                "type": "string",
                "maxLength": 16,
                "x-kubernetes-validations": [
                    {"rule": f"self in {_one_of(PULL_POLICIES)}", "message": f"must be one of {policies}"}
                ],
            },
        },
    }
    schema = {
        "description": "Declares which skill images (OCI) the agent of one workload gets mounted.",
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": {
                "type": "object",
                "required": ["type", "targetRef"],
                "x-kubernetes-preserve-unknown-fields": True,
                "properties": {
                    "type": {"description": "What the workload is.", "type": "string", "enum": ["agent", "tool"]},
                    "targetRef": {
                        "description": "The workload in the same namespace whose pods get the skills.",
                        "type": "object",
                        "required": ["apiVersion", "kind", "name"],
                        "x-kubernetes-preserve-unknown-fields": True,
                        "properties": {
                            "apiVersion": {"type": "string", "minLength": 1},
                            "kind": {
                                "type": "string",
                                "maxLength": 63,
                                "x-kubernetes-validations": [
                                    {"rule": f"self in {_one_of(TARGET_KINDS)}", "message": f"must be one of {kinds}"}
                                ],
                            },
                            "name": {"type": "string", "minLength": 1},
                        },
                    },
                    "skills": {
                        "description": "Skill images to mount read-only into the agent container, at most 20.",
                        "type": "array",
                        "maxItems": 20,
                        "x-kubernetes-list-type": "atomic",
                        "x-kubernetes-validations": [
                            {"rule": "size(self) <= 20", "message": "must have at most 20 items"},
                            {
                                "rule": "self.all(s, self.exists_one(t, t.name == s.name))",
                                "message": "skill names must be unique",
                            },
                        ],
                        "items": skill,
                    },
                },
            },
            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        },
    }
    body = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": meta(f"agentruntimes.{o.group}", **{"app.kubernetes.io/component": "crd"}),
        "spec": {
            "group": o.group,
            "scope": "Namespaced",
            "names": {
                "kind": AGENTRUNTIME_KIND,
                "listKind": f"{AGENTRUNTIME_KIND}List",
                "plural": "agentruntimes",
                "singular": "agentruntime",
                "shortNames": ["art", "agentrt"],
            },
            "versions": [
                {
                    "name": o.version,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Type", "type": "string", "jsonPath": ".spec.type"},
                        {"name": "Target-Kind", "type": "string", "jsonPath": ".spec.targetRef.kind", "priority": 1},
                        {"name": "Target", "type": "string", "jsonPath": ".spec.targetRef.name"},
                        # A printer column's JSONPath cannot count; the names show how many there are.
                        {"name": "Skills", "type": "string", "jsonPath": ".spec.skills[*].name"},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }
    return [
        Document(
            CRD_FILE,
            f"AgentRuntime ({o.agentruntime_api}), ONLY for clusters that do not have an AgentRuntime CRD:\n"
            "applying it where the operator installed its own would overwrite the operator's\n"
            "(docs/installing.md, the optional CRD step). Not part of kustomization.yaml.\n"
            "\n"
            "The schema checks what the API server can check on its own; the validating webhook\n"
            "(/validate) checks the rest (OCI references, registry allow-list, mount-path overlaps and\n"
            "reserved trees, one AgentRuntime per workload). Where both check a rule they agree.\n"
            "Unknown fields are preserved everywhere except inside a skill entry: other projects add spec\n"
            "fields (identity, trace, authBridgeMode, mtlsMode) that must survive, while a misspelt skill\n"
            "field (mountpath) is pruned, and the API server and the webhook both warn about it.",
            body,
        )
    ]


