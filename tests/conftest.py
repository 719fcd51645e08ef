import os
import sys

import pytest
import torch
from hypothesis import settings

sys.path.insert(0, os.path.dirname(__file__))  # tests/helpers.py

# Property tests: few, small examples, no deadline (2 shared CPU cores).
settings.register_profile("attnkit", max_examples=25, deadline=None, derandomize=True)
settings.load_profile("attnkit")

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
