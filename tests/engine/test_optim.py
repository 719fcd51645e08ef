import math

import pytest
import torch

from attnkit.engine import OptimConfig
from attnkit.engine.optim import build_optimizer, build_scheduler, lr_factor


def test_step_schedule_matches_the_paper():
    config = OptimConfig(epochs=200, milestones=[60, 120, 160], gamma=0.2)
    assert [lr_factor(e, config) for e in (0, 59.9, 60, 119, 120, 160, 199)] == pytest.approx(
        [1, 1, 0.2, 0.2, 0.04, 0.008, 0.008])


def test_cosine_and_warmup():
    config = OptimConfig(epochs=10, schedule="cosine", warmup_epochs=2)
    assert lr_factor(0, config) == 0 and lr_factor(1, config) == pytest.approx(0.5 * 0.5 * (1 + math.cos(math.pi / 10)))
    assert lr_factor(10, config) == pytest.approx(0.0, abs=1e-12)


def test_scheduler_steps_per_iteration_and_resumes():
    model = torch.nn.Linear(2, 2)
    config = OptimConfig(lr=1.0, epochs=4, milestones=[1, 2], gamma=0.5)
    opt = build_optimizer(config, model.parameters())
    sched = build_scheduler(opt, config, steps_per_epoch=4)
    lrs = []
    for _ in range(12):
        opt.step()
        sched.step()
        lrs.append(sched.get_last_lr()[0])
    assert lrs[2:5] == [1.0, 0.5, 0.5] and lrs[7] == 0.25
    # A fresh scheduler loaded from the state continues identically.
    opt2 = build_optimizer(config, model.parameters())
    sched2 = build_scheduler(opt2, config, 4)
    sched2.load_state_dict(sched.state_dict())
    sched.step()
    sched2.step()
    assert sched.get_last_lr() == sched2.get_last_lr()


def test_optimizers():
    params = list(torch.nn.Linear(2, 2).parameters())
    sgd = build_optimizer(OptimConfig(nesterov=True), params)
    assert sgd.defaults["nesterov"] and sgd.defaults["weight_decay"] == 5e-4
    assert isinstance(build_optimizer(OptimConfig(name="adamw", lr=1e-3), params), torch.optim.AdamW)
