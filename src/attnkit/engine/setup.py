"""Building a run from its config: every part, each from the ones before it.

    device, processes -> run directory (locked; new, or resumed: its checkpoint) -> data sets and their information
    -> student -> teacher -> decisions (loss terms, precision, memory format) -> layer pairs, objective
    -> loaders in the decided memory format -> optimiser, schedule -> wrapping (SyncBN, DDP, torch.compile)
    -> the state to start from

:func:`build_run` returns a :class:`Run` holding all of it; :class:`~attnkit.engine.trainer.Trainer` trains it.
Each decision is made once, here, before any loader exists, and recorded in run.json (:class:`RunInfo`).
"""

from __future__ import annotations

import contextlib
import copy
import functools
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from .. import functional as AF
from .._files import remove_stale_temporaries
from ..models import check_model_name, create_model
from ..models._external import check_named_spec, is_spec
from .checkpoint import check_state_dict, library_versions, restore_rng_state
from .config import ConfigError, RunConfig
from .data_setup import DataSource, build_loaders, load_data
from .layer_pairs import layer_pairs
from .memory_format import ProbeStep, Source, choose_step_format
from .model_checks import check_forward
from .objective import Objective
from .optim import build_optimizer, build_scheduler
from .resume import check_resumable, warn_other_version
from .run_lock import RunDirLocked, RunLock
from .rundir import (
    RunDir,
    RunInfo,
    is_passed_in,
    load_model,
    load_run_info,
    passed_in_name,
    qualified_name,
    weights_file,
)
from .runtime import RECORDED_PRECISIONS, Distributed, autocast, precision_candidates, resolve_device, seed_everything
from .state_files import file_sha256
from .terms import TermPlan, plan_terms

__all__ = ["Decisions", "Run", "StartState", "build_run"]


@dataclass(frozen=True)
class Decisions:
    """What the run decided from its config, its device and its model, once, before the loaders were built."""

    terms: TermPlan  # the loss terms that are on and what each step computes for them
    amp_dtype: torch.dtype | None  # autocast dtype (None = plain fp32)
    channels_last: bool  # memory format of the models and of every batch the loaders emit
    channels_last_source: Source  # set | cuda | cached | measured | checkpoint (see .memory_format)
    precision_source: Source  # set | cuda | no-bf16 | cached | measured | checkpoint

    @property
    def precision(self) -> str:
        """float32, bfloat16 or float16."""
        return str(self.amp_dtype or torch.float32).removeprefix("torch.")


@dataclass
class StartState:
    """Where training starts: the beginning, or a resumed run's checkpoint."""

    epoch: int = 0  # first epoch to run (0-based)
    step: int = 0  # first step of that epoch
    best: dict[str, Any] = field(default_factory=lambda: {"epoch": None, "top1": -1.0})  # best evaluation so far
    elapsed: float = 0.0  # training seconds so far
    partial_sums: dict[str, float] = field(default_factory=dict)  # running sums of an interrupted epoch
    from_checkpoint: bool = False  # restored from a checkpoint (False: a new run, or one stopped before its first)


@dataclass
class Run:
    """Everything a training run is made of (see :func:`build_run`)."""

    config: RunConfig  # the settings; config.out is where the run directory is
    resume: bool  # continues the newest checkpoint in run_dir
    device: torch.device  # where the models and batches live
    dist: Distributed  # this process's rank among the run's processes
    run_dir: RunDir  # where the run writes
    decisions: Decisions  # loss terms, precision, memory format
    info: RunInfo  # data, model and decisions, as written to run.json and into every weights file
    model: nn.Module  # the student, unwrapped (checkpointed, evaluated, hooked)
    teacher: nn.Module | None  # the frozen teacher in eval mode, None when no term learns from one
    objective: Objective  # the loss; its parameters (F-ActT adapters, hint regressors) are trained with the model
    train_loader: Any  # len() steps per epoch, epoch_batches(epoch, start) -> (images, labels)
    test_loader: Any
    optimizer: torch.optim.Optimizer  # over trainable_parameters()
    scheduler: torch.optim.lr_scheduler.LRScheduler  # stepped once per step
    train_model: nn.Module  # the model as the step calls it (SyncBN, DDP and/or torch.compile wrapped)
    train_teacher: nn.Module | None  # the teacher as the step calls it (compiled with the model)
    start: StartState  # where training starts
    lock: RunLock | None = None  # the run directory's lock, held by the main process until release()

    def release(self) -> None:
        """Let go of the run directory (its lock); the run writes nothing more (idempotent)."""
        if self.lock is not None:
            self.lock.release()

    def autocast(self) -> contextlib.AbstractContextManager:
        """The run's mixed-precision context (nothing for fp32)."""
        return autocast(self.device, self.decisions.amp_dtype)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The student's parameters, then the objective's."""
        return [*self.model.parameters(), *self.objective.parameters()]


def build_run(
    config: RunConfig,
    resume: bool = False,
    *,
    model: nn.Module | None = None,
    teacher: nn.Module | None = None,
    train_loader: Any = None,
    test_loader: Any = None,
) -> Run:
    """Build every part of a run from ``config`` (or continue the checkpoint in ``config.out`` with ``resume``).

    Args:
        config: the run's settings.
        resume: continue the newest checkpoint of the run directory ``config.out``; ``config`` must agree with
            its config.yaml except for resume-neutral settings (:mod:`.resume`).
        model: any ``nn.Module`` student instead of ``config.model`` (its weights are trained in place).
        teacher: any frozen ``nn.Module`` teacher instead of loading ``config.distill.teacher``.
        train_loader, test_loader: loaders instead of ``config.data`` (both or neither): ``len(loader)`` and
            ``loader.epoch_batches(epoch, start)``, with an ``info`` dict or the ``data`` set they read.
    """
    config = _as_recorded(config, model)  # absolute paths; a model passed in named as what it is
    device = resolve_device(config.device)
    dist = Distributed.from_environment(device, config.ddp_timeout)
    run_dir = RunDir(config.out)
    plan = plan_terms(config.distill)
    _check_names(config, plan, model, teacher)
    lock = _lock(run_dir, dist, resume)
    try:
        return _build(config, resume, device, dist, run_dir, plan, lock, model, teacher, train_loader, test_loader)
    except BaseException:
        if lock is not None:
            lock.release()
        raise


def _build(config: RunConfig, resume: bool, device: torch.device, dist: Distributed, run_dir: RunDir, plan: TermPlan,
           lock: RunLock | None, model: nn.Module | None, teacher: nn.Module | None, train_loader: Any,
           test_loader: Any) -> Run:
    """The rest of :func:`build_run`, once the run directory is this process's."""
    saved = _resume_point(run_dir, config) if resume else _check_new_run(run_dir)  # (weights, state) or None
    if resume and dist.is_main:
        warn_other_version(run_dir, config)
    seed_everything(config.seed)
    recorded = run_dir.info().to_dict() if resume and run_dir.file(run_dir.INFO).is_file() else None
    data = load_data(config, dist, train_loader, test_loader, recorded)  # resumed: the folder read as recorded
    student = (model if model is not None else _create_model(config, data.info)).to(device)
    if model is not None or is_spec(config.model.name):  # the user's code: its faults are theirs, named
        name = config.model.name if model is None else f"the model passed in ({type(model).__qualname__})"
        check_forward(student, "model.name" if model is None else "model", name, data.info, device)
    teacher, teacher_sha256 = _teacher(config, plan, teacher, data.info, device, recorded)
    decisions = _decide(config, plan, device, dist, student, model is not None, data.info, saved, run_dir)
    fmt = torch.channels_last if decisions.channels_last else torch.contiguous_format
    student = student.to(memory_format=fmt)
    teacher = teacher.to(memory_format=fmt) if teacher is not None else None
    run_autocast = functools.partial(autocast, device, decisions.amp_dtype)
    pairs = layer_pairs(config.distill, plan, student, teacher, torch.zeros(1, *data.info["input_size"], device=device))
    objective = Objective(plan, student, teacher, pairs, run_autocast, config.optim.epochs).to(device)
    train_batches, test_batches = build_loaders(data, config, device, dist, decisions.channels_last)
    optimizer = build_optimizer(config.optim, [*student.parameters(), *objective.parameters()])
    scheduler = build_scheduler(optimizer, config.optim, len(train_batches))
    train_model, train_teacher = _wrap(config, device, dist, student, teacher)
    info = _run_info(config, data, student, model is not None, decisions, teacher_sha256)
    start = _restore(saved, run_dir, student, optimizer, scheduler, objective, dist) if saved else StartState()
    return Run(config, resume, device, dist, run_dir, decisions, info, student, teacher, objective,
               train_batches, test_batches, optimizer, scheduler, train_model, train_teacher, start, lock)


def _as_recorded(config: RunConfig, model: nn.Module | None) -> RunConfig:
    """A copy of ``config`` as config.yaml records it: ``data.root`` and ``distill.teacher`` absolute (the run
    finds them wherever it is run from), and for a model passed in, ``model.name`` saying so (the config's own name
    is not the model trained) with no ``model.kwargs``."""
    config = copy.deepcopy(config)
    if model is not None:
        config.model.name, config.model.kwargs = passed_in_name(model), {}
    if config.data.root is not None:
        config.data.root = str(Path(config.data.root).expanduser().absolute())
    if config.distill.teacher is not None:
        config.distill.teacher = str(Path(config.distill.teacher).expanduser().absolute())
    return config


def _check_names(config: RunConfig, plan: TermPlan, model: nn.Module | None, teacher: nn.Module | None) -> None:
    """Fail fast, before any data is read, on names that cannot work."""
    d = config.distill
    if model is None and is_passed_in(config.model.name):
        raise ConfigError("model.name", f"the run's model was {config.model.name} from Python, which attnkit cannot "
                                        "rebuild; continue it in Python: train(config, resume=True, model=...)")
    if model is None:
        _check_model_name("model.name", config.model.name)
    if teacher is None and plan.needs_teacher:
        if d.teacher is None:
            raise ConfigError("distill.teacher", "a teacher run directory or weights file is needed for the transfer terms")
        if not Path(d.teacher).exists():
            raise ConfigError("distill.teacher", f"no teacher checkpoint at {d.teacher} (train one with `attnkit train`)")
        if d.teacher_model is not None:
            _check_model_name("distill.teacher_model", d.teacher_model)


def _check_model_name(key: str, name: str) -> None:
    """A registry name, or a spec whose module and callable can be found."""
    try:
        check_model_name(name)
    except (KeyError, ValueError) as err:
        raise ConfigError(key, err.args[0]) from None


def _lock(run_dir: RunDir, dist: Distributed, resume: bool) -> RunLock | None:
    """The main process locks the run directory (every rank fails together if a run holds it) and removes the
    temporary files of killed writers."""
    if resume and not run_dir.file(run_dir.CONFIG).is_file():
        raise ConfigError("out", f"nothing to resume: {run_dir.path} holds no run (no {run_dir.CONFIG})")
    lock, holder = None, None
    if dist.is_main:
        try:
            lock = run_dir.lock()
        except RunDirLocked as err:
            holder = err.holder
    holder = dist.broadcast_object(holder)
    if holder is not None:
        raise RunDirLocked(run_dir.path, holder)
    if dist.is_main:
        remove_stale_temporaries(run_dir.path)
    return lock


def _check_new_run(run_dir: RunDir) -> None:
    """A new run needs a directory that holds none."""
    if run_dir.holds_run():
        raise ConfigError("out", f"{run_dir.path} already holds a run; continue it with `attnkit resume {run_dir.path}` "
                                 "or choose another out=")


def _resume_point(run_dir: RunDir, config: RunConfig) -> tuple[dict[str, Tensor], dict[str, Any]] | None:
    """(weights, training state) of the newest checkpoint, after checking that ``config`` is the run's own; None
    for a run stopped before its first checkpoint (it starts again from the beginning)."""
    check_resumable(run_dir, config)
    return run_dir.load_checkpoint() if run_dir.checkpoint_pointer() is not None else None


def _create_model(config: RunConfig, data_info: dict[str, Any]) -> nn.Module:
    m = config.model
    try:
        return create_model(m.name, num_classes=data_info["num_classes"], in_chans=data_info["in_chans"], **m.kwargs)
    except TypeError as err:
        raise ConfigError("model.kwargs", str(err)) from None
    except ValueError as err:  # a spec's builder refused its arguments (or returned no module)
        raise ConfigError("model.name", err.args[0]) from None


def _teacher(config: RunConfig, plan: TermPlan, given: nn.Module | None, data_info: dict[str, Any],
             device: torch.device, recorded: dict[str, Any] | None) -> tuple[nn.Module | None, str | None]:
    """(the frozen teacher, the SHA-256 of its weights file), if a term needs one: given (no file), or loaded and
    checked against this run's images -- and, resumed, against the file the run was trained with."""
    if not plan.needs_teacher:
        return None, None
    if given is not None:
        return given.to(device).eval().requires_grad_(False), None
    try:
        sha256 = file_sha256(weights_file(config.distill.teacher))
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError("distill.teacher", err.args[0] if err.args else str(err)) from None
    expected = (recorded or {}).get("teacher_sha256")
    if expected is not None and sha256 != expected:
        raise ConfigError("distill.teacher", f"{config.distill.teacher} is not the teacher this run was trained with "
                                             f"(its SHA-256 differs from run.json's teacher_sha256 {expected[:12]}...); "
                                             "point distill.teacher at that file")
    return _load_teacher(config, data_info, device).eval().requires_grad_(False), sha256


def _load_teacher(config: RunConfig, data_info: dict[str, Any], device: torch.device) -> nn.Module:
    d = config.distill
    try:
        teacher_info = load_run_info(d.teacher)
        if teacher_info.get("model") is not None:  # a recorded spec is built only when named (models._external)
            check_named_spec(teacher_info["model"], [d.teacher_model], d.teacher, "add distill.teacher_model=SPEC")
        teacher = load_model(d.teacher, device, model_name=d.teacher_model, num_classes=data_info["num_classes"],
                             in_chans=data_info["in_chans"], model_kwargs=d.teacher_kwargs)
    except (FileNotFoundError, ValueError, KeyError, TypeError) as err:
        raise ConfigError("distill.teacher", err.args[0] if err.args else str(err)) from None
    for key in ("in_chans", "input_size", "mean", "std"):
        if teacher_info.get(key) is not None and teacher_info[key] != data_info[key]:
            raise ConfigError("distill.teacher", f"the teacher was trained on images with {key} {teacher_info[key]} "
                                                 f"({teacher_info.get('dataset')}), this run's have {data_info[key]} "
                                                 f"({data_info['dataset']}); a teacher must see the student's images")
    check_forward(teacher, "distill.teacher", f"the teacher {d.teacher_model or teacher_info.get('model') or ''}".rstrip(),
                  data_info, device)
    return teacher


def _decide(
    config: RunConfig, plan: TermPlan, device: torch.device, dist: Distributed, student: nn.Module, custom: bool,
    data_info: dict[str, Any], saved: tuple[dict, dict] | None, run_dir: RunDir,
) -> Decisions:
    """Precision and memory format; a resumed run keeps those it started with (the same arithmetic, the same bits)."""
    state = saved[1] if saved else {}
    precision = RECORDED_PRECISIONS[state["precision"]] if "precision" in state else config.precision
    channels_last = bool(state["channels_last"]) if "channels_last" in state else config.channels_last
    precision_candidates(precision, device)  # a precision the device lacks fails on every rank alike
    identity = {"model": f"{type(student).__module__}.{type(student).__qualname__}" if custom else config.model.name,
                "model_kwargs": {} if custom else config.model.kwargs, "step": plan.step_kind}
    choice = None
    if dist.is_main:  # one rank decides (measuring at most once per machine and model); the others follow
        choice = choose_step_format(precision, channels_last, device, student, data_info["input_size"],
                                    config.data.batch_size, probe_step(plan, device), identity)
    choice = dist.broadcast_object(choice)
    if state:  # resumed: what the run recorded at its start (a run older than that record: "checkpoint")
        info = run_dir.info()
        if "precision" in state:
            choice = replace(choice, precision_source=info.precision_source or "checkpoint")
        if "channels_last" in state:
            choice = replace(choice, channels_last_source=info.channels_last_source or "checkpoint")
    return Decisions(plan, choice.amp_dtype, choice.channels_last, choice.channels_last_source, choice.precision_source)


def probe_step(plan: TermPlan, device: torch.device) -> ProbeStep:
    """A training step of the kind ``plan`` takes, under a given autocast dtype, to time a precision and memory
    format: plain, or double backprop (any term whose loss holds a gradient of the student: input gradients or
    class maps), where channels_last measured 2x slower. The double-backprop probe trains through an input
    gradient, whatever the term."""

    def step(model: nn.Module, x: Tensor, amp_dtype: torch.dtype | None) -> None:
        with autocast(device, amp_dtype):
            if plan.double_backprop:
                grad, logits = AF.input_gradient(model, x, create_graph=True, return_logits=True)
                loss = logits.float().sum() + grad.float().pow(2).sum()
            else:
                loss = model(x).float().sum()
        loss.backward()

    return step


def _wrap(config: RunConfig, device: torch.device, dist: Distributed, model: nn.Module,
          teacher: nn.Module | None) -> tuple[nn.Module, nn.Module | None]:
    """The model and teacher as the step calls them: SyncBN and DDP across processes, torch.compile if asked."""
    if dist.enabled and config.sync_bn:
        if device.type != "cuda":
            raise ConfigError("sync_bn", "SyncBatchNorm needs CUDA devices; drop sync_bn for CPU runs")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if dist.enabled:
        model = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    if config.compile:
        model = torch.compile(model, backend=config.compile_backend)
        if teacher is not None:  # inference only; its feature hooks are traced with it
            teacher = torch.compile(teacher, backend=config.compile_backend)
    return model, teacher


def _run_info(config: RunConfig, data: DataSource, model: nn.Module, custom: bool, decisions: Decisions,
              teacher_sha256: str | None) -> RunInfo:
    # A model passed in by the caller is not in the registry: record its class, not a name to rebuild it by.
    return RunInfo.from_dict({
        **data.info, "model": None if custom else config.model.name, "model_class": qualified_name(model),
        "model_kwargs": config.model.kwargs, "versions": library_versions(), "precision": decisions.precision,
        "precision_source": decisions.precision_source, "channels_last": decisions.channels_last,
        "channels_last_source": decisions.channels_last_source,
        "teacher_sha256": teacher_sha256,
    })


def _restore(saved: tuple[dict[str, Tensor], dict[str, Any]], run_dir: RunDir, model: nn.Module,
             optimizer: torch.optim.Optimizer, scheduler: Any, objective: Objective, dist: Distributed) -> StartState:
    """Load a checkpoint into the built run (weights, optimiser, schedule, objective, RNG); where to start."""
    weights, state = saved
    check_state_dict(model, weights, str(run_dir.path))
    model.load_state_dict(weights)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    objective.load_state_dict(Objective.upgrade_state(state["objective"]))
    restore_rng_state(state["rng"])
    # The partial epoch's sums are over all ranks: rank 0 carries them, the others start from zero.
    partial = dict(state["partial_sums"]) if dist.is_main else {}
    return StartState(state["epoch"], state["step"], dict(state["best"]), float(state["elapsed"]), partial,
                      from_checkpoint=True)
