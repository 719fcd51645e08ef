"""The package as a user installs it: ``python -m build`` makes an sdist and a wheel, and the wheel, installed into
a fresh virtual environment that cannot see this source tree, answers ``--version``, lists models and recipes,
trains on the embedded data and runs packaged recipes by name (also as the ``base:`` of a recipe of one's own).

The fresh environment gets only the wheel (``pip install --no-deps --no-index``); torch and the other
dependencies come from this environment through a ``.pth`` file instead of being downloaded again. A ``.pth``
line adds a directory to ``sys.path`` without running the ``.pth`` files inside it, so this environment's
editable install of attnkit (a ``.pth`` import hook onto ``src/``) stays invisible there.
"""

import json
import os
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest
import yaml

import attnkit
from attnkit.recipes import recipe_names

ROOT = Path(__file__).resolve().parents[1]
WHEEL = f"attnkit-{attnkit.__version__}-py3-none-any.whl"
SDIST = f"attnkit-{attnkit.__version__}.tar.gz"
# One epoch of a WRN-10-0.5 on 256 of the embedded mnist5k digits, one thread: seconds.
TINY = ["data.name=mnist5k", "data.download=false", "data.train_limit=256", "data.test_limit=128",
        "data.batch_size=64", "model.name=wrn", "model.kwargs={depth: 10, width: 0.5}", "optim.epochs=1",
        "progress=false", "tensorboard=false", "channels_last=false"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """sdist and wheel of this tree; the wheel is built from the unpacked sdist, which checks the sdist too."""
    out = tmp_path_factory.mktemp("dist")
    # No isolated build environment: setuptools is installed here already (dev extra), nothing is downloaded.
    result = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out


def test_build_makes_an_sdist_and_a_wheel_that_carries_the_recipes(dist):
    assert sorted(p.name for p in dist.iterdir()) == sorted([SDIST, WHEEL])
    with zipfile.ZipFile(dist / WHEEL) as wheel:
        files = set(wheel.namelist())
    assert {f"attnkit/recipes/{name}.yaml" for name in recipe_names(schedules=True)} <= files
    assert "attnkit/recipes/__init__.py" in files and "attnkit/cli.py" in files
    assert not any(name.startswith(("tests/", "src/")) for name in files)
    with tarfile.open(dist / SDIST) as sdist:
        members = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    assert {"tests/test_packaging.py", "tests/engine/test_trainer.py", "docs/papers.md", "constraints.txt",
            "src/attnkit/recipes/cifar10/wrn_16_2.yaml"} <= members
    sizes = {name: (dist / name).stat().st_size for name in (WHEEL, SDIST)}
    print(f"wheel {sizes[WHEEL] / 1024:.0f} KiB, sdist {sizes[SDIST] / 1024:.0f} KiB")
    assert sizes[WHEEL] < 1024 * 1024  # code and YAML only: a megabyte would mean something got packed by mistake


@pytest.fixture(scope="module")
def fresh(dist, tmp_path_factory):
    """Run commands in a fresh virtual environment holding only the wheel, from a directory outside the tree."""
    home = tmp_path_factory.mktemp("fresh")
    venv = home / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    ours = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))  # torch, numpy, ...
    (Path(site) / "attnkit_test_dependencies.pth").write_text("".join(f"{path}\n" for path in ours))
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                              "--no-index", "--quiet", str(dist / WHEEL)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1", ATTNKIT_DATA=str(home / "data"))
    work = home / "work"
    work.mkdir()

    def run(*args: str) -> str:
        result = subprocess.run([str(venv / "bin" / args[0]), *args[1:]], cwd=work, env=env, capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, f"{args}: {result.stderr[-3000:]}"
        return result.stdout

    run.venv, run.work = venv, work
    return run


def test_the_fresh_environment_imports_attnkit_from_the_wheel(fresh):
    location = Path(fresh("python", "-c", "import attnkit; print(attnkit.__file__)").strip())
    assert location.is_relative_to(fresh.venv) and not location.is_relative_to(ROOT)
    recipes = fresh("python", "-c", "from attnkit.recipes import find_recipe; print(find_recipe('cifar10/wrn_16_2'))")
    assert Path(recipes.strip()).is_relative_to(fresh.venv)  # package data, not the tree's src/


def test_the_installed_cli_runs_version_models_recipes_and_trainings(fresh):
    assert fresh("attnkit", "--version") == f"attnkit {attnkit.__version__}\n"
    models = {line.split()[0]: line.split()[2] for line in fresh("attnkit", "models").splitlines()[1:]}
    assert models["wrn_16_1"] == "175,066" and len(models) >= 20
    listed = fresh("attnkit", "recipes", "cifar10/wrn_16_1*").splitlines()[1:]
    assert len(listed) == 9 and "test error 8.77%" in listed[0]

    # A packaged recipe by name, shrunk to seconds by overrides: the teacher, one epoch on the embedded data.
    fresh("attnkit", "train", "cifar10/wrn_16_2", *TINY, "out=teacher")
    saved = yaml.safe_load((fresh.work / "teacher" / "config.yaml").read_text())
    assert saved["optim"]["milestones"] == [60, 120, 160] and saved["model"]["name"] == "wrn"  # recipe + overrides
    # A recipe file of one's own starting from a packaged one by name, distilled from that teacher.
    (fresh.work / "mine.yaml").write_text("base: cifar10/wrn_16_1_from_wrn_16_2_at_kd\n"
                                          "distill: {teacher: teacher, teacher_model: wrn}\nout: student\n")
    fresh("attnkit", "distill", "mine.yaml", *TINY)
    record = json.loads((fresh.work / "student" / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["epoch"] == 1 and {"ce", "at", "kd"} <= set(record["train"])
    recorded_teacher = json.loads((fresh.work / "student" / "summary.json").read_text())["teacher"]
    assert recorded_teacher == str((fresh.work / "teacher").resolve())  # recorded absolute, so the run can move
