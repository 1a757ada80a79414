"""`skill-webhook pull` end to end, as a process, against the real registry of tests/registry_harness.py
(docker-registry on loopback: plain HTTP, and TLS with htpasswd) and a small layout server of our own
for the answers a real registry will not give (bytes that do not match their digest)."""

from __future__ import annotations

import gzip
import http.server
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest
import zstandard

from app.core import registry_facts as facts
from tests.registry_harness import Layout, multi_arch_index, sha256, shared_registries, skillimage, tar_gz

registry = pytest.mark.registry  # the layout server's tests start no registry: `process`

SKILL_WEBHOOK = str(Path(sys.executable).with_name("skill-webhook"))
OCI_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_TAR_GZ = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_TAR_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_TAR_GZ = "application/vnd.docker.image.rootfs.diff.tar.gzip"
AGENTSKILLS_TYPE = "application/vnd.agentskills.skill.v1"
AGENTSKILLS_CONFIG = "application/vnd.agentskills.skill.config.v1+json"
AGENTSKILLS_LAYER = "application/vnd.agentskills.skill.content.v1.tar+gzip"


# -- images ---------------------------------------------------------------------------------------


def tar_of(entries: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for info, data in entries:
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return raw.getvalue()


def entry(name: str, data: bytes = b"", *, kind: bytes = tarfile.REGTYPE, target: str = "",
          mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, target, mode
    if kind == tarfile.REGTYPE:
        info.size = len(data)
        return info, data
    return info, None


def image(layout: Layout, layers: list[tuple[bytes, str]], *, annotations: dict[str, str] | None = None,
          config_type: str = facts.OCI_CONFIG, config: bytes | None = None,
          artifact_type: str | None = None, media_type: str = facts.OCI_MANIFEST) -> dict[str, Any]:
    """An image (or artifact) manifest of the given layers (bytes as stored, media type)."""
    if config is None:
        config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                             "rootfs": {"type": "layers", "diff_ids": [sha256(data) for data, _ in layers]}}).encode()
    document: dict[str, Any] = {
        "schemaVersion": 2, "mediaType": media_type,
        "config": layout.blob(config, config_type),
        "layers": [layout.blob(data, layer_type) for data, layer_type in layers],
    }
    if annotations:
        document["annotations"] = annotations
    if artifact_type:
        document["artifactType"] = artifact_type
    return layout.manifest(document)


def gzip_bomb(files: int, each: int) -> bytes:
    """A tar+gzip layer of `files` files of `each` zero bytes, a few KB per file compressed: gzip
    members concatenated, one per header and one (the same) per file's data."""
    zeros = gzip.compress(b"\0" * each, mtime=0)
    parts = []
    for i in range(files):
        header = tarfile.TarInfo(f"bomb/{i:05d}")
        header.size = each
        parts += [gzip.compress(header.tobuf(tarfile.USTAR_FORMAT), mtime=0), zeros]
    return b"".join(parts) + gzip.compress(b"\0" * 1024, mtime=0)


class Pushed:
    """The images of this module, by tag: (reference, digest)."""

    def __init__(self, regs, layout: Layout) -> None:
        self.regs, self.layout = regs, layout
        self.images: dict[str, tuple[str, str]] = {}

    def add(self, tag: str, descriptor: dict[str, Any], *, private: bool = False) -> None:
        digest = self.layout.tag(descriptor, tag)
        registry = self.regs.secure if private else self.regs.plain
        registry.push(self.layout, tag, f"skills/{tag}", dest_tag="v1")
        self.images[tag] = (f"{registry.host}/skills/{tag}:v1", digest)

    def ref(self, tag: str) -> str:
        return self.images[tag][0]


@pytest.fixture(scope="module")
def pushed(tmp_path_factory) -> Pushed:
    regs = shared_registries()
    layout = Layout(tmp_path_factory.mktemp("pull-layout") / "oci")
    p = Pushed(regs, layout)
    p.add("skill", skillimage(layout, "resume-reviewer", "1.0.0"))
    p.add("bundle", image(layout, [(gzip.compress(tar_of([
        entry("README.md", b"# a bundle"),
        entry("skills/alpha/SKILL.md", b"---\nname: alpha\n---\n"),
        entry("skills/beta/SKILL.md", b"---\nname: beta\n---\n"),
        entry("skills/beta/scripts/run.sh", b"#!/bin/sh\necho beta\n", mode=0o755),
    ])), OCI_TAR_GZ)], annotations={facts.SKILLIMAGE_BUNDLE: "true", facts.SKILLIMAGE_BUNDLE_SKILLS: "alpha,beta"}))
    p.add("artifact", image(
        layout, [(tar_gz({"blog-writer/SKILL.md": b"---\nname: blog-writer\n---\n",
                          "blog-writer/templates/post.md": b"# post"}), AGENTSKILLS_LAYER)],
        config_type=AGENTSKILLS_CONFIG, config=json.dumps({"name": "blog-writer"}).encode(),
        artifact_type=AGENTSKILLS_TYPE, annotations={facts.AGENTSKILLS_NAME: "blog-writer"},
    ))
    zstd = zstandard.ZstdCompressor()
    p.add("zstd", image(layout, [(zstd.compress(tar_of([entry("SKILL.md", b"zstd skill")])), OCI_TAR_ZSTD)]))
    p.add("layers", image(layout, [
        (gzip.compress(tar_of([entry("SKILL.md", b"v1"), entry("old/a", b"a"), entry("old/b", b"b"),
                               entry("keep/x", b"x")])), DOCKER_TAR_GZ),
        (tar_of([entry("old/.wh.a"), entry("keep/.wh..wh..opq"), entry("keep/y", b"y"), entry("SKILL.md", b"v2")]), OCI_TAR),
        (zstd.compress(tar_of([entry("docs/new.md", b"new")])), OCI_TAR_ZSTD),
    ]))
    p.add("multi", multi_arch_index(layout, "multi", "2.0.0"))
    p.add("private", skillimage(layout, "private-skill", "1.0.0"), private=True)
    p.add("traversal", image(layout, [(gzip.compress(tar_of([entry("SKILL.md", b"x"), entry("../x", b"escape")])), OCI_TAR_GZ)]))
    p.add("symlink", image(layout, [(gzip.compress(tar_of([
        entry("s", kind=tarfile.SYMTYPE, target="/etc"), entry("s/x", b"escape")])), OCI_TAR_GZ)]))
    p.add("hardlink", image(layout, [(gzip.compress(tar_of([
        entry("shadow", kind=tarfile.LNKTYPE, target="/etc/shadow")])), OCI_TAR_GZ)]))
    truncated = tar_of([entry("SKILL.md", b"s"), entry("big", os.urandom(20000))])[:8000]
    p.add("truncated", image(layout, [(gzip.compress(truncated), OCI_TAR_GZ)]))
    p.add("bomb", image(layout, [(gzip_bomb(1024, 4 << 20), OCI_TAR_GZ)]))
    return p


# -- running the command --------------------------------------------------------------------------


def pull(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([SKILL_WEBHOOK, "pull", *args], capture_output=True, text=True, timeout=120)


def lines(done: subprocess.CompletedProcess) -> list[dict[str, Any]]:
    return [json.loads(line) for line in done.stdout.splitlines()]


def plain(pushed: Pushed) -> list[str]:
    return ["--insecure-registry", pushed.regs.plain.host]


def files_under(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def assert_failed(done: subprocess.CompletedProcess, *words: str) -> str:
    assert done.returncode == 1, done.stderr
    err = done.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("skill-webhook pull: "), err
    assert "Traceback" not in err
    for word in words:
        assert word in err, err
    return err


# -- every package kind ---------------------------------------------------------------------------


@registry
def test_a_skillimage_by_hand(pushed, tmp_path):
    reference, digest = pushed.images["skill"]
    done = pull(reference, "--into", str(tmp_path / "resume"), *plain(pushed))
    assert done.returncode == 0, done.stderr
    [line] = lines(done)
    assert line["msg"] == "skill pulled" and line["skill"] == "resume" and line["reference"] == reference
    assert line["digest"] == digest and line["files"] == 2 and line["seconds"] >= 0
    content = files_under(tmp_path / "resume")
    assert set(content) == {"skill.yaml", "SKILL.md"} and line["bytes"] == sum(map(len, content.values()))
    assert os.listdir(tmp_path) == ["resume"]  # nothing left beside it


@registry
def test_by_hand_needs_a_new_or_empty_directory(pushed, tmp_path):
    (tmp_path / "empty").mkdir()
    assert pull(pushed.ref("skill"), "--into", str(tmp_path / "empty"), *plain(pushed)).returncode == 0
    assert (tmp_path / "empty" / "SKILL.md").is_file()
    assert_failed(pull(pushed.ref("skill"), "--into", str(tmp_path / "empty"), *plain(pushed)), "not an empty directory")


@registry
def test_a_bundle_into_volumes_with_paths(pushed, tmp_path):
    root = tmp_path / "skills"
    (root / "alpha").mkdir(parents=True)
    (root / "alpha" / "stale-from-a-failed-run").write_text("x")
    done = pull("--skill", f"alpha={pushed.ref('bundle')}", "--skill-path", "alpha=skills/alpha",
                "--skill", f"beta={pushed.ref('bundle')}", "--skill-path", "beta=skills/beta",
                "--skills-root", str(root), *plain(pushed))
    assert done.returncode == 0, done.stderr
    assert [line["skill"] for line in lines(done)] == ["alpha", "beta"]
    for name in ("alpha", "beta"):  # the whole image in each: the agent's mount selects the path
        assert (root / name / "skills" / name / "SKILL.md").is_file()
        assert (root / name / "README.md").is_file()
    assert not (root / "alpha" / "stale-from-a-failed-run").exists()
    assert os.access(root / "beta/skills/beta/scripts/run.sh", os.X_OK)


@registry
def test_a_path_without_a_skill_md_fails_naming_it_and_empties_the_volume(pushed, tmp_path):
    done = pull("--skill", f"gamma={pushed.ref('bundle')}", "--skill-path", "gamma=skills/gamma",
                "--skills-root", str(tmp_path), *plain(pushed))
    assert_failed(done, "skill gamma:", "'skills/gamma'")
    assert os.listdir(tmp_path / "gamma") == []
    done = pull(pushed.ref("bundle"), "--into", str(tmp_path / "by-hand"), "--path", "skills", *plain(pushed))
    assert_failed(done, "'skills' holds no SKILL.md")
    assert os.listdir(tmp_path) == ["gamma"]


@registry
def test_an_agentskills_artifact(pushed, tmp_path):
    reference, digest = pushed.images["artifact"]
    done = pull("--skill", f"blog={reference}", "--skill-path", "blog=blog-writer", "--skills-root", str(tmp_path),
                *plain(pushed))
    assert done.returncode == 0, done.stderr
    assert lines(done)[0]["digest"] == digest
    assert files_under(tmp_path / "blog") == {"blog-writer/SKILL.md": b"---\nname: blog-writer\n---\n",
                                              "blog-writer/templates/post.md": b"# post"}


@registry
def test_a_zstd_layer(pushed, tmp_path):
    done = pull(pushed.ref("zstd"), "--into", str(tmp_path / "z"), *plain(pushed))
    assert done.returncode == 0, done.stderr
    assert files_under(tmp_path / "z") == {"SKILL.md": b"zstd skill"}


@registry
def test_layers_in_order_with_whiteouts(pushed, tmp_path):
    done = pull(pushed.ref("layers"), "--into", str(tmp_path / "l"), *plain(pushed))
    assert done.returncode == 0, done.stderr
    assert files_under(tmp_path / "l") == {"SKILL.md": b"v2", "old/b": b"b", "keep/y": b"y", "docs/new.md": b"new"}


@registry
@pytest.mark.parametrize(("platform", "arch"), [("linux/arm64", "arm64"), ("linux/amd64", "amd64"), ("linux/s390x", "arm64")])
def test_a_multi_arch_index_unpacks_the_platforms_entry_else_the_first(pushed, tmp_path, platform, arch):
    reference, digest = pushed.images["multi"]
    done = pull(f"{reference}@{digest}", "--into", str(tmp_path / "m"), "--platform", platform, *plain(pushed))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "m" / "ARCH").read_text() == arch
    assert lines(done)[0]["digest"] == digest


@registry
def test_the_default_platform_is_this_machines(pushed, tmp_path):
    from app.sources.registry.pull import default_platform

    done = pull(pushed.ref("multi"), "--into", str(tmp_path / "m"), *plain(pushed))
    assert done.returncode == 0, done.stderr
    expected = default_platform().split("/")[1]
    assert (tmp_path / "m" / "ARCH").read_text() == (expected if expected in ("amd64", "arm64") else "arm64")


# -- credentials and TLS --------------------------------------------------------------------------


@registry
def test_a_private_repository_needs_the_pods_pull_secret(pushed, tmp_path):
    secure = pushed.regs.secure
    tls = ["--registry-ca", str(secure.ca_file)]
    assert_failed(pull(pushed.ref("private"), "--into", str(tmp_path / "anon"), *tls), "401 unauthorized")
    secrets = tmp_path / "pull-secrets"
    (secrets / "0").mkdir(parents=True)
    (secrets / "0" / ".dockerconfigjson").write_text(json.dumps({"auths": {"other.example": {"auth": "eDp5"}}}))
    (secrets / "1").mkdir()
    secure.docker_config(secrets / "1" / ".dockerconfigjson")
    done = pull(pushed.ref("private"), "--into", str(tmp_path / "authed"), *tls, "--registry-auth", str(secrets))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "authed" / "SKILL.md").is_file()
    assert not (tmp_path / "anon").exists()


@registry
def test_a_legacy_dockercfg_secret_and_a_broken_one(pushed, tmp_path):
    secure = pushed.regs.secure
    secrets = tmp_path / "pull-secrets"
    (secrets / "0").mkdir(parents=True)
    (secrets / "0" / ".dockerconfigjson").write_text("{not json")
    (secrets / "1").mkdir()
    config = json.loads(secure.docker_config(tmp_path / "config.json").read_text())
    (secrets / "1" / ".dockercfg").write_text(json.dumps(config["auths"]))
    done = pull(pushed.ref("private"), "--into", str(tmp_path / "s"), "--registry-ca", str(secure.ca_file),
                "--registry-auth", str(secrets))
    assert done.returncode == 0, done.stderr
    assert "warning: pull secret" in done.stderr and "0/.dockerconfigjson ignored" in done.stderr


@registry
def test_a_missing_ca_file_means_the_system_roots(pushed, tmp_path):
    auth = pushed.regs.secure.docker_config(tmp_path / "config.json")
    done = pull(pushed.ref("private"), "--into", str(tmp_path / "s"), "--registry-auth", str(auth),
                "--registry-ca", str(tmp_path / "absent" / "ca.crt"))
    assert_failed(done, "TLS")  # the test CA is not among them


# -- bytes that do not match their digests --------------------------------------------------------


class LayoutServer:
    """A registry stand-in serving an OCI layout (tags from index.json, blobs by digest) over plain
    HTTP on loopback, with some blobs replaced (`tampered`: digest -> the bytes to send instead) or
    sent only half-way before the server goes silent (`stalled`)."""

    def __init__(self, layout: Layout, tampered: dict[str, bytes], stalled: frozenset[str] = frozenset()) -> None:
        tags = {r["annotations"]["org.opencontainers.image.ref.name"]: r["digest"] for r in layout.refs}
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return None

            def do_GET(self) -> None:
                parts = self.path.split("/")
                if self.path == "/v2/":
                    return self._send(200, b"{}", "application/json")
                if len(parts) < 5 or parts[-2] not in ("manifests", "blobs"):
                    return self._send(404, b"{}", "application/json")
                reference = parts[-1]
                digest = tags.get(reference, reference)
                blob = layout.path / "blobs" / "sha256" / digest.removeprefix("sha256:")
                if not digest.startswith("sha256:") or not blob.is_file():
                    return self._send(404, b"{}", "application/json")
                body = outer.tampered.get(digest, blob.read_bytes())
                media_type = json.loads(blob.read_bytes()).get("mediaType", "") if parts[-2] == "manifests" else ""
                self._send(200, body, media_type or "application/octet-stream", stall=digest in outer.stalled)

            def _send(self, status: int, body: bytes, ctype: str, stall: bool = False) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if stall:  # half the bytes, then nothing until the server stops
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    outer.stopping.wait()
                    return
                self.wfile.write(body)

        self.tampered, self.stalled = tampered, stalled
        self.stopping = threading.Event()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def __enter__(self) -> "LayoutServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()


def _tampered_layout(tmp_path: Path) -> tuple[Layout, str, str, bytes]:
    """An image whose one (uncompressed) layer has a same-length twin with other content."""
    layout = Layout(tmp_path / "oci")
    layer = tar_of([entry("SKILL.md", b"the skill as signed")])
    twin = tar_of([entry("SKILL.md", b"the skill, tampered")])
    assert len(layer) == len(twin) and layer != twin
    manifest = image(layout, [(layer, OCI_TAR)])
    layout.tag(manifest, "v1")
    return layout, manifest["digest"], sha256(layer), twin


@pytest.mark.process
def test_a_blob_that_does_not_match_its_digest_fails_the_pull_and_leaves_nothing(tmp_path):
    layout, _, layer_digest, twin = _tampered_layout(tmp_path)
    with LayoutServer(layout, {layer_digest: twin}) as server:
        reference = f"{server.host}/skills/tampered:v1"
        common = ["--insecure-registry", server.host]
        (tmp_path / "out").mkdir()
        done = pull(reference, "--into", str(tmp_path / "out" / "s"), *common)
        assert_failed(done, "does not match its digest", layer_digest)
        assert os.listdir(tmp_path / "out") == []
        done = pull("--skill", f"s={reference}", "--skills-root", str(tmp_path / "out"), *common)
        assert_failed(done, "skill s:", "does not match its digest")
        assert os.listdir(tmp_path / "out" / "s") == []
        server.tampered = {}
        assert pull(reference, "--into", str(tmp_path / "good"), *common).returncode == 0


@pytest.mark.process
def test_a_blob_longer_than_its_descriptor_is_cut_off(tmp_path):
    layout, _, layer_digest, twin = _tampered_layout(tmp_path)
    with LayoutServer(layout, {layer_digest: twin + b"\0" * 4096}) as server:
        done = pull(f"{server.host}/skills/tampered:v1", "--into", str(tmp_path / "s"), "--insecure-registry", server.host)
    assert_failed(done, "longer than")


@pytest.mark.process
def test_a_layer_that_stalls_mid_way_times_out_and_leaves_nothing(tmp_path):
    layout, _, layer_digest, _ = _tampered_layout(tmp_path)
    with LayoutServer(layout, {}, stalled=frozenset({layer_digest})) as server:
        done = pull("--skill", f"s={server.host}/skills/tampered:v1", "--skills-root", str(tmp_path),
                    "--insecure-registry", server.host, "--timeout", "1")
    assert_failed(done, "skill s:", "timeout after 1s")
    assert os.listdir(tmp_path / "s") == []


@pytest.mark.process
def test_a_manifest_that_does_not_match_the_pinned_digest(tmp_path):
    layout, manifest_digest, _, _ = _tampered_layout(tmp_path)
    other = json.loads((layout.path / "blobs/sha256" / manifest_digest.split(":")[1]).read_bytes())
    other["annotations"] = {"swapped": "yes"}
    with LayoutServer(layout, {manifest_digest: json.dumps(other).encode()}) as server:
        done = pull(f"{server.host}/skills/tampered:v1@{manifest_digest}", "--into", str(tmp_path / "s"),
                    "--insecure-registry", server.host)
    assert_failed(done, "does not match its digest")


# -- hostile layers, end to end -------------------------------------------------------------------


@registry
@pytest.mark.parametrize(("tag", "words"), [
    ("traversal", ["entry '../x'", '".." segment']),
    ("symlink", ["entry 's'", "'/etc'"]),
    ("hardlink", ["entry 'shadow'", "'/etc/shadow'"]),
    ("truncated", ["layer 1 of 1", "unexpected end of data"]),
])
def test_hostile_layers_are_refused_naming_the_entry(pushed, tmp_path, tag, words):
    done = pull("--skill", f"evil={pushed.ref(tag)}", "--skills-root", str(tmp_path), *plain(pushed))
    assert_failed(done, "skill evil:", *words)
    assert os.listdir(tmp_path / "evil") == []
    assert not Path("/etc/x").exists()


# Runs a command in a fresh small process and writes its peak RSS (KiB) to a file. Measured from
# here directly, the number would be this pytest's: Linux records the pre-exec memory of a forked or
# vforked child as the peak of the program it then runs.
_PEAK_RSS = """import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
open(sys.argv[1], "w").write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


@registry
def test_a_gzip_bomb_stops_at_the_size_limit_in_bounded_memory(pushed, tmp_path):
    """4 GiB of zeros in 1,024 entries, 4 MB compressed: the 17th entry passes 64 MiB."""
    (tmp_path / "out").mkdir()
    peak = tmp_path / "peak-rss"
    done = subprocess.run([sys.executable, "-c", _PEAK_RSS, str(peak), SKILL_WEBHOOK, "pull", pushed.ref("bomb"),
                           "--into", str(tmp_path / "out" / "b"), *plain(pushed)],
                          capture_output=True, text=True, timeout=120)
    assert_failed(done, "entry 'bomb/00016'", "67108864 bytes")
    assert int(peak.read_text()) < 100 * 1024, f"peak RSS {peak.read_text()} KiB"
    assert os.listdir(tmp_path / "out") == []


# -- the pod the patch makes, run as the kubelet would ---------------------------------------------


@pytest.fixture
def pod_dir():
    """A directory the puller's user can reach (pytest's own are private to root)."""
    path = Path(tempfile.mkdtemp(prefix="skill-pod-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path)


@registry
def test_the_puller_init_container_as_the_kubelet_runs_it(pushed, pod_dir):
    """Exactly the command and args the mutation gives the puller, on directories standing in for the
    pod's volumes (skill emptyDirs, the pull-secret volumes, the CA ConfigMap), as uid 65532; then
    the agent's view: /skills/NAME/PATH/SKILL.md."""
    from app.core.mutation import puller

    pod = pod_dir
    secure = pushed.regs.secure
    skills = [puller.PulledSkill("resume", pushed.ref("skill")), puller.PulledSkill("beta", pushed.ref("bundle"), "skills/beta"),
              puller.PulledSkill("private", pushed.ref("private"))]
    config = puller.PullerConfig(insecure_registries=(pushed.regs.plain.host,), registry_ca_configmap="registry-ca")
    container = puller.puller_container(config, skills, ["regcred"])
    assert container["command"] == ["skill-webhook", "pull"]

    volumes = {puller.SKILLS_ROOT: pod / "skills", puller.PULL_SECRETS_DIR: pod / "pull-secrets",
               puller.REGISTRY_CA_DIR: pod / "registry-ca"}
    for skill in skills:  # emptyDirs: root-owned, world-writable
        (pod / "skills" / skill.name).mkdir(parents=True)
        os.chmod(pod / "skills" / skill.name, 0o777)
    (pod / "pull-secrets" / "0").mkdir(parents=True)
    secure.docker_config(pod / "pull-secrets" / "0" / ".dockerconfigjson")
    (pod / "registry-ca").mkdir()
    (pod / "registry-ca" / "ca.crt").write_bytes(secure.ca_file.read_bytes())
    for path in (pod / "pull-secrets" / "0" / ".dockerconfigjson", pod / "registry-ca" / "ca.crt"):
        os.chmod(path, 0o444)  # the secret's defaultMode; owned by root
    for path in (pod / "pull-secrets", pod / "pull-secrets" / "0", pod / "registry-ca"):
        os.chmod(path, 0o755)

    def stand_in(arg: str) -> str:
        for mount, directory in volumes.items():
            if arg == mount or arg.startswith(mount + "/"):
                return str(directory) + arg[len(mount):]
        return arg

    args = [stand_in(arg) for arg in container["args"]]
    # As root, become the puller's user as the runtime does: uid and gid 65532, no other groups.
    # (setpriv, not subprocess's user=: on this kernel only setpriv's exec reaches the interpreter.)
    user = puller.PULLER_UID if os.geteuid() == 0 else None
    as_user = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"] if user is not None else []
    for attempt in range(2):  # the kubelet may run the puller again in the same pod
        done = subprocess.run([*as_user, SKILL_WEBHOOK, *container["command"][1:], *args],
                              capture_output=True, text=True, timeout=120, cwd="/")
        assert done.returncode == 0, done.stderr
        assert [line["skill"] for line in lines(done)] == ["resume", "beta", "private"]
    agent_view = {skill.name: pod / "skills" / skill.name / (skill.path or "") / "SKILL.md" for skill in skills}
    for name, skill_md in agent_view.items():
        assert skill_md.is_file(), name
        assert os.stat(skill_md).st_mode & 0o444 == 0o444  # readable by the agent, another user
    if user is not None:
        assert os.stat(agent_view["resume"]).st_uid == user


# -- without a registry: the command line and the pull secrets ------------------------------------


@pytest.mark.parametrize(("args", "words"), [
    ([], "give IMAGE --into DIR, or --skill"),
    (["registry.invalid/x:v1"], "both IMAGE and --into"),
    (["registry.invalid/x:v1", "--into", "d", "--skill", "a=registry.invalid/x:v1"], "not both"),
    (["--skill", "a=registry.invalid/x:v1"], "--skills-root"),
    (["--skill", "a=registry.invalid/x:v1", "--skill", "a=registry.invalid/y:v1", "--skills-root", "r"], "given twice"),
    (["--skill", "a/b=registry.invalid/x:v1", "--skills-root", "r"], "cannot name a directory"),
    (["--skill", "a=registry.invalid/x:v1", "--skill-path", "b=p", "--skills-root", "r"], "no --skill b="),
    (["--skill", "noreference", "--skills-root", "r"], "expected NAME=VALUE"),
    (["--skill", "a=registry.invalid/x:v1", "--skills-root", "r", "--path", "p"], "--skill-path"),
])
def test_usage_mistakes_exit_2_with_one_line(args, words):
    done = pull(*args)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("skill-webhook pull: ") and len(done.stderr.splitlines()) == 1
    assert words in done.stderr


def test_pull_secrets_in_the_pods_order_first_wins_broken_ones_skipped(tmp_path):
    from app.sources.registry.pull import load_credentials

    def secret(index: str, name: str, user: str, *, legacy: bool = False) -> None:
        auths = {"reg.example": {"username": user, "password": "pw"}}
        (tmp_path / index).mkdir()
        (tmp_path / index / name).write_text(json.dumps(auths if legacy else {"auths": auths}))

    secret("10", ".dockerconfigjson", "tenth")
    secret("2", ".dockercfg", "second", legacy=True)
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / ".dockerconfigjson").write_text("[]")
    warnings: list[str] = []
    found = load_credentials([tmp_path, tmp_path / "absent"], warnings.append)
    assert found == {"reg.example": ("second", "pw")}
    assert len(warnings) == 1 and "1/.dockerconfigjson ignored" in warnings[0]


def test_a_skill_path_is_relative_inside_the_image():
    from app.sources.registry.pull import PullError, check_skill_path

    assert check_skill_path("./skills//a/") == ["skills", "a"]
    for bad in ("/etc", "a/../..", "", "."):
        with pytest.raises(PullError):
            check_skill_path(bad)
