"""The hints in error messages are commands that work where they are printed: each hint below is followed."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

from attnkit.engine import config_from_dict
from attnkit.recipes import apply_overrides
from helpers import run_cli

TINY = ["data.name=mnist5k", "data.train_limit=1000", "data.test_limit=32", "data.batch_size=16", "model.name=wrn",
        "model.kwargs={depth: 10, width: 0.5}", "optim.epochs=2", "checkpoint_every_steps=1", "progress=false",
        "tensorboard=false"]


def test_an_interrupted_run_says_how_to_resume_and_eval_how_to_read_it(tmp_path):
    out = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "attnkit", "train", *TINY, f"out={out}"], text=True,
                               stderr=subprocess.PIPE, stdout=subprocess.PIPE, env={"OMP_NUM_THREADS": "1",
                                                                                    **__import__("os").environ})
    while not (out / "checkpoint.json").is_file() and process.poll() is None:  # until its first checkpoint
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr
    hint = re.search(r"continue it with `attnkit (resume \S+)`", stderr)
    assert hint and hint.group(1) == f"resume {out}", stderr
    unfinished = run_cli("eval", out, "--device", "cpu")
    assert unfinished.returncode == 2 and "--weights last" in unfinished.stderr, unfinished.stderr
    last = run_cli("eval", out, "--device", "cpu", "--weights", "last")  # the hint, followed
    assert last.returncode == 0 and json.loads(last.stdout)["count"] == 1000, last.stderr  # all of mnist5k's test
    resumed = run_cli(*hint.group(1).split())  # the hint, followed: the run finishes
    assert resumed.returncode == 0 and (out / "model.safetensors").is_file(), resumed.stderr


def test_nothing_to_distil_lists_the_term_keys_and_each_is_a_key(tmp_path):
    done = run_cli("distill", f"out={tmp_path / 'x'}")
    assert done.returncode == 2
    keys = re.findall(r"distill\.[a-z_]+", done.stderr.split("at least one of", 1)[1])
    assert {"distill.at_beta", "distill.kd_alpha", "distill.fact_beta"} <= set(keys)
    for key in keys:
        config_from_dict(apply_overrides({}, [f"{key}=1"]))  # every one a key the config takes


def test_a_missing_data_set_names_the_config_key_that_downloads_it(tmp_path):
    done = run_cli("train", "data.name=cifar10", f"data.root={tmp_path}", f"out={tmp_path / 'x'}")
    assert done.returncode == 2 and "pass data.download=true" in done.stderr and "download=True" not in done.stderr
    assert "mirror=" not in done.stderr
