"""Test-session defaults: the two runs, the hypothesis profiles, and fixtures shared by the modules.

Two runs (docs/testing.md):
- `python -m pytest`: the fast run. Tests marked `registry`, `process`, `kube`, `bench` or `slow`
  (pyproject.toml says what each means) are left out, hypothesis uses its quick `default` profile
  and the fuzz volume test sends few inputs. Naming a test file or node id runs all of it, marks or
  not, and a `-m` expression replaces the default selection.
- `python -m pytest --full`: everything, with the `ci` hypothesis profile (`.ci/run` runs this; the
  `ci` profile is also the one loaded whenever CI=true).

The registry resolver runs by default with the Kubernetes source, and the sample AgentRuntimes name
public registries that these machines must not contact: every test (and every `serve` it starts,
which inherits the environment) runs with the resolver off unless it asks for it with its own flags.
"""


from __future__ import annotations

import os
from contextlib import ExitStack
from pathlib import Path
from typing import Callable, Iterator

import pytest
from hypothesis import HealthCheck, settings

from tests.serve_process import Served, kube_flags, serving

# The real control plane's fixtures (kube_cluster, kube_controllers, agentruntime_crd, kube_namespace).
pytest_plugins = ["tests.kube_cluster"]

os.environ.setdefault("SKILL_WEBHOOK_RESOLVE_INTERVAL", "0")

# The markers (registered in pyproject.toml) whose tests the fast run leaves out.
LEFT_OUT_OF_FAST_RUN = ("registry", "process", "kube", "bench", "slow")
# Using one of these fixtures starts what the marker names, so the test carries the marker even
# where its module forgot to say so.
MARKER_OF_FIXTURE = {"docker_registries": "registry", "serve_process": "process", "kube_cluster": "kube"}
_LEFT_OUT = pytest.StashKey[bool]()  # the fast run did leave tests out (said in the summary)

# No example database in either profile: hypothesis would otherwise replay the failures it saved in
# .hypothesis/ of this checkout first, so a run's verdict would depend on what an earlier run (on
# someone's half-finished change, in a work tree shared by several people) happened to find, not only
# on the code. A failure is reproduced from what the report prints: the falsifying example and the
# @reproduce_failure blob. No deadline, and no too_slow health check: these machines are two shared
# cores, and how fast one example runs there says nothing about the code.
_COMMON = dict(database=None, deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", max_examples=200, **_COMMON)
settings.register_profile("default", max_examples=25, **_COMMON)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--full", action="store_true", default=False,
                     help="run every test, including those marked " + ", ".join(LEFT_OUT_OF_FAST_RUN) +
                          ", with the `ci` hypothesis profile (what .ci/run runs)")


def is_full_run(config: pytest.Config) -> bool:
    """--full, or CI: generated-input counts as CI needs them."""
    return bool(config.getoption("--full")) or os.environ.get("CI") == "true"


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--hypothesis-profile", default=None) is None:  # an explicit one wins
        settings.load_profile("ci" if is_full_run(config) else "default")


def _fast_run(config: pytest.Config) -> bool:
    """No --full, no -m, and only directories named (the default `tests`): a named file or test runs whole."""
    if config.getoption("--full") or config.option.markexpr:
        return False
    base = config.invocation_params.dir
    return all((base / arg.split("::")[0]).is_dir() for arg in config.args)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for fixture, marker in MARKER_OF_FIXTURE.items():
            if fixture in getattr(item, "fixturenames", ()) and item.get_closest_marker(marker) is None:
                item.add_marker(marker)
    if not _fast_run(config):
        return
    kept, left_out = [], []
    for item in items:
        (left_out if any(item.get_closest_marker(m) for m in LEFT_OUT_OF_FAST_RUN) else kept).append(item)
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = kept
        config.stash[_LEFT_OUT] = True


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    if config.stash.get(_LEFT_OUT, False):
        terminalreporter.write_line(
            f"fast run: tests marked {', '.join(LEFT_OUT_OF_FAST_RUN)} were left out; "
            "`python -m pytest --full` runs everything")


@pytest.fixture
def full_run(request: pytest.FixtureRequest) -> bool:
    """True in the full run and on CI: counts of generated inputs as CI needs them."""
    return is_full_run(request.config)


@pytest.fixture
def serve_process(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    """`serve_process(*flags, kube_api=URL)`: the real `skill-webhook serve`, ready
    (tests/serve_process.py says how it is started: file source on the sample AgentRuntimes unless
    the flags say otherwise; with `kube_api`, the Kubernetes source against that API server). Each
    call starts another in its own directory; all are stopped with SIGTERM after the test."""
    started: list[Served] = []
    with ExitStack() as running:
        def start(*flags: str, kube_api: str | None = None) -> Served:
            directory = tmp_path / f"serve-{len(started)}"
            if kube_api is not None:
                flags = (*kube_flags(directory, kube_api), *flags)
            started.append(running.enter_context(serving(directory, *flags)))
            return started[-1]

        yield start


@pytest.fixture(scope="session")
def docker_registries():
    """The real docker-registry processes on loopback (tests/registry_harness.py: one with TLS and
    htpasswd, one plain HTTP), started once per session, when a test first needs them."""
    from tests.registry_harness import shared_registries  # bcrypt and the certificate tooling: only then

    return shared_registries()
