import pytest
import torch
from torch import nn

from attnkit.features import FeatureCapture, default_pairs, extract_features, pair_layers, resolve_module
from attnkit.models import create_model
from helpers import hook_count, toy_cnn


def test_capture_equals_manual_forward_and_keeps_graph():
    model = toy_cnn()
    x = torch.randn(2, 3, 8, 8)
    with FeatureCapture(model, ["1", "2", "5"]) as feats:
        model(x)
    expected = model[2](model[1](model[0](x)))
    torch.testing.assert_close(feats["2"], expected)
    assert list(feats) == ["1", "2", "5"] and feats["5"].requires_grad
    assert hook_count(model) == 0


def test_detach_option():
    model = toy_cnn()
    _, (feat,) = extract_features(model, torch.randn(1, 3, 8, 8), ["0"], detach=True)
    assert not feat.requires_grad


def _bn_then_inplace_relu() -> nn.Sequential:
    """conv -> BatchNorm ("1", outputs of both signs) -> ReLU(inplace=True) ("2"), which overwrites "1"'s output."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(inplace=True), nn.Conv2d(4, 2, 1)).eval()


@pytest.mark.parametrize("detach", [True, False])
def test_copy_keeps_the_output_an_in_place_op_after_the_layer_overwrites(detach):
    model = _bn_then_inplace_relu()
    x = torch.randn(2, 3, 6, 6)
    expected = model[1](model[0](x)).detach()  # the BatchNorm's own output: negative values included
    assert expected.min() < 0
    capture = FeatureCapture(model, ["1"], detach=detach, copy=True)
    with capture:
        out = model(x)
    (bn,) = capture.ordered()
    torch.testing.assert_close(bn.detach(), expected)
    torch.testing.assert_close(out, model[3](expected.clamp_min(0)))  # the model's output is unchanged
    if not detach:  # in the graph: d(out) / d(bn output) flows through the copy the forward ran on
        (grad,) = torch.autograd.grad(out.sum(), bn)
        assert grad.shape == bn.shape and bool((grad[expected < 0] == 0).all()) and grad.abs().sum() > 0


def test_without_copy_an_output_changed_in_place_is_refused_not_returned():
    model = _bn_then_inplace_relu()
    capture = FeatureCapture(model, ["1", "3"], detach=True)
    with torch.no_grad(), capture:
        model(torch.randn(1, 3, 6, 6))
    with pytest.raises(RuntimeError, match=r"outputs of modules \['1'\] were changed in place.*copy=True"):
        capture.ordered()
    with torch.no_grad(), FeatureCapture(model, ["2", "3"], detach=True) as feats:  # the ReLU's own output: fine
        model(torch.randn(1, 3, 6, 6))
    assert feats["2"].min() >= 0


def test_graph_from_layers_records_the_graph_from_the_first_layer_and_restores_grad_mode():
    model = _bn_then_inplace_relu()
    x = torch.randn(2, 3, 6, 6)
    for outer in (True, False):
        with torch.set_grad_enabled(outer):
            capture = FeatureCapture(model, ["1"], copy=True, graph_from_layers=True)
            with capture:
                assert not torch.is_grad_enabled()  # the layers before "1" record no graph
                out = model(x)
            assert torch.is_grad_enabled() == outer
        (bn,) = capture.ordered()
        assert bn.is_leaf and bn.requires_grad and out.requires_grad  # the graph starts at the captured layer
        (grad,) = torch.autograd.grad(out.sum(), bn)
        reference = model[1](model[0](x)).detach().requires_grad_(True)
        (expected,) = torch.autograd.grad(model[3](torch.relu(reference)).sum(), reference)
        torch.testing.assert_close(grad, expected)
    with pytest.raises(ValueError, match="detach=True"):
        FeatureCapture(model, ["1"], detach=True, graph_from_layers=True)


def test_calls_count_a_module_run_several_times_and_the_last_output_is_kept():
    relu = nn.ReLU()
    model = nn.ModuleDict({"relu": relu})
    capture = FeatureCapture(model, ["relu"], copy=True)
    with capture as feats:
        relu(torch.full((1, 1, 2, 2), -1.0))
        relu(torch.full((1, 1, 2, 2), 3.0))
    assert feats["relu"].unique().tolist() == [3.0] and capture.calls == {"relu": 2}


def test_hooks_removed_after_exception_in_block_and_in_forward():
    model = toy_cnn()
    with pytest.raises(RuntimeError, match="boom"):
        with FeatureCapture(model, ["0", "3"]):
            assert hook_count(model) == 2
            raise RuntimeError("boom")
    assert hook_count(model) == 0
    with pytest.raises(RuntimeError):
        with FeatureCapture(model, ["0"]):
            model(torch.randn(1, 5, 8, 8))  # wrong channel count: the forward itself fails
    assert hook_count(model) == 0


def test_unknown_path_names_close_paths_and_installs_nothing():
    model = create_model("wrn_16_1")
    with pytest.raises(KeyError, match="closest valid paths: .*layer2"):
        FeatureCapture(model, ["layer1", "layr2"])
    assert hook_count(model) == 0
    with pytest.raises(KeyError, match="no module at path 'layer9'"):
        resolve_module(model, "layer9")


def test_module_that_did_not_run_is_reported():
    model = nn.ModuleDict({"used": nn.Conv2d(3, 3, 1), "unused": nn.Conv2d(3, 3, 1)})
    capture = FeatureCapture(model, ["used", "unused"])
    with capture:
        model["used"](torch.randn(1, 3, 4, 4))
    with pytest.raises(RuntimeError, match="did not run"):
        capture.ordered()


def test_pair_toy_cnns_of_different_depth_and_width():
    student = toy_cnn(widths=(4, 8), convs_per_stage=1)
    teacher = toy_cnn(widths=(16, 32), convs_per_stage=3)
    pairs = pair_layers(student, teacher, torch.randn(2, 3, 16, 16))
    # Student: relu at index 1 feeds pool 2 (16x16); relu 4 feeds pool 5 (8x8); pool 5 is the last 4x4 map.
    assert [(p.student, p.teacher) for p in pairs] == [("1", "5"), ("4", "12"), ("5", "13")]
    assert [p.student_shape for p in pairs] == [(4, 16, 16), (8, 8, 8), (8, 4, 4)]
    assert [p.teacher_shape for p in pairs] == [(16, 16, 16), (32, 8, 8), (32, 4, 4)]


def test_pair_wrns_uses_feature_info_and_restores_training_mode():
    student, teacher = create_model("wrn_16_1"), create_model("wrn_40_1")
    bn = teacher.layer1[0].bn1
    before = bn.running_mean.clone()
    pairs = pair_layers(student, teacher, torch.randn(2, 3, 32, 32))
    assert [(p.student, p.teacher) for p in pairs] == [("layer1", "layer1"), ("layer2", "layer2"), ("layer3", "layer3")]
    assert student.training and teacher.training and bn.training
    assert torch.equal(bn.running_mean, before)  # the probe forward ran in eval mode


def test_pair_traces_a_preactivation_network_without_feature_info():
    # Hide feature_info: the tracer must still find the group outputs (not the next group's BN-ReLU).
    model = create_model("wrn_16_2")
    wrapper = nn.Sequential(model.conv1, model.layer1, model.layer2, model.layer3)
    pairs = pair_layers(wrapper, create_model("wrn_16_1"), torch.randn(1, 3, 32, 32))
    assert [p.student for p in pairs] == ["1", "2", "3"]


def test_explicit_mapping_overrides_and_is_checked():
    student, teacher = create_model("wrn_16_1"), create_model("wrn_16_2")
    pairs = pair_layers(student, teacher, torch.randn(1, 3, 32, 32), mapping={"layer2": "layer3"})
    assert pairs[0].student_shape == (32, 16, 16) and pairs[0].teacher_shape == (128, 8, 8)
    with pytest.raises(KeyError, match="teacher: .*'layer5'"):
        pair_layers(student, teacher, torch.randn(1, 3, 32, 32), mapping={"layer2": "layer5"})


def test_default_pairs_of_models_without_the_contract_are_traced():
    student, teacher = toy_cnn((4, 8), num_classes=3), toy_cnn((8, 16), convs_per_stage=2, num_classes=3)
    x = torch.zeros(1, 3, 8, 8)  # student: 1 (8x8), 4 (4x4), 5 (2x2); teacher: 3, 8, 9
    names = lambda pairs: [(p.student, p.teacher) for p in pairs]  # noqa: E731
    assert names(default_pairs(student, teacher, x, "groups")) == [("1", "3"), ("4", "8"), ("5", "9")]
    assert names(default_pairs(student, teacher, x, "output")) == [("5", "9")]  # CAM transfer: the last group
    assert names(default_pairs(student, teacher, x, "middle")) == [("4", "8")]
