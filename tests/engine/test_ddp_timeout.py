"""A stopped or missing process of a multi-process (gloo) run ends the run within ddp_timeout, naming the rank.

The two ranks are started the way torchrun starts its workers (RANK, WORLD_SIZE, MASTER_ADDR/PORT in the
environment), each as ``python -m attnkit train``, so that the test can stop one of them with SIGSTOP.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

from attnkit.engine.runtime import Distributed, DistributedTimeout

ARGS = ["data.name=mnist5k", "data.train_limit=256", "data.test_limit=64", "data.batch_size=32", "model.name=wrn",
        "model.kwargs={depth: 10, width: 0.5}", "optim.epochs=200", "progress=false", "channels_last=false",
        "tensorboard=false", "device=cpu", "precision=fp32"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_rank(rank: int, world_size: int, port: int, *args: str) -> subprocess.Popen:
    env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world_size),
           "LOCAL_WORLD_SIZE": str(world_size), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
           "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "attnkit", "train", *ARGS, *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_stopped_rank_ends_the_run_within_the_timeout_naming_it(tmp_path):
    out, timeout = tmp_path / "run", 10
    ranks = [start_rank(rank, 2, port, f"ddp_timeout={timeout}", f"out={out}") for port in [_free_port()] for rank in (0, 1)]
    # Meanwhile, and as cheaply: a run whose second process never starts.
    alone = start_rank(0, 2, _free_port(), "ddp_timeout=3", f"out={tmp_path / 'alone'}")
    try:
        deadline = time.monotonic() + 300
        while not (out / "metrics.jsonl").is_file():  # both ranks are training: an epoch is done
            assert ranks[0].poll() is None and time.monotonic() < deadline, ranks[0].communicate()[1][-2000:]
            time.sleep(0.05)
        ranks[1].send_signal(signal.SIGSTOP)
        stopped = time.monotonic()
        _, err = ranks[0].communicate(timeout=timeout + 60)  # ends, instead of waiting 30 minutes (or forever)
        waited = time.monotonic() - stopped
        _, alone_err = alone.communicate(timeout=120)
    finally:
        ranks[1].kill()  # SIGKILL ends a stopped process too
        for process in (*ranks, alone):
            if process.poll() is None:
                process.kill()
            process.wait(timeout=60)
    lines = err.strip().splitlines()
    assert ranks[0].returncode == 2 and len(lines) == 1, err[-2000:]
    assert lines[0].startswith("attnkit train: error: rank 1 of 2 stopped answering") and "ddp_timeout=10 s" in lines[0]
    assert "Raise ddp_timeout" in lines[0]
    print(f"\nrank 0 ended {waited:.1f} s after rank 1 was stopped (ddp_timeout={timeout} s)")
    assert not (out / "model.safetensors").exists() and (out / "checkpoint.json").is_file()  # resumable
    assert alone.returncode == 2 and len(alone_err.strip().splitlines()) == 1, alone_err[-2000:]
    assert "rank 0 of 2: not every process joined the run within ddp_timeout=3 s" in alone_err


def test_a_lost_peer_is_explained_and_other_errors_pass_through():
    dist = Distributed(rank=0, world_size=2, timeout=7.0)
    lost = dist.explain_failure(RuntimeError("[gloo] Connection closed by peer [127.0.0.1]:4242"))
    assert isinstance(lost, DistributedTimeout)  # no process group here: the ranks cannot be told
    assert str(lost).startswith("a process of the 2 stopped answering (rank 0 gave up after ddp_timeout=7 s")
    other = ValueError("not a collective")
    assert dist.explain_failure(other) is other
    alone = RuntimeError("timed out")
    assert Distributed().explain_failure(alone) is alone  # one process: no peer to lose
