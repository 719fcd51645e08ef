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


def test_weight_schedules():
    from attnkit.engine.optim import WeightSchedule

    step = WeightSchedule("step", [60, 120, 160], 0.2)  # AT+KD: beta decayed with the learning rate
    assert [step.factor(e, 200) for e in (0, 59.99, 60, 120, 199)] == pytest.approx([1, 1, 0.2, 0.04, 0.008])
    assert WeightSchedule("linear").factor(50, 200) == 0.75 and WeightSchedule("linear").factor(250, 200) == 0.0
    assert WeightSchedule("cosine").factor(100, 200) == pytest.approx(0.5)
    assert WeightSchedule().is_constant and WeightSchedule().factor(123.4, 200) == 1.0
    # DKD's warm-up as mdistiller computes it: min(epoch / 20, 1) with epochs counted from 1, for every step of it.
    dkd = WeightSchedule(warmup_epochs=20, per="epoch")
    for epoch in range(25):
        for fraction in (0.0, 0.5, 0.99):
            assert dkd.factor(epoch + fraction, 240, 1 / 781) == pytest.approx(min((epoch + 1) / 20, 1.0))
    # per step, the warm-up counts the step being taken, as the learning rate's does
    assert WeightSchedule(warmup_epochs=2).factor(0.0, 10, 0.25) == 0.125


def test_lr_factor_is_the_weight_schedule_of_the_optim_config():
    from attnkit.engine.optim import WeightSchedule

    config = OptimConfig(epochs=200, milestones=[60, 120, 160], gamma=0.2, warmup_epochs=1.5)
    schedule = WeightSchedule("step", [60, 120, 160], 0.2, 1.5)
    for epoch in (0.0, 0.7, 1.2, 61.0, 170.3):
        assert lr_factor(epoch, config, 0.01) == schedule.factor(epoch, 200, 0.01)  # the same code, bit for bit
