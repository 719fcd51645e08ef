"""The ``attnkit`` command: turns arguments into calls of the library; no logic of its own."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path


def _bench(args: argparse.Namespace) -> None:
    from .bench import SUITES, run_suite

    names = list(SUITES) if args.suite == "all" else [args.suite]
    for name in names:
        json_path = args.json if len(names) == 1 or not args.json else args.json.replace(".json", f"-{name}.json")
        run_suite(name, json_path=json_path, device=args.device, repeats=args.repeats)


def _run_config(args: argparse.Namespace):
    """Recipe file (optional) + key=value overrides -> validated RunConfig."""
    from .engine import apply_overrides, config_from_dict, load_recipe

    items = list(args.items)
    recipe = load_recipe(items.pop(0)) if items and "=" not in items[0] else {}
    return config_from_dict(apply_overrides(recipe, items))


def _train(args: argparse.Namespace) -> None:
    from .engine import ConfigError, train

    config = _run_config(args)
    if args.command == "train" and config.distill.needs_teacher:
        raise ConfigError("distill", "this recipe learns from a teacher: run it with `attnkit distill`")
    if args.command == "distill" and not (config.distill.needs_teacher or config.distill.flip_beta > 0):
        raise ConfigError("distill", "nothing to distil: set distill.teacher and at least one of at_beta, kd_alpha, "
                                     "fact_beta, grad_at_beta (e.g. distill.at_beta=1000)")
    train(config, resume=args.resume)


def _eval(args: argparse.Namespace) -> None:
    from .engine.evaluation import evaluate_run

    result = evaluate_run(args.run, weights=args.weights, data=args.data, root=args.root, device=args.device,
                          batch_size=args.batch_size)
    print(json.dumps(result, indent=2))


def _demo(args: argparse.Namespace) -> None:
    # Until the end-to-end demo lands: a short real run of the core (fused vs eager attention maps).
    from .bench import run_suite

    run_suite("core", device="cpu", repeats=3)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="attnkit",
        description="Attention in convolutional networks: attention transfer, trainable attention, attention maps.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    bench = commands.add_parser("bench", help="run a benchmark suite and print measured ratios")
    from .bench import SUITES

    bench.add_argument(
        "suite",
        choices=[*SUITES, "all"],
        help="; ".join(f"{name}: {desc}" for name, (_, _, desc) in SUITES.items()) + "; all: every suite",
    )
    bench.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    bench.add_argument("--repeats", type=int, default=10, help="timed repeats per measurement (median is reported)")
    bench.add_argument("--json", metavar="PATH", help="also write the rows and hardware as JSON")
    bench.set_defaults(func=_bench)

    recipe_help = "a YAML recipe (see recipes/) and/or section.key=value overrides, e.g. optim.lr=0.05 data.name=cifar10"
    for name, summary in (("train", "train a model (teacher, baseline or trainable-attention model)"),
                          ("distill", "train a student from a frozen teacher with AT / KD / F-ActT / gradient AT")):
        sub = commands.add_parser(name, help=summary, description=summary + ". " + recipe_help + ".")
        sub.add_argument("items", nargs="*", metavar="RECIPE|KEY=VALUE", help=recipe_help)
        sub.add_argument("--resume", action="store_true", help="continue the run in `out` from its newest checkpoint")
        sub.set_defaults(func=_train)

    evaluate = commands.add_parser("eval", help="evaluate a run's weights on its (or another) test set")
    evaluate.add_argument("run", help="run directory or .safetensors file written by attnkit")
    evaluate.add_argument("--weights", choices=["final", "best", "last"], default="final", help="which weights of a run directory")
    evaluate.add_argument("--data", help="data set name (default: the run's own)")
    evaluate.add_argument("--root", help="data directory (default: the run's, else $ATTNKIT_DATA or ~/.cache/attnkit/data)")
    evaluate.add_argument("--device", default="auto", help="auto | cpu | cuda")
    evaluate.add_argument("--batch-size", type=int, default=512)
    evaluate.set_defaults(func=_eval)

    demo = commands.add_parser("demo", help="the main job: a short real run that shows what attnkit does")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (KeyError, ValueError, FileNotFoundError, FloatingPointError) as err:
        # Expected failures (bad recipe, missing file, diverged run) get one line, not a traceback.
        message = err.args[0] if err.args else str(err)
        print(f"attnkit {args.command}: error: {message}", file=sys.stderr)
        sys.exit(2)
