"""channels_last=auto is decided once per machine and model and cached: runs of one config agree bit for bit."""

import itertools
import json
import random
import threading

import pytest
import torch
from torch import nn

import attnkit.engine.memory_format as memory_format
from attnkit import functional as AF
from attnkit.engine import DistillConfig, RunConfig, RunDir, train
from attnkit.engine.checkpoint import load_weights
from attnkit.engine.memory_format import choose_channels_last
from attnkit.engine.setup import probe_step
from attnkit.engine.terms import plan_terms


def random_clock(monkeypatch):
    """The probe's timer returns noise: each measurement picks a memory format at random."""
    noise = random.SystemRandom()
    monkeypatch.setattr(memory_format, "_clock", lambda: noise.random())


def test_two_runs_with_a_random_probe_give_identical_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNKIT_CACHE", str(tmp_path / "cache"))
    random_clock(monkeypatch)

    def run(out):
        config = RunConfig()
        config.out, config.device, config.progress, config.tensorboard = str(out), "cpu", False, False
        config.model.name, config.model.kwargs = "wrn", {"depth": 10, "width": 0.5, "dropout": 0.2}  # dropout: RNG
        config.data.train_limit, config.data.test_limit, config.data.batch_size = 256, 64, 64
        config.optim.epochs = 1
        assert config.channels_last == "auto"  # the default
        train(config)
        return RunDir(out)

    first, second = run(tmp_path / "a"), run(tmp_path / "b")
    assert (first.info().channels_last_source, second.info().channels_last_source) == ("measured", "cached")
    assert first.info().channels_last == second.info().channels_last
    assert second.summary()["channels_last_source"] == "cached"
    a, _ = load_weights(first.weights())
    b, _ = load_weights(second.weights())
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    cache = json.loads((tmp_path / "cache" / "channels_last.json").read_text())
    assert len(cache) == 1 and next(iter(cache.values()))["model"] == "wrn"


def test_concurrent_deciders_measure_once_and_agree(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNKIT_CACHE", str(tmp_path / "cache"))
    random_clock(monkeypatch)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def step(m, x):
        m(x).sum().backward()

    results = []

    def decide():
        results.append(choose_channels_last("auto", torch.device("cpu"), model, (3, 8, 8), 4, step, {"model": "toy"}))

    threads = [threading.Thread(target=decide) for _ in range(4)]  # each holds its own lock file handle
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({choice for choice, _ in results}) == 1
    assert sorted(source for _, source in results) == ["cached", "cached", "cached", "measured"]


def test_set_and_cuda_choices_are_rules_not_measurements(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNKIT_CACHE", str(tmp_path / "cache"))

    def never(*args):
        raise AssertionError("no probe expected")

    model = nn.Conv2d(1, 1, 1)
    assert choose_channels_last(False, torch.device("cpu"), model, (1, 4, 4), 2, never, {}) == (False, "set")
    assert choose_channels_last(True, torch.device("cpu"), model, (1, 4, 4), 2, never, {}) == (True, "set")
    assert choose_channels_last("auto", torch.device("cuda"), model, (1, 4, 4), 2, never, {}) == (True, "cuda")
    assert not (tmp_path / "cache").exists()
    with pytest.raises(ValueError, match="channels_last must be auto, true or false"):
        choose_channels_last("yes", torch.device("cpu"), model, (1, 4, 4), 2, never, {})


@pytest.mark.parametrize("durations, expected", [((2.0, 1.0), True), ((1.0, 2.0), False)])
def test_probe_alternates_the_formats_on_copies(monkeypatch, durations, expected):
    steps = itertools.cycle(durations)  # NCHW, then channels_last, turn by turn
    clock = {"now": 0.0, "started": False}

    def fake_clock():
        if clock["started"]:
            clock["now"] += next(steps)
        clock["started"] = not clock["started"]
        return clock["now"]

    monkeypatch.setattr(memory_format, "_clock", fake_clock)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert memory_format.probe_channels_last(model, torch.randn(2, 3, 8, 8), lambda m, x: m(x).sum().backward()) is expected
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN statistics untouched
    assert model[0].weight.grad is None and model[0].weight.is_contiguous()


@pytest.mark.parametrize("settings, double", [({"cam_beta": 1.0}, True), ({"grad_at_beta": 1.0}, True),
                                              ({"at_beta": 1.0}, False)])
def test_the_memory_format_probe_takes_the_kind_of_step_the_run_takes(settings, double):
    """A run with CAM transfer alone trains through a gradient of the student (class maps): its probe must too."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
    x = torch.randn(2, 3, 6, 6)
    plan = plan_terms(DistillConfig(**settings))
    assert plan.double_backprop is double
    probe_step(plan, torch.device("cpu"), None)(model, x)
    probed = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    grad, logits = AF.input_gradient(model, x, create_graph=True, return_logits=True)
    (logits.sum() + (grad.pow(2).sum() if double else 0)).backward()
    for a, p in zip(probed, model.parameters()):
        assert torch.allclose(a, p.grad)
