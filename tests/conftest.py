import os
import sys

import pytest
import torch
from hypothesis import settings

sys.path.insert(0, os.path.dirname(__file__))  # tests/helpers.py

# Property tests: few, small examples, no deadline (2 shared CPU cores).
settings.register_profile("attnkit", max_examples=25, deadline=None, derandomize=True)
settings.load_profile("attnkit")

# One thread: the suite's models are tiny, and several OpenMP threads on a loaded machine spin instead of
# working (measured here: 10-60x slower steps when other processes held the cores).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
