"""The README's examples run as written: the Python example, the recipe listing, the recipes it runs by name and
the recipe of one's own."""

import os
import re
import subprocess
import sys
from pathlib import Path

from attnkit.engine import config_from_dict
from attnkit.recipes import find_recipe, load_recipe

README = (Path(__file__).parents[1] / "README.md").read_text()


def test_attention_transfer_example_runs():
    section = README[README.index("## Attention transfer from Python"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["maps"].shape == (8, 32, 32) and namespace["loss"].item() > 0


def test_recipes_example_is_what_the_command_prints():
    example = re.search(r"```\n\$ attnkit recipes '(.*?)'\n(.*?)```", README, re.S)
    listed = subprocess.run([sys.executable, "-m", "attnkit", "recipes", example.group(1)], capture_output=True,
                            text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert listed.returncode == 0 and listed.stdout == example.group(2)


def test_every_recipe_the_readme_runs_by_name_exists():
    commands = re.findall(r"attnkit (?:train|distill) ([\w/]+)(?=[\s`])", README)
    names = [name for name in commands if "/" in name]  # the rest are files of one's own (my_recipe.yaml)
    assert len(names) >= 6
    for name in names:
        find_recipe(name)  # raises, naming the closest recipes, when a name is wrong


def test_own_recipe_example_starts_from_a_packaged_one(tmp_path):
    example = re.search(r"```yaml\n(base: .*?)```", README, re.S).group(1)
    (tmp_path / "my_recipe.yaml").write_text(example)
    config = config_from_dict(load_recipe(tmp_path / "my_recipe.yaml"))
    assert (config.optim.epochs, config.optim.milestones, config.distill.at_beta) == (100, [60, 120, 160], 1000.0)
    assert (config.distill.teacher, config.out) == ("runs/my_teacher", "runs/my_student")


def test_attention_maps_example_runs():
    import torch

    from attnkit.models import create_model

    section = README[README.index("## Attention maps"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    torch.manual_seed(0)
    model, student = create_model("wrn", depth=10, width=0.5).eval(), create_model("wrn", depth=10, width=0.5)
    namespace: dict = {"model": model, "student": student, "images": torch.randn(4, 3, 16, 16),
                       "labels": torch.tensor([0, 1, 2, 3]), "boxes": torch.tensor([[0, 0, 8, 8]] * 4)}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["maps"].shape == namespace["fused"].shape == (4, 16, 16)
    assert set(namespace["summary"]["scorecam"]) >= {"pointing_game", "deletion", "road_lerf", "randomization_spearman"}
    assert namespace["loss"].grad_fn is not None


def test_your_own_data_and_models_commands_run_as_written(tmp_path, monkeypatch):
    """The section's files (mypkg/nets.py, my_folder.yaml) and every command of it, in order, each a fresh process,
    on generated images (my_images/{train,val}/{cat,dog,owl}) and a torchvision ResNet-18 state dict (teacher.pth,
    from the look-alike in tests/fakes: torchvision cannot be imported here)."""
    import shlex

    import torch

    from attnkit.engine import RunDir
    from helpers import run_cli, write_image_folder

    fakes = Path(__file__).parent / "fakes"
    section = README[README.index("## Your own data and models"):README.index("## Models")]
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "__init__.py").write_text("")
    (tmp_path / "mypkg" / "nets.py").write_text(re.search(r"```python\n# mypkg/nets.py\n(.*?)```", section, re.S).group(1))
    (tmp_path / "my_folder.yaml").write_text(re.search(r"```yaml\n(# my_folder.yaml.*?)```", section, re.S).group(1))
    write_image_folder(tmp_path / "my_images", {"train": 12, "val": 4}, classes=("cat", "dog", "owl"))
    monkeypatch.syspath_prepend(str(fakes))
    import torchvision.models  # the look-alike

    torch.save(torchvision.models.resnet18(num_classes=3).state_dict(), tmp_path / "teacher.pth")
    commands = [line.split("  #")[0] for line in re.search(r"```bash\n(.*?)```", section, re.S).group(1).splitlines()]
    assert len(commands) == 8 and all(c.startswith(("attnkit ", "export ")) for c in commands)
    for command in commands:
        if command.startswith("export "):  # the shell's environment for the commands that follow
            monkeypatch.setenv(*command.split(" ", 1)[1].strip().split("=", 1))
            continue
        done = run_cli(*shlex.split(command)[1:], cwd=tmp_path, pythonpath=(fakes,))
        assert done.returncode == 0, f"{command}\n{done.stderr}"
    assert RunDir(tmp_path / "runs" / "folder_student").info().model == "mypkg.nets:tiny_net"
    assert (tmp_path / "maps" / "metrics.json").is_file() and (tmp_path / "report" / "index.html").is_file()
    assert RunDir(tmp_path / "runs" / "from_pth").summary()["teacher"] == str(tmp_path / "teacher.pth")

    python = re.search(r"```python\n(from torch import nn\nfrom attnkit.engine.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    namespace: dict = {}
    exec(compile(python, "README.md", "exec"), namespace)
    assert namespace["summary"]["model"] == "passed in (torch.nn.modules.container.Sequential)" and namespace["summary"]["last"]["count"] == 12
    for name in ("mypkg", "mypkg.nets", "torchvision", "torchvision.models"):
        sys.modules.pop(name, None)


def test_readme_links_resolve_and_the_license_matches_pyproject():
    """Every image and relative link of the README is a file of the repository (tracked, so a clone has it), and
    LICENSE is the license pyproject.toml declares."""
    root = Path(__file__).parents[1]
    tracked = set(subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True).stdout.split())
    targets = [t.split("#")[0] for t in re.findall(r"\]\(([^)\s]+)\)", README) if not re.match(r"[a-z]+:|#", t)]
    assert targets and all((root / t).exists() for t in targets), targets
    assert not tracked or all(t in tracked or (root / t).is_dir() for t in targets), targets  # in a git checkout
    license_name = re.search(r'^license = "([^"]+)"', (root / "pyproject.toml").read_text(), re.M).group(1)
    assert license_name == "MIT" and (root / "LICENSE").read_text().startswith("MIT License")
