"""The distillation methods, by label: each one's ``distill.*`` settings with the default weights of its paper or
reference code. One table, read by ``attnkit study``, the README and the recipes' tests.

>>> METHODS["AT+KD"].settings
{'at_beta': 1000.0, 'kd_alpha': 0.9, 'kd_temperature': 4.0}
>>> method_values("DKD")["distill"]["dkd_schedule"]
{'warmup_epochs': 20.0, 'per': 'epoch'}
>>> method_overrides("SP")
['distill.sp_beta=3000.0']

Layer pairs are not part of a method: each term has its own default rule (``distill.layers``: every resolution
group; ``sp_layers``: the deepest group; ``hint_layers``: the middle group; ``cam_layers``: the output of
``forward_features``), which RepDistiller's choices for CIFAR follow; set the keys to override them.
A method is applied by merging :func:`method_values` into a recipe (or :func:`method_overrides` on the command
line); the other ``distill`` settings of the recipe (its teacher, its layers) stay. :func:`term_labels` names the
terms that ``distill`` settings switch on by this table's labels (``attnkit recipes`` prints them):

>>> term_labels({"at_beta": 1000, "kd_alpha": 0.9}), term_labels({"kd_alpha": 9, "kd_standardize": True})
(('AT+KD',), ('LS-KD',))
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from .terms import TERMS, Term

__all__ = ["METHODS", "Method", "method_overrides", "method_values", "term_labels"]


@dataclass(frozen=True)
class Method:
    """One distillation method: its ``distill.*`` settings and where they come from."""

    label: str  # short name, as tables print it (AT, KD, AT+KD, DKD, ...)
    settings: Mapping[str, Any]  # distill.<key>: value; a schedule is a mapping of WeightSchedule fields
    paper: str  # the paper that defines the method
    reference: str  # the public code whose defaults these are ("" where none exists)
    note: str = ""  # settings that are attnkit's own choice

    @property
    def terms(self) -> tuple[Term, ...]:
        """The loss terms its settings switch on, in the term table's order."""
        return _terms_on(self.settings)

    @property
    def needs_teacher(self) -> bool:
        """Some term it switches on learns from a teacher."""
        return any(t.needs_teacher for t in self.terms)


_KD = {"kd_alpha": 0.9, "kd_temperature": 4.0}

METHODS: dict[str, Method] = {m.label: m for m in (
    Method("student", {}, "", "", "the student trained alone: cross-entropy, no teacher (the baseline; the name of "
                                  "the AT paper's Table 1)"),
    Method("KD", dict(_KD), "Hinton, Vinyals & Dean 2015",
           "attention-transfer code (--alpha 0.9); RepDistiller (-r 0.1 -a 0.9); mdistiller (CE 0.1, KD 0.9, T 4)"),
    Method("AT", {"at_beta": 1000.0}, "Zagoruyko & Komodakis, ICLR 2017",
           "attention-transfer code (--beta 1e+3); RepDistiller (-a 0 -b 1000)"),
    Method("AT+KD", {"at_beta": 1000.0, **_KD}, "Zagoruyko & Komodakis, ICLR 2017", "attention-transfer code",
           "the CIFAR-10 recipes also decay beta with the learning rate (distill.at_schedule)"),
    Method("F-ActT", {"fact_beta": 1.0}, "Zagoruyko & Komodakis, ICLR 2017 (baseline)", "",
           "weight 1 and per-sample normalisation are attnkit's (the paper gives none)"),
    Method("grad-AT", {"grad_at_beta": 1.0}, "Zagoruyko & Komodakis, ICLR 2017, section 3.2", "",
           "weight 1 is attnkit's (the paper gives none)"),
    Method("SP", {"sp_beta": 3000.0}, "Tung & Mori, ICCV 2019", "RepDistiller (-a 0 -b 3000, feat[-2]); mdistiller"),
    Method("NST", {"nst_beta": 50.0}, "Huang & Wang 2017", "RepDistiller (-a 0 -b 50, feat[1:-1]); mdistiller"),
    Method("DKD", {"dkd_alpha": 1.0, "dkd_beta": 8.0, "dkd_temperature": 4.0,
                   "dkd_schedule": {"warmup_epochs": 20.0, "per": "epoch"}},
           "Zhao et al., CVPR 2022", "mdistiller (CE 1, alpha 1, beta 8 (2 to 8 per pair), T 4, warm-up 20 epochs)"),
    Method("LS-KD", {"kd_alpha": 9.0, "ce_weight": 0.1, "kd_temperature": 2.0, "kd_standardize": True},
           "Sun et al., CVPR 2024", "logit-standardization-KD (--logit-stand --base-temp 2 --kd-weight 9, CE 0.1)"),
    Method("FitNets", {"hint_beta": 100.0}, "Romero et al., ICLR 2015",
           "RepDistiller (-a 0 -b 100, hint_layer 2); mdistiller (FEAT_WEIGHT 100)"),
    Method("CAM-T", {"cam_beta": 1000.0}, "attnkit (docs/papers.md, section 6.6)", "",
           "attnkit's method; weight 1000 as AT's, whose comparison of normalised maps it reuses"),
)}


def method_values(label: str) -> dict[str, Any]:
    """``{"distill": {...}}`` for ``label``, to merge into a recipe's values (a fresh copy)."""
    return {"distill": copy.deepcopy(dict(_method(label).settings))}


def method_overrides(label: str) -> list[str]:
    """``["distill.key=value", ...]`` for ``label``, as ``attnkit train ... key=value`` takes them."""
    return [f"distill.{key}={_yaml_scalar(value)}" for key, value in _method(label).settings.items()]


def term_labels(distill: Mapping[str, Any]) -> tuple[str, ...]:
    """The terms ``distill`` settings (a recipe's section) switch on, each named by the method of :data:`METHODS`
    that switches on that term alone (the one whose switches, e.g. LS-KD's ``kd_standardize``, the settings also
    set, if several), else by the term's name (flip); terms that together make one method of the table (AT+KD) are
    named by it."""
    on = _terms_on(distill)
    together = [m.label for m in METHODS.values() if len(on) > 1 and m.terms == on]
    return tuple(together[:1]) or tuple(_label(term, distill) for term in on)


def _terms_on(distill: Mapping[str, Any]) -> tuple[Term, ...]:
    return tuple(t for t in TERMS.values() if any((distill.get(key) or 0) > 0 for key in t.weights))


def _label(term: Term, distill: Mapping[str, Any]) -> str:
    alone = [m for m in METHODS.values() if m.terms == (term,)]
    switches = lambda m: {k: v for k, v in m.settings.items() if isinstance(v, bool)}  # noqa: E731
    fitting = [m for m in alone if all(distill.get(k, False) == v for k, v in switches(m).items())]
    return max(fitting, key=lambda m: len(switches(m))).label if fitting else term.name


def _method(label: str) -> Method:
    if label not in METHODS:
        raise KeyError(f"no distillation method {label!r}; known: {', '.join(METHODS)}")
    return METHODS[label]


def _yaml_scalar(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("\n...").strip()
