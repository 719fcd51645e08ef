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


# -- your own images: one generated folder and one run trained on it by the CLI, shared by the tests ----------

TINY_FOLDER_RUN = ["data.name=folder", "data.image_size=24", "data.batch_size=8", "data.eval_batch_size=16",
                   "data.workers=0", "model.name=wrn", "model.kwargs={depth: 10, width: 0.5}", "optim.epochs=2",
                   "optim.lr=0.05", "data.train_limit=30", "data.test_limit=9", "progress=false", "tensorboard=false"]


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory):
    """imgs/{train,val}/{east,north,south}/*.png: 12 + 4 images a class, 20..36 px, modes L, RGB, RGBA, I;16, P."""
    from helpers import write_image_folder

    return write_image_folder(tmp_path_factory.mktemp("folder") / "imgs", {"train": 12, "val": 4})


@pytest.fixture(scope="session")
def folder_run(image_folder):
    """One tiny WRN trained by `attnkit train` in a fresh process on image_folder (2 epochs on 30 of the 36 training
    images, tested on 9 of the 12)."""
    from helpers import run_cli

    out = image_folder.parent / "runs" / "teacher"
    done = run_cli("train", *TINY_FOLDER_RUN, f"data.root={image_folder}", f"out={out}")
    assert done.returncode == 0, done.stderr
    return out
