"""attnkit.explain depends on functional, features and models only (never on the engine, data or report)."""

import subprocess
import sys


def test_importing_explain_imports_neither_engine_nor_data_nor_report():
    code = (
        "import sys, attnkit.explain, attnkit.explain.maps, attnkit.explain.metrics, attnkit.explain.render\n"
        "loaded = sorted({m.split('.')[1] for m in sys.modules if m.startswith('attnkit.')})\n"
        "print(' '.join(loaded))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(done.stdout.split())
    assert "explain" in loaded and not loaded & {"engine", "data", "report", "demo", "bench", "cli"}, loaded
