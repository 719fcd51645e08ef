"""What a failure means to its user: their mistake or their machine's (one line), or a bug of attnkit's (a traceback).

The one error policy of the ``attnkit`` command (:func:`attnkit.cli.main`) is decided here, in one place:

* **User errors** print one line, ``attnkit CMD: error: WHAT (WHERE)``, naming the key or file and the fix, and
  exit with status 2. They are the exceptions attnkit raises on purpose with such a message -- ``ValueError``
  (``ConfigError``, whose message starts with the config key), ``KeyError`` (an unknown name),
  ``FloatingPointError`` (a diverged run) -- and the failures of the machine or the file system, ``OSError``
  (no space left, permission denied, no such file; printed as ``strerror (filename)``, never a bare errno).
  The exceptions of the libraries attnkit reads files with, for files that are broken or hostile (YAML,
  safetensors, pickles refused by ``torch.load(weights_only=True)``, Pillow's decompression-bomb guard), and
  running out of accelerator memory, count as user errors too; attnkit wraps them where it reads a file so that
  the message names it.
* **Bugs** -- any other exception (``TypeError``, ``AttributeError``, ``RuntimeError``, ...) -- print their
  traceback and a line asking to report it, and exit with status 1.
* ``--debug`` (or ``ATTNKIT_DEBUG=1``) prints the traceback of every failure.

This module imports nothing from attnkit (any layer may raise the exceptions it classifies) and no third-party
library: an exception of a library's type can only exist once that library is loaded, so it is looked up in
``sys.modules``.

>>> user_message(OSError(28, "No space left on device", "runs/a/ckpt.pt"))
'No space left on device (runs/a/ckpt.pt); free some space, then run the command again'
>>> user_message(KeyError("unknown model 'wrn_99'"))
"unknown model 'wrn_99'"
>>> user_message(TypeError("unsupported operand")) is None
True
"""

from __future__ import annotations

import errno
import os
import sys

__all__ = ["BUG_EXIT", "DEBUG_ENV", "INTERRUPTED_EXIT", "USER_ERROR_EXIT", "debug_enabled", "one_line",
           "os_error_message", "user_message"]

DEBUG_ENV = "ATTNKIT_DEBUG"  # set to 1 for a traceback with every error
USER_ERROR_EXIT, BUG_EXIT, INTERRUPTED_EXIT = 2, 1, 130

# Exceptions attnkit raises on purpose, with a message meant for the user.
_USER_TYPES = (ValueError, KeyError, FloatingPointError, OSError)

# What to do about the commonest OS errors (the message says what happened).
_OS_HINTS = {
    errno.ENOSPC: "free some space, then run the command again",
    errno.EDQUOT: "free some space (or raise the quota), then run the command again",
    errno.EACCES: "check the permissions, or choose another path",
    errno.EPERM: "check the permissions, or choose another path",
    errno.EROFS: "choose a path on a writable file system",
    errno.EMFILE: "raise the limit of open files (ulimit -n) or lower data.workers",
}

# Library exceptions that mean a broken or hostile input, not a bug: (module, class name).
_LIBRARY_USER_TYPES = (
    ("yaml", "YAMLError"),
    ("safetensors", "SafetensorError"),
    ("pickle", "UnpicklingError"),
    ("PIL.Image", "DecompressionBombError"),
)


def debug_enabled() -> bool:
    """``ATTNKIT_DEBUG`` is set to something other than 0 / false / empty."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def one_line(text: str) -> str:
    """``text`` with its line breaks and runs of spaces folded into single spaces."""
    return " ".join(text.split())


def os_error_message(err: OSError) -> str:
    """``strerror (filename)`` and what to do, or the message attnkit gave the error; never a bare number."""
    if err.strerror is None:  # raised with a message of ours: OSError("..."), FileNotFoundError("no ... at X")
        first = err.args[0] if err.args else ""
        if isinstance(first, int):  # OSError(28): only a number
            return _with_hint(os.strerror(first), first)
        return str(first) if err.args else type(err).__name__
    where = [str(name) for name in (err.filename, err.filename2) if name is not None]
    return _with_hint(err.strerror + (f" ({' -> '.join(where)})" if where else ""), err.errno)


def _with_hint(message: str, number: int | None) -> str:
    hint = _OS_HINTS.get(number) if number is not None else None
    return f"{message}; {hint}" if hint else message


def _library_user_error(err: BaseException) -> bool:
    for module_name, class_name in _LIBRARY_USER_TYPES:
        kind = getattr(sys.modules.get(module_name), class_name, None)
        if isinstance(kind, type) and isinstance(err, kind):
            return True
    return False


def _out_of_memory(err: BaseException) -> bool:
    torch = sys.modules.get("torch")
    kind = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    return isinstance(kind, type) and isinstance(err, kind)


def user_message(err: BaseException) -> str | None:
    """The one-line message of a user error, or None when ``err`` is a bug (see the module docstring)."""
    if _out_of_memory(err):
        return one_line(f"out of accelerator memory ({str(err).splitlines()[0]}); lower data.batch_size "
                        "(or data.eval_batch_size / --batch-size)")
    if isinstance(err, OSError):
        return one_line(os_error_message(err))
    if isinstance(err, _USER_TYPES) or _library_user_error(err):
        message = err.args[0] if len(err.args) == 1 and isinstance(err.args[0], str) else str(err)
        return one_line(message) or type(err).__name__
    return None
