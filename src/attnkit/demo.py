"""``attnkit demo``: what attention transfer does, in a few minutes on a laptop CPU.

On the embedded cluttered-mnist (each mnist5k digit somewhere on a 48x48 canvas among fragments of other digits,
its box known), the demo trains a teacher and, from the same seeds, a small student alone, with attention
transfer (AT), with knowledge distillation (KD) and with both; prints their test errors in the layout of
Table 1 of Zagoruyko & Komodakis (2017) (mean and spread over the seeds); and writes a report with training
curves, the students' and the teacher's attention maps side by side, and how well each model's attention
finds the digit (pointing game, energy inside the box).

The methods are labels of :data:`attnkit.engine.methods.METHODS` (any of them with ``--methods``). The teacher
trains first, alone, with ``workers`` threads; then the students run as independent processes, one thread each,
``workers`` at a time: for such small networks that beats one process with several threads, whose OpenMP
threads spin when the cores are busy. ``attnkit study`` (:mod:`attnkit.study`) plans and runs its
jobs with the same functions (:func:`plan_jobs`, :func:`run_jobs`).
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .engine import RunConfig, RunDir, config_from_dict, config_to_dict
from .engine.methods import METHODS, method_values
from .engine.run_log import progress_enabled

__all__ = ["DemoConfig", "Job", "TrainingPlan", "add_plan_arguments", "describe_plan", "new_root",
           "plan_from_arguments", "plan_jobs", "run_demo", "run_jobs", "train_job"]


@dataclass
class TrainingPlan:
    """What ``attnkit demo`` and ``attnkit study`` train: one teacher, then per method of
    :data:`attnkit.engine.methods.METHODS` and seed one student."""

    out: str | None = None  # directory of the runs (default: runs/<command>-<date>-<time>)
    data: str = "cluttered-mnist"  # embedded data set (cluttered-mnist has ground-truth boxes for the map metrics)
    teacher: str = "wrn_16_1"  # teacher model (trained first, 0.18M parameters)
    student: str = "wrn"  # student model
    student_kwargs: dict[str, Any] = field(default_factory=lambda: {"depth": 10, "width": 0.5})  # WRN-10-0.5, 0.02M
    teacher_epochs: int = 6  # epochs of the teacher
    student_epochs: int = 5  # epochs of every student
    seeds: list[int] = field(default_factory=lambda: [0, 1])  # one student per method and seed
    methods: list[str] = field(default_factory=lambda: ["student", "AT", "KD", "AT+KD"])  # labels of METHODS
    batch_size: int = 64  # training batch size
    lr: float = 0.05  # peak learning rate (cosine schedule, one warm-up epoch)
    workers: int = 2  # training processes at a time (one thread each)
    train_limit: int | None = None  # train on a fixed subset of this many images (quick checks); None = all 4,000


@dataclass
class DemoConfig(TrainingPlan):
    report: bool = True  # write the HTML report (maps, curves, metrics) when the runs are done
    report_images: int = 200  # test images the map metrics of the report are computed on


def _run_config(plan: TrainingPlan, out: Path, model: str, kwargs: dict[str, Any], epochs: int, seed: int,
                distill: dict[str, Any]) -> dict[str, Any]:
    config = RunConfig()
    config.out, config.seed, config.device = str(out), seed, "cpu"
    config.model.name, config.model.kwargs = model, dict(kwargs)
    config.data.name, config.data.batch_size, config.data.train_limit = plan.data, plan.batch_size, plan.train_limit
    config.optim.epochs, config.optim.lr, config.optim.schedule, config.optim.warmup_epochs = epochs, plan.lr, "cosine", 1.0
    config.optim.nesterov = True
    config.progress, config.tensorboard = False, False
    values = config_to_dict(config)
    values["distill"].update(distill)  # a method's settings as values: its schedules are mappings
    config_from_dict(values)  # a bad setting fails here, before any process starts
    return values


@dataclass
class Job:
    name: str  # "teacher", or "<method> seed <s>"
    config: dict[str, Any]
    method: str = "teacher"  # label of METHODS, or "teacher"

    @property
    def out(self) -> Path:
        return Path(self.config["out"])

    @property
    def epochs(self) -> int:
        return self.config["optim"]["epochs"]


def check_methods(methods: list[str]) -> None:
    """Raise, in one line listing the labels, unless every method is a label of the method table."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        what = f"unknown method {', '.join(map(repr, unknown))}" if unknown else "no method given"
        raise ValueError(f"{what} (--methods); choose from {' '.join(METHODS)}")


# The method table's warm-ups (DKD: 20 epochs) are those of the reference code's 240-epoch CIFAR-100 runs; runs of
# a few epochs keep that share of training (20/240 of it), not the count, which would hold the weight near 0.
REFERENCE_EPOCHS = 240


def _short_run_settings(distill: dict[str, Any], epochs: int) -> dict[str, Any]:
    """A method's ``distill`` settings with every schedule's warm-up scaled from the reference's 240 epochs."""
    return {key: {**value, "warmup_epochs": value["warmup_epochs"] * epochs / REFERENCE_EPOCHS}
            if key.endswith("_schedule") and isinstance(value, dict) and value.get("warmup_epochs") else value
            for key, value in distill.items()}


def plan_jobs(plan: TrainingPlan, root: Path, teacher: bool | None = None) -> list[Job]:
    """The teacher's job (if ``teacher``; None: iff some method learns from it), then one job per method and seed
    (``<slug>-seed<s>`` under ``root``); a student learns from the teacher iff its method needs one
    (:attr:`attnkit.engine.methods.Method.needs_teacher`). Warm-ups keep the reference's share of training."""
    check_methods(plan.methods)
    for key, values in (("--methods", plan.methods), ("--seeds", plan.seeds)):
        if len(set(values)) != len(values) or not values:
            raise ValueError(f"{key} {' '.join(map(str, values))}: give each one once (and at least one)")
    teacher_out = root / "teacher"
    if teacher is None:
        teacher = any(METHODS[m].needs_teacher for m in plan.methods)
    jobs = [Job("teacher", _run_config(plan, teacher_out, plan.teacher, {}, plan.teacher_epochs, plan.seeds[0], {}))
            ] if teacher else []
    for method in plan.methods:
        needs_teacher = METHODS[method].needs_teacher
        settings = _short_run_settings(method_values(method)["distill"], plan.student_epochs)
        distill = dict(settings, teacher=str(teacher_out), teacher_model=plan.teacher) if needs_teacher else settings
        slug = method.lower().replace("+", "_").replace("-", "")
        for seed in plan.seeds:
            config = _run_config(plan, root / f"{slug}-seed{seed}", plan.student, plan.student_kwargs,
                                 plan.student_epochs, seed, distill)
            jobs.append(Job(f"{method} seed {seed}", config, method))
    return jobs


def new_root(out: str | None, command: str) -> Path:
    """The directory of a demo or study: ``out``, or runs/<command>-<date>-<time>; never one with files in it."""
    root = Path(out or f"runs/{command}-{datetime.now():%Y%m%d-%H%M%S}")
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty; choose another --out (the {command} never overwrites runs)")
    return root


def add_plan_arguments(parser: argparse.ArgumentParser, command: str, defaults: TrainingPlan, product: str) -> None:
    """The command-line arguments ``attnkit demo`` and ``attnkit study`` share, with ``defaults``' values."""
    parser.add_argument("--out", help=f"directory of the {command}'s runs and {product} (default: runs/{command}-<date>-<time>)")
    parser.add_argument("--seeds", type=int, nargs="+", default=defaults.seeds,
                        help=f"student seeds (default: {' '.join(map(str, defaults.seeds))})")
    parser.add_argument("--methods", nargs="+", default=defaults.methods, metavar="METHOD",
                        help=f"student methods, labels of the method table: {' '.join(METHODS)} "
                             f"(default: {'all' if defaults.methods == list(METHODS) else ' '.join(defaults.methods)})")
    parser.add_argument("--epochs", type=int, nargs=2, metavar=("TEACHER", "STUDENT"),
                        help=f"epochs (default: {defaults.teacher_epochs} {defaults.student_epochs})")
    parser.add_argument("--workers", type=int, default=defaults.workers,
                        help=f"training processes at a time, one thread each (default: {defaults.workers})")


def plan_from_arguments(plan: TrainingPlan, args: argparse.Namespace) -> TrainingPlan:
    """``plan`` with the values of :func:`add_plan_arguments`' arguments (a bad one: a ``ValueError`` naming it)."""
    plan.out, plan.seeds, plan.methods, plan.workers = args.out, args.seeds, args.methods, args.workers
    if args.epochs:
        plan.teacher_epochs, plan.student_epochs = args.epochs
    for flag, value in (("--workers", plan.workers), ("--epochs (teacher)", plan.teacher_epochs),
                        ("--epochs (student)", plan.student_epochs)):
        if value < 1:
            raise ValueError(f"{flag} {value}: give at least 1")
    if plan.train_limit is not None and plan.train_limit < 1:
        raise ValueError(f"--train-limit {plan.train_limit}: give at least 1 image, or leave it out for all")
    return plan


def _worker_init(threads: int = 1) -> None:
    import torch

    torch.set_num_threads(threads)  # the teacher alone: every core; the students: one thread each, side by side


def train_job(config: dict[str, Any]) -> dict[str, Any]:
    """Train one run in a worker process; its console output goes to RUN_DIR/train.log."""
    from .engine import config_from_dict, train

    out = Path(config["out"])
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "train.log", "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        return train(config_from_dict(config))


class Progress:
    """Epochs finished over all runs, read from their metrics files: a bar on a terminal, lines otherwise."""

    def __init__(self, jobs: list[Job], what: str = "demo") -> None:
        self.jobs, self.total = jobs, sum(j.epochs for j in jobs)
        self.bar = tqdm(total=self.total, desc=f"{what} epochs", unit="epoch", dynamic_ncols=True) if progress_enabled("auto") else None
        self.done = 0

    def poll(self) -> None:
        done = sum(_count_lines(RunDir(j.out).file(RunDir.METRICS)) for j in self.jobs)
        if self.bar is not None and done > self.done:
            self.bar.update(done - self.done)
        self.done = done

    def say(self, text: str) -> None:
        (self.bar.write if self.bar is not None else print)(text)
        sys.stdout.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _count_lines(path: Path) -> int:
    try:
        with open(path) as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0


def run_jobs(jobs: list[Job], workers: int, what: str = "demo", task: Callable[..., dict[str, Any]] = train_job,
             args: tuple = ()) -> dict[str, dict[str, Any]]:
    """Run ``task(job.config, *args)`` for every job in spawned processes; returns {job name: what the task
    returned (a dictionary with train()'s summary keys)}. ``task`` must be a module-level function (it is pickled).

    The teacher, which the distillation jobs wait for, runs first and alone with ``workers`` threads (1.7x one
    thread for WRN-16-1 on 2 cores); then every other job runs in a process of one thread, ``workers`` at a time
    (the students are too small for threads to pay). So no core idles while the others wait for the teacher.
    """
    summaries: dict[str, dict[str, Any]] = {}
    teacher = [j for j in jobs if j.name == "teacher"]
    students = [j for j in jobs if j.name != "teacher"]
    progress = Progress(jobs, what)
    try:
        if teacher:
            summaries |= _run_phase(teacher, 1, workers, progress, what, task, args)
        if students:
            summaries |= _run_phase(students, workers, 1, progress, what, task, args)
        progress.poll()
    finally:
        progress.close()
    return summaries


def describe_plan(plan: TrainingPlan, jobs: list[Job], what: str) -> str:
    """The line a demo or study starts with: its runs, data, models, methods, seeds and workers."""
    return (f"attnkit {what}: {len(jobs)} runs on {plan.data} ({plan.teacher} teacher, {plan.student} "
            f"{plan.student_kwargs} students: {', '.join(plan.methods)} x seeds {plan.seeds}), {plan.workers} at a time")


def _run_phase(jobs: list[Job], processes: int, threads: int, progress: Progress, what: str,
               task: Callable[..., dict[str, Any]], args: tuple) -> dict[str, dict[str, Any]]:
    summaries: dict[str, dict[str, Any]] = {}
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no inherited threads or hooks
    with ProcessPoolExecutor(max_workers=processes, mp_context=context, initializer=_worker_init,
                             initargs=(threads,)) as pool:
        running = {pool.submit(task, job.config, *args): job for job in jobs}
        while running:
            done, _ = wait(running, timeout=0.5, return_when=FIRST_COMPLETED)
            progress.poll()
            for future in done:
                job = running.pop(future)
                try:
                    summaries[job.name] = summary = future.result()
                except Exception as err:
                    pool.shutdown(wait=False, cancel_futures=True)  # say so now, not after the queued runs
                    raise RuntimeError(f"{what} run '{job.name}' failed: {err}; see {job.out / 'train.log'}") from err
                progress.say(f"  {job.name:<14} test error {100 - summary['last']['top1']:5.2f}%   "
                             f"({summary['train_time_s']:.0f} s training, {job.out})")
    return summaries


def run_demo(demo: DemoConfig | None = None) -> Path:
    """Run the demo; returns its directory (runs, results table, report)."""
    from .report import format_results_table, load_runs, results_table, write_report

    demo = demo or DemoConfig()
    jobs = plan_jobs(demo, root := new_root(demo.out, "demo"))
    started = time.perf_counter()
    print(describe_plan(demo, jobs, "demo"))
    run_jobs(jobs, demo.workers)
    runs = load_runs(j.out for j in jobs)
    table = results_table(runs)
    text = format_results_table(table)
    print(f"\nTest error of the student per method, {demo.data} test split (runs took {time.perf_counter() - started:.0f} s):")
    print(text)
    (root / "results.txt").write_text(text + "\n")
    if demo.report:
        print("writing the report (attention maps, curves, map metrics) ...")
        page = write_report([j.out for j in jobs], root / "report", images=demo.report_images)
        print(f"report: {page}")
    print(f"done in {time.perf_counter() - started:.0f} s; runs in {root}")
    return root
