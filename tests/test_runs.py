"""The two runs that tests/conftest.py sets up, checked on a small suite of its own: the fast default
leaves out the marked tests (and those using a fixture that starts something), --full runs them with
the `ci` hypothesis profile, a named file runs whole, and a -m expression replaces the default."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.process  # runs pytest four times

ROOT = Path(__file__).resolve().parent.parent
SUITE = '''
import pytest
from hypothesis import settings


@pytest.fixture
def serve_process():  # the name alone marks a test `process`; nothing is started here
    return None


def test_plain():
    print("PROFILE", settings.get_current_profile_name(), settings().max_examples)


@pytest.mark.registry
def test_registry():
    pass


@pytest.mark.slow
def test_slow():
    pass


def test_uses_the_serve_fixture(serve_process):
    pass
'''


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("suite")
    (directory / "conftest.py").write_text("from tests.conftest import *  # noqa: F403 - the hooks under test\n")
    (directory / "test_suite.py").write_text(SUITE)
    return directory


def run(suite: Path, *args: str) -> tuple[set[str], str]:
    """The tests that passed, and the output."""
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", "-s", *args],
                          cwd=suite, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return set(re.findall(r"^PASSED test_suite\.py::(\w+)", done.stdout, re.MULTILINE)), done.stdout


def test_the_fast_run_leaves_the_marked_tests_out(suite):
    passed, out = run(suite, ".")
    assert passed == {"test_plain"}
    assert "PROFILE default 25" in out and "3 deselected" in out


def test_the_full_run_runs_everything_with_the_ci_profile(suite):
    passed, out = run(suite, "--full")
    assert passed == {"test_plain", "test_registry", "test_slow", "test_uses_the_serve_fixture"}
    assert "PROFILE ci 200" in out


def test_a_named_file_runs_whole(suite):
    passed, _ = run(suite, "test_suite.py")
    assert passed == {"test_plain", "test_registry", "test_slow", "test_uses_the_serve_fixture"}


def test_a_marker_expression_replaces_the_default_selection(suite):
    assert run(suite, "-m", "process or slow")[0] == {"test_slow", "test_uses_the_serve_fixture"}


def test_no_profile_replays_examples_saved_by_an_earlier_run():
    # A failure hypothesis saved in the checkout's .hypothesis/ would make every later run of the same
    # checkout fail (or pass) by what an earlier run found, not by the code: neither profile keeps one.
    from hypothesis import settings

    assert [settings.get_profile(name).database for name in ("default", "ci")] == [None, None]
