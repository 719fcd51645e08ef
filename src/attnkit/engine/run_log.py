"""What a run reports: a progress bar per epoch, metrics as JSON lines, TensorBoard when installed, a summary.

Only the main process (rank 0) writes. The progress bar is shown on a terminal and hidden when stderr is not a
TTY or the environment variable CI is set (``progress: true|false`` overrides).

``metrics.jsonl`` is appended to, a line per epoch, so a kill or a full disk during an append can leave a torn
last line: readers drop it (:func:`.rundir.read_metrics`), and a resumed run rewrites the file without it, with a note.
Any other line that is not a record is an error naming the file and the line.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .._files import append_line
from .checkpoint import write_json, write_text
from .rundir import RunDir, parse_metrics, read_metrics

__all__ = ["RunLog", "progress_enabled"]


def progress_enabled(setting: bool | str) -> bool:
    if isinstance(setting, bool):
        return setting
    return sys.stderr.isatty() and not os.environ.get("CI")


class RunLog:
    """Writes ``metrics.jsonl`` (one record per evaluated epoch), TensorBoard scalars and ``summary.json``."""

    def __init__(self, run_dir: RunDir, enabled: bool, progress: bool | str = "auto", tensorboard: bool = True) -> None:
        self.run_dir, self.enabled = run_dir, enabled
        self.show_progress = enabled and progress_enabled(progress)
        self.path = run_dir.file(run_dir.METRICS)
        self.writer = _tensorboard_writer(run_dir.file(run_dir.TENSORBOARD)) if enabled and tensorboard else None

    def progress(self, batches: Iterable, total: int, description: str) -> Iterator:
        """Wrap an epoch's batches in a progress bar (or pass them through)."""
        if not self.show_progress:
            yield from batches
            return
        with tqdm(batches, total=total, desc=description, leave=False, dynamic_ncols=True) as bar:
            self._bar = bar
            yield from bar
        self._bar = None

    def set_postfix(self, **values: float) -> None:
        bar = getattr(self, "_bar", None)
        if bar is not None:
            bar.set_postfix({k: f"{v:.4g}" for k, v in values.items()}, refresh=False)

    def truncate_after(self, epoch: int) -> None:
        """On resume: forget records of epochs after the checkpoint (they will be run again)."""
        if not self.enabled or not self.path.is_file():
            return
        records, torn = parse_metrics(self.path)
        if torn is not None:
            self.message(f"note: dropped the incomplete last line of {self.path} (line {torn}): the run was stopped "
                         "while writing it")
        kept = [record for record in records if record["epoch"] <= epoch]
        write_text(self.path, "".join(json.dumps(record) + "\n" for record in kept))

    def records(self) -> list[dict[str, Any]]:
        return read_metrics(self.path)

    def log_epoch(self, record: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        append_line(self.path, json.dumps(_finite(record)))
        if self.writer is not None:
            for key, value in _flatten(record):
                if key != "epoch" and isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, record["epoch"])
            self.writer.flush()

    def message(self, text: str) -> None:
        if self.enabled:
            (tqdm.write if self.show_progress else print)(text)

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        if self.enabled:
            write_json(self.run_dir.file(self.run_dir.SUMMARY), _finite(summary))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _tensorboard_writer(log_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # TensorBoard is optional (pip install attnkit[tensorboard])
        return None
    return SummaryWriter(log_dir=str(log_dir))


def _flatten(record: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _flatten(value, name + "/")
        else:
            yield name, value


def _finite(value: Any) -> Any:
    """JSON has no NaN/inf: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
