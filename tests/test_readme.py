"""The README's Python example runs as written."""

import re
from pathlib import Path

README = (Path(__file__).parents[1] / "README.md").read_text()


def test_attention_transfer_example_runs():
    section = README[README.index("## Attention transfer from Python"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["maps"].shape == (8, 32, 32) and namespace["loss"].item() > 0


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
