import os
import sys

import pytest

# Helpers (live.py, contracts.py, helpers.py) import as top-level modules; the repository
# root stays off sys.path so that the installed litevna (with its compiled kernels) is tested.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from live import LiveServer, Provisioned  # noqa: E402


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


@pytest.fixture(autouse=True, scope="session")
def _scratch_cwd(tmp_path_factory):
    """trial's mktemp() writes below the working directory: keep that out of the tree."""
    previous = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    yield
    os.chdir(previous)
