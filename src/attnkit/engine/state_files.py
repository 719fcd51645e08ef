"""Weights files written by other tools: PyTorch state dicts (``torch.save``: ``.pt``, ``.pth``, ``.pth.tar``, ``.bin``,
... recognised by their content, not their name) and ``.safetensors``.

A PyTorch file is read with ``torch.load(weights_only=True)``, which builds tensors, numbers, strings and
containers of them and refuses anything else, so a file carrying pickled code is refused (one line), never run.
Training scripts save state dicts in several shapes; :func:`clean_state_dict` takes the common ones apart:

* nested under ``state_dict`` (PyTorch Lightning, many scripts), ``model`` (timm's and DeiT's checkpoints),
  ``model_state_dict`` or ``net``, next to optimiser state and epoch counters;
* keys prefixed by ``module.`` (saved from ``DataParallel`` / ``DistributedDataParallel``) or ``_orig_mod.``
  (saved from ``torch.compile``).
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = ["clean_state_dict", "file_sha256", "is_torch_file", "load_torch_state_dict"]

_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since PyTorch 1.6: a zip archive
_PICKLE_PROTOCOL = 0x80  # torch.save's legacy format (_use_new_zipfile_serialization=False) starts with a pickle
_NESTED_KEYS = ("state_dict", "model", "model_state_dict", "net")  # where training scripts keep the weights
_PREFIXES = ("module.", "_orig_mod.")


def is_torch_file(path: str | Path) -> bool:
    """Whether ``path`` holds a ``torch.save`` file, judged by its first bytes, whatever its name (``.pt``,
    ``.pth``, ``.pth.tar``, ``.bin``, ``.ckpt``, none): a zip archive or a pickle. A ``.safetensors`` file starts
    with its header's length (8 bytes, little-endian) and then ``{``, which is neither."""
    with open(path, "rb") as file:
        head = file.read(9)
    if head.startswith(_ZIP_MAGIC):
        return True
    return bool(head) and head[0] == _PICKLE_PROTOCOL and head[8:9] != b"{"


def file_sha256(path: str | Path) -> str:
    """The SHA-256 hex digest of a file's bytes (a teacher's identity, wherever the file is moved)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def load_torch_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The model weights in a PyTorch file saved with ``torch.save``, cleaned by :func:`clean_state_dict`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weights file at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ValueError(f"{path} holds pickled Python objects besides tensors, which attnkit never loads; save "
                         "model.state_dict() instead of the model (or convert the file to .safetensors)") from None
    except (RuntimeError, EOFError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path} is not a readable PyTorch weights file ({first})") from None
    return clean_state_dict(payload, str(path))


def clean_state_dict(payload: Any, source: str) -> dict[str, torch.Tensor]:
    """The ``{name: tensor}`` weights inside ``payload``: nested dicts unwrapped, wrapper prefixes stripped.

    >>> w = torch.zeros(1)
    >>> list(clean_state_dict({"epoch": 3, "state_dict": {"module.fc.weight": w}}, "x.pth"))
    ['fc.weight']
    """
    state = payload
    while isinstance(state, Mapping) and not _is_state_dict(state):
        nested = [key for key in _NESTED_KEYS if isinstance(state.get(key), Mapping)]
        if not nested:
            break
        state = state[nested[0]]
    if not (isinstance(state, Mapping) and _is_state_dict(state)):
        found = f"a dict with keys {', '.join(map(str, list(state)[:6]))}" if isinstance(state, Mapping) else type(state).__name__
        raise ValueError(f"{source} holds no state dict of tensors ({found}); save model.state_dict()")
    return {_strip_prefixes(key): tensor for key, tensor in state.items()}


def _strip_prefixes(key: str) -> str:
    while key.startswith(_PREFIXES):  # in any order: module._orig_mod.fc and _orig_mod.module.fc -> fc
        key = key[len(next(p for p in _PREFIXES if key.startswith(p))):]
    return key


def _is_state_dict(values: Mapping) -> bool:
    return bool(values) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in values.items())
