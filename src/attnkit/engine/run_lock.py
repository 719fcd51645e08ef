"""One run at a time in a run directory: an OS file lock on ``run.lock``, held for the whole run.

Two runs started into one ``out`` would both write its checkpoints and interleave its metrics. The first to start
takes an exclusive ``fcntl.flock`` on ``OUT/run.lock`` and writes its PID and host name there; the second
is refused at once (:class:`RunDirLocked`, naming that PID). The operating system drops the lock when the
holder closes it, exits or is killed (SIGKILL included), so a killed run never leaves a stale lock behind: the
next run, or ``attnkit resume``, takes it straight away. The file itself stays (its content only describes the
last holder).

Forked children (``DataLoader`` workers) inherit open files; they close their copy of the lock at fork, so that
only the run's own process holds it and a killed run's workers cannot keep its directory locked.

Where the platform or the file system has no ``flock`` (Windows; some network file systems), runs go ahead
without a lock, with a warning.
"""

from __future__ import annotations

import os
import socket
import warnings
from pathlib import Path

from ..recipes import ConfigError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

__all__ = ["LOCK_FILE", "RunDirLocked", "RunLock"]

LOCK_FILE = "run.lock"
_HELD: set[int] = set()  # file descriptors of the locks this process holds


def _close_in_child() -> None:
    # A forked child must not keep the parent's lock alive (flock belongs to the open file, shared by both).
    for fd in list(_HELD):
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_in_child)


class RunDirLocked(ConfigError):
    """Another process holds the run directory's lock (a run is training there)."""

    def __init__(self, directory: str | Path, holder: str) -> None:
        pid, _, host = holder.partition("@")
        here = host in ("", socket.gethostname())
        who = f"PID {pid}" + ("" if here else f" on {host}") if pid else "another process"
        wait = f"wait for it to end (`tail --pid={pid} -f /dev/null`)" if pid and here else "wait for it to end"
        super().__init__("out", f"{directory} is in use by another attnkit run ({who}); {wait} or choose another out=")
        self.directory, self.holder = Path(directory), holder


class RunLock:
    """The exclusive lock on a run directory, held from :meth:`acquire` until :meth:`release` (or exit)."""

    def __init__(self, path: Path, fd: int | None) -> None:
        self.path, self._fd, self._owner = path, fd, os.getpid()

    @classmethod
    def acquire(cls, directory: str | Path) -> RunLock:
        """Lock ``directory`` (created if needed); raises :class:`RunDirLocked` at once if a run holds it."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / LOCK_FILE
        if fcntl is None:
            warnings.warn(f"no file locks on this platform: nothing stops two runs from writing {directory} at once")
            return cls(path, None)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 256, 0).decode("utf-8", "replace").strip()
            os.close(fd)
            raise RunDirLocked(directory, holder) from None
        except OSError as err:  # ENOLCK / EOPNOTSUPP: a file system without flock
            os.close(fd)
            warnings.warn(f"cannot lock {path} ({err.strerror}); nothing stops two runs from writing it at once")
            return cls(path, None)
        _HELD.add(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}@{socket.gethostname()}\n".encode(), 0)
        return cls(path, fd)

    @property
    def held(self) -> bool:
        return self._fd is not None and os.getpid() == self._owner

    def release(self) -> None:
        """Unlock (idempotent)."""
        fd, self._fd = self._fd, None
        if fd is None or os.getpid() != self._owner:  # a forked child closed its copy at fork
            return
        _HELD.discard(fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:  # a run object dropped without release(): do not keep the directory locked
        try:
            self.release()
        except Exception:
            pass
