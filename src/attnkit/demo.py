"""``attnkit demo``: what attention transfer does, in a few minutes on a laptop CPU.

On the embedded cluttered-mnist (each mnist5k digit somewhere on a 48x48 canvas among fragments of other digits,
its box known), the demo trains a teacher and, from the same seeds, a small student alone, with attention
transfer (AT), with knowledge distillation (KD) and with both; prints their test errors in the layout of
Table 1 of Zagoruyko & Komodakis (2017) (mean and spread over the seeds); and writes a report with training
curves, the students' and the teacher's attention maps side by side, and how well each model's attention
finds the digit (pointing game, energy inside the box).

The runs are independent processes, one thread each, run ``workers`` at a time: on a small CPU that beats one
process with several threads, whose OpenMP threads spin when the cores are busy. The students trained alone do
not need the teacher and run while it trains.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .engine import RunConfig, RunDir, config_to_dict
from .engine.run_log import progress_enabled

__all__ = ["DemoConfig", "METHODS", "run_demo"]

# The transfer terms of each method (the paper's hyperparameters: beta = 1000, T = 4, alpha = 0.9).
METHODS: dict[str, dict[str, float]] = {
    "student": {},
    "AT": {"at_beta": 1000.0},
    "KD": {"kd_alpha": 0.9, "kd_temperature": 4.0},
    "AT+KD": {"at_beta": 1000.0, "kd_alpha": 0.9, "kd_temperature": 4.0},
    "F-ActT": {"fact_beta": 1.0},
}


@dataclass
class DemoConfig:
    out: str | None = None  # run directory of the demo (default: runs/demo-<date>-<time>)
    data: str = "cluttered-mnist"  # embedded data set (cluttered-mnist has ground-truth boxes for the map metrics)
    teacher: str = "wrn_16_1"  # teacher model (trained first, 0.18M parameters)
    student: str = "wrn"  # student model
    student_kwargs: dict[str, Any] = field(default_factory=lambda: {"depth": 10, "width": 0.5})  # WRN-10-0.5, 0.02M
    teacher_epochs: int = 6  # epochs of the teacher
    student_epochs: int = 5  # epochs of every student
    seeds: list[int] = field(default_factory=lambda: [0, 1])  # one student per method and seed
    methods: list[str] = field(default_factory=lambda: ["student", "AT", "KD", "AT+KD"])  # add "F-ActT" if time allows
    batch_size: int = 64  # training batch size
    lr: float = 0.05  # peak learning rate (cosine schedule, one warm-up epoch)
    workers: int = 2  # training processes at a time (one thread each)
    train_limit: int | None = None  # train on a fixed subset of this many images (quick checks); None = all 4,000
    report: bool = True  # write the HTML report (maps, curves, metrics) when the runs are done
    report_images: int = 200  # test images the map metrics of the report are computed on


def _run_config(demo: DemoConfig, out: Path, model: str, kwargs: dict[str, Any], epochs: int, seed: int,
                distill: dict[str, Any]) -> dict[str, Any]:
    config = RunConfig()
    config.out, config.seed, config.device = str(out), seed, "cpu"
    config.model.name, config.model.kwargs = model, dict(kwargs)
    config.data.name, config.data.batch_size, config.data.train_limit = demo.data, demo.batch_size, demo.train_limit
    config.optim.epochs, config.optim.lr, config.optim.schedule, config.optim.warmup_epochs = epochs, demo.lr, "cosine", 1.0
    config.optim.nesterov = True
    config.progress, config.tensorboard = False, False
    for key, value in distill.items():
        setattr(config.distill, key, value)
    return config_to_dict(config)


@dataclass
class _Job:
    name: str  # "teacher", or "<method> seed <s>"
    config: dict[str, Any]
    needs_teacher: bool

    @property
    def out(self) -> Path:
        return Path(self.config["out"])

    @property
    def epochs(self) -> int:
        return self.config["optim"]["epochs"]


def _jobs(demo: DemoConfig, root: Path) -> list[_Job]:
    unknown = [m for m in demo.methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown demo methods {unknown}; choose from {', '.join(METHODS)}")
    teacher_out = root / "teacher"
    jobs = [_Job("teacher", _run_config(demo, teacher_out, demo.teacher, {}, demo.teacher_epochs, demo.seeds[0], {}), False)]
    for method in demo.methods:
        for seed in demo.seeds:
            distill = dict(METHODS[method], teacher=str(teacher_out), teacher_model=demo.teacher) if METHODS[method] else {}
            slug = method.lower().replace("+", "_").replace("-", "")
            config = _run_config(demo, root / f"{slug}-seed{seed}", demo.student, demo.student_kwargs,
                                 demo.student_epochs, seed, distill)
            jobs.append(_Job(f"{method} seed {seed}", config, bool(distill)))
    return jobs


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)  # one thread per run; `workers` runs share the cores


def _train_job(config: dict[str, Any]) -> dict[str, Any]:
    """Train one run in a worker process; its console output goes to RUN_DIR/train.log."""
    from .engine import config_from_dict, train

    out = Path(config["out"])
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "train.log", "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        return train(config_from_dict(config))


class _Progress:
    """Epochs finished over all runs, read from their metrics files: a bar on a terminal, lines otherwise."""

    def __init__(self, jobs: list[_Job]) -> None:
        self.jobs, self.total = jobs, sum(j.epochs for j in jobs)
        self.bar = tqdm(total=self.total, desc="demo epochs", unit="epoch", dynamic_ncols=True) if progress_enabled("auto") else None
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


def _run_jobs(jobs: list[_Job], workers: int, progress: _Progress) -> dict[str, dict[str, Any]]:
    """Run the jobs, at most ``workers`` at a time; distillation jobs start once the teacher is done."""
    waiting = [j for j in jobs if j.needs_teacher]
    ready = [j for j in jobs if not j.needs_teacher]
    summaries: dict[str, dict[str, Any]] = {}
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no inherited threads or hooks
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_worker_init) as pool:
        running: dict[Future, _Job] = {}

        def submit(job: _Job) -> None:
            running[pool.submit(_train_job, job.config)] = job

        for job in ready:
            submit(job)
        while running:
            done, _ = wait(running, timeout=0.5, return_when=FIRST_COMPLETED)
            progress.poll()
            for future in done:
                job = running.pop(future)
                try:
                    summaries[job.name] = future.result()
                except Exception as err:
                    raise RuntimeError(f"demo run '{job.name}' failed: {err}; see {job.out / 'train.log'}") from err
                summary = summaries[job.name]
                progress.say(f"  {job.name:<14} test error {100 - summary['last']['top1']:5.2f}%   "
                             f"({summary['train_time_s']:.0f} s training, {job.out})")
                if job.name == "teacher":
                    for waiting_job in waiting:
                        submit(waiting_job)
    progress.poll()
    return summaries


def run_demo(demo: DemoConfig | None = None) -> Path:
    """Run the demo; returns its directory (runs, results table, report)."""
    from .report import format_results_table, load_runs, results_table, write_report

    demo = demo or DemoConfig()
    root = Path(demo.out or f"runs/demo-{datetime.now():%Y%m%d-%H%M%S}")
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty; choose another --out (the demo never overwrites runs)")
    jobs = _jobs(demo, root)
    started = time.perf_counter()
    print(f"attnkit demo: {len(jobs)} runs on {demo.data} ({demo.teacher} teacher, {demo.student} "
          f"{demo.student_kwargs} students: {', '.join(demo.methods)} x seeds {demo.seeds}), {demo.workers} at a time")
    progress = _Progress(jobs)
    try:
        _run_jobs(jobs, demo.workers, progress)
    finally:
        progress.close()
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
