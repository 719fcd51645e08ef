"""The one error policy of the ``attnkit`` command, walked over a table of bad inputs.

Every user error -- a bad config value or recipe, a bad path, a damaged or hostile file, a YAML bomb -- must end
in exactly one line ``attnkit CMD: error: ...`` that names the key or the file, with exit status 2 and no
traceback. Each case runs the command in a fresh process (tests/cli_forks.py); most fail before any training.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import torch
from cli_forks import Command, run_commands
from PIL import Image
from safetensors.torch import load_file, save_file

from attnkit.cli import main

TINY = ["data.name=mnist5k", "data.train_limit=64", "data.test_limit=32", "data.batch_size=32", "model.name=wrn",
        "model.kwargs={depth: 10, width: 0.5}", "optim.epochs=1", "checkpoint_every_steps=1", "progress=false",
        "channels_last=false", "tensorboard=false"]
FOLDER = ["data.name=folder", "data.image_size=8", "data.batch_size=4", "model.name=wrn", "optim.epochs=1",
          "model.kwargs={depth: 10, width: 0.5}", "progress=false", "channels_last=false", "tensorboard=false"]


def bomb_png(path: Path, side: int = 40_000) -> None:
    """A PNG whose header announces side x side pixels (far above Pillow's limit); a few bytes on disk."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit grey
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
                     + chunk(b"IEND", b""))


class Payload:
    """Pickles to a call of os.system: what a hostile checkpoint holds."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def alias_bomb(levels: int = 12) -> str:
    lines = ['l0: &l0 ["boom", "boom", "boom", "boom", "boom", "boom", "boom", "boom", "boom", "boom"]']
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, levels)]
    return "\n".join(lines) + f"\nmodel: {{name: wrn, kwargs: {{x: *l{levels - 1}}}}}\n"


def copy_run(run: Path, to: Path, **replace: str | bytes) -> Path:
    """A copy of ``run`` with some of its files replaced (name -> new content; None removes the file)."""
    shutil.copytree(run, to)
    for name, content in replace.items():
        name = name.replace("__", ".")
        if content is None:
            (to / name).unlink()
        elif isinstance(content, bytes):
            (to / name).write_bytes(content)
        else:
            (to / name).write_text(content)
    return to


def image_folder(root: Path, bad: str | None = None) -> Path:
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (8, 8), (40 * i, 200 if label == "a" else 0, 90)).save(root / label / f"{i}.png")
    if bad == "corrupt":
        (root / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    elif bad == "bomb":
        bomb_png(root / "a" / "bomb.png")
    return root


def build_cases(t: Path, run: Path) -> list[tuple[str, list[str], list[str]]]:
    """(case, arguments, words the error line must hold: the key or file and what went wrong)."""
    (t / "bad.yaml").write_text("model: {name: wrn\n")
    marker = t / "pwned"
    (t / "tag.yaml").write_text(f'model: !!python/object/apply:os.system ["touch {marker}"]\n')
    (t / "bomb.yaml").write_text(alias_bomb())
    (t / "base5.yaml").write_text("base: 5\n")
    (t / "chain").mkdir()
    for i in range(1500):
        (t / "chain" / f"r{i}.yaml").write_text(f"base: r{i + 1}.yaml\n")
    (t / "chain" / "r1500.yaml").write_text("optim: {lr: 0.1}\n")
    (t / "cycle_a.yaml").write_text("base: cycle_b.yaml\n")
    (t / "cycle_b.yaml").write_text("base: cycle_a.yaml\n")
    (t / "list.yaml").write_text("- model\n- data\n")
    (t / "binary.yaml").write_bytes(b"\xff\xfe\x00model: \x80\x81")
    (t / "deep.yaml").write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
    (t / "afile").write_text("not a directory")
    (t / "garbage.safetensors").write_bytes(os.urandom(300))
    (t / "empty").mkdir()
    info = json.loads((run / "run.json").read_text())
    weights = load_file(run / "model.safetensors")
    save_file(weights, t / "kwargs.safetensors", {"attnkit": json.dumps({**info, "model_kwargs": {"depth": 10, "bogus": 1}})})
    save_file(weights, t / "model99.safetensors", {"attnkit": json.dumps({**info, "model": "wrn_99"})})
    save_file(weights, t / "metadata.safetensors", {"attnkit": "{not json"})
    save_file(weights, t / "size.safetensors", {"attnkit": json.dumps({**info, "input_size": [1, 28]})})
    pointer = json.loads((run / "checkpoint.json").read_text())
    hostile = copy_run(run, t / "hostile")
    with open(hostile / pointer["state"], "wb") as f:
        pickle.dump({"epoch": pointer["epoch"], "step": pointer["step"], "x": Payload(t / "pwned2")}, f, protocol=2)
    truncated = (run / "model.safetensors").read_bytes()
    metrics = (run / "metrics.jsonl").read_text()
    copies = {
        "truncated": copy_run(run, t / "truncated", model__safetensors=truncated[: len(truncated) // 2]),
        "runjson": copy_run(run, t / "runjson", run__json='{"dataset": "mnist5k", '),
        "classes": copy_run(run, t / "classes", run__json=json.dumps({**info, "num_classes": "ten"})),
        "infolist": copy_run(run, t / "infolist", run__json="[1, 2]"),
        "pointer": copy_run(run, t / "pointer", checkpoint__json="[1, 2]"),
        "nopointer": copy_run(run, t / "nopointer", checkpoint__json=None),
        "metrics": copy_run(run, t / "metrics", metrics__jsonl='{"epoch": 1, "lr\n' + metrics),
        "tagconfig": copy_run(run, t / "tagconfig", config__yaml=f"out: !!python/object/apply:os.system ['touch {marker}']\n"),
        "bombconfig": copy_run(run, t / "bombconfig", config__yaml=alias_bomb()),
        "noconfig": copy_run(run, t / "noconfig", config__yaml=None),
        "statemissing": copy_run(run, t / "statemissing", **{pointer["state"].replace(".", "__"): None}),
    }
    corrupt, bomb = image_folder(t / "corrupt", "corrupt"), image_folder(t / "bombfolder", "bomb")
    bomb_png(t / "bomb.png")
    c = copies
    return [
        ("recipe with a YAML syntax error", ["train", t / "bad.yaml"], ["bad.yaml", "not valid YAML", "line 2"]),
        ("!!python tag in a recipe", ["train", t / "tag.yaml"], ["tag.yaml", "could not determine a constructor"]),
        ("!!python tag in a run's config.yaml", ["resume", c["tagconfig"]], ["tagconfig/config.yaml", "constructor"]),
        ("alias bomb in a recipe", ["train", t / "bomb.yaml"], ["bomb.yaml", "alias"]),
        ("alias bomb in a run's config.yaml", ["resume", c["bombconfig"]], ["bombconfig/config.yaml", "alias"]),
        ("base: 5", ["train", t / "base5.yaml"], ["base", "base5.yaml"]),
        ("1500-deep base: chain", ["train", t / "chain" / "r0.yaml"], ["base", "more than 32"]),
        ("base: cycle", ["train", t / "cycle_a.yaml"], ["base", "cycle"]),
        ("recipe that is a list", ["train", t / "list.yaml"], ["list.yaml", "mapping"]),
        ("recipe that is not text", ["train", t / "binary.yaml"], ["binary.yaml", "UTF-8"]),
        ("recipe nested 5000 deep", ["train", t / "deep.yaml"], ["deep.yaml", "too deeply"]),
        ("no such recipe", ["train", t / "nosuch.yaml"], ["nosuch.yaml"]),
        ("device=tpu", ["train", "device=tpu"], ["device", "tpu"]),
        ("eval --device tpu", ["eval", run, "--device", "tpu"], ["device", "tpu"]),
        ("unknown key", ["train", "optim.lrr=0.1"], ["optim.lrr", "did you mean lr"]),
        ("infinite at_beta", ["distill", "distill.at_beta=.inf"], ["distill.at_beta", "finite"]),
        ("NaN kd_temperature", ["distill", "distill.kd_temperature=.nan"], ["distill.kd_temperature", "finite"]),
        ("infinite at_p", ["distill", "distill.at_p=.inf"], ["distill.at_p", "finite"]),
        ("NaN milestone", ["train", "optim.milestones=[.nan]"], ["optim.milestones[0]", "finite"]),
        ("ddp_timeout=0", ["train", "ddp_timeout=0"], ["ddp_timeout", "> 0"]),
        ("batch_size=0", ["train", "data.batch_size=0"], ["data.batch_size", ">= 1"]),
        ("unknown model", ["train", "model.name=wrn_99"], ["model.name", "wrn_99"]),
        ("unknown data set", ["train", "data.name=imagenet21k", f"out={t / 'r1'}"], ["data.name", "imagenet21k"]),
        ("image folder that is not there", ["train", *FOLDER, f"data.root={t / 'nofolder'}", f"out={t / 'r2'}"],
         ["data.root", "nofolder"]),
        ("corrupt image, 0 workers", ["train", *FOLDER, f"data.root={corrupt}", "data.workers=0", f"out={t / 'r3'}"],
         ["cannot decode image", "broken.png"]),
        ("corrupt image, 1 worker", ["train", *FOLDER, f"data.root={corrupt}", "data.workers=1", f"out={t / 'r4'}"],
         ["cannot decode image", "broken.png"]),
        ("decompression bomb in an image folder", ["train", *FOLDER, f"data.root={bomb}", "data.workers=1",
                                                   f"out={t / 'r5'}"], ["bomb.png", "exceeds limit"]),
        ("distill with no teacher on disk", ["distill", "distill.at_beta=1", f"distill.teacher={t / 'none'}"],
         ["distill.teacher", "none"]),
        ("teacher file of random bytes", ["distill", "distill.at_beta=1", f"distill.teacher={t / 'garbage.safetensors'}",
                                          *TINY, f"out={t / 'r6'}"], ["distill.teacher", "garbage.safetensors"]),
        ("distill with no term", ["distill"], ["distill", "nothing to distil"]),
        ("out is a file", ["train", *TINY, f"out={t / 'afile'}"], ["afile"]),
        ("out where nothing can be made", ["train", *TINY, "out=/proc/attnkit/run"], ["/proc/attnkit"]),
        ("eval of nothing", ["eval", t / "nothing"], ["nothing"]),
        ("eval of a folder that is no run", ["eval", t / "empty"], ["empty", "model.safetensors"]),
        ("eval of random bytes", ["eval", t / "garbage.safetensors"], ["garbage.safetensors"]),
        ("eval of a truncated weights file", ["eval", c["truncated"]], ["truncated/model.safetensors", "truncated"]),
        ("unknown model_kwargs in weights metadata", ["eval", t / "kwargs.safetensors"],
         ["kwargs.safetensors", "model_kwargs", "bogus"]),
        ("unknown model in weights metadata", ["eval", t / "model99.safetensors"], ["model99.safetensors", "wrn_99"]),
        ("weights metadata that is not JSON", ["eval", t / "metadata.safetensors"], ["metadata.safetensors", "JSON"]),
        ("run.json that is not JSON", ["eval", c["runjson"]], ["runjson/run.json", "not valid JSON"]),
        ("eval --weights last without a checkpoint", ["eval", c["nopointer"], "--weights", "last"],
         ["nopointer", "no training checkpoint"]),
        ("rejected pickle in a checkpoint", ["resume", hostile], [pointer["state"], "unsupported GLOBAL posix.system", "never pickled code"]),
        ("checkpoint.json that names nothing", ["resume", c["pointer"]], ["pointer/checkpoint.json"]),
        ("checkpoint state file missing", ["resume", c["statemissing"]], [pointer["state"], "missing"]),
        ("metrics line broken in the middle", ["resume", c["metrics"]], ["metrics/metrics.jsonl line 1"]),
        ("resume of a run that never started", ["resume", c["noconfig"]], ["noconfig", "config.yaml"]),
        ("resume of nothing", ["resume", t / "nothing"], ["no run directory", "nothing"]),
        ("resume that changes the run", ["resume", run, "optim.lr=0.5"], ["optim.lr", f"attnkit resume {run}"]),
        ("report of a run with a broken metrics line", ["report", c["metrics"], "--no-maps", "--out", t / "rep"],
         ["metrics.jsonl line 1"]),
        ("maps of a decompression bomb", ["maps", "--checkpoint", run, "--images", t / "bomb.png", "--out", t / "m2"],
         ["bomb.png", "decompression bomb"]),
        ("maps of a file that is no image", ["maps", "--checkpoint", run, "--images", t / "afile", "--out", t / "m1"],
         ["afile"]),
        ("run.json with a key of the wrong type", ["eval", c["classes"]], ["classes/run.json", "'num_classes'", "'ten'"]),
        ("run.json that is a list", ["eval", c["infolist"]], ["infolist/run.json", "JSON object"]),
        ("weights metadata with a key of the wrong type", ["eval", t / "size.safetensors"],
         ["size.safetensors", "'input_size'", "[channels, height, width]"]),
        ("workers=-1", ["train", "data.workers=-1"], ["data.workers", ">= 0"]),
        ("huge seed", ["train", "seed=99999999999999999999"], ["seed", "2**32"]),
        ("negative seed", ["train", "seed=-1"], ["seed", "got -1"]),
        ("data.root that is a file (folder)", ["train", *FOLDER, f"data.root={t / 'afile'}", f"out={t / 'r7'}"],
         ["data.root", "afile", "is a file"]),
        ("data.root that is a file (data set)", ["train", *TINY, f"data.root={t / 'afile'}", f"out={t / 'r8'}"],
         ["data.root", "afile", "is a file"]),
        ("device=meta", ["train", "device=meta", f"out={t / 'r9'}"], ["device", "meta", "device=cpu"]),
        ("eval --batch-size 0", ["eval", run, "--batch-size", "0"], ["--batch-size", ">= 1"]),
        ("no packaged recipe matches", ["recipes", "zzz*"], ["zzz*"]),
        ("missing argument", ["eval"], ["required", "run"]),
        ("unknown option", ["train", "--frobnicate"], ["unrecognized arguments", "--frobnicate"]),
    ]


def test_every_bad_input_is_one_line_naming_the_key_or_file(tmp_path):
    run = tmp_path / "run"
    main(["train", *TINY, f"out={run}"])  # here: in the suite, this process has read mnist5k already
    cases = build_cases(tmp_path, run)
    debug = [Command(["train", "device=tpu", "--debug"]), Command(["train", "device=tpu"], env={"ATTNKIT_DEBUG": "1"})]
    *results, debug_flag, debug_env = run_commands([[Command(args)] for _, args, _ in cases] + [[d] for d in debug])
    for (shown,) in (debug_flag, debug_env):  # --debug and ATTNKIT_DEBUG=1: the traceback of a user error too
        assert shown.returncode == 1 and "Traceback (most recent call last)" in shown.stderr
        assert "ConfigError: device: must be auto" in shown.stderr
    failures = []
    for (name, args, words), (result,) in zip(cases, results):
        command = next(str(a) for a in args if not str(a).startswith("-"))
        lines = result.stderr.strip().splitlines()
        ok = (result.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"attnkit {command}: error: ")
              and all(str(word) in lines[0] for word in words) and "Traceback" not in result.stderr)
        if not ok:
            failures.append(f"{name}: exit {result.returncode}, stderr:\n{result.stderr[-1500:]}")
    assert not failures, "\n\n".join(failures)
    assert len(cases) >= 30
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "pwned2").exists()  # no payload ran
    bombs = [r.seconds for (name, _, _), (r,) in zip(cases, results) if "bomb" in name and "alias" in name]
    assert len(bombs) == 2 and max(bombs) < 5  # refused at once, not expanded (12 levels: 10^12 nodes)
    print(f"\n{len(cases)} bad inputs, each one line naming the key or file, exit 2")


def test_python_m_attnkit_prints_the_same_line(tmp_path):
    """The table's forked commands behave as ``python -m attnkit`` does."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("ATTNKIT_DEBUG", None)
    command = [sys.executable, "-m", "attnkit", "train", "device=tpu", f"out={tmp_path / 'r'}"]
    plain = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert plain.returncode == 2 and plain.stderr == "attnkit train: error: device: must be auto, cpu, cuda, cuda:N or " \
                                                    "another torch device type, got 'tpu'\n"


def test_a_bug_prints_its_traceback_and_asks_for_a_report(monkeypatch, capsys):
    """An exception attnkit did not expect is not dressed up as a user error."""
    from attnkit import cli

    def broken(args):
        raise TypeError("unsupported operand type(s)")

    monkeypatch.setattr(cli, "_models", broken)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["models"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 1
    assert "Traceback (most recent call last)" in err and 'raise TypeError("unsupported operand type(s)")' in err
    assert err.strip().splitlines()[-1].startswith("attnkit models: internal error: TypeError: unsupported operand")
    assert "please report it" in err


def test_os_errors_print_their_message_and_file_never_a_bare_number():
    from attnkit.errors import user_message

    assert user_message(OSError(28, "No space left on device", "/runs/a/ckpt.pt")) == (
        "No space left on device (/runs/a/ckpt.pt); free some space, then run the command again")
    assert user_message(OSError(2)) == "No such file or directory"
    assert user_message(PermissionError(13, "Permission denied", "/data")).startswith("Permission denied (/data)")
    assert user_message(FileNotFoundError("no weights file at x")) == "no weights file at x"
    assert user_message(ValueError("two\nlines")) == "two lines"
    assert user_message(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")).endswith(
        "lower data.batch_size (or data.eval_batch_size / --batch-size)")
    assert user_message(RuntimeError("something broke")) is None and user_message(AttributeError("x")) is None
