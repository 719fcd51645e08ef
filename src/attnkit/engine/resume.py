"""Continuing a run: which settings may change on the way, and the config a resumed run goes on with.

A run resumes from its own ``config.yaml`` where its directory is *now* (``out`` is taken from the directory,
so a copied or moved run continues in place), from its newest checkpoint -- or from the beginning when it was
stopped before writing its first one. A recipe or overrides given with the resume may change only the
settings in :data:`RESUME_NEUTRAL`, which do not change the numbers; anything else is refused, naming the keys.

A config.yaml naming a model by spec (``package.module:callable``: code to import and call) is resumed only when
the user names that spec again (``model.name=SPEC`` / ``distill.teacher_model=SPEC`` with the resume, or
``$ATTNKIT_MODELS``): a run directory received from someone else cannot make attnkit run code of its choosing.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import __version__
from ..data.folder import folder_layout
from ..models._external import check_named_spec
from .config import ConfigError, RunConfig, config_from_dict, config_to_dict
from .rundir import RunDir

__all__ = ["RESUME_NEUTRAL", "check_named_models", "check_resumable", "config_differences", "resume_config",
           "warn_other_version"]

# Settings that may change between a run and its resumption without changing the result.
# data.root and distill.teacher may point at the moved folder or file: the folder is checked against the run's
# recorded classes and layout, the teacher by its content hash (engine.setup).
RESUME_NEUTRAL = frozenset({"out", "progress", "tensorboard", "data.root", "data.download", "data.workers",
                            "data.eval_batch_size", "eval_every", "ddp_timeout", "distill.teacher"})


def config_differences(a: RunConfig, b: RunConfig) -> list[str]:
    """Dotted keys where two configs differ in something other than :data:`RESUME_NEUTRAL` settings."""
    return [key for key in _diff(config_to_dict(a), config_to_dict(b)) if key not in RESUME_NEUTRAL]


def check_resumable(run_dir: RunDir, config: RunConfig) -> None:
    """Raise unless ``run_dir`` holds a run (its config.yaml) and ``config`` agrees with its config.yaml."""
    _check_holds_run(run_dir)
    differences = config_differences(run_dir.config(), config)
    if differences:
        raise ConfigError("resume", f"the config differs from {run_dir.file(run_dir.CONFIG)} at {', '.join(differences)}; "
                                    f"continue the run as it was with: attnkit resume {run_dir.path}")


# Settings whose arithmetic changed from 0.1.0 to 0.2.0: a run written by another version continues with this
# version's, so its resumed epochs differ from what that version would have computed.
_CHANGED_ARITHMETIC = (
    (lambda c: c.distill.flip_beta > 0, "distill.flip_beta (flip(x) now runs in a forward pass of its own, normalised "
                                        "by its own batch statistics)"),
    (lambda c: c.distill.at_beta > 0 and c.distill.at_mode == "paper",
     "distill.at_mode=paper (beta is now divided by each layer's map size, as the paper's section 4.1 sets it)"),
    (lambda c: c.data.name == "folder" and c.data.root is not None and folder_layout(c.data.root) == "one tree",
     "data.val_fraction (a folder without val/ now holds out each image by the hash of its path, so its test "
     "images may differ from those the run was tested on)"),
)

_WARNED: set[tuple[str, str]] = set()  # (run directory, version) warned about in this process


def warn_other_version(run_dir: RunDir, config: RunConfig) -> None:
    """Warn (once per run directory and process) when the run was written by another attnkit version and uses a
    setting whose arithmetic changed, naming that version and the settings."""
    try:
        written = run_dir.info().versions.get("attnkit")
    except (FileNotFoundError, ValueError):  # stopped before run.json was written: nothing recorded to compare
        return
    changed = [what for applies, what in _CHANGED_ARITHMETIC if applies(config)]
    key = (str(run_dir.path.resolve()), written)
    if written is None or written == __version__ or not changed or key in _WARNED:
        return
    _WARNED.add(key)
    warnings.warn(f"{run_dir.path} was written by attnkit {written}; this is attnkit {__version__}, whose arithmetic "
                  f"differs for {'; '.join(changed)}: the resumed epochs follow attnkit {__version__}",
                  UserWarning, stacklevel=3)


def check_named_models(run_dir: RunDir, config: RunConfig, named: Mapping[str, Any]) -> None:
    """Refuse the specs of ``config`` (read from ``run_dir``'s config.yaml) that ``named`` (the values the user
    gave: a recipe and/or overrides, nested) does not name too; registry names pass."""
    for key, recorded in (("model.name", config.model.name), ("distill.teacher_model", config.distill.teacher_model)):
        section, _, name = key.partition(".")
        given = named.get(section) if isinstance(named.get(section), Mapping) else {}
        try:
            check_named_spec(recorded, [given.get(name)], str(run_dir.file(run_dir.CONFIG)),
                             f"add {key}=SPEC to the resume command")
        except ValueError as err:
            raise ConfigError(key, err.args[0]) from None


def resume_config(path: str | Path, values: Mapping[str, Any] | None = None,
                  named: Mapping[str, Any] | None = None) -> RunConfig:
    """The config to continue the run in ``path`` with.

    Args:
        path: the run directory, wherever it is now.
        values: optional nested settings (a recipe and/or overrides, e.g. ``{"data": {"root": "/data"}}``
            merged onto :meth:`RunDir.config_values`); they must agree with the run's config.yaml except for the
            :data:`RESUME_NEUTRAL` settings, which they may change.
        named: the settings the user gave (not read from the run), nested; default ``values``. A model spec in
            the run's config.yaml must be named here (:func:`check_named_models`).

    Returns:
        The run's config with ``out`` = ``path`` and the neutral settings of ``values``.
    """
    run_dir = RunDir(path)
    _check_holds_run(run_dir)
    config = run_dir.config() if values is None else config_from_dict({**values, "out": str(run_dir.path)})
    check_resumable(run_dir, config)
    check_named_models(run_dir, config, (values or {}) if named is None else named)
    return config


def _check_holds_run(run_dir: RunDir) -> None:
    if not run_dir.file(run_dir.CONFIG).is_file():
        raise ConfigError("out", f"nothing to resume: {run_dir.path} holds no run (no {run_dir.CONFIG}); a run stopped "
                                 "before writing it never started: start it again with its train command")


def _diff(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key in sorted(set(a) | set(b)):
        path = f"{prefix}{key}"
        if isinstance(a.get(key), dict) and isinstance(b.get(key), dict) and key != "kwargs":
            keys += _diff(a[key], b[key], path + ".")
        elif a.get(key) != b.get(key):
            keys.append(path)
    return keys
