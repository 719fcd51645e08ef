"""The shared argument checks of attnkit.validation."""

from typing import Literal

import pytest

from attnkit.validation import check_choice, check_int, choices, describe_choices, is_int, suggest


def test_suggest_names_close_candidates_or_falls_back():
    assert suggest("lrr", ["lr", "momentum"]) == "did you mean lr?"
    assert suggest("xyz", ["lr", "momentum"]) == "choose from lr, momentum"
    assert suggest("xyz", ["lr"], fallback="see the docs") == "see the docs"
    assert suggest("layer22", ["layer2", "layer3"], lead="closest valid paths:") == "closest valid paths: layer2, layer3?"


def test_strict_integers_refuse_bools_and_floats():
    assert is_int(3) and not is_int(True) and not is_int(3.0)
    assert check_int("epoch", 0) == 0
    for bad, message in ((True, "epoch must be an int >= 0, got True"), (-1, "an int >= 0"), (2.0, "an int >= 0")):
        with pytest.raises(ValueError, match=message):
            check_int("epoch", bad)
    with pytest.raises(ValueError, match=r"batch_size must be a positive int \(global\), got 0"):
        check_int("batch_size", 0, minimum=1, note=" (global)")


def test_choices_come_from_literal_types():
    Mode = Literal["code", "paper"]
    assert choices(Mode) == ("code", "paper") and choices(Literal["auto"] | Literal[True]) == ("auto", True)
    assert describe_choices(("auto", True, False)) == "auto, true or false"
    assert check_choice("mode", "paper", Mode) == "paper"
    with pytest.raises(ValueError, match="mode must be code or paper, got 'cod'; did you mean code?"):
        check_choice("mode", "cod", Mode)
    with pytest.raises(ValueError, match="flag must be true or false, got 1"):
        check_choice("flag", 1, (True, False))
