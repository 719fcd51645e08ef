import os
import shutil
import sys
import tempfile

import pytest
import torch
from hypothesis import settings

sys.path.insert(0, os.path.dirname(__file__))  # tests/helpers.py

# The suite never writes to ~/.cache/attnkit: the cached channels_last choices go to a directory of its own, set
# here (not in a fixture) so that the environments that tests copy at import time for subprocesses have it too.
os.environ["ATTNKIT_CACHE"] = tempfile.mkdtemp(prefix="attnkit-test-cache-")

# Property tests: few, small examples, no deadline (2 shared CPU cores).
settings.register_profile("attnkit", max_examples=25, deadline=None, derandomize=True)
settings.load_profile("attnkit")

# One thread: the suite's models are tiny, and several OpenMP threads on a loaded machine spin instead of
# working (measured here: 10-60x slower steps when other processes held the cores).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="session")
def _cache_dir():
    """The suite's cache directory (see above), removed when the session ends."""
    yield os.environ["ATTNKIT_CACHE"]
    shutil.rmtree(os.environ["ATTNKIT_CACHE"], ignore_errors=True)
