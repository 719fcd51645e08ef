"""``attnkit bench distill`` and ``attnkit bench gradat``: training-step throughput, ratios measured in one run.

distill: one WRN-16-2 -> WRN-16-1 AT+KD step at batch 128 (CIFAR-shaped) in images/s:
  * plain - the step written the way the official attention-transfer code does it: eager fp32 NCHW, the
    teacher under ``no_grad``, ``at(x) = F.normalize(x.pow(2).mean(1).view(B, -1))``;
  * parts - the student's plain cross-entropy step plus the teacher's forward, timed separately and added
    (the floor any distillation step pays);
  * attnkit - :meth:`attnkit.engine.Trainer.train_step` (the exact code a run executes) in fp32 / channels_last /
    bf16 (where the CPU has native bf16) and with the engine's automatic choice (``auto``: on a CPU, the variant
    its probe measured fastest here, or took from the cache, as a run would); plus KD alone for comparison.

gradat: gradient-based AT (double backprop) against its necessary parts - the student's double-backprop step
and the teacher's forward + backward for its input gradient, timed separately - and the plain student step.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import functional as AF
from ..models import create_model
from ._measure import compare, mib

BATCH, STUDENT, TEACHER, NUM_CLASSES = 128, "wrn_16_1", "wrn_16_2", 10


def _batch(device: torch.device, batch: int = BATCH) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, 32, 32, generator=gen).to(device)
    labels = torch.randint(0, NUM_CLASSES, (batch,), generator=gen).to(device)
    return images, labels


def _models(device: torch.device) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    return create_model(STUDENT, NUM_CLASSES).to(device), create_model(TEACHER, NUM_CLASSES).to(device).eval()


def _groups(model: nn.Module, x: Tensor) -> tuple[Tensor, list[Tensor]]:
    """WRN forward returning (logits, group outputs), as the official functional code does."""
    g1 = model.layer1(model.conv1(x))
    g2 = model.layer2(g1)
    g3 = model.layer3(g2)
    return model.forward_head(model.relu(model.bn(g3))), [g1, g2, g3]


def plain_distill_step(student: nn.Module, teacher: nn.Module, x: Tensor, y: Tensor) -> Callable[[], None]:
    """The official code's AT+KD step: eager, fp32, NCHW (beta = 1000, T = 4, alpha = 0.9)."""
    optimizer = torch.optim.SGD(student.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)

    def at(a: Tensor) -> Tensor:
        return F.normalize(a.pow(2).mean(1).view(a.size(0), -1))

    def step() -> None:
        with torch.no_grad():
            t_logits, t_groups = _groups(teacher, x)
        s_logits, s_groups = _groups(student, x)
        kd = F.kl_div(F.log_softmax(s_logits / 4, 1), F.softmax(t_logits / 4, 1), reduction="batchmean") * 16
        loss = 0.1 * F.cross_entropy(s_logits, y) + 0.9 * kd
        loss = loss + 1000 * sum((at(s) - at(t)).pow(2).mean() for s, t in zip(s_groups, t_groups))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def plain_student_step(student: nn.Module, x: Tensor, y: Tensor, autocast=contextlib.nullcontext) -> Callable[[], None]:
    """The student's plain cross-entropy step (no teacher), optionally under autocast."""
    optimizer = torch.optim.SGD(student.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)

    def step() -> None:
        with autocast():
            logits = student(x)
        loss = F.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def teacher_forward(teacher: nn.Module, x: Tensor) -> Callable[[], None]:
    def forward() -> None:
        with torch.no_grad():
            teacher(x)

    return forward


def attnkit_trainer(device: torch.device, precision: str, channels_last: bool | str, **distill: float):
    """An engine Trainer around fresh WRNs and a random in-memory data set (nothing is written to disk)."""
    from ..data import ImageTensors, make_loader
    from ..engine import RunConfig, Trainer, build_run
    from ..engine.terms import plan_terms

    gen = torch.Generator().manual_seed(0)
    data = ImageTensors(images=torch.randint(0, 256, (4 * BATCH, 3, 32, 32), dtype=torch.uint8, generator=gen),
                        labels=torch.randint(0, NUM_CLASSES, (4 * BATCH,), generator=gen),
                        classes=[str(i) for i in range(NUM_CLASSES)], mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
                        name="random")
    config = RunConfig()
    config.out = tempfile.mkdtemp(prefix="attnkit-bench-")
    config.device, config.precision, config.channels_last = str(device), precision, channels_last
    config.progress, config.tensorboard = False, False
    for key, value in distill.items():
        setattr(config.distill, key, value)
    student, teacher = _models(device)
    train = make_loader(data, BATCH, train=True, device=device)
    test = make_loader(data, BATCH, train=False, device=device)
    return Trainer(build_run(config, model=student, teacher=teacher if plan_terms(config.distill).needs_teacher else None,
                             train_loader=train, test_loader=test))


def _trainer_step(trainer, x: Tensor, y: Tensor, hooks: contextlib.ExitStack) -> Callable[[], None]:
    """Trainer.train_step as fit() runs it: with the objective's feature hooks installed (removed by `hooks`), on a
    batch in the run's memory format (its loaders emit that format)."""
    hooks.enter_context(trainer.run.objective)
    x = x.contiguous(memory_format=torch.channels_last) if trainer.run.decisions.channels_last else x
    return lambda: trainer.train_step(x, y)


def _variants(device: torch.device) -> list[tuple[str, str, bool | str]]:
    from ..engine.runtime import bf16_supported

    rows = [("attnkit fp32", "fp32", False), ("attnkit fp32 channels_last", "fp32", True)]
    if bf16_supported(device):
        rows += [("attnkit bf16", "bf16", False), ("attnkit bf16 channels_last", "bf16", True)]
    return rows + [("attnkit default (auto)", "auto", "auto")]


def run(device: str = "cpu", repeats: int = 10) -> list[dict]:
    """Rows: method, images/s, ratio to the plain implementation, peak MiB of one step."""
    dev = torch.device(device)
    x, y = _batch(dev)
    student, teacher = _models(dev)
    fns = {"plain eager fp32 (official-code style)": plain_distill_step(student, teacher, x, y)}
    student_step, forward = plain_student_step(student, x, y), teacher_forward(teacher, x)
    fns["parts: student step"] = student_step
    fns["parts: teacher forward"] = forward
    chosen = {}
    with contextlib.ExitStack() as hooks:
        for name, precision, channels_last in _variants(dev):
            trainer = attnkit_trainer(dev, precision, channels_last, at_beta=1000.0, kd_alpha=0.9)
            fns[name] = _trainer_step(trainer, x, y, hooks)
            chosen[name] = _settings(trainer)
        kd_only = attnkit_trainer(dev, "auto", "auto", kd_alpha=0.9)
        fns["attnkit default, KD only"] = _trainer_step(kd_only, x, y, hooks)
        chosen["attnkit default, KD only"] = _settings(kd_only)
        results = compare(fns, dev, min_repeats=repeats, min_seconds=2.0)

    plain = results["plain eager fp32 (official-code style)"].seconds
    parts = results["parts: student step"].seconds + results["parts: teacher forward"].seconds
    rows = []
    for name, m in results.items():
        if name.startswith("parts:"):
            continue
        rows.append(_row(name, m.seconds, m.peak_bytes, plain, chosen.get(name, "fp32, NCHW" if "plain" in name else "")))
    rows.insert(1, _row("parts: student step + teacher forward", parts, None, plain, "fp32, NCHW, timed separately"))
    return rows


def _settings(trainer) -> str:
    """The step's precision and memory format, with where each came from when not set (e.g. measured, cached)."""
    d = trainer.run.decisions
    precision = str(d.amp_dtype or "fp32").removeprefix("torch.")
    return (precision + (f" ({d.precision_source})" if d.precision_source != "set" else "")
            + f", channels_last={d.channels_last}" + (f" ({d.channels_last_source})" if d.channels_last_source != "set" else ""))


def _row(name: str, seconds: float, peak: int | None, plain: float, settings: str) -> dict:
    return {"step": name, "settings": settings, "images_per_s": BATCH / seconds, "vs_plain": plain / seconds,
            "ms": seconds * 1e3, "peak_mib": mib(peak)}


COLUMNS = [
    ("step", "step", "{}"),
    ("settings", "settings", "{}"),
    ("images_per_s", "img/s", "{:.0f}"),
    ("vs_plain", "x plain", "{:.2f}"),
    ("ms", "ms/step", "{:.1f}"),
    ("peak_mib", "peak MiB", "{:.0f}"),
]


# -- gradient-based attention transfer --------------------------------------------------------------------


def student_double_backprop_step(student: nn.Module, x: Tensor, y: Tensor, autocast) -> Callable[[], None]:
    """The student's share of a gradient-AT step: CE + a loss on its input gradient, through double backprop."""
    optimizer = torch.optim.SGD(student.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    target = torch.zeros_like(x)

    def step() -> None:
        with autocast():
            grad, logits = AF.input_gradient(student, x, y, create_graph=True, return_logits=True)
        loss = F.cross_entropy(logits.float(), y) + AF.grad_at_loss(grad, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def teacher_input_gradient(teacher: nn.Module, x: Tensor, y: Tensor, autocast) -> Callable[[], None]:
    def forward_backward() -> None:
        with autocast():
            AF.input_gradient(teacher, x, y)

    return forward_backward


def run_gradat(device: str = "cpu", repeats: int = 10) -> list[dict]:
    """Rows: the full gradient-AT step vs the sum of its parts and vs the plain student step (same settings)."""
    dev = torch.device(device)
    x, y = _batch(dev)
    trainer = attnkit_trainer(dev, "auto", "auto", grad_at_beta=1.0)
    student, teacher = _models(dev)
    channels_last = trainer.run.decisions.channels_last
    if channels_last:
        student.to(memory_format=torch.channels_last)
        teacher.to(memory_format=torch.channels_last)
    teacher.requires_grad_(False)
    xs = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    with contextlib.ExitStack() as hooks:
        fns = {
            "attnkit gradient-AT step": _trainer_step(trainer, x, y, hooks),
            "part: student double-backprop step": student_double_backprop_step(student, xs, y, trainer.run.autocast),
            "part: teacher input gradient (fwd+bwd)": teacher_input_gradient(teacher, xs, y, trainer.run.autocast),
            "plain student step": plain_student_step(student, xs, y, trainer.run.autocast),
        }
        results = compare(fns, dev, min_repeats=repeats, min_seconds=2.0)
    full = results["attnkit gradient-AT step"].seconds
    parts = results["part: student double-backprop step"].seconds + results["part: teacher input gradient (fwd+bwd)"].seconds
    plain = results["plain student step"].seconds
    settings = _settings(trainer)
    rows = [{"step": name, "ms": m.seconds * 1e3, "images_per_s": BATCH / m.seconds, "vs_full": m.seconds / full,
             "peak_mib": mib(m.peak_bytes), "settings": settings}
            for name, m in results.items()]
    rows.append({"step": "sum of the two parts", "ms": parts * 1e3, "images_per_s": BATCH / parts, "vs_full": parts / full,
                 "peak_mib": None, "settings": settings})
    rows.append({"step": "full step / sum of parts (target <= 1.2)", "ms": None, "images_per_s": None,
                 "vs_full": full / parts, "peak_mib": None, "settings": ""})
    rows.append({"step": "full step / plain student step", "ms": None, "images_per_s": None, "vs_full": full / plain,
                 "peak_mib": None, "settings": ""})
    return rows


GRADAT_COLUMNS = [
    ("step", "step", "{}"),
    ("settings", "settings", "{}"),
    ("ms", "ms/step", "{:.1f}"),
    ("images_per_s", "img/s", "{:.0f}"),
    ("vs_full", "ratio", "{:.2f}"),
    ("peak_mib", "peak MiB", "{:.0f}"),
]
