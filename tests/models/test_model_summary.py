import pytest
from torch import nn

from attnkit.cli import main
from attnkit.models import count_macs, count_parameters, list_models, markdown_table, summarize_models
from attnkit.models._summary import REFERENCE_ERRORS


def test_count_macs_by_hand():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5),
    )
    # conv: 4 outputs x 3 inputs x 9 taps at 8 x 8 positions = 6912; linear: 4 x 5 = 20; BN, ReLU, pooling: none.
    model.train()
    assert count_macs(model, (3, 8, 8)) == 6912 + 20
    assert model.training and model[1].training  # training flags restored
    assert count_parameters(model) == (4 * 3 * 9 + 4) + 2 * 4 + (4 * 5 + 5)


def test_count_macs_rejects_a_batched_size():
    with pytest.raises(ValueError, match=r"input_size must be \(C, H, W\)"):
        count_macs(nn.Conv2d(3, 4, 1), (1, 3, 8, 8))


def test_count_parameters_skips_frozen():
    model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    model[0].requires_grad_(False)
    assert count_parameters(model) == 4


def test_every_reference_names_a_registered_model():
    assert set(REFERENCE_ERRORS) <= set(list_models())


def test_summary_and_markdown_row():
    (summary,) = summarize_models("wrn_16_1", macs=True)
    assert (summary.num_classes, summary.parameters, summary.input_size) == (10, 175_066, (3, 32, 32))
    assert summary.macs == 26_657_408  # measured: one 32 x 32 image through WRN-16-1
    table = markdown_table([summary]).splitlines()
    assert table[0].startswith("| model | classes | params | MACs |")
    assert table[2] == "| `wrn_16_1` | 10 | 175,066 | 26.7 M | 3x32x32 | C-10 8.77 (AT Tab. 1) |"


def test_cli_lists_models(capsys):
    main(["models", "resnet8x4"])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split() for line in lines] == [
        ["model", "classes", "params", "input"], ["resnet8x4", "100", "1,233,540", "3x32x32"],
    ]
    main(["models", "wrn_16_1", "--macs"])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split() for line in lines] == [
        ["model", "classes", "params", "MACs", "input"], ["wrn_16_1", "10", "175,066", "26,657,408", "3x32x32"],
    ]


def test_cli_unknown_pattern_exits_with_a_message(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["models", "no_such_model*"])
    assert exit_info.value.code == 2
    assert "no registered model matches 'no_such_model*'" in capsys.readouterr().err
