import os
import sys

import pytest

# Pyserini 1.6.0 needs these before import; the package's start-up hook sets them, tests rely on it too.
import pyserini_kdspd  # noqa: F401
from pyserini_kdspd.paths import data_dir


@pytest.fixture(scope="session")
def shared_data():
    d = data_dir()
    if d is None:
        pytest.skip("../shared/data is not present")
    return d


@pytest.fixture(scope="session")
def python():
    """The interpreter of this environment, for running stock CLIs in a subprocess."""
    return sys.executable


@pytest.fixture(scope="session", autouse=True)
def _threads():
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
