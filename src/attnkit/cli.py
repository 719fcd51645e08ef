"""The ``attnkit`` command: turns arguments into calls of the library; no logic of its own."""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Sequence
from typing import NoReturn

from . import __version__
from .errors import BUG_EXIT, INTERRUPTED_EXIT, USER_ERROR_EXIT, debug_enabled, one_line, user_message


def _bench(args: argparse.Namespace) -> None:
    from .bench import run_suites

    run_suites(args)


def _recipe_and_overrides(items: Sequence[str]) -> tuple[dict | None, list[str]]:
    """(the recipe file's values or None, the key=value overrides)."""
    from .recipes import load_recipe

    items = list(items)
    return (load_recipe(items.pop(0)) if items and "=" not in items[0] else None), items


def _train(args: argparse.Namespace) -> None:
    from .engine import ConfigError, config_from_dict, train
    from .engine.terms import TERMS, plan_terms
    from .recipes import apply_overrides

    recipe, overrides = _recipe_and_overrides(args.items)
    if args.resume:  # the run's own config.yaml, wherever out= says the run directory now is
        out = apply_overrides(recipe or {}, overrides).get("out")
        if out is None:
            raise ConfigError("out", "--resume needs the run directory: out=DIR (or run `attnkit resume DIR`)")
        args.run_dir = str(out)
        train(_resume_config(str(out), recipe, overrides), resume=True)
        return
    config = config_from_dict(apply_overrides(recipe or {}, overrides))
    plan = plan_terms(config.distill)
    if args.command == "train" and plan.needs_teacher:
        raise ConfigError("distill", "this recipe learns from a teacher: run it with `attnkit distill`")
    if args.command == "distill" and not plan.terms:
        weights = ", ".join(f"distill.{key}" for term in TERMS.values() for key in term.weights)
        raise ConfigError("distill", f"nothing to distil: set distill.teacher and at least one of {weights} "
                                     "(e.g. distill.at_beta=1000)")
    args.run_dir = config.out  # an interruption points at it
    train(config)


def _resume_config(out: str, recipe: dict | None, overrides: Sequence[str]):
    """The saved config of run ``out`` (or ``recipe``), with ``overrides``; checked against config.yaml."""
    from .engine import RunDir, resume_config
    from .recipes import apply_overrides

    base = recipe if recipe is not None else RunDir(out).config_values()
    named = apply_overrides(recipe or {}, overrides)  # what the user typed names models; config.yaml does not
    return resume_config(out, apply_overrides(base, overrides), named)  # out: the directory as it is now


def _resume(args: argparse.Namespace) -> None:
    from .engine import train

    args.run_dir = args.run
    train(_resume_config(args.run, None, args.items), resume=True)


def _config(args: argparse.Namespace) -> None:
    from .engine import config_from_dict
    from .engine.config_doc import describe_config
    from .recipes import apply_overrides

    recipe, overrides = _recipe_and_overrides(args.items)
    config = config_from_dict(apply_overrides(recipe or {}, overrides))
    header = f"attnkit config {' '.join(args.items) or 'the defaults'}\n(a valid recipe: save it, run `attnkit train FILE`)"
    print(describe_config(config, header=header), end="")


def _eval(args: argparse.Namespace) -> None:
    from .engine.evaluation import evaluate_run

    result = evaluate_run(args.run, weights=args.weights, data=args.data, root=args.root, device=args.device,
                          batch_size=args.batch_size)
    print(json.dumps(result, indent=2, allow_nan=False))  # evaluate_run gives null for non-finite numbers


def _map_target(value: str) -> str | int:
    if value in ("label", "predicted"):
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be label, predicted or a class index, got {value!r}") from None


def _map_options(methods: list[str], args: argparse.Namespace) -> dict[str, dict]:
    """--layer, --aug-smooth, --eigen-smooth (the CAM family) and --option METHOD.KEY=VALUE, checked."""
    from .explain.options import method_options
    from .recipes import apply_overrides

    cam: dict = {}
    if args.layer:
        layers = [path.strip() for path in args.layer.split(",") if path.strip()]
        cam["layer"] = layers[0] if len(layers) == 1 else layers
    cam.update({key: True for key in ("aug_smooth", "eigen_smooth") if getattr(args, key)})
    for item in args.option:
        if "." not in item.split("=", 1)[0] or "=" not in item:
            raise ValueError(f"--option {item}: give METHOD.KEY=VALUE, e.g. scorecam.channel_batch_size=32")
    return method_options(methods, apply_overrides({}, args.option), cam=cam)


def _maps(args: argparse.Namespace) -> None:
    from .explain.maps import format_metrics
    from .report.maps import explain_runs

    methods = [name.strip() for name in args.method.split(",") if name.strip()]
    report = explain_runs(
        args.compare or [args.checkpoint], args.out, methods, images=args.images, data=args.data,
        count=args.num_images, root=args.root, labels=args.labels, weights=args.weights, device=args.device,
        target=args.target, sanity=not args.no_sanity, faithful=not args.no_faithfulness, max_rows=args.max_rows,
        batch_size=args.batch_size, method_options=_map_options(methods, args),
    )
    skipped: dict[tuple[str, str], list[str]] = {}  # (method, reason) -> models, so that each reason prints once
    for label, reasons in report.skipped.items():
        for method, reason in reasons.items():
            skipped.setdefault((method, reason), []).append(label)
    for (method, reason), labels in skipped.items():
        print(f"skipped {method} for {', '.join(labels)}: {reason}")
    print(format_metrics(report.metrics))
    print(f"wrote {len(report.paths())} figures and {report.metrics_path}")


def _demo(args: argparse.Namespace) -> None:
    from .demo import DemoConfig, plan_from_arguments, run_demo

    run_demo(plan_from_arguments(DemoConfig(), args))


def _study(args: argparse.Namespace) -> None:
    from .study import run_study, study_from_arguments

    run_study(study_from_arguments(args))


def _report(args: argparse.Namespace) -> None:
    from .report import write_report

    page = write_report(args.runs, args.out, methods=args.methods, images=args.images, maps=not args.no_maps,
                        device=args.device, root=args.root, faithful_images=args.faithful_images)
    print(f"report: {page}")


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


def _recipes(args: argparse.Namespace) -> None:
    from .engine.methods import term_labels
    from .recipes import list_recipes

    infos = list_recipes(args.pattern)
    if not infos:
        raise KeyError(f"no packaged recipe matches {args.pattern!r}; `attnkit recipes` lists them all")
    width = max(len(info.name) for info in infos)
    terms = {info.name: "+".join(term_labels(info.distill)) or "-" for info in infos}
    terms_width = max(6, *map(len, terms.values()))
    print(f"{'recipe':<{width}}  {'model':<17} {'data':<8} {'terms':<{terms_width}}  paper (source)")
    for info in infos:
        print(f"{info.name:<{width}}  {info.model:<17} {info.data:<8} {terms[info.name]:<{terms_width}}  {info.paper} ({info.source})")


DEBUG_HELP = "print the traceback of any error (also: ATTNKIT_DEBUG=1)"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="attnkit",
        description="Attention in convolutional networks: attention transfer, trainable attention, attention maps.",
    )
    parser.add_argument("--version", action="version", version=f"attnkit {__version__}")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)

    bench = commands.add_parser("bench", help="run a benchmark suite and print measured ratios")
    from .bench import add_arguments

    add_arguments(bench)
    bench.set_defaults(func=_bench)

    recipe_help = ("a recipe, packaged (a name such as cifar10/wrn_16_2; see `attnkit recipes`) or a YAML file, and/or "
                   "section.key=value overrides, e.g. optim.lr=0.05 data.name=cifar10")
    from .engine.terms import TERMS

    terms = ", ".join(f"{t.name} ({t.weight})" for t in TERMS.values())
    for name, summary, detail in (
            ("train", "train a model (teacher, baseline or trainable-attention model)", ""),
            ("distill", "train a student from a frozen teacher with distillation loss terms",
             f"; each term is on when its distill.* weight is > 0: {terms}")):
        sub = commands.add_parser(name, help=summary, description=summary + detail + ". " + recipe_help + ".")
        sub.add_argument("items", nargs="*", metavar="RECIPE|KEY=VALUE", help=recipe_help)
        sub.add_argument("--resume", action="store_true",
                         help="continue the run in out=DIR from its newest checkpoint, with its own config.yaml")
        sub.set_defaults(func=_train)

    resume = commands.add_parser(
        "resume", help="continue a run from its newest checkpoint, with its own config.yaml",
        description="Continue the run in RUN_DIR (wherever it is now; a copied or moved run continues there) from its "
                    "newest checkpoint, with the config it was started with. Overrides may change only settings that "
                    "do not change the result (progress, tensorboard, data.root, data.workers, ...).")
    resume.add_argument("run", metavar="RUN_DIR", help="the run directory")
    resume.add_argument("items", nargs="*", metavar="KEY=VALUE", help="e.g. data.root=/data progress=false")
    resume.set_defaults(func=_resume)

    config = commands.add_parser(
        "config", help="print a resolved config as YAML, each key with what it means",
        description="Print the config a recipe and overrides resolve to (no arguments: the defaults) as a YAML recipe, "
                    "every key followed by its meaning, e.g. `attnkit config cifar10/wrn_16_2 optim.lr=0.05`.")
    config.add_argument("items", nargs="*", metavar="RECIPE|KEY=VALUE", help=recipe_help)
    config.set_defaults(func=_config)

    evaluate = commands.add_parser("eval", help="evaluate a run's weights on its (or another) test set")
    evaluate.add_argument("run", help="run directory or .safetensors file written by attnkit")
    evaluate.add_argument("--weights", choices=["final", "best", "last"], default="final", help="which weights of a run directory")
    evaluate.add_argument("--data", help="data set name (default: the run's own)")
    evaluate.add_argument("--root", help="data directory (default: the run's, else $ATTNKIT_DATA or ~/.cache/attnkit/data)")
    evaluate.add_argument("--device", default="auto", help="auto | cpu | cuda")
    evaluate.add_argument("--batch-size", type=int, default=512)
    evaluate.set_defaults(func=_eval)

    from .explain import METHODS

    maps = commands.add_parser(
        "maps", help="attention maps of trained runs: figures (PNG) and metrics (JSON)",
        description="Where a trained network looks: overlays of every chosen method's maps, by layer where a "
                    "method has several, runs side by side with --compare, and metrics.json (pointing game and "
                    "energy in the box when the data has boxes, e.g. cluttered-mnist; faithfulness: deletion, "
                    "insertion, average drop, increase in confidence, ROAD; model-randomisation check).",
    )
    runs = maps.add_mutually_exclusive_group(required=True)
    runs.add_argument("--checkpoint", metavar="RUN_DIR", help="run directory (or .safetensors file) to explain")
    runs.add_argument("--compare", nargs="+", metavar="RUN_DIR", help="several runs side by side, e.g. teacher student student_at")
    source = maps.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", nargs="+", metavar="PATH",
                        help="image files, or directories of them or of class sub-folders (val/CLASS/...: labels "
                             "where the sub-folders are named as the run's classes); resized to the run's input size")
    source.add_argument("--data", metavar="NAME",
                        help="test images of a data set, e.g. cluttered-mnist, mnist5k, or folder (an image-folder "
                             "run's own test split)")
    maps.add_argument("--method", default=",".join(METHODS),
                      help=f"comma-separated methods out of {', '.join(METHODS)} (default: all; those that do not "
                           "apply to a model are skipped with a note)")
    maps.add_argument("--out", required=True, metavar="DIR", help="output directory for the PNGs and metrics.json")
    maps.add_argument("--labels", nargs="+", metavar="LABEL", help="names of the runs in the figures (default: directory names)")
    maps.add_argument("--num-images", type=int, default=8, help="images taken from --data, evenly spaced through its test split")
    maps.add_argument("--target", type=_map_target, default=None, metavar="label|predicted|INT",
                      help="class to explain (default: the true label where known: --data, or images in class "
                           "sub-folders; else the predicted class)")
    maps.add_argument("--weights", choices=["final", "best", "last"], default="final", help="which weights of a run directory")
    maps.add_argument("--root", help="data directory for --data (default: $ATTNKIT_DATA or ~/.cache/attnkit/data; "
                                     "for folder the run's data.root)")
    maps.add_argument("--device", default="cpu", help="auto | cpu | cuda")
    maps.add_argument("--max-rows", type=int, default=8, help="images shown per figure (metrics use all)")
    maps.add_argument("--batch-size", type=int, default=None, help="images per map computation (default: all at once)")
    maps.add_argument("--no-sanity", action="store_true", help="skip the model-randomisation check (one more map per method)")
    maps.add_argument("--no-faithfulness", action="store_true",
                      help="skip the faithfulness metrics (about 60 forward passes per image and method)")
    maps.add_argument("--layer", metavar="PATH[,PATH...]",
                      help="layer of the CAM methods (gradcam ... ablationcam) as model.named_modules() names it, e.g. "
                           "layer3 (default: the last feature map); several, comma-separated, are fused into one map")
    maps.add_argument("--aug-smooth", action="store_true",
                      help="CAM methods: average each map over flipped and shifted views of the image")
    maps.add_argument("--eigen-smooth", action="store_true",
                      help="CAM methods: first principal component of the weighted activations instead of their sum")
    maps.add_argument("--option", action="append", default=[], metavar="METHOD.KEY=VALUE",
                      help="any constructor option of one method, VALUE read as YAML (repeatable), e.g. "
                           "scorecam.channel_batch_size=32, integrated_gradients.steps=100, smoothgrad.samples=50, "
                           "activation.layer=[layer1,layer3], gradcam.relu=false; it wins over --layer etc.")
    maps.set_defaults(func=_maps)

    models = commands.add_parser(
        "models", help="list the registered models with their parameter counts (and MACs with --macs)"
    )
    models.add_argument("pattern", nargs="?", help="shell-style name pattern, e.g. 'wrn_*' (default: every model)")
    models.add_argument("--macs", action="store_true", help="also count MACs at the native input size (slower)")
    models.add_argument("--markdown", action="store_true", help="print the README's table, with paper errors")
    models.set_defaults(func=_models)

    recipes = commands.add_parser(
        "recipes", help="list the packaged recipes (the papers' experiments) with the figure each reproduces",
        description="The packaged recipes: run one by name (`attnkit train cifar10/wrn_16_2`, `attnkit distill "
                    "cifar10/wrn_16_1_from_wrn_16_2_at_kd`), or start a recipe file of yours from one with "
                    "`base: cifar10/wrn_16_2`. terms: the distillation terms it switches on; paper: the figure it "
                    "reproduces, (R) = recalled, approximate.")
    recipes.add_argument("pattern", nargs="?", help="shell-style name pattern, e.g. 'cifar10/*_at_kd' (default: every recipe)")
    recipes.set_defaults(func=_recipes)

    from .demo import DemoConfig, add_plan_arguments
    from .study import add_study_arguments

    demo = commands.add_parser(
        "demo", help="the main job: teacher, student alone / AT / KD / AT+KD on cluttered-mnist, table and report",
        description="Train a teacher and small students (alone, with AT, KD, AT+KD) on the embedded cluttered-mnist, "
                    "print their errors in the layout of the AT paper's Table 1 and write an HTML report. "
                    "About 3 to 5 minutes on 2 CPU cores.")
    add_plan_arguments(demo, "demo", DemoConfig(), "report")
    demo.set_defaults(func=_demo)

    study = commands.add_parser(
        "study", help="every distillation method x seeds on cluttered-mnist: test error beside map metrics",
        description="Train a teacher and, per method of the distillation table and seed, the same small student on "
                    "the embedded cluttered-mnist; then score every model's activation maps and Grad-CAM (pointing "
                    "game, energy in the box, deletion) and their agreement with the teacher's, and write one table "
                    "(mean ± std over seeds) to study.md and study.json. Up to about 15 minutes on 2 CPU cores.")
    add_study_arguments(study)
    study.set_defaults(func=_study)

    report = commands.add_parser("report", help="write one self-contained HTML page about finished runs")
    report.add_argument("runs", nargs="+", help="run directories (teachers and students)")
    report.add_argument("--out", default="report", help="output directory (default: report/)")
    report.add_argument("--methods", type=lambda s: s.split(","), default=["activation", "gradcam"],
                        help="attention-map methods, comma-separated (default: activation,gradcam)")
    report.add_argument("--images", type=int, default=200, help="test images for the map metrics (default: 200)")
    report.add_argument("--faithful-images", type=int, default=16, metavar="N",
                        help="of those, the images the faithfulness metrics are scored on, about 60 forward passes "
                             "each per method and model (default: 16; 0: none)")
    report.add_argument("--no-maps", action="store_true", help="skip attention maps (e.g. when the data is elsewhere)")
    report.add_argument("--device", default="cpu", help="device for the maps (default: cpu)")
    report.add_argument("--root", help="data directory for the maps (default: the runs' data.root): an image folder "
                                       "moved since the runs were trained")
    report.set_defaults(func=_report)
    for sub in commands.choices.values():  # also after the command: `attnkit train ... --debug`
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    parser.command_parsers = commands.choices
    return parser


class _Parser(argparse.ArgumentParser):
    """argparse with the command's one-line error form (``attnkit CMD: error: ...``) instead of usage + error."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {one_line(message)}; see `{self.prog} --help`", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT)


def _resume_hint(run_dir: str | None) -> str:
    """How to continue an interrupted run: once it has written its config.yaml, `attnkit resume DIR` does."""
    from pathlib import Path

    if run_dir is None or not (Path(run_dir) / "config.yaml").is_file():
        return ""
    return f"; continue it with `attnkit resume {run_dir}`"


def main(argv: Sequence[str] | None = None) -> None:
    """Run the ``attnkit`` command; failures follow the one error policy of :mod:`attnkit.errors`."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # reported by the command's own parser: `attnkit train: error: ...`
        parser.command_parsers[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        args.func(args)
    except KeyboardInterrupt:
        if args.debug or debug_enabled():
            raise
        print(f"attnkit {args.command}: interrupted{_resume_hint(getattr(args, 'run_dir', None))}", file=sys.stderr)
        sys.exit(INTERRUPTED_EXIT)
    except Exception as err:
        message = user_message(err)
        if args.debug or debug_enabled():
            raise
        if message is None:  # a bug: the traceback is what a report needs
            traceback.print_exc()
            print(f"attnkit {args.command}: internal error: {one_line(f'{type(err).__name__}: {err}')}. This is a bug "
                  f"in attnkit {__version__}; please report it with the command and the traceback above "
                  f"(--debug shows one for every error)", file=sys.stderr)
            sys.exit(BUG_EXIT)
        print(f"attnkit {args.command}: error: {message}", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT)
