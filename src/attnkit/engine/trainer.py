"""The training loop: plain training (teachers, baselines, trainable-attention models) and distillation.

``Trainer(config).fit()`` builds everything from a :class:`RunConfig` (data, model, teacher, layer pairs,
objective, optimiser, schedule, precision, memory format, compile, DDP), trains, evaluates, checkpoints, and
returns the run's summary. ``Trainer(config, resume=True)`` continues a killed run from its newest checkpoint so
that the final weights equal those of an uninterrupted run with the same seed: data order and augmentation
depend only on (seed, epoch, step), and the checkpoint holds the weights, optimiser, schedule, RNG state and
the partial epoch's running sums.
"""

from __future__ import annotations

import copy
import difflib
import functools
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from .. import functional as AF
from ..features import LayerPair, pair_layers
from ..models import create_model, is_model, list_models
from .checkpoint import (
    check_state_dict,
    latest_checkpoint,
    library_versions,
    load_checkpoint,
    load_model,
    load_run_info,
    restore_rng_state,
    rng_state,
    save_checkpoint,
    save_weights,
    write_json,
    write_yaml,
)
from .config import ConfigError, RunConfig, config_from_dict, config_to_dict, load_recipe
from .data_setup import build_loaders
from .objective import Objective, StepResult
from .optim import build_optimizer, build_scheduler
from .run_log import RunLog
from .runtime import Distributed, autocast, probe_channels_last, resolve_device, resolve_precision, seed_everything

__all__ = ["Trainer", "evaluate", "train"]

# Settings that may change between a run and its resumption without changing the result.
_RESUME_NEUTRAL = {"progress", "tensorboard", "data.root", "data.download", "data.workers", "data.eval_batch_size", "eval_every"}


class EpochMeter:
    """Running sums of one epoch's training metrics, kept on the device (no per-step synchronisation)."""

    def __init__(self, device: torch.device, sums: dict[str, float] | None = None) -> None:
        self.device = device
        self.sums: dict[str, Tensor] = {k: torch.tensor(v, dtype=torch.float64, device=device) for k, v in (sums or {}).items()}

    def update(self, result: StepResult, labels: Tensor) -> None:
        n = labels.numel()
        values = {"count": torch.tensor(float(n), device=self.device), "loss": result.loss.detach() * n,
                  "correct": (result.logits.argmax(1) == labels).sum()}
        values.update({f"term_{k}": v * n for k, v in result.terms.items()})
        for key, value in values.items():
            self.sums[key] = self.sums.get(key, torch.zeros((), dtype=torch.float64, device=self.device)) + value.double()

    def finite(self) -> bool:
        return bool(torch.isfinite(self.sums["loss"])) if "loss" in self.sums else True

    def reduced_state(self, dist: Distributed) -> dict[str, float]:
        """The running sums over all ranks, as plain numbers (every rank must call this together)."""
        keys = sorted(self.sums)
        if not keys:
            return {}
        totals = dist.all_reduce(torch.stack([self.sums[k] for k in keys]).to(torch.float64))
        return dict(zip(keys, totals.tolist()))

    def summary(self, dist: Distributed) -> dict[str, float]:
        sums = self.reduced_state(dist)
        if not sums:
            return {}
        count = max(sums.pop("count"), 1.0)
        out = {"loss": sums.pop("loss") / count, "top1": 100.0 * sums.pop("correct") / count}
        out.update({k.removeprefix("term_"): v / count for k, v in sums.items()})
        return out


@torch.inference_mode()
def evaluate(
    model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], device: torch.device, amp_dtype: torch.dtype | None = None,
    dist: Distributed | None = None,
) -> dict[str, float]:
    """Top-1 / top-5 accuracy (%) and mean cross-entropy of ``model`` over ``batches``, summed over ranks."""
    dist = dist or Distributed()
    was_training = model.training
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, top1, top5, count
    for images, labels in batches:
        if labels.numel() == 0:
            continue
        with autocast(device, amp_dtype):
            logits = model(images)
        top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits = top5 == labels[:, None]
        sums += torch.stack([
            F.cross_entropy(logits.float(), labels, reduction="sum").double(),
            hits[:, 0].sum().double(), hits.any(1).sum().double(), torch.tensor(float(labels.numel()), device=device, dtype=torch.float64),
        ])
    model.train(was_training)
    loss, top1, top5, count = dist.all_reduce(sums).tolist()
    count = max(count, 1.0)
    return {"loss": loss / count, "top1": 100.0 * top1 / count, "top5": 100.0 * top5 / count, "count": int(count)}


class Trainer:
    """Builds a run from its config and trains it; see the module docstring."""

    def __init__(
        self,
        config: RunConfig,
        resume: bool = False,
        *,
        model: nn.Module | None = None,
        teacher: nn.Module | None = None,
        train_loader: Any = None,
        test_loader: Any = None,
    ) -> None:
        self.config, self.resume = config, resume
        self.device = resolve_device(config.device)
        self.dist = Distributed.from_environment(self.device)
        self.run_dir = Path(config.out)
        self._check_names(model, teacher)
        self._check_run_dir()
        self.checkpoint = self._read_checkpoint() if resume else None  # (weights, state) to continue from
        seed_everything(config.seed)

        self.train_loader, self.test_loader, data_info = self._build_data(train_loader, test_loader)
        self.model = (model or self._build_model(data_info)).to(self.device)
        self.info = self._run_info(data_info, custom_model=model)
        self.teacher = teacher.to(self.device).eval() if teacher is not None else self._load_teacher(data_info)
        self.amp_dtype = self._precision()
        self.autocast = functools.partial(autocast, self.device, self.amp_dtype)
        self.objective = Objective(self.model, config.distill, self.teacher, self._layer_pairs(data_info), self.autocast)
        self.objective.to(self.device)
        self.channels_last = self._use_channels_last(data_info)
        self.optimizer = build_optimizer(config.optim, self._trainable_parameters())
        self.scheduler = build_scheduler(self.optimizer, config.optim, len(self.train_loader))
        self.train_model = self._wrap(self.model)
        self.log = RunLog(self.run_dir, self.dist.is_main, config.progress, config.tensorboard)
        self.start_epoch, self.start_step, self.best, self.elapsed = 0, 0, {"epoch": None, "top1": -1.0}, 0.0
        self.partial_sums: dict[str, float] = {}
        if resume:
            self._restore()

    # -- building ------------------------------------------------------------------------------------------

    def _check_names(self, model: nn.Module | None, teacher: nn.Module | None) -> None:
        """Fail fast, before any data is read, on names that cannot work."""
        name, d = self.config.model.name, self.config.distill
        if model is None and not is_model(name):
            close = difflib.get_close_matches(name, list_models(), n=3)
            hint = f"did you mean {', '.join(close)}?" if close else "see `attnkit models`"
            raise ConfigError("model.name", f"unknown model {name!r}; {hint}")
        if teacher is None and d.needs_teacher:
            if d.teacher is None:
                raise ConfigError("distill.teacher", "a teacher run directory or weights file is needed for the transfer terms")
            if not Path(d.teacher).exists():
                raise ConfigError("distill.teacher", f"no teacher checkpoint at {d.teacher} (train one with `attnkit train`)")

    def _check_run_dir(self) -> None:
        has_run = latest_checkpoint(self.run_dir) is not None or (self.run_dir / "model.safetensors").is_file()
        if self.resume and latest_checkpoint(self.run_dir) is None:
            raise ConfigError("out", f"nothing to resume: {self.run_dir} has no checkpoint.json")
        if not self.resume and has_run:
            raise ConfigError("out", f"{self.run_dir} already holds a run; pass --resume to continue it or choose another out=")

    def _build_data(self, train_loader: Any, test_loader: Any) -> tuple[Any, Any, dict[str, Any]]:
        return build_loaders(self.config, self.device, self.dist, train_loader, test_loader, self.channels_last_hint())

    def channels_last_hint(self) -> bool:
        # The loaders emit channels_last batches when the run asks for it explicitly; with "auto" the decision
        # is made later by a probe and batches are converted in the step.
        return self.config.channels_last is True

    def _build_model(self, data_info: dict[str, Any]) -> nn.Module:
        m = self.config.model
        try:
            return create_model(m.name, num_classes=data_info["num_classes"], in_chans=data_info["in_chans"], **m.kwargs)
        except TypeError as err:
            raise ConfigError("model.kwargs", str(err)) from None

    def _run_info(self, data_info: dict[str, Any], custom_model: nn.Module | None) -> dict[str, Any]:
        # A model passed in by the caller is not in the registry: record its class, not a name to rebuild it by.
        name = self.config.model.name if custom_model is None else None
        return {"model": name, "model_class": type(self.model).__qualname__, "model_kwargs": self.config.model.kwargs,
                **data_info, "versions": library_versions()}

    def _load_teacher(self, data_info: dict[str, Any]) -> nn.Module | None:
        """The frozen teacher, checked against the architecture asked for and against this run's images."""
        d = self.config.distill
        if not d.needs_teacher:
            return None
        try:
            teacher = load_model(d.teacher, self.device, model_name=d.teacher_model)
            teacher_info = load_run_info(d.teacher)
        except (FileNotFoundError, ValueError, KeyError) as err:
            raise ConfigError("distill.teacher", err.args[0] if err.args else str(err)) from None
        if getattr(teacher, "num_classes", None) != data_info["num_classes"]:
            raise ConfigError("distill.teacher", f"teacher predicts {teacher.num_classes} classes but the data has {data_info['num_classes']}")
        for key in ("in_chans", "input_size", "mean", "std"):
            if key in teacher_info and teacher_info[key] != data_info[key]:
                raise ConfigError("distill.teacher", f"the teacher was trained on images with {key} {teacher_info[key]} "
                                                     f"({teacher_info.get('dataset')}), this run's have {data_info[key]} "
                                                     f"({data_info['dataset']}); a teacher must see the student's images")
        return teacher

    def _layer_pairs(self, data_info: dict[str, Any]) -> list[LayerPair]:
        d = self.config.distill
        if self.teacher is None or not (d.at_beta > 0 or d.fact_beta > 0):
            return []
        example = torch.zeros(1, *data_info["input_size"], device=self.device)
        mapping = dict(pair.split(":") for pair in d.layers) if d.layers else None
        try:
            return pair_layers(self.model, self.teacher, example, mapping)
        except (KeyError, ValueError) as err:
            raise ConfigError("distill.layers", err.args[0]) from None

    def _trainable_parameters(self) -> list[nn.Parameter]:
        params = list(self.model.parameters())
        if self.objective.trainable is not None:
            params += list(self.objective.trainable.parameters())
        return params

    def _precision(self) -> torch.dtype | None:
        """The autocast dtype; a resumed run keeps the one it started with (the same arithmetic, the same bits)."""
        if self.checkpoint is not None and "precision" in self.checkpoint[1]:
            saved = self.checkpoint[1]["precision"]
            return resolve_precision({"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}[saved], self.device)
        return resolve_precision(self.config.precision, self.device)

    def _use_channels_last(self, data_info: dict[str, Any]) -> bool:
        setting = self.config.channels_last
        if self.checkpoint is not None and "channels_last" in self.checkpoint[1]:
            setting = self.checkpoint[1]["channels_last"]  # the run's measured choice, not a new probe
        if setting == "auto":
            if self.device.type == "cuda":
                use = True
            else:  # measured, not assumed: oneDNN is faster in NHWC on some CPUs and slower on others
                generator = torch.Generator(self.device).manual_seed(0)  # leaves the global RNG alone
                example = torch.randn(min(32, self.config.data.batch_size), *data_info["input_size"],
                                      device=self.device, generator=generator)
                # A copy, so that the probe's batch-norm statistics never reach the trained model.
                use = probe_channels_last(copy.deepcopy(self.model), example, self._probe_step)
            use = bool(self.dist.broadcast_object(use))
        else:
            use = setting
        if use:
            self.model.to(memory_format=torch.channels_last)
            if self.teacher is not None:
                self.teacher.to(memory_format=torch.channels_last)
        return use

    def _probe_step(self, model: nn.Module, x: Tensor) -> None:
        """A step of the kind this run takes: plain, or double backprop (where channels_last measured 2x slower)."""
        with self.autocast():
            if self.config.distill.double_backprop:
                grad, logits = AF.input_gradient(model, x, create_graph=True, return_logits=True)
                loss = logits.float().sum() + grad.float().pow(2).sum()
            else:
                loss = model(x).float().sum()
        loss.backward()

    def _wrap(self, model: nn.Module) -> nn.Module:
        if self.dist.enabled and self.config.sync_bn:
            if self.device.type != "cuda":
                raise ConfigError("sync_bn", "SyncBatchNorm needs CUDA devices; drop sync_bn for CPU runs")
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        if self.dist.enabled:
            model = DistributedDataParallel(model, device_ids=[self.device] if self.device.type == "cuda" else None)
        if self.config.compile:
            model = torch.compile(model, backend=self.config.compile_backend)
            if self.teacher is not None:  # inference only; its feature hooks are traced with it
                self.objective.teacher = torch.compile(self.teacher, backend=self.config.compile_backend)
        return model

    # -- resume and checkpoints ----------------------------------------------------------------------------

    def _read_checkpoint(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """The newest checkpoint, after checking that this config is the run's own."""
        saved = config_to_dict(config_from_dict(load_recipe(self.run_dir / "config.yaml")))
        differences = [k for k in _diff(saved, config_to_dict(self.config)) if k not in _RESUME_NEUTRAL]
        if differences:
            raise ConfigError("resume", f"the config differs from {self.run_dir / 'config.yaml'} at {', '.join(differences)}; "
                                        f"resume with the run's own config: attnkit train {self.run_dir / 'config.yaml'} --resume")
        return load_checkpoint(self.run_dir)

    def _restore(self) -> None:
        weights, state = self.checkpoint
        check_state_dict(self.model, weights, str(self.run_dir))
        self.model.load_state_dict(weights)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.objective.trainable is not None:
            self.objective.trainable.load_state_dict(state["objective"])
        restore_rng_state(state["rng"])
        self.start_epoch, self.start_step = state["epoch"], state["step"]
        self.best, self.elapsed = dict(state["best"]), float(state["elapsed"])
        # The partial epoch's sums are over all ranks: rank 0 carries them, the others start from zero.
        self.partial_sums = dict(state["partial_sums"]) if self.dist.is_main else {}
        self.checkpoint = None  # free the copy
        self.log.truncate_after(self.start_epoch)
        self.log.message(f"resuming {self.run_dir} at epoch {self.start_epoch + 1}, step {self.start_step}")

    def _save_checkpoint(self, epoch: int, step: int, partial_sums: dict[str, float]) -> None:
        """Checkpoint (weights, optimiser, schedule, RNG, counters); ``partial_sums`` are already summed over ranks."""
        self._check_weights_finite(epoch, step)
        if not self.dist.is_main:
            return
        state = {
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "objective": self.objective.trainable.state_dict() if self.objective.trainable is not None else {},
            "rng": rng_state(), "best": self.best, "elapsed": self.elapsed, "partial_sums": partial_sums,
            "channels_last": self.channels_last, "precision": str(self.amp_dtype or torch.float32).removeprefix("torch."),
        }
        save_checkpoint(self.run_dir, self.model, self.info, state, epoch, step)

    def _check_weights_finite(self, epoch: int, step: int) -> None:
        """Never save diverged weights: a finite loss can still be followed by an update to inf."""
        norms = torch.stack([p.detach().float().norm() for p in self._trainable_parameters()])
        if not bool(torch.isfinite(norms).all()):
            raise FloatingPointError(
                f"the weights became NaN or inf in epoch {epoch + 1} by step {step}; the last checkpoint in "
                f"{self.run_dir} is intact. Lower optim.lr, set optim.grad_clip, or use precision=fp32"
            )

    def _write_run_files(self) -> None:
        if self.dist.is_main:
            write_yaml(self.run_dir / "config.yaml", config_to_dict(self.config))
            write_json(self.run_dir / "run.json", self.info)

    # -- training ------------------------------------------------------------------------------------------

    def fit(self) -> dict[str, Any]:
        """Train to the configured number of epochs; returns the summary (also in summary.json)."""
        if not self.resume:
            self._write_run_files()
        epochs = self.config.optim.epochs
        last_eval = self.log.records()[-1] if self.resume and self.log.records() else None
        try:
            with self.objective:
                for epoch in range(self.start_epoch, epochs):
                    started, lr = time.perf_counter(), self.scheduler.get_last_lr()[0]  # the rate of the epoch's first step
                    train_metrics, images = self._train_epoch(epoch)
                    seconds = time.perf_counter() - started
                    self.elapsed += seconds
                    record = {"epoch": epoch + 1, "lr": lr, "train": train_metrics,
                              "time_s": seconds, "images_per_s": images / max(seconds, 1e-9)}
                    if (epoch + 1) % self.config.eval_every == 0 or epoch + 1 == epochs:
                        record["test"] = self.evaluate()
                        self._track_best(epoch + 1, record["test"])
                        last_eval = record
                    self.log.log_epoch(record)
                    self.log.message(_epoch_line(record, epochs))
                    self._save_checkpoint(epoch + 1, 0, {})
        finally:
            self.log.close()
        return self._finish(last_eval)

    def _train_epoch(self, epoch: int) -> tuple[dict[str, float], int]:
        self.train_model.train()
        start = self.start_step if epoch == self.start_epoch else 0
        meter = EpochMeter(self.device, self.partial_sums if start else None)
        steps = len(self.train_loader)
        batches = self.log.progress(self.train_loader.epoch_batches(epoch, start), steps - start, f"epoch {epoch + 1}")
        images_seen = 0
        for step, (images, labels) in enumerate(batches, start=start):
            result = self.train_step(images, labels)
            meter.update(result, labels)
            images_seen += labels.numel()
            if self.device.type == "cpu" or step % 50 == 0:  # on GPUs, synchronise only now and then
                self._check_finite(meter, epoch, step)
                if step % 20 == 0:
                    self.log.set_postfix(loss=float(result.loss.detach()))
            every = self.config.checkpoint_every_steps
            if every and (step + 1) % every == 0 and step + 1 < steps:
                self._check_finite(meter, epoch, step)
                self._save_checkpoint(epoch, step + 1, meter.reduced_state(self.dist))
        self._check_finite(meter, epoch, steps - 1)
        return meter.summary(self.dist), images_seen * self.dist.world_size

    def train_step(self, images: Tensor, labels: Tensor) -> StepResult:
        """One optimisation step on a batch: loss, backward, (clip), optimiser and schedule step."""
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        result = self.objective(self.train_model, images, labels)
        self.optimizer.zero_grad(set_to_none=True)
        result.loss.backward()
        if self.objective.trainable is not None:
            self.dist.average_gradients(self.objective.trainable.parameters())
        if self.config.optim.grad_clip is not None:
            nn.utils.clip_grad_norm_(self._trainable_parameters(), self.config.optim.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        return result

    def _check_finite(self, meter: EpochMeter, epoch: int, step: int) -> None:
        if not meter.finite():
            raise FloatingPointError(
                f"the training loss became NaN or inf in epoch {epoch + 1} by step {step + 1}; the last checkpoint in "
                f"{self.run_dir} is intact. Lower optim.lr, set optim.grad_clip, or use precision=fp32"
            )

    def evaluate(self) -> dict[str, float]:
        """Top-1/top-5/loss of the current model on the test data."""
        batches = self.test_loader.epoch_batches(0)
        if self.channels_last:
            batches = ((x.contiguous(memory_format=torch.channels_last), y) for x, y in batches)
        try:
            return evaluate(self.model, batches, self.device, self.amp_dtype, self.dist)
        finally:
            self.objective.clear()  # the feature hooks saw the evaluation batches; let those activations go

    def _track_best(self, epoch: int, test: dict[str, float]) -> None:
        if test["top1"] > self.best["top1"]:
            self._check_weights_finite(epoch - 1, len(self.train_loader))
            self.best = {"epoch": epoch, "top1": test["top1"], "top5": test["top5"], "loss": test["loss"]}
            if self.dist.is_main:
                save_weights(self.model, self.run_dir / "best.safetensors", self.info)

    def _finish(self, last: dict[str, Any] | None) -> dict[str, Any]:
        self._check_weights_finite(self.config.optim.epochs - 1, len(self.train_loader))
        if self.dist.is_main:
            save_weights(self.model, self.run_dir / "model.safetensors", self.info)
        records = self.log.records() if self.dist.is_main else []
        total_images = sum(r["images_per_s"] * r["time_s"] for r in records)
        summary = {
            "run_dir": str(self.run_dir),
            "model": self.config.model.name,
            "teacher": self.config.distill.teacher if self.teacher is not None else None,
            "epochs": self.config.optim.epochs,
            "last": {"epoch": last["epoch"], **last["test"]} if last and "test" in last else None,
            "best": self.best,
            "train_time_s": self.elapsed,
            "train_images_per_s": total_images / max(sum(r["time_s"] for r in records), 1e-9) if records else None,
            "precision": str(self.amp_dtype or torch.float32).removeprefix("torch."),
            "channels_last": self.channels_last,
            "world_size": self.dist.world_size,
            "versions": self.info["versions"],
        }
        self.log.write_summary(summary)
        if summary["last"] is not None:
            self.log.message(
                f"done: {self.config.model.name} last epoch {summary['last']['epoch']} top-1 {summary['last']['top1']:.2f}% "
                f"(best {self.best['top1']:.2f}% at epoch {self.best['epoch']}); weights in {self.run_dir / 'model.safetensors'}"
            )
        return summary


def train(config: RunConfig, resume: bool = False) -> dict[str, Any]:
    """Train (or distil into) ``config.model`` as configured; returns the run summary."""
    trainer = Trainer(config, resume=resume)
    try:
        return trainer.fit()
    finally:
        trainer.dist.shutdown()


def _epoch_line(record: dict[str, Any], epochs: int) -> str:
    line = f"epoch {record['epoch']}/{epochs}  train loss {record['train']['loss']:.4f}  top-1 {record['train']['top1']:.2f}%"
    if "test" in record:
        line += f"  |  test loss {record['test']['loss']:.4f}  top-1 {record['test']['top1']:.2f}%"
    return line + f"  |  {record['images_per_s']:.0f} img/s"


def _diff(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key in sorted(set(a) | set(b)):
        path = f"{prefix}{key}"
        if isinstance(a.get(key), dict) and isinstance(b.get(key), dict) and key != "kwargs":
            keys += _diff(a[key], b[key], path + ".")
        elif a.get(key) != b.get(key):
            keys.append(path)
    return keys

