"""Many ``attnkit`` commands, each in a fresh process, without paying for Python and torch imports each time.

:func:`run_commands` starts one server process (this file run as a script) that imports attnkit once, then
forks a child per command: each command runs in its own process -- its own memory, environment, exit code and
signals, from a state where nothing but imports and read-only caches happened (:func:`_warm`) -- as
``python -m attnkit`` would run it, in a fraction of the time. A job is a list of commands run one after the other (e.g. a killed run, then its resume); jobs run
``workers`` at a time. A command may carry a fault of :mod:`write_faults`, installed in its child only.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).parent


@dataclass
class Result:
    """What one command did: exit code (negative: killed by that signal), stdout, stderr, seconds it ran, its PID."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float
    pid: int


@dataclass
class Command:
    args: list[str]  # what follows `attnkit`
    fault: str | None = None  # a write_faults FAULT, or None
    env: dict[str, str] | None = None  # environment variables set for this command


def run_commands(jobs: list[list[Command]], workers: int = 2, timeout: float = 600) -> list[list[Result]]:
    """Run every job (its commands in order, each in a fresh forked process); results in the same shape."""
    spec = [[{"args": [str(a) for a in c.args], "fault": c.fault, "env": c.env or {}} for c in job] for job in jobs]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    done = subprocess.run([sys.executable, str(Path(__file__)), str(workers)], input=json.dumps(spec), env=env,
                          capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"the command server failed:\n{done.stderr[-4000:]}")
    results = json.loads(done.stdout)
    return [[Result(**r) for r in job] for job in results]


def _child(command: dict, out: str, err: str) -> None:
    """In the forked child: redirect output, set the environment, install the fault, run the command, exit."""
    code = 1
    try:
        for fd, path in ((1, out), (2, err)):
            handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(handle, fd)
            os.close(handle)
        os.environ.update(command["env"])
        if command["fault"]:
            import write_faults

            kind, what, occurrence = command["fault"].split(":")
            write_faults.install(kind, what, int(occurrence))
        from attnkit.cli import main

        try:
            main(command["args"])
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except BaseException:  # noqa: BLE001 (report anything, then leave without running the parent's cleanup)
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _serve(jobs: list[list[dict]], workers: int) -> list[list[dict]]:
    """Fork the commands, ``workers`` jobs at a time; a single thread, so forking is safe."""
    scratch = Path(tempfile.mkdtemp(prefix="attnkit-forks-"))
    results: list[list[dict]] = [[] for _ in jobs]
    pending = list(range(len(jobs)))[::-1]
    running: dict[int, tuple[int, Path, Path, float]] = {}  # pid -> (job, stdout file, stderr file, start time)

    def start(job: int) -> None:
        step = len(results[job])
        out, err = scratch / f"{job}-{step}.out", scratch / f"{job}-{step}.err"
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(jobs[job][step], str(out), str(err))  # never returns
        running[pid] = (job, out, err, time.perf_counter())

    try:
        while pending or running:
            while pending and len(running) < workers:
                start(pending.pop())
            pid, status = os.waitpid(-1, 0)
            job, out, err, started = running.pop(pid)
            code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
            results[job].append({"returncode": code, "stdout": out.read_text(errors="replace"),
                                 "stderr": err.read_text(errors="replace"), "seconds": time.perf_counter() - started,
                                 "pid": pid})
            if len(results[job]) < len(jobs[job]):
                start(job)  # the job's next command, in a fresh child
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return results


def _warm() -> None:
    """Once, before any fork: the imports, torch's lazily imported optimiser machinery (about a second), and the
    embedded mnist5k's CSV parsing (two seconds; cached, read-only) -- what every child would otherwise repeat."""
    import torch

    import attnkit.cli  # noqa: F401
    import attnkit.engine  # noqa: F401
    from attnkit.data.mnist5k import mnist5k_arrays

    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    for split in ("train", "test"):
        mnist5k_arrays(split)


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))  # write_faults
    _warm()

    specification = json.loads(sys.stdin.read())
    print(json.dumps(_serve(specification, int(sys.argv[1]))))
