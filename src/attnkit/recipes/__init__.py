"""The papers' experiments as YAML recipes, shipped inside the package, and the one reader of recipe files.

A recipe is a YAML mapping of the sections of a run configuration (``attnkit.engine.RunConfig``)::

    base: schedules/cifar10_at            # optional: start from another recipe, then merge this one over it
    model: {name: wrn_16_1}
    distill: {teacher: runs/cifar10/wrn_16_2, teacher_model: wrn_16_2, at_beta: 1000}

The packaged recipes are named by their path in this package without ``.yaml`` (``cifar10/wrn_16_2``,
``cifar100/resnet8x4_from_resnet32x4_kd``; ``attnkit recipes`` lists them) and read through
:mod:`importlib.resources`, so they are found wherever attnkit is installed. Wherever a recipe is expected
(``attnkit train NAME_OR_PATH``, :func:`load_recipe`, a recipe's ``base:``) a file path works as well, and a
path to an existing file wins over a packaged name; a ``base:`` is looked for next to the recipe naming it
first, then among the packaged recipes, so a recipe file of your own may start from ``base: cifar10/wrn_16_2``.

Every packaged recipe (the shared schedules in ``schedules/`` aside) starts with a comment in one format, which
:func:`list_recipes` reads::

    # <what it trains, on one or more lines>
    # Paper: <the figure it reproduces>[; <context>] (<source>).
    # First train the teacher: attnkit train <recipe>        (recipes that learn from a teacher)

``docs/papers.md`` in the repository gives the tables these figures come from.

Recipes (and a run's config.yaml, read the same way) are read with :class:`RecipeLoader`: YAML's safe loader
(no ``!!python`` tags), refusing aliases (``*name``, with which a few lines can expand exponentially), with
errors on one line naming the file, line and column. ``base:`` chains may be at most :data:`MAX_BASE_DEPTH` deep.

>>> [r.name for r in list_recipes("cifar10/wrn_16_2_from_*_at*")]
['cifar10/wrn_16_2_from_wrn_40_2_at', 'cifar10/wrn_16_2_from_wrn_40_2_at_kd']
>>> load_recipe("cifar10/wrn_16_2")["optim"]["milestones"]   # from its base, schedules/cifar10_at
[60, 120, 160]
"""

from __future__ import annotations

import copy
import fnmatch
import posixpath
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ..validation import suggest

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

__all__ = ["ConfigError", "MAX_BASE_DEPTH", "RecipeInfo", "RecipeLoader", "apply_overrides", "find_recipe", "list_recipes",
           "load_recipe", "recipe_names"]

SUFFIX = ".yaml"
SCHEDULES = "schedules"  # shared bases of the packaged recipes: found by name, not listed as experiments
_PAPER, _TEACHER = "Paper: ", "First train the teacher: attnkit train "
MAX_BASE_DEPTH = 32  # recipes in one base: chain; the packaged ones use at most 2


class RecipeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses aliases: ``*name`` repeats a node, so a few lines of them can stand for an
    exponentially large document (a "billion laughs"). Anchors alone are harmless and allowed."""

    def compose_node(self, parent, index):  # noqa: ANN001 (PyYAML's signature)
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, f"found the alias *{event.anchor}; aliases are refused (they can expand exponentially): "
                            "write the value out", event.start_mark)
        return super().compose_node(parent, index)


def _parse_yaml(text: str) -> Any:
    """One YAML document read with :class:`RecipeLoader`."""
    return yaml.load(text, Loader=RecipeLoader)  # noqa: S506 (RecipeLoader is a SafeLoader)


class ConfigError(ValueError):
    """An invalid configuration value; the message starts with the offending key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


@dataclass(frozen=True)
class RecipeInfo:
    """One packaged recipe, as ``attnkit recipes`` lists it (read from its resolved sections and its header)."""

    name: str  # e.g. "cifar10/wrn_16_1_from_wrn_16_2_at"; load_recipe(name) reads it
    title: str  # first line of its comment: what it trains
    model: str  # model.name (the student when distilling)
    data: str  # data.name
    distill: dict[str, Any]  # its distill section; attnkit.engine.methods.term_labels names the terms it switches on
    paper: str  # the figure it reproduces, e.g. "test error 7.93% (R)"; (R) = recalled, not checked
    source: str  # where the figure comes from, e.g. "Zagoruyko & Komodakis 2017, Table 1"
    teacher: str | None  # the recipe to run first (trains the teacher), None when there is no teacher


@dataclass(frozen=True)
class _Source:
    """A recipe file: a packaged one (with its name) or a file of the user's (``name`` None)."""

    file: Traversable
    name: str | None = None

    def __str__(self) -> str:
        return self.name if self.name is not None else str(self.file)

    @property
    def key(self) -> str:  # identity for cycle detection
        return f"{self.name}{SUFFIX}" if self.name is not None else str(Path(self.file).resolve())

    def sibling(self, reference: str) -> _Source | None:
        """The file ``reference`` names relative to this one, if there is one."""
        if self.name is None:
            path = Path(self.file).parent / reference
            path = path if path.is_file() else path.with_name(path.name + SUFFIX)  # ".yaml" optional, as in names
            return _Source(path) if path.is_file() else None
        return _packaged(posixpath.join(posixpath.dirname(self.name), reference))


def _package() -> Traversable:
    return files(__name__)


def _packaged(reference: str) -> _Source | None:
    """The packaged recipe ``reference`` names ("cifar10/wrn_16_2", ".yaml" optional), if there is one."""
    name = posixpath.normpath(reference.replace("\\", "/")).removesuffix(SUFFIX)
    parts = name.split("/")
    if name.startswith("/") or ".." in parts or name in (".", ""):
        return None
    file = _package().joinpath(*parts[:-1], parts[-1] + SUFFIX)
    return _Source(file, name) if file.is_file() else None


def _walk(folder: Traversable, prefix: str = "") -> Iterator[str]:
    for entry in folder.iterdir():
        if entry.is_dir():
            yield from _walk(entry, f"{prefix}{entry.name}/")
        elif entry.name.endswith(SUFFIX):
            yield prefix + entry.name.removesuffix(SUFFIX)


def recipe_names(schedules: bool = False) -> list[str]:
    """Names of the packaged recipes, sorted; the shared schedules only with ``schedules=True``."""
    return sorted(n for n in _walk(_package()) if schedules or not n.startswith(SCHEDULES + "/"))


def _unknown(reference: str) -> str:
    hint = suggest(reference.removesuffix(SUFFIX), recipe_names(schedules=True), cutoff=0.5,
                   fallback="`attnkit recipes` lists the packaged ones")
    return f"no recipe file {reference!r} and no packaged recipe of that name; {hint}"


def find_recipe(name_or_path: str | Path) -> Traversable:
    """The recipe file a path or a packaged name refers to.

    A path to an existing file wins; otherwise ``name_or_path`` is looked up among the packaged recipes
    (``"cifar10/wrn_16_2"``, with or without ``.yaml``). Returns a :class:`pathlib.Path` for a file of yours and
    an :mod:`importlib.resources` file (a ``Path`` in a normal installation) for a packaged one.

    Raises:
        ConfigError: neither exists; the message names the closest packaged recipes.
    """
    return _find(name_or_path).file


def _find(name_or_path: str | Path) -> _Source:
    if Path(name_or_path).is_file():
        return _Source(Path(name_or_path))
    source = _packaged(str(name_or_path))
    if source is None:
        raise ConfigError("recipe", _unknown(str(name_or_path)))
    return source


def load_recipe(recipe: str | Path) -> dict[str, Any]:
    """Read a recipe (a file path or a packaged name) into a nested dict, its ``base:`` chain merged in.

    ``base: X`` names another recipe: a path relative to the recipe's own file, else a packaged name
    (``base: cifar10/wrn_16_2``). It is read first and the recipe's own sections are merged over it, key by key.
    The result is validated later, by ``attnkit.engine.config_from_dict``.
    """
    return _load_recipe(_find(recipe), seen=())


def _load_recipe(source: _Source, seen: tuple[str, ...]) -> dict[str, Any]:
    if source.key in seen:
        raise ConfigError("base", f"recipes inherit from each other in a cycle: {' -> '.join((*seen, source.key))}")
    if len(seen) >= MAX_BASE_DEPTH:
        raise ConfigError("base", f"more than {MAX_BASE_DEPTH} recipes in one base: chain (from {seen[0]} to "
                                  f"{source}); merge some of them")
    try:
        values = _parse_yaml(source.file.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as err:
        raise ConfigError("recipe", f"{source} is not UTF-8 text (byte {err.start}); is it a recipe?") from None
    except yaml.YAMLError as err:
        raise ConfigError("recipe", f"{source} is not valid YAML: {_yaml_problem(err)}") from None
    except RecursionError:
        raise ConfigError("recipe", f"{source} nests its values too deeply to be a recipe") from None
    if not isinstance(values, dict):
        raise ConfigError("recipe", f"{source} must contain a mapping of sections (model, data, optim, distill, ...)")
    base = values.pop("base", None)
    if base is None:
        return values
    if not isinstance(base, str):
        raise ConfigError("base", f"must be a recipe name or a path, got {base!r} in {source}")
    parent = source.sibling(base) or _packaged(base)
    if parent is None:
        raise ConfigError("base", f"{_unknown(base)} (named in {source})")
    return _merge(_load_recipe(parent, (*seen, source.key)), values)


def _yaml_problem(err: yaml.YAMLError) -> str:
    """PyYAML's message on one line: what is wrong, and where (line and column, counted from 1)."""
    mark = getattr(err, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{getattr(err, 'problem', None) or err}{where}".replace("\n", " ")


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, Mapping) and isinstance(merged.get(key), dict) else value
    return merged


def apply_overrides(values: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides to a copy of a nested dict; values are YAML scalars or lists."""
    result = copy.deepcopy(values)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(item, "overrides look like key=value (e.g. optim.lr=0.05)")
        key, raw = item.split("=", 1)
        try:
            value = _parse_yaml(raw) if raw else None
        except yaml.YAMLError as err:
            raise ConfigError(key, f"{raw!r} is not a valid YAML value: {_yaml_problem(err)}") from None
        except RecursionError:
            raise ConfigError(key, "the value nests too deeply") from None
        parts = key.strip().split(".")
        target = result
        for part in parts[:-1]:
            section = target.setdefault(part, {})
            if not isinstance(section, dict):
                raise ConfigError(key, f"{part} is not a section")
            target = section
        target[parts[-1]] = value
    return result


def list_recipes(pattern: str | None = None) -> list[RecipeInfo]:
    """The packaged recipes whose name matches the shell-style ``pattern`` (all without one), sorted by name.

    >>> info = list_recipes("cifar10/wrn_16_1_from_wrn_16_2_at_kd")[0]
    >>> info.distill["at_beta"], info.paper, info.teacher
    (1000, 'test error 7.51% (R)', 'cifar10/wrn_16_2')
    """
    return [_info(name) for name in recipe_names() if pattern is None or fnmatch.fnmatchcase(name, pattern)]


def _info(name: str) -> RecipeInfo:
    source = _packaged(name)
    assert source is not None  # a name from recipe_names()
    values = _load_recipe(source, seen=())
    header = [line.removeprefix("#").strip() for line in _leading_comment(source.file.read_text(encoding="utf-8"))]
    paper, cited = _paper(next((line for line in header if line.startswith(_PAPER)), ""))
    teacher = next((line.removeprefix(_TEACHER).split()[0] for line in header if line.startswith(_TEACHER)), None)
    distill = values.get("distill") or {}
    return RecipeInfo(
        name=name,
        title=header[0] if header else "",
        model=str((values.get("model") or {}).get("name", "")),
        data=str((values.get("data") or {}).get("name", "")),
        distill=dict(distill),
        paper=paper,
        source=cited,
        teacher=teacher,
    )


def _leading_comment(text: str) -> Iterator[str]:
    for line in text.splitlines():
        if not line.startswith("#"):
            return
        yield line


def _paper(line: str) -> tuple[str, str]:
    """("test error 7.93% (R)", "Zagoruyko & Komodakis 2017, Table 1") from the header's ``Paper:`` line."""
    body = line.removeprefix(_PAPER).strip()
    opening = body.rfind(" (")  # the source is the last parenthesis; "(R)" marks may come before it
    if not body.endswith(").") or opening < 0:
        return body.split(";")[0].strip(), ""
    return body[:opening].split(";")[0].strip(), body[opening + 2:-2]
