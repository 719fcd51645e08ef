"""The training loop: plain training (teachers, baselines, trainable-attention models) and distillation.

``Trainer(build_run(config)).fit()`` trains the run :func:`~attnkit.engine.setup.build_run` built, evaluates,
checkpoints, and returns the run's summary; :func:`train` does both. ``build_run(config, resume=True)``
continues a killed run from its newest checkpoint so that the final weights equal those of an uninterrupted run
with the same seed: data order and augmentation depend only on (seed, epoch, step), and the checkpoint holds the
weights, optimiser, schedule, objective, RNG state and the partial epoch's running sums.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checkpoint import rng_state
from .config import RunConfig
from .objective import StepResult
from .run_log import RunLog
from .rundir import passed_in_name
from .runtime import Distributed, autocast
from .setup import Run, build_run

__all__ = ["EpochMeter", "Trainer", "evaluate", "train"]


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
    """Trains a built :class:`~attnkit.engine.setup.Run`: fit, train_step, evaluate, checkpoints."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.log = RunLog(run.run_dir, run.dist.is_main, run.config.progress, run.config.tensorboard)
        self.best, self.elapsed = dict(run.start.best), run.start.elapsed
        if run.resume:
            self.log.truncate_after(run.start.epoch)
            if run.start.from_checkpoint:
                self.log.message(f"resuming {run.run_dir.path} at epoch {run.start.epoch + 1}, step {run.start.step}")
            else:
                self.log.message(f"{run.run_dir.path} has no checkpoint yet (the run stopped before its first one): "
                                 "starting it from the beginning")

    # -- checkpoints ---------------------------------------------------------------------------------------

    def _save_checkpoint(self, epoch: int, step: int, partial_sums: dict[str, float]) -> None:
        """Checkpoint (weights, optimiser, schedule, objective, RNG, counters); ``partial_sums`` summed over ranks."""
        run = self.run
        self._check_weights_finite(epoch, step)
        if not run.dist.is_main:
            return
        state = {
            "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
            "objective": run.objective.state_dict(), "rng": rng_state(), "best": self.best, "elapsed": self.elapsed,
            "partial_sums": partial_sums, "channels_last": run.decisions.channels_last,
            "precision": run.decisions.precision,
            "precision_source": run.decisions.precision_source,
        }
        run.run_dir.save_checkpoint(run.model, run.info, state, epoch, step)

    def _check_weights_finite(self, epoch: int, step: int) -> None:
        """Never save diverged weights: a finite loss can still be followed by an update to inf.

        Everything a checkpoint holds is checked: parameters and buffers (batch-norm running statistics overflow
        first) of the model and of the objective's modules.
        """
        tensors = [t for module in (self.run.model, self.run.objective) for t in module.state_dict().values()
                   if t.is_floating_point() or t.is_complex()]
        finite = torch.stack([torch.isfinite(t.detach()).all() for t in tensors] or [torch.tensor(True)])
        if not bool(finite.all()):
            raise FloatingPointError(
                f"the weights became NaN or inf in epoch {epoch + 1} by step {step}; the last checkpoint in "
                f"{self.run.run_dir.path} is intact. Lower optim.lr, set optim.grad_clip, or use precision=fp32"
            )

    # -- training ------------------------------------------------------------------------------------------

    def fit(self) -> dict[str, Any]:
        """Train to the configured number of epochs; returns the summary (also in summary.json)."""
        run, epochs = self.run, self.run.config.optim.epochs
        if not run.start.from_checkpoint and run.dist.is_main:
            run.run_dir.write_start(run.config, run.info)
        records = self.log.records() if run.resume else []
        last_eval = records[-1] if records else None
        try:
            with run.objective:
                for epoch in range(run.start.epoch, epochs):
                    started, lr = time.perf_counter(), run.scheduler.get_last_lr()[0]  # the rate of the epoch's first step
                    train_metrics, images = self._train_epoch(epoch)
                    seconds = time.perf_counter() - started
                    self.elapsed += seconds
                    record = {"epoch": epoch + 1, "lr": lr, "train": train_metrics,
                              "time_s": seconds, "images_per_s": images / max(seconds, 1e-9)}
                    if (epoch + 1) % run.config.eval_every == 0 or epoch + 1 == epochs:
                        record["test"] = self.evaluate()
                        self._track_best(epoch + 1, record["test"])
                        last_eval = record
                    self.log.log_epoch(record)
                    self.log.message(_epoch_line(record, epochs))
                    self._save_checkpoint(epoch + 1, 0, {})
            return self._finish(last_eval)
        finally:
            self.log.close()
            run.release()  # the run directory's lock: the run writes nothing more

    def _train_epoch(self, epoch: int) -> tuple[dict[str, float], int]:
        run = self.run
        run.train_model.train()
        start = run.start.step if epoch == run.start.epoch else 0
        meter = EpochMeter(run.device, run.start.partial_sums if start else None)
        steps = len(run.train_loader)
        batches = self.log.progress(run.train_loader.epoch_batches(epoch, start), steps - start, f"epoch {epoch + 1}")
        images_seen = 0
        for step, (images, labels) in enumerate(batches, start=start):
            result = self.train_step(images, labels)
            meter.update(result, labels)
            images_seen += labels.numel()
            if run.device.type == "cpu" or step % 50 == 0:  # on GPUs, synchronise only now and then
                self._check_finite(meter, epoch, step)
                if step % 20 == 0:
                    self.log.set_postfix(loss=float(result.loss.detach()))
            every = run.config.checkpoint_every_steps
            if every and (step + 1) % every == 0 and step + 1 < steps:
                self._check_finite(meter, epoch, step)
                self._save_checkpoint(epoch, step + 1, meter.reduced_state(run.dist))
        self._check_finite(meter, epoch, steps - 1)
        return meter.summary(run.dist), images_seen * run.dist.world_size

    def train_step(self, images: Tensor, labels: Tensor) -> StepResult:
        """One optimisation step on a batch (in the run's memory format): loss, backward, (clip), optimiser, schedule."""
        run = self.run
        # The loss weights' schedules follow the learning rate's clock: the iteration count the scheduler holds
        # (and the checkpoint restores), so a resumed run continues them exactly.
        steps = max(1, len(run.train_loader))
        epoch = run.scheduler.last_epoch / steps
        result = run.objective(run.train_model, run.train_teacher, images, labels, epoch=epoch, step=1 / steps)
        run.optimizer.zero_grad(set_to_none=True)
        result.loss.backward()
        run.dist.average_gradients(run.objective.parameters())  # they live outside the DDP-wrapped model
        if run.config.optim.grad_clip is not None:
            nn.utils.clip_grad_norm_(run.trainable_parameters(), run.config.optim.grad_clip)
        run.optimizer.step()
        run.scheduler.step()
        return result

    def _check_finite(self, meter: EpochMeter, epoch: int, step: int) -> None:
        if not meter.finite():
            raise FloatingPointError(
                f"the training loss became NaN or inf in epoch {epoch + 1} by step {step + 1}; the last checkpoint in "
                f"{self.run.run_dir.path} is intact. Lower optim.lr, set optim.grad_clip, or use precision=fp32"
            )

    def evaluate(self) -> dict[str, float]:
        """Top-1/top-5/loss of the current model on the test data."""
        run = self.run
        try:
            return evaluate(run.model, run.test_loader.epoch_batches(0), run.device, run.decisions.amp_dtype, run.dist)
        finally:
            run.objective.clear()  # the feature hooks saw the evaluation batches; let those activations go

    def _track_best(self, epoch: int, test: dict[str, float]) -> None:
        run = self.run
        if test["top1"] > self.best["top1"]:
            self._check_weights_finite(epoch - 1, len(run.train_loader))
            self.best = {"epoch": epoch, "top1": test["top1"], "top5": test["top5"], "loss": test["loss"]}
            if run.dist.is_main:
                run.run_dir.save_weights(run.model, "best", run.info)

    def _finish(self, last: dict[str, Any] | None) -> dict[str, Any]:
        run, config = self.run, self.run.config
        self._check_weights_finite(config.optim.epochs - 1, len(run.train_loader))
        if run.dist.is_main:
            run.run_dir.save_weights(run.model, "final", run.info)
        records = self.log.records() if run.dist.is_main else []
        total_images = sum(r["images_per_s"] * r["time_s"] for r in records)
        model_name = run.config.model.name  # a model passed in: "passed in (its class)"
        teacher = config.distill.teacher or passed_in_name(run.teacher) if run.teacher is not None else None
        summary = {
            "run_dir": str(run.run_dir.path),
            "model": model_name,
            "teacher": teacher,
            "epochs": config.optim.epochs,
            "last": {"epoch": last["epoch"], **last["test"]} if last and "test" in last else None,
            "best": self.best,
            "train_time_s": self.elapsed,
            "train_images_per_s": total_images / max(sum(r["time_s"] for r in records), 1e-9) if records else None,
            "precision": run.decisions.precision,
            "precision_source": run.decisions.precision_source,
            "channels_last": run.decisions.channels_last,
            "channels_last_source": run.decisions.channels_last_source,
            "world_size": run.dist.world_size,
            "versions": run.info.versions,
        }
        self.log.write_summary(summary)
        if summary["last"] is not None:
            self.log.message(
                f"done: {model_name} last epoch {summary['last']['epoch']} top-1 {summary['last']['top1']:.2f}% "
                f"(best {self.best['top1']:.2f}% at epoch {self.best['epoch']}); "
                f"weights in {run.run_dir.file(run.run_dir.WEIGHTS['final'])}"
            )
        return summary


def train(config: RunConfig, resume: bool = False, *, model: nn.Module | None = None,
          teacher: nn.Module | None = None) -> dict[str, Any]:
    """Train (or distil into) ``config.model``, or the ``model`` given, as configured; returns the run summary.

    ``model`` and ``teacher`` may be any ``nn.Module`` (see :func:`~attnkit.engine.setup.build_run`);
    ``resume=True`` continues the run in ``config.out`` from its newest checkpoint.
    """
    run = build_run(config, resume, model=model, teacher=teacher)
    try:
        summary = Trainer(run).fit()
    except BaseException as err:
        run.release()
        # A collective that timed out or lost a process: say which rank (and which setting) instead of the
        # backend's message; no goodbye barrier with processes that may never answer.
        failure = run.dist.explain_failure(err)
        if failure is err:
            raise
        raise failure from err
    run.dist.shutdown()
    return summary


def _epoch_line(record: dict[str, Any], epochs: int) -> str:
    line = f"epoch {record['epoch']}/{epochs}  train loss {record['train']['loss']:.4f}  top-1 {record['train']['top1']:.2f}%"
    if "test" in record:
        line += f"  |  test loss {record['test']['loss']:.4f}  top-1 {record['test']['top1']:.2f}%"
    return line + f"  |  {record['images_per_s']:.0f} img/s"
