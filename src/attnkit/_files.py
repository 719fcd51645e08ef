"""Writing files so that a kill or a full disk never leaves half of one, and OS errors that name their file.

* :func:`atomic_write` writes to ``.NAME.tmp-PID`` beside the target, flushes it to disk and renames it over the
  target: a crash leaves the old file or the new one, never a mix. A process killed mid-write cannot remove its
  temporary file; the next write of the same name (and :func:`remove_stale_temporaries`, which a run calls on
  its directory when it starts) removes those of processes that no longer run.
* Serialised data (safetensors, ``torch.save``) is built in memory and written with Python's own file I/O, so
  that a full disk is an ``OSError`` with ``errno.ENOSPC`` and the file's name, whatever library serialised it.
* :func:`naming` adds the file name to an ``OSError`` that has none (``write()`` on a full disk reports only
  "No space left on device").
* :func:`json_safe` turns NaN and infinities (an undefined score) into null, so that written JSON is strict.

This module imports nothing from attnkit; the engine and the data sets use it.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["append_line", "atomic_write", "naming", "process_alive", "remove_stale_temporaries", "stale_owner",
           "write_bytes"]

# ".NAME.tmp-PID" (atomic_write) and ".extract-PID-XXXX" (attnkit.data's tar extraction): temporaries whose
# name says which process made them.
_TEMPORARY = re.compile(r"^\.(?:.+\.tmp|extract)-(\d+)(?:-.*)?$")


@contextlib.contextmanager
def naming(path: str | os.PathLike, temporary: str | os.PathLike | None = None) -> Iterator[None]:
    """Re-raise an ``OSError`` that names no file (a failed ``write()``, e.g. ENOSPC), or names the ``temporary``
    written in ``path``'s place, with ``path`` as its file (``OSError`` picks the subclass from the errno)."""
    try:
        yield
    except OSError as err:
        unnamed = err.filename is None or (temporary is not None and str(err.filename) == str(temporary))
        if unnamed and err.errno is not None:
            raise OSError(err.errno, err.strerror or os.strerror(err.errno), str(path)) from err
        raise


def process_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine (a process of another user counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:  # e.g. no os.kill semantics on this platform: assume alive, never delete what may be in use
        return True
    return True


def stale_owner(name: str) -> int | None:
    """The PID in a temporary's name (``.NAME.tmp-PID``, ``.extract-PID-XXXX``) if that process is gone, else None."""
    match = _TEMPORARY.match(name)
    if match is None:
        return None
    pid = int(match.group(1))
    return pid if pid != os.getpid() and not process_alive(pid) else None


def remove_stale_temporaries(directory: str | os.PathLike, prefix: str = ".") -> list[Path]:
    """Remove the temporaries in ``directory`` (names starting with ``prefix``) left by processes that died.

    Returns what was removed. Files being written by a running process are left alone.
    """
    removed = []
    try:
        entries = list(os.scandir(directory))
    except OSError:  # no directory (yet), or unreadable: nothing to clean
        return removed
    for entry in entries:
        if entry.name.startswith(prefix) and stale_owner(entry.name) is not None:
            path = Path(entry.path)
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call ``write(temporary_path)``, fsync the result and rename it over ``path``.

    A failure (including a full disk, reported as ``OSError`` naming ``path``) removes the temporary file and
    leaves any earlier ``path`` as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with naming(path, tmp):
            write(str(tmp))
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_directory(path.parent)
    remove_stale_temporaries(path.parent, prefix=f".{path.name}.tmp-")


def write_bytes(path: str | os.PathLike, data: bytes | bytearray | memoryview) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    atomic_write(path, write)


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append ``line`` and a newline to a text file and flush it to disk (errors name the file).

    Not atomic: a kill or a full disk during the append can leave a torn last line, which readers of such logs
    must drop (see ``attnkit.engine.rundir.read_metrics``).
    """
    with naming(path), open(path, "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not supported everywhere (e.g. Windows)
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def json_safe(value: object) -> object:
    """``value`` with every non-finite float (NaN: an undefined score) in its dicts and lists replaced by None, so
    that ``json.dumps`` writes strict JSON (Python would write ``NaN``, which JSON readers reject).

    >>> json_safe({"rho": float("nan"), "runs": [1.0, float("inf")]})
    {'rho': None, 'runs': [1.0, None]}
    """
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
