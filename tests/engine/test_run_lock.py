"""One run at a time in a run directory: the OS lock on run.lock, its refusal message, and its release on kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
from cli_forks import Command, run_commands

from attnkit.cli import main
from attnkit.engine import RunDir
from attnkit.engine.run_lock import RunDirLocked, RunLock

ARGS = ["data.name=mnist5k", "data.train_limit=128", "data.test_limit=32", "data.batch_size=32", "model.name=wrn",
        "model.kwargs={depth: 10, width: 0.5}", "optim.epochs=2", "checkpoint_every_steps=2", "progress=false",
        "channels_last=false", "tensorboard=false"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def test_two_runs_started_together_into_one_out(tmp_path):
    out = tmp_path / "run"
    # Two runs forked at the same moment; whichever takes the lock is SIGKILLed at its second checkpoint.
    train = Command(["train", *ARGS, f"out={out}"], fault="before:checkpoint.json:2")
    (first,), (second,) = run_commands([[train], [train]])
    refused, holder = (first, second) if first.returncode == 2 else (second, first)
    assert holder.returncode == -signal.SIGKILL, holder.stderr[-2000:]
    assert refused.returncode == 2 and refused.stderr == (
        f"attnkit train: error: out: {out} is in use by another attnkit run (PID {holder.pid}); wait for it to end "
        f"(`tail --pid={holder.pid} -f /dev/null`) or choose another out=\n")
    assert refused.seconds < holder.seconds  # refused at once, before any training
    main(["resume", str(out)])  # the killed holder's lock is gone with it: the run continues at once
    epochs = [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]  # one run's records, not two interleaved
    assert (out / "model.safetensors").is_file()
    RunLock.acquire(out).release()  # a finished run lets go of its directory


def test_lock_refuses_a_second_holder_and_is_released(tmp_path):
    lock = RunDir(tmp_path / "run").lock()
    with pytest.raises(RunDirLocked, match=f"in use by another attnkit run \\(PID {os.getpid()}\\)"):
        RunLock.acquire(tmp_path / "run")
    lock.release()
    lock.release()  # idempotent
    with RunLock.acquire(tmp_path / "run") as again:
        assert again.held
    assert (tmp_path / "run" / "run.lock").read_text().startswith(f"{os.getpid()}@")


def test_forked_children_do_not_keep_a_killed_runs_lock(tmp_path):
    """DataLoader workers are forked: they must not hold the directory locked once the run itself is killed."""
    script = textwrap.dedent(f"""
        import os, sys, time
        from attnkit.engine.run_lock import RunLock
        lock = RunLock.acquire({str(tmp_path / 'run')!r})
        child = os.fork()
        if child == 0:  # a worker that lives on (the parent's death is not its business here)
            time.sleep(60)
            os._exit(0)
        print(child, flush=True)
        time.sleep(60)
    """)
    holder = subprocess.Popen([sys.executable, "-c", script], env=ENV, stdout=subprocess.PIPE, text=True)
    child = int(holder.stdout.readline())
    try:
        with pytest.raises(RunDirLocked):
            RunLock.acquire(tmp_path / "run")
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
        os.kill(child, 0)  # the forked child still runs...
        RunLock.acquire(tmp_path / "run").release()  # ...and the lock is free
    finally:
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if holder.poll() is None:
            holder.kill()
            holder.wait()
