"""Benchmarks that print ratios measured in one run (never timed tests).

``attnkit bench SUITE`` or ``python -m attnkit.bench SUITE``; ``--json PATH`` writes the rows.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from collections.abc import Callable, Sequence

import torch

from . import core, distill, explain, loader

# suite name -> (run function, table columns, one-line description)
SUITES: dict[str, tuple[Callable[..., list[dict]], list[tuple[str, str, str]], str]] = {
    "core": (core.run, core.COLUMNS, "fused attention map vs the eager formula, forward+backward"),
    "distill": (distill.run, distill.COLUMNS, "WRN-16-2 -> WRN-16-1 AT+KD training step vs the official-code-style step"),
    "gradat": (distill.run_gradat, distill.GRADAT_COLUMNS, "gradient-based AT step vs its necessary parts"),
    "loader": (loader.run, loader.COLUMNS, "DeviceLoader vs a per-sample DataLoader pipeline, CIFAR-shaped, images/s"),
    "explain": (explain.run, explain.COLUMNS, "attention-map methods, ms/image on WRN-16-2 at 32x32, vs captum and the K-forward floor"),
}


def hardware() -> dict:
    """What the figures were measured on."""
    from ..engine.runtime import cpu_model

    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def format_table(rows: Sequence[dict], columns: Sequence[tuple[str, str, str | Callable[[dict], str]]]) -> str:
    """Rows as an aligned text table: each column's format string applied to its key's value, or its function
    to the whole row (None shows as 'n/a')."""
    header = [title for _, title, _ in columns]
    body = [[("n/a" if row.get(key) is None else fmt(row) if callable(fmt) else fmt.format(row[key]))
             for key, _, fmt in columns] for row in rows]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)) for r in [header, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``attnkit bench`` and ``python -m attnkit.bench``."""
    parser.add_argument(
        "suite",
        choices=[*SUITES, "all"],
        help="; ".join(f"{name}: {desc}" for name, (_, _, desc) in SUITES.items()) + "; all: every suite",
    )
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--repeats", type=int, default=10,
                        help="timed repeats per measurement (median is reported; explain: rounds of the fast methods)")
    parser.add_argument("--json", metavar="PATH", help="also write the rows and hardware as JSON")


def run_suites(args: argparse.Namespace) -> None:
    """Run the suite(s) named by parsed :func:`add_arguments` arguments (``all``: every suite, one JSON each)."""
    names = list(SUITES) if args.suite == "all" else [args.suite]
    for name in names:
        json_path = args.json if len(names) == 1 or not args.json else args.json.replace(".json", f"-{name}.json")
        run_suite(name, json_path=json_path, device=args.device, repeats=args.repeats)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m attnkit.bench``."""
    parser = argparse.ArgumentParser(prog="python -m attnkit.bench", description=__doc__.splitlines()[0])
    add_arguments(parser)
    run_suites(parser.parse_args(argv))


def run_suite(name: str, json_path: str | None = None, **options) -> list[dict]:
    """Run one suite, print its table, optionally write JSON; returns the rows."""
    if name not in SUITES:
        raise KeyError(f"unknown benchmark suite {name!r}; choose from {', '.join(SUITES)}")
    run, columns, description = SUITES[name]
    print(f"attnkit bench {name}: {description}")
    load = {"before": os.getloadavg()}  # 1, 5 and 15-minute load averages: how busy the machine was
    rows = run(**options)
    load["after"] = os.getloadavg()
    print(format_table(rows, columns))
    if json_path:
        with open(json_path, "w") as f:
            json.dump({"suite": name, "hardware": hardware(), "load_average": load, "options": options, "rows": rows},
                      f, indent=2)
        print(f"wrote {json_path}")
    return rows
