"""The training loop on synthetic in-memory data (tiny WRNs, a few steps)."""

import json
import warnings

import pytest
import torch

from attnkit.engine import ConfigError, RunConfig, RunDir, Trainer, build_run, load_model
from helpers import TensorBatches, blob_data

TRAIN, TEST = blob_data(256, size=16), blob_data(128, size=16, seed=1)
TINY = {"depth": 10, "width": 0.5}


def make_config(out, epochs=2, **distill) -> RunConfig:
    config = RunConfig()
    config.out, config.progress, config.tensorboard = str(out), False, False
    config.model.name, config.model.kwargs = "wrn", dict(TINY)
    config.optim.epochs, config.optim.lr, config.optim.milestones = epochs, 0.05, [epochs - 1]
    config.channels_last = False
    for key, value in distill.items():
        setattr(config.distill, key, value)
    return config


def loaders(delay_steps=None):
    return TensorBatches(*TRAIN, batch_size=32, shuffle=True), TensorBatches(*TEST, batch_size=64, shuffle=False)


def trainer(config, resume=False, train=None, test=None, **kwargs):
    default_train, default_test = loaders()
    return Trainer(build_run(config, resume, train_loader=train or default_train, test_loader=test or default_test, **kwargs))


def fit(config, **kwargs):
    return trainer(config, **kwargs).fit()


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "teacher"
    config = make_config(out, epochs=3)
    config.model.kwargs = {"depth": 10, "width": 1}
    fit(config)
    return out


def test_plain_training_learns_and_writes_a_complete_run(teacher_dir):
    records = [json.loads(line) for line in (teacher_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    for r in records:
        assert set(r) >= {"epoch", "lr", "train", "test", "time_s", "images_per_s"}
        assert set(r["test"]) == {"loss", "top1", "top5", "count"} and r["test"]["count"] == 128
    assert records[-1]["train"]["loss"] < records[0]["train"]["loss"]
    assert records[-1]["test"]["top1"] > 90.0  # the blob task is easy: the teacher must learn it
    summary = json.loads((teacher_dir / "summary.json").read_text())
    assert summary["last"]["epoch"] == 3 and summary["best"]["top1"] >= summary["last"]["top1"]
    assert {p.name for p in teacher_dir.iterdir()} >= {"config.yaml", "run.json", "model.safetensors", "best.safetensors",
                                                      "checkpoint.json", "metrics.jsonl", "summary.json"}
    assert load_model(teacher_dir).num_classes == 4


def test_distillation_with_every_term_keeps_the_teacher_frozen(tmp_path, teacher_dir):
    teacher = load_model(teacher_dir)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    config = make_config(tmp_path / "student", epochs=1, teacher=str(teacher_dir), at_beta=1000.0, kd_alpha=0.9,
                         fact_beta=1.0, grad_at_beta=1.0, flip_beta=1.0)
    distilling = trainer(config, teacher=teacher)
    student_before = {k: v.clone() for k, v in distilling.run.model.state_dict().items()}
    distilling.fit()
    record = json.loads((tmp_path / "student" / "metrics.jsonl").read_text())
    assert set(record["train"]) >= {"ce", "kd", "at", "fact", "grad_at", "flip"}
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())  # weights and BN statistics
    assert not teacher.training and all(not p.requires_grad for p in teacher.parameters())
    assert any(not torch.equal(student_before[k], v) for k, v in distilling.run.model.state_dict().items())
    assert distilling.run.objective.losses["fact"].adapters[0].weight.grad is not None  # F-ActT adapters were trained


def test_existing_run_needs_resume_and_resume_needs_a_checkpoint(tmp_path, teacher_dir):
    with pytest.raises(ConfigError, match=f"already holds a run; continue it with `attnkit resume {teacher_dir}`"):
        fit(make_config(teacher_dir))
    with pytest.raises(ConfigError, match="nothing to resume"):
        fit(make_config(tmp_path / "new"), resume=True)


class Crash(Exception):
    pass


class CrashingBatches(TensorBatches):
    """Dies (as a killed process would) when it reaches a given global step."""

    def __init__(self, *args, crash_at, **kwargs):
        super().__init__(*args, **kwargs)
        self.crash_at = crash_at

    def epoch_batches(self, epoch, start=0):
        for step, batch in enumerate(super().epoch_batches(epoch, start), start=start):
            if epoch * len(self) + step == self.crash_at:
                raise Crash
            yield batch


def test_resume_mid_epoch_equals_an_uninterrupted_run(tmp_path):
    def config(out):
        c = make_config(out, epochs=2)
        c.model.kwargs["dropout"] = 0.3  # the global RNG matters too
        c.checkpoint_every_steps = 3
        return c

    reference = trainer(config(tmp_path / "a"))
    reference.fit()
    crashing = CrashingBatches(*TRAIN, batch_size=32, shuffle=True, crash_at=12)  # epoch 2, step 5 (after a checkpoint at 3)
    with pytest.raises(Crash):
        trainer(config(tmp_path / "b"), train=crashing).fit()
    assert RunDir(tmp_path / "b").checkpoint_pointer()["epoch"] == 1 and RunDir(tmp_path / "b").checkpoint_pointer()["step"] == 3
    resumed = trainer(config(tmp_path / "b"), resume=True)
    resumed.fit()
    for key, value in reference.run.model.state_dict().items():
        torch.testing.assert_close(resumed.run.model.state_dict()[key], value, rtol=0, atol=0, msg=key)
    a = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["train"]["loss"] for r in a] == pytest.approx([r["train"]["loss"] for r in b], rel=1e-9)


def test_resume_refuses_a_changed_config(tmp_path):
    fit(make_config(tmp_path / "run", epochs=1))
    changed = make_config(tmp_path / "run", epochs=1)
    changed.optim.lr = 0.5
    with pytest.raises(ConfigError, match="differs .* at optim.lr"):
        fit(changed, resume=True)


def test_divergence_stops_and_never_checkpoints_non_finite_weights(tmp_path):
    config = make_config(tmp_path / "run", epochs=2)
    config.optim.lr, config.precision = 1e12, "fp32"  # the first updates overflow the weights
    config.checkpoint_every_steps = 1  # a checkpoint after every step: none of them may hold inf or NaN
    with pytest.raises(FloatingPointError, match="NaN or inf in epoch 1"):
        fit(config)
    if RunDir(tmp_path / "run").checkpoint_pointer() is not None:
        weights, _ = RunDir(tmp_path / "run").load_checkpoint()
        assert all(torch.isfinite(w).all() for w in weights.values())


def test_bad_layer_name_and_class_mismatch(tmp_path, teacher_dir):
    config = make_config(tmp_path / "s", teacher=str(teacher_dir), at_beta=1000.0, layers=["layer1:layer9"])
    with pytest.raises(ConfigError, match="distill.layers: teacher: .*layer9"):
        fit(config)
    three_classes = TensorBatches(TRAIN[0], TRAIN[1] % 3, 32, True), TensorBatches(TEST[0], TEST[1] % 3, 64, False)
    config = make_config(tmp_path / "s2", teacher=str(teacher_dir), kd_alpha=0.9)
    with pytest.raises(ConfigError, match="predicts 4 classes but the data has 3"):
        build_run(config, train_loader=three_classes[0], test_loader=three_classes[1])


def test_data_limits_take_a_fixed_random_subset():
    from attnkit.data import load_dataset
    from attnkit.engine.data_setup import take

    test = load_dataset("mnist5k", "test")  # stored sorted by class
    subset = take(test, 200)
    assert len(subset.labels) == 200 and torch.equal(subset.labels, take(test, 200).labels)
    assert set(subset.labels.tolist()) == set(range(10))  # the first 200 would be classes 0 and 1 only
    assert torch.equal(take(load_dataset("mnist5k", "train"), 100).labels, take(load_dataset("mnist5k", "train"), 100).labels)


def test_compiled_distillation_captures_features_and_learns(tmp_path, teacher_dir):
    # aot_eager traces the model (and the feature hooks) like inductor does, without its minute of C++ builds.
    config = make_config(tmp_path / "compiled", epochs=2, teacher=str(teacher_dir), at_beta=1000.0, kd_alpha=0.9)
    config.compile, config.compile_backend = True, "aot_eager"
    fit(config)
    records = [json.loads(line) for line in (tmp_path / "compiled" / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["train"]["at"] > 0 and records[-1]["train"]["loss"] < records[0]["train"]["loss"]
    assert load_model(tmp_path / "compiled").num_classes == 4  # weights saved without the compile wrapper's prefix


def test_resume_keeps_the_runs_measured_precision_and_memory_format(tmp_path, monkeypatch):
    import attnkit.engine.memory_format as memory_format
    import attnkit.engine.runtime as runtime

    monkeypatch.setenv("ATTNKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(runtime, "bf16_supported", lambda device: True)  # precision=auto is measured too
    config = make_config(tmp_path / "run", epochs=2)
    config.channels_last = "auto"
    monkeypatch.setattr(memory_format, "probe_step_formats", lambda model, x, step, variants: variants[-1])
    crashing = CrashingBatches(*TRAIN, batch_size=32, shuffle=True, crash_at=10)
    with pytest.raises(Crash):
        trainer(config, train=crashing).fit()
    (tmp_path / "cache" / "channels_last.json").unlink()  # forget the measurement: a new one would differ
    monkeypatch.setattr(memory_format, "probe_step_formats", lambda model, x, step, variants: variants[0])
    resumed = trainer(config, resume=True).run.decisions
    assert (resumed.channels_last, resumed.channels_last_source) == (True, "measured")
    assert (resumed.amp_dtype, resumed.precision_source) == (torch.bfloat16, "measured")


def test_logged_lr_is_the_epochs_own_and_warmup_moves_from_the_first_step(tmp_path):
    config = make_config(tmp_path / "run", epochs=3)
    config.optim.milestones, config.optim.gamma = [1, 2], 0.1
    fit(config)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in records] == pytest.approx([0.05, 0.005, 0.0005])
    from attnkit.engine.optim import build_optimizer, build_scheduler

    warm = make_config(tmp_path / "w").optim
    warm.warmup_epochs = 1
    optimizer = build_optimizer(warm, torch.nn.Linear(2, 2).parameters())
    scheduler = build_scheduler(optimizer, warm, steps_per_epoch=4)
    assert scheduler.get_last_lr()[0] == pytest.approx(0.05 / 4)  # the first step already moves


def test_teacher_trained_on_other_images_is_refused(tmp_path, teacher_dir):
    bigger = blob_data(64, size=24)
    train = TensorBatches(*bigger, batch_size=32, shuffle=True)
    config = make_config(tmp_path / "s", teacher=str(teacher_dir), at_beta=1000.0)
    with pytest.raises(ConfigError, match="teacher was trained on images with input_size \\[1, 16, 16\\].*\\[1, 24, 24\\]"):
        build_run(config, train_loader=train, test_loader=train)


class FakeDist:
    """Two ranks that saw the same batches: all_reduce doubles."""

    world_size, enabled = 2, True

    def all_reduce(self, values):
        return values.mul_(2)


def test_partial_epoch_sums_are_summed_over_ranks():
    from attnkit.engine.objective import StepResult
    from attnkit.engine.trainer import EpochMeter

    meter = EpochMeter(torch.device("cpu"))
    meter.update(StepResult(torch.tensor(2.0), torch.tensor([[1.0, 0.0], [0.0, 1.0]]), {"ce": torch.tensor(2.0)}),
                 torch.tensor([0, 0]))
    assert meter.reduced_state(FakeDist()) == {"correct": 2.0, "count": 4.0, "loss": 8.0, "term_ce": 8.0}


def test_weight_schedules_follow_the_lr_clock_and_resume_exactly(tmp_path, teacher_dir):
    from attnkit.engine.optim import WeightSchedule

    def config(out):
        c = make_config(out, epochs=2, teacher=str(teacher_dir), at_beta=1000.0, kd_alpha=0.9,
                        at_schedule=WeightSchedule(warmup_epochs=1.5), kd_schedule=WeightSchedule("linear"))
        c.checkpoint_every_steps = 3
        return c

    reference = trainer(config(tmp_path / "a"))
    seen = []
    forward = reference.run.objective.forward
    reference.run.objective.forward = lambda *a, **k: seen.append((k["epoch"], k["step"])) or forward(*a, **k)
    reference.fit()
    assert seen == [(i / 8, 1 / 8) for i in range(16)]  # 8 steps per epoch: the scheduler's iteration count
    crashing = CrashingBatches(*TRAIN, batch_size=32, shuffle=True, crash_at=12)
    with pytest.raises(Crash):
        trainer(config(tmp_path / "b"), train=crashing).fit()
    resumed = trainer(config(tmp_path / "b"), resume=True)
    resumed.fit()
    for key, value in reference.run.model.state_dict().items():
        torch.testing.assert_close(resumed.run.model.state_dict()[key], value, rtol=0, atol=0, msg=key)


def test_resuming_a_flip_run_of_another_attnkit_version_warns_once_naming_it(tmp_path):
    config = make_config(tmp_path / "run", epochs=2, flip_beta=1.0)
    config.checkpoint_every_steps = 3
    crashing = CrashingBatches(*TRAIN, batch_size=32, shuffle=True, crash_at=5)
    with pytest.raises(Crash):
        trainer(config, train=crashing).fit()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same version: no warning
        trainer(config, resume=True).run.release()
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    info["versions"]["attnkit"] = "0.0.9"
    (tmp_path / "run" / "run.json").write_text(json.dumps(info))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        for _ in range(2):
            trainer(config, resume=True).run.release()
    (warning,) = [w for w in caught if "attnkit 0.0.9" in str(w.message)]
    assert "this is attnkit" in str(warning.message) and "distill.flip_beta" in str(warning.message)


def test_a_one_tree_folder_run_of_another_version_warns_that_its_test_images_may_differ(tmp_path):
    from types import SimpleNamespace

    from attnkit.engine.resume import warn_other_version

    (tmp_path / "images" / "train" / "a").mkdir(parents=True)
    config = RunConfig()
    config.data.name, config.data.root = "folder", str(tmp_path / "images")
    old_run = SimpleNamespace(path=tmp_path / "run", info=lambda: SimpleNamespace(versions={"attnkit": "0.1.0"}))
    with pytest.warns(UserWarning, match=r"attnkit 0\.1\.0.*data\.val_fraction .*hash of its path"):
        warn_other_version(old_run, config)
    (tmp_path / "images" / "val" / "a").mkdir(parents=True)  # a val/ tree: the split is the folders', unchanged
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_other_version(SimpleNamespace(path=tmp_path / "other", info=old_run.info), config)
    (tmp_path / "images" / "val").rename(tmp_path / "images" / "test")  # train/ + test/: split folders as well
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_other_version(SimpleNamespace(path=tmp_path / "third", info=old_run.info), config)
