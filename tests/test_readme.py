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
