"""A run killed (or out of disk space) at every one of its write points resumes to bit-identical final weights.

The write points of a run, in the order a run meets them: config.yaml, run.json, a checkpoint (weights, state,
then the pointer that makes it current, then the removal of the previous pair), the metrics line of an epoch,
its TensorBoard scalars, best.safetensors, model.safetensors, summary.json -- and, when a run resumes, the
rewrite of metrics.jsonl. Each case runs the command in a fresh process with one fault injected there
(tests/write_faults.py; every command in a fresh process, tests/cli_forks.py), then continues the run with
``attnkit resume`` and compares the final weights with those of an uninterrupted run, bit for bit. No temporary
file may be left behind.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import torch
from cli_forks import Command, run_commands
from safetensors.torch import load_file

# 4 steps an epoch, 2 epochs, a checkpoint every 2 steps: checkpoints at (0, 2), (1, 0), (1, 2), (2, 0).
ARGS = ["data.name=mnist5k", "data.train_limit=128", "data.test_limit=32", "data.batch_size=32", "model.name=wrn",
        "model.kwargs={depth: 10, width: 0.5, dropout: 0.1}", "optim.epochs=2", "optim.lr=0.05", "optim.milestones=[1]",
        "checkpoint_every_steps=2", "progress=false", "channels_last=false", "tensorboard=false"]

# (write point, fault): kills (SIGKILL) and full disks (ENOSPC from fsync, as a full disk reports it).
KILLS = [
    ("config.yaml", "before:config.yaml:1"),
    ("run.json", "before:run.json:1"),
    ("checkpoint weights", "before:ckpt-*.safetensors:3"),
    ("checkpoint state", "before:ckpt-*.pt:3"),
    ("checkpoint pointer", "before:checkpoint.json:3"),
    ("checkpoint pointer written, old pair not yet removed", "after:checkpoint.json:2"),
    ("removal of the old checkpoint pair", "unlink:ckpt-*:1"),
    ("metrics line, torn", "torn:metrics:2"),
    ("metrics line, written", "appended:metrics:1"),
    ("tensorboard scalars", "tensorboard:scalar:4"),
    ("best weights", "before:best.safetensors:1"),
    ("final weights", "before:model.safetensors:1"),
    ("final weights written, summary not yet", "after:model.safetensors:1"),
    ("summary", "before:summary.json:1"),
    ("metrics rewrite of a resuming run", "before:metrics.jsonl:1"),  # after a first kill at the checkpoint state
]
FULL_DISKS = [
    ("run.json, disk full", "enospc:.run.json.tmp-*:1"),
    ("checkpoint state, disk full", "enospc:.ckpt-*.pt.tmp-*:2"),
    ("metrics line, disk full", "enospc:metrics.jsonl:1"),
    ("final weights, disk full", "enospc:.model.safetensors.tmp-*:1"),
]


def job(name: str, fault: str, out: Path) -> list[Command]:
    """The faulty command(s) of a case, then what a user does next: resume (or, with no config.yaml, train)."""
    train = ["train", *ARGS, f"out={out}"]
    if name == "tensorboard scalars":
        train.append("tensorboard=true")  # resume-neutral: it cannot change the weights
    if name == "metrics rewrite of a resuming run":
        return [Command(train, "before:ckpt-*.pt:3"), Command(["resume", out], fault), Command(["resume", out])]
    if name == "config.yaml":
        return [Command(train, fault), Command(["resume", out]), Command(train)]
    return [Command(train, fault), Command(["resume", out])]


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.rglob(".*") if ".tmp-" in p.name)


def test_a_fault_at_every_write_point_resumes_to_identical_weights(tmp_path):
    cases = KILLS + FULL_DISKS
    outs = [tmp_path / f"case{i}" for i in range(len(cases))]
    reference = tmp_path / "reference"
    results = run_commands([[Command(["train", *ARGS, f"out={reference}"])]]
                           + [job(name, fault, out) for (name, fault), out in zip(cases, outs)])
    assert results[0][0].returncode == 0, results[0][0].stderr[-2000:]
    expected = load_file(reference / "model.safetensors")
    identical = []
    for (name, fault), out, steps in zip(cases, outs, results[1:]):
        *faulty, last = steps
        for result in faulty:
            if fault.startswith("enospc"):  # one line naming the file, exit 2; the run can go on
                lines = result.stderr.strip().splitlines()
                assert result.returncode == 2 and len(lines) == 1, (name, result.stderr[-2000:])
                assert "No space left on device (" in lines[0] and str(out) in lines[0], lines[0]
            elif name == "config.yaml" and result is faulty[-1]:  # nothing started: resume says so, train starts it
                assert result.returncode == 2 and "start it again with its train command" in result.stderr
            else:
                assert result.returncode == -signal.SIGKILL, (name, result.returncode, result.stderr[-2000:])
        assert last.returncode == 0, (name, last.stderr[-2000:])
        weights = load_file(out / "model.safetensors")
        assert weights.keys() == expected.keys(), name
        assert all(torch.equal(weights[k], expected[k]) for k in expected), f"{name}: weights differ"
        assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2], name
        assert json.loads((out / "summary.json").read_text())["last"]["epoch"] == 2, name
        assert leftovers(out) == [], (name, leftovers(out))
        if name == "metrics line, torn":
            assert "dropped the incomplete last line" in last.stdout
        if name == "run.json":  # stopped before its first checkpoint: resume starts it again
            assert "starting it from the beginning" in last.stdout
        identical.append(name)
    print(f"\n{len(identical)}/{len(cases)} write points: resume identical")
    assert len(identical) == len(cases)


def test_a_run_with_scheduled_loss_weights_killed_mid_epoch_resumes_to_the_same_weights(tmp_path):
    """The flip term's weight warms up and decays linearly step by step; killed (SIGKILL) right after the
    checkpoint in the middle of epoch 2 (step 2 of 4), the resumed run continues the schedule where it was: same weights, same terms."""
    scheduled = [*ARGS, "distill.flip_beta=0.5", "distill.flip_schedule={kind: linear, warmup_epochs: 0.5}"]
    runs = {name: tmp_path / name for name in ("reference", "killed")}
    reference, killed = run_commands([
        [Command(["train", *scheduled, f"out={runs['reference']}"])],
        [Command(["train", *scheduled, f"out={runs['killed']}"], "after:checkpoint.json:3"),
         Command(["resume", runs["killed"]])],
    ])
    assert reference[0].returncode == 0, reference[0].stderr[-2000:]
    assert killed[0].returncode == -signal.SIGKILL, killed[0].stderr[-2000:]
    assert killed[1].returncode == 0 and "at epoch 2, step 2" in killed[1].stdout, killed[1].stderr[-2000:]
    expected, weights = (load_file(runs[name] / "model.safetensors") for name in ("reference", "killed"))
    assert weights.keys() == expected.keys() and all(torch.equal(weights[k], expected[k]) for k in expected)
    records = {name: [json.loads(line)["train"] for line in (out / "metrics.jsonl").read_text().splitlines()]
               for name, out in runs.items()}
    assert [r["flip"] for r in records["killed"]] == [r["flip"] for r in records["reference"]]
    assert all(r["flip"] > 0 for r in records["reference"])
