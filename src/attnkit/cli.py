"""The ``attnkit`` command: turns arguments into calls of the library; no logic of its own."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _bench(args: argparse.Namespace) -> None:
    from .bench import SUITES, run_suite

    names = list(SUITES) if args.suite == "all" else [args.suite]
    for name in names:
        json_path = args.json if len(names) == 1 or not args.json else args.json.replace(".json", f"-{name}.json")
        run_suite(name, json_path=json_path, device=args.device, repeats=args.repeats)


def _demo(args: argparse.Namespace) -> None:
    # Until the end-to-end demo lands: a short real run of the core (fused vs eager attention maps).
    from .bench import run_suite

    run_suite("core", device="cpu", repeats=3)


def _models(args: argparse.Namespace) -> None:
    from .models import markdown_table, summarize_models

    summaries = summarize_models(args.pattern, macs=args.macs)
    if args.markdown:
        print(markdown_table(summaries))
        return
    print(f"{'model':<22} {'classes':>7} {'params':>12}" + (f" {'MACs':>15}" if args.macs else "") + " input")
    for s in summaries:
        macs = f" {s.macs:>15,}" if args.macs else ""
        print(f"{s.name:<22} {s.num_classes:>7} {s.parameters:>12,}{macs} {'x'.join(map(str, s.input_size))}")


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

    models = commands.add_parser(
        "models", help="list the registered models with their parameter counts (and MACs with --macs)"
    )
    models.add_argument("pattern", nargs="?", help="shell-style name pattern, e.g. 'wrn_*' (default: every model)")
    models.add_argument("--macs", action="store_true", help="also count MACs at the native input size (slower)")
    models.add_argument("--markdown", action="store_true", help="print the README's table, with paper errors")
    models.set_defaults(func=_models)

    demo = commands.add_parser("demo", help="the main job: a short real run that shows what attnkit does")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (KeyError, ValueError, FileNotFoundError) as err:
        message = err.args[0] if err.args else str(err)
        print(f"attnkit {args.command}: error: {message}", file=sys.stderr)
        sys.exit(2)
