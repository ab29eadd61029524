import os
import sys

import pytest
import requests

# Helpers (live.py, contracts.py, helpers.py) import as top-level modules; the repository
# root stays off sys.path so that the installed litevna (with its compiled kernels) is tested.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import live  # noqa: E402
from live import LiveServer, Provisioned, RedisServer  # noqa: E402


@pytest.fixture(scope="module")
def provisioned(tmp_path_factory):
    return Provisioned(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def server(provisioned):
    """A running server over a provisioned data dir, shared by a test module."""
    live = LiveServer(provisioned.data_dir)
    live.start()
    live.provisioned = provisioned
    yield live
    live.stop()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    """A private redis-server on a free port for a test module (never skipped: CI has one)."""
    with RedisServer(tmp_path_factory.mktemp("redis")) as redis:
        yield redis


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server (a private cluster, or LITEVNA_TEST_POSTGRES's) for the session:
    skipped where none can be had, but failed in CI, which must have one."""
    return live.require_postgres()


@pytest.fixture(scope="module")
def http():
    """One requests session per test module."""
    with requests.Session() as session:
        yield session


@pytest.fixture(scope="module")
def server_log_is_clean(server):
    """At module teardown: nothing the tests sent made the server log a traceback.

    A module asks for it with ``pytestmark = pytest.mark.usefixtures(...)``."""
    yield
    lines = server.log().splitlines()
    bad = [i for i, line in enumerate(lines) if "Traceback" in line or "Unhandled" in line]
    assert bad == [], "the server logged:\n" + "\n".join(
        "\n".join(lines[max(i - 1, 0):i + 30]) for i in bad[:3])


@pytest.fixture(autouse=True, scope="session")
def _scratch_cwd(tmp_path_factory):
    """trial's mktemp() writes below the working directory: keep that out of the tree."""
    previous = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    yield
    os.chdir(previous)
