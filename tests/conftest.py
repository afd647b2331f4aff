"""Shared test setup: the toy-world image-set cache out of the home directory; the fused renderer built once."""

import os

import pytest


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
    from sjc import fused
    fused.extension()
