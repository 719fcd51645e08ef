"""precision=auto (on a CPU with native bf16) and channels_last=auto are decided by one measurement per machine and
model, cached: runs of one config agree bit for bit, and auto never takes a variant the probe measured slower."""

import functools
import itertools
import json
import random
import threading

import pytest
import torch
from torch import nn

import attnkit.engine.memory_format as memory_format
import attnkit.engine.runtime as runtime
from attnkit import functional as AF
from attnkit.engine import DistillConfig, RunConfig, RunDir, train
from attnkit.engine.checkpoint import load_weights
from attnkit.engine.memory_format import StepFormat, choose_step_format
from attnkit.engine.run_info import RunInfo
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

    def step(m, x, dtype):
        m(x).sum().backward()

    results = []

    def decide():
        choice = choose_step_format("fp32", "auto", torch.device("cpu"), model, (3, 8, 8), 4, step, {"model": "toy"})
        results.append((choice.channels_last, choice.channels_last_source))

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

    def choose(precision, channels_last, device="cpu"):
        return choose_step_format(precision, channels_last, torch.device(device), nn.Conv2d(1, 1, 1), (1, 4, 4), 2,
                                  never, {})

    monkeypatch.setattr(runtime, "bf16_supported", lambda device: True)  # bf16 would be probed if left open
    assert choose("fp32", False) == StepFormat(None, False, "set", "set")
    assert choose("bf16", True) == StepFormat(torch.bfloat16, True, "set", "set")
    assert choose("auto", "auto", "cuda") == StepFormat(torch.bfloat16, True, "cuda", "cuda")
    monkeypatch.setattr(runtime, "bf16_supported", lambda device: False)
    assert choose("auto", "auto", "cuda") == StepFormat(None, True, "cuda", "cuda")
    assert choose("auto", True) == StepFormat(None, True, "no-bf16", "set")  # a CPU without native bf16: fp32
    assert not (tmp_path / "cache").exists()
    with pytest.raises(ValueError, match="channels_last must be auto, true or false"):
        choose("fp32", "yes")
    with pytest.raises(ValueError, match="no native bf16"):
        choose("bf16", True)


def fake_clock(monkeypatch, durations):
    """The probe's timer: the i-th variant's steps take durations[i] (the variants take turns)."""
    steps = itertools.cycle(durations)
    clock = {"now": 0.0, "started": False}

    def tick():
        if clock["started"]:
            clock["now"] += next(steps)
        clock["started"] = not clock["started"]
        return clock["now"]

    monkeypatch.setattr(memory_format, "_clock", tick)


@pytest.mark.parametrize("durations, expected", [((2.0, 1.0), (None, True)), ((1.0, 2.0), (None, False)),
                                                 ((1.0, 1.0), (None, False))])  # a tie keeps NCHW
def test_probe_alternates_the_formats_on_copies(monkeypatch, durations, expected):
    fake_clock(monkeypatch, durations)  # NCHW, then channels_last, turn by turn
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    variants = [(None, False), (None, True)]
    step = lambda m, x, dtype: m(x).sum().backward()  # noqa: E731
    assert memory_format.probe_step_formats(model, torch.randn(2, 3, 8, 8), step, variants) == expected
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN statistics untouched
    assert model[0].weight.grad is None and model[0].weight.is_contiguous()


def bf16_cpu(tmp_path, monkeypatch):
    """A CPU that reports native bf16, with a cache of its own; returns the steps the probe ran, per variant."""
    monkeypatch.setenv("ATTNKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(runtime, "bf16_supported", lambda device: device.type == "cpu")
    seen = []

    def step(m, x, dtype):
        seen.append((dtype, x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()))
        with runtime.autocast(torch.device("cpu"), dtype):
            m(x).float().sum().backward()

    return seen, step


@pytest.mark.parametrize("fp32_faster", [True, False])
def test_precision_auto_takes_what_the_probe_measured_faster(tmp_path, monkeypatch, fp32_faster):
    """On a CPU with native bf16, auto is fp32 where the probe timed fp32 faster, and bf16 only where bf16 was."""
    seen, step = bf16_cpu(tmp_path, monkeypatch)
    fake_clock(monkeypatch, (1.0, 2.0) if fp32_faster else (2.0, 1.0))  # fp32, then bf16, turn by turn
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten())
    choice = choose_step_format("auto", False, torch.device("cpu"), model, (3, 8, 8), 4, step, {"model": "toy"})
    assert choice == StepFormat(None if fp32_faster else torch.bfloat16, False, "measured", "set")
    assert {dtype for dtype, _ in seen} == {None, torch.bfloat16} and not any(cl for _, cl in seen)
    entry = next(iter(json.loads((tmp_path / "cache" / "channels_last.json").read_text()).values()))
    assert entry["precision"] == ("float32" if fp32_faster else "bfloat16") and entry["channels_last"] is False


def test_both_auto_probe_four_variants_and_a_second_run_reuses_the_choice(tmp_path, monkeypatch):
    seen, step = bf16_cpu(tmp_path, monkeypatch)
    fake_clock(monkeypatch, (4.0, 3.0, 1.0, 2.0))  # fp32 NCHW, fp32 NHWC, bf16 NCHW, bf16 NHWC
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten())
    choose = functools.partial(choose_step_format, "auto", "auto", torch.device("cpu"), model, (3, 8, 8), 4)
    assert choose(step, {"model": "toy"}) == StepFormat(torch.bfloat16, False, "measured", "measured")
    assert set(seen) == {(None, False), (None, True), (torch.bfloat16, False), (torch.bfloat16, True)}

    def never(*args):
        raise AssertionError("a cached choice is not measured again")

    assert choose(never, {"model": "toy"}) == StepFormat(torch.bfloat16, False, "cached", "cached")
    # A fixed precision is not probed (and is a measurement of its own: fp32 NHWC is faster among fp32 variants).
    seen.clear()
    fixed = choose_step_format("fp32", "auto", torch.device("cpu"), model, (3, 8, 8), 4, step, {"model": "toy"})
    assert fixed.amp_dtype is None and fixed.precision_source == "set" and {d for d, _ in seen} == {None}


def test_a_choice_cached_before_precision_was_measured_is_still_used(tmp_path, monkeypatch):
    seen, step = bf16_cpu(tmp_path, monkeypatch)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten())
    choose = functools.partial(choose_step_format, "fp32", "auto", torch.device("cpu"), model, (3, 8, 8), 4)
    assert choose(step, {"model": "toy"}).channels_last_source == "measured"
    path = tmp_path / "cache" / "channels_last.json"
    entries = json.loads(path.read_text())
    key, entry = next(iter(entries.items()))
    entry.update(precision="torch.float32", channels_last=not entry["channels_last"])  # as older versions wrote it
    path.write_text(json.dumps({key: entry}))
    never = lambda *args: pytest.fail("measured again")  # noqa: E731
    assert choose(never, {"model": "toy"}) == StepFormat(None, entry["channels_last"], "set", "cached")


def test_run_json_records_where_the_precision_came_from_and_older_files_load(tmp_path, monkeypatch):
    seen, _ = bf16_cpu(tmp_path, monkeypatch)
    fake_clock(monkeypatch, (1.0, 2.0))  # fp32 measured faster
    config = RunConfig()
    config.out, config.device, config.progress, config.tensorboard = str(tmp_path / "run"), "cpu", False, False
    config.model.name, config.model.kwargs = "wrn", {"depth": 10, "width": 0.5}
    config.data.train_limit, config.data.test_limit, config.data.batch_size = 64, 32, 32
    config.optim.epochs, config.channels_last = 1, False
    summary = train(config)
    info = RunDir(tmp_path / "run").info()
    assert (info.precision, info.precision_source, info.channels_last_source) == ("float32", "measured", "set")
    assert summary["precision_source"] == "measured"
    old = {k: v for k, v in info.to_dict().items() if k != "precision_source"}  # run.json before this key
    assert RunInfo.from_dict(old).precision_source is None
    with pytest.raises(ValueError, match="precision_source"):
        RunInfo.from_dict({**old, "precision_source": 3}, "run.json")


@pytest.mark.parametrize("settings, double", [({"cam_beta": 1.0}, True), ({"grad_at_beta": 1.0}, True),
                                              ({"at_beta": 1.0}, False)])
def test_the_memory_format_probe_takes_the_kind_of_step_the_run_takes(settings, double):
    """A run with CAM transfer alone trains through a gradient of the student (class maps): its probe must too."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
    x = torch.randn(2, 3, 6, 6)
    plan = plan_terms(DistillConfig(**settings))
    assert plan.double_backprop is double
    probe_step(plan, torch.device("cpu"))(model, x, None)
    probed = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    grad, logits = AF.input_gradient(model, x, create_graph=True, return_logits=True)
    (logits.sum() + (grad.pow(2).sum() if double else 0)).backward()
    for a, p in zip(probed, model.parameters()):
        assert torch.allclose(a, p.grad)
