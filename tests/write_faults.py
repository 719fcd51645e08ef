"""One fault injected at one write point of a run, for the kill and full-disk tests: :func:`install` it in the
process that runs the command (tests/cli_forks.py does, in a forked child), or run

    python write_faults.py FAULT -- attnkit arguments...

FAULT is ``KIND:WHAT:N``, acting on the N-th matching call (counted from 1):

* ``before:GLOB:N`` / ``after:GLOB:N``: SIGKILL just before / just after ``os.replace`` puts a file whose name
  matches GLOB in place (before: the temporary file is written and flushed, the target not yet replaced).
* ``torn:metrics:N``: the N-th metrics line is half written (flushed to disk), then SIGKILL.
* ``appended:metrics:N``: SIGKILL right after the N-th metrics line is on disk.
* ``unlink:GLOB:N``: SIGKILL right after the N-th removal of a file matching GLOB (old checkpoints).
* ``tensorboard:scalar:N``: SIGKILL in the N-th TensorBoard ``add_scalar``.
* ``enospc:GLOB:N``: the N-th ``os.fsync`` of a file matching GLOB fails with ENOSPC, as on a full disk.

The faults are monkeypatches made in this process only, before the command runs; nothing in attnkit reads them.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import pathlib
import signal
import sys


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def install(kind: str, what: str, occurrence: int) -> None:
    """Monkeypatch this process so that the ``occurrence``-th matching call fails (see the module docstring)."""
    count = 0

    def due(name: str) -> bool:
        nonlocal count
        if not fnmatch.fnmatch(os.path.basename(name), what):
            return False
        count += 1
        return count == occurrence

    if kind in ("before", "after"):
        real_replace = os.replace

        def replace(src, dst, *args, **kwargs):
            fire = due(os.fspath(dst))
            if fire and kind == "before":
                _kill()
            real_replace(src, dst, *args, **kwargs)
            if fire:
                _kill()

        os.replace = replace
    elif kind in ("torn", "appended"):
        from attnkit.engine import run_log

        real_append = run_log.append_line

        def append_line(path, line):
            nonlocal count
            count += 1
            if count == occurrence and kind == "torn":
                with open(path, "a") as f:
                    f.write(line[: len(line) // 2])
                    f.flush()
                    os.fsync(f.fileno())
                _kill()
            real_append(path, line)
            if count == occurrence:
                _kill()

        run_log.append_line = append_line
    elif kind == "unlink":
        real_unlink = pathlib.Path.unlink

        def unlink(self, *args, **kwargs):
            fire = due(self.name)
            real_unlink(self, *args, **kwargs)
            if fire:
                _kill()

        pathlib.Path.unlink = unlink
    elif kind == "tensorboard":
        from torch.utils.tensorboard import SummaryWriter

        real_add = SummaryWriter.add_scalar

        def add_scalar(self, *args, **kwargs):
            nonlocal count
            count += 1
            if count == occurrence:
                _kill()
            return real_add(self, *args, **kwargs)

        SummaryWriter.add_scalar = add_scalar
    elif kind == "enospc":
        real_fsync = os.fsync

        def fsync(fd):
            try:
                name = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                name = ""
            if due(name):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as write()/fsync() report it: no file name
            return real_fsync(fd)

        os.fsync = fsync
    else:
        raise SystemExit(f"unknown fault kind {kind!r}")


if __name__ == "__main__":
    fault, separator, *arguments = sys.argv[1:]
    assert separator == "--", __doc__
    kind, what, occurrence = fault.split(":")
    install(kind, what, int(occurrence))
    from attnkit.cli import main

    main(arguments)
