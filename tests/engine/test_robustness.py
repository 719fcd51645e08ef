"""Diverged runs, torn metrics, YAML bombs and a really full disk: what a run leaves behind stays usable."""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import subprocess
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from cli_forks import Command, run_commands
from safetensors.torch import load_file
from torch import nn

from attnkit.cli import main
from attnkit.engine import ConfigError, Trainer, load_recipe
from attnkit.engine.checkpoint import write_yaml
from attnkit.engine.rundir import read_metrics

TINY = ["data.name=mnist5k", "data.train_limit=128", "data.test_limit=32", "data.batch_size=32", "model.name=wrn",
        "model.kwargs={depth: 10, width: 0.5}", "optim.epochs=2", "checkpoint_every_steps=2", "progress=false",
        "channels_last=false", "tensorboard=false"]


def _strict_json(text: str):
    def refuse(constant: str):
        raise AssertionError(f"{constant} in JSON output")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def small_disk(tmp_path_factory):
    """A 256 KiB tmpfs, unmounted afterwards; None where it cannot be mounted (needs root)."""
    disk = tmp_path_factory.mktemp("disk")
    if os.geteuid() != 0:
        yield None
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        yield None
        return
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, small_disk):
    """The command-line runs of this module, made at once (each a fresh process): name -> (out, results)."""
    base = tmp_path_factory.mktemp("runs")
    jobs = {
        "diverged": [["train", *TINY, "optim.lr=1e6", "checkpoint_every_steps=1"], ["eval", "OUT", "--weights", "last"]],
        "finished": [["train", *TINY]],
    }
    if small_disk is not None:
        jobs["full disk"] = [["train", *TINY]]
    outs = {name: (small_disk if name == "full disk" else base) / name.replace(" ", "_") for name in jobs}
    commands = [[Command([str(outs[name]) if a == "OUT" else a for a in args]
                         + ([f"out={outs[name]}"] if args[0] == "train" else [])) for args in job]
                for name, job in jobs.items()]
    return {name: (outs[name], results) for name, results in zip(jobs, run_commands(commands))}


def test_a_diverged_run_never_writes_a_non_finite_checkpoint(runs):
    out, (train, last) = runs["diverged"]
    lines = train.stderr.strip().splitlines()
    assert train.returncode == 2 and len(lines) == 1 and "weights became NaN or inf" in lines[0], train.stderr[-2000:]
    files = sorted(out.glob("*.safetensors"))
    assert files  # the checkpoints written before the weights (here: batch-norm statistics) overflowed
    for file in files:
        assert all(bool(torch.isfinite(t).all()) for t in load_file(file).values()), file
    assert last.returncode == 0, last.stderr[-2000:]
    result = _strict_json(last.stdout)  # valid JSON: no NaN or Infinity tokens
    assert result["loss"] is None and "not finite" in result["note"] or math.isfinite(result["loss"])


def test_buffers_are_checked_before_a_checkpoint():
    """Parameters finite, a batch-norm running variance inf: no checkpoint (the issue's diverged run)."""
    trainer = Trainer.__new__(Trainer)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    trainer.run = SimpleNamespace(model=model, objective=nn.Module(), run_dir=SimpleNamespace(path="runs/x"))
    trainer._check_weights_finite(0, 3)
    model[1].running_var[1] = math.inf
    with pytest.raises(FloatingPointError, match="weights became NaN or inf in epoch 1 by step 3"):
        trainer._check_weights_finite(0, 3)


def test_a_torn_last_metrics_line_breaks_nothing(runs, tmp_path, capsys):
    out, (train,) = runs["finished"]
    assert train.returncode == 0, train.stderr[-2000:]
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 3, "lr": 0.1, "train": {"lo')  # killed (or out of space) while appending
    assert [r["epoch"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2]
    main(["report", str(out), "--no-maps", "--out", str(tmp_path / "report")])
    main(["eval", str(out)])
    assert _strict_json(capsys.readouterr().out.split("\n", 1)[1])["count"] == 1000
    assert (tmp_path / "report" / "index.html").is_file()


def test_metrics_lines_that_are_not_records_name_the_file_and_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 1}\n{"epoch": 2, "lo\n{"epoch": 3}\n')
    with pytest.raises(ValueError, match=f"{path} line 2 is not a JSON record .*delete that line"):
        read_metrics(path)
    path.write_text('{"epoch": 1}\n[1, 2]\n')
    with pytest.raises(ValueError, match="line 2 is not an epoch record"):
        read_metrics(path)


def test_yaml_aliases_are_refused_at_once_and_never_written(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    levels = ['l0: &l0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    levels += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 30)]  # 10^30 strings
    bomb.write_text("\n".join(levels) + "\nmodel: {kwargs: {x: *l29}}\n")
    with pytest.raises(ConfigError, match=r"bomb.yaml is not valid YAML: found the alias \*l0; aliases are refused"):
        load_recipe(bomb)
    anchored = tmp_path / "anchored.yaml"
    anchored.write_text("model: &m {name: wrn_16_1}\n")  # an anchor alone repeats nothing
    assert load_recipe(anchored) == {"model": {"name": "wrn_16_1"}}
    shared = [60, 120]
    write_yaml(tmp_path / "config.yaml", {"optim": {"milestones": shared}, "other": {"milestones": shared}})
    assert "*" not in (tmp_path / "config.yaml").read_text()  # PyYAML would write an alias for the shared list
    assert load_recipe(tmp_path / "config.yaml")["other"] == {"milestones": [60, 120]}
    with pytest.raises(ConfigError, match="python/name:os.system"):
        load_recipe(_write(tmp_path / "tag.yaml", "x: !!python/name:os.system\n"))


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# -- a really full disk: a small tmpfs (needs root; skipped otherwise) ----------------------------------------


def test_a_full_disk_during_a_run_is_one_line_and_the_run_resumes_elsewhere(runs, tmp_path):
    if "full disk" not in runs:
        pytest.skip("mounting a tmpfs needs root")
    out, (train,) = runs["full disk"]
    lines = train.stderr.strip().splitlines()
    assert train.returncode == 2 and len(lines) == 1, train.stderr[-2000:]
    assert lines[0].startswith(f"attnkit train: error: No space left on device ({out}/") and "free some space" in lines[0]
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]  # the failed write's temporary file is gone
    moved = tmp_path / "moved"
    shutil.copytree(out, moved)  # the user makes room: here, by moving the run to a bigger disk
    main(["resume", str(moved)])
    assert [r["epoch"] for r in read_metrics(moved / "metrics.jsonl")] == [1, 2]


def test_a_full_disk_during_extraction_says_the_disk_is_full(small_disk, tmp_path):
    from attnkit.data._download import safe_extract_tar

    if small_disk is None:
        pytest.skip("mounting a tmpfs needs root")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        payload = os.urandom(1 << 20)  # 1 MiB that does not compress: four times the disk
        info = tarfile.TarInfo("data/big.bin")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    archive = tmp_path / "big.tar.gz"
    archive.write_bytes(buffer.getvalue())
    with pytest.raises(OSError, match="No space left on device while extracting big.tar.gz") as error:
        safe_extract_tar(archive, small_disk / "data")
    assert "damaged" not in str(error.value)
    assert os.listdir(small_disk / "data") == []  # the staging folder is gone too


def test_temporaries_of_dead_processes_are_removed_by_the_next_write(tmp_path):
    from attnkit._files import remove_stale_temporaries, write_bytes

    dead = subprocess.Popen(["true"])
    dead.wait()  # its PID no longer runs
    stale, live = tmp_path / f".model.safetensors.tmp-{dead.pid}", tmp_path / f".other.tmp-{os.getpid()}"
    stale.write_bytes(b"half a file")
    live.write_bytes(b"being written")
    write_bytes(tmp_path / "model.safetensors", b"whole")
    assert not stale.exists() and live.exists()  # the next write of the name removes the dead writer's file
    (tmp_path / f".run.json.tmp-{dead.pid}").write_text("{")
    assert remove_stale_temporaries(tmp_path) == [tmp_path / f".run.json.tmp-{dead.pid}"]  # what a run start does
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name, "model.safetensors"]
