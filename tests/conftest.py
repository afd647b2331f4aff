"""Shared test setup: the toy-world image-set cache out of the home directory, the C++ kernels built once, and the
tiny finished runs that many end-to-end tests read (helpers.py has the functions they share)."""

import os
import shutil

import pytest

from helpers import MESH_STEPS, generate


@pytest.fixture(scope="session", autouse=True)
def sjc_cache(tmp_path_factory):
    """Point $SJC_CACHE at a fresh per-session folder (subprocesses inherit it through os.environ)."""
    path = tmp_path_factory.mktemp("sjc-cache")
    old = os.environ.get("SJC_CACHE")
    os.environ["SJC_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("SJC_CACHE", None)
    else:
        os.environ["SJC_CACHE"] = old


@pytest.fixture(scope="session", autouse=True)
def fused_renderer_built():
    """Build the fused CPU renderer once, up front, so no timed subprocess test pays its compile time."""
    from sjc import kernels
    kernels.extension()


@pytest.fixture(scope="session")
def mesh_run(tmp_path_factory):
    """A full-output run long enough to produce a mesh: (run folder, stdout + stderr)."""
    d = tmp_path_factory.mktemp("mesh") / "run"
    out, err = generate(d, steps=MESH_STEPS, outputs=True)
    return d, out + err


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A finished 30-step run with video and mesh enabled (too short to mesh): (run folder, stdout + stderr)."""
    d = tmp_path_factory.mktemp("tiny") / "run"
    out, err = generate(d, steps=30, outputs=True)
    return d, out + err


@pytest.fixture
def tiny_copy(tiny_run, tmp_path):
    """A private copy of the tiny run folder that a test may damage."""
    d = tmp_path / "copy"
    shutil.copytree(tiny_run[0], d)
    return d
