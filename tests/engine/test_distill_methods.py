"""Every distillation method of the table trains from the command line; per-term layers, learnable parts, CAM."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from attnkit.cli import main
from attnkit.engine import DistillConfig, RunDir, config_from_dict
from attnkit import functional as AF
from attnkit.engine.layer_pairs import batch_norms_after
from attnkit.engine.methods import METHODS, method_overrides, method_values
from attnkit.engine.objective import Objective
from attnkit.engine.terms import TERMS, plan_terms
from attnkit.features import FeatureCapture, default_pairs
from attnkit.losses import KDLoss
from attnkit.models import create_model

# A WRN-10 teacher and a half-width student on 256 mnist5k digits: one epoch of 4 steps per method.
COMMON = ["data.name=mnist5k", "data.train_limit=256", "data.test_limit=64", "data.batch_size=64", "optim.lr=0.05",
          "optim.epochs=1", "model.name=wrn", "progress=false", "tensorboard=false", "channels_last=false"]
STUDENT = ["model.kwargs={depth: 10, width: 0.5}"]


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("methods") / "teacher"
    main(["train", *COMMON, "model.kwargs={depth: 10, width: 1}", f"out={out}"])
    return out


def terms_of(label: str) -> list[str]:
    return [t.name for t in plan_terms(config_from_dict(method_values(label)).distill).terms]


@pytest.mark.parametrize("label", [m for m in METHODS if METHODS[m].needs_teacher])
def test_every_method_of_the_table_distils_from_the_command_line(label, tmp_path, teacher_run):
    out = tmp_path / "student"
    main(["distill", *COMMON, *STUDENT, f"out={out}", f"distill.teacher={teacher_run}", *method_overrides(label)])
    (record,) = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    names = terms_of(label)
    assert names and set(names) <= set(record["train"])  # each term logged under its name
    assert all(torch.isfinite(torch.tensor(record["train"][n])) for n in names)
    state = RunDir(out).load_checkpoint()[1]
    objective_keys = list(state["objective"])
    student_params = sum(1 for _ in create_model("wrn", depth=10, width=0.5, num_classes=10, in_chans=1).parameters())
    if label == "FitNets":  # the regressor is checkpointed and optimised (one momentum buffer per parameter)
        assert objective_keys and all(k.startswith("losses.hint.regressors.0.") for k in objective_keys)
        assert len(state["optimizer"]["state"]) == student_params + 3  # its conv weight, BN weight and BN bias
    elif label != "F-ActT":
        assert objective_keys == [] and len(state["optimizer"]["state"]) == student_params


def test_cam_transfer_from_a_fresh_process(tmp_path, teacher_run):
    out = tmp_path / "cam"
    args = [sys.executable, "-m", "attnkit", "distill", *COMMON, *STUDENT, f"out={out}", f"distill.teacher={teacher_run}",
            "distill.cam_beta=1000", "distill.cam_method=hirescam", "distill.cam_schedule.kind=linear"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert record["train"]["cam"] > 0
    bad = subprocess.run([*args[:-3], "distill.cam_beta=1", "compile=true", f"out={tmp_path / 'c2'}"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "error: compile: torch.compile cannot be used with double-backprop" in bad.stderr
    inner = subprocess.run([*args, "distill.cam_layers=[layer2:layer2]", f"out={tmp_path / 'c3'}"],
                           capture_output=True, text=True, timeout=300)
    assert inner.returncode == 2 and inner.stderr.splitlines() == [
        "attnkit distill: error: distill.cam_layers: the student's batch norm 'layer3.0.bn1' lies between the CAM layer 'layer2' and "
        "the logits: in training its batch statistics mix the other images into each image's Grad-CAM; pair a layer "
        "after the last batch norm (null: the output of forward_features)"]


def test_a_train_mode_batch_norm_after_a_cam_layer_mixes_the_batch_into_each_map():
    """Why inner CAM layers are refused: with layer3's batch norms after layer2, image 0's Grad-CAM gradient
    changes when only image 1 changes; after the last batch norm (the default layer, relu) it does not."""
    torch.manual_seed(0)
    student = create_model("wrn", depth=10, width=0.5, num_classes=5).train()
    x, labels = torch.randn(2, 3, 16, 16), torch.tensor([0, 1])

    def gradient_of_image_0(path, batch):
        with FeatureCapture(student, [path]) as captured:
            scores = student(batch).gather(1, labels[:, None])[:, 0]
        return AF.score_gradients([captured[path]], scores)[0][0]

    other = torch.cat([x[:1], torch.randn(1, 3, 16, 16)])
    assert not torch.allclose(gradient_of_image_0("layer2", x), gradient_of_image_0("layer2", other))
    assert torch.allclose(gradient_of_image_0("relu", x), gradient_of_image_0("relu", other))
    example = torch.zeros(1, 3, 16, 16)
    assert batch_norms_after(student, "layer2", example) == ["layer3.0.bn1", "layer3.0.bn2", "bn"]
    assert batch_norms_after(student, "relu", example) == []
    assert student.training and all(m.training for m in student.modules())  # modes restored


def test_default_layer_rules_follow_repdistiller_on_wrn_and_vgg():
    x = torch.zeros(1, 3, 32, 32)
    wrn_s, wrn_t = create_model("wrn_16_2", num_classes=100), create_model("wrn_40_2", num_classes=100)
    names = lambda pairs: [(p.student, p.teacher) for p in pairs]  # noqa: E731
    assert names(default_pairs(wrn_s, wrn_t, x, "groups")) == [("layer1", "layer1"), ("layer2", "layer2"), ("layer3", "layer3")]
    assert names(default_pairs(wrn_s, wrn_t, x, "last")) == [("layer3", "layer3")]  # SP: feat[-2]
    assert names(default_pairs(wrn_s, wrn_t, x, "middle")) == [("layer2", "layer2")]  # FitNets: hint_layer = 2
    assert names(default_pairs(wrn_s, wrn_t, x, "output")) == [("relu", "relu")]  # Grad-CAM: after the last BN-ReLU
    vgg_s, vgg_t = create_model("vgg8", num_classes=100), create_model("vgg13", num_classes=100)
    assert names(default_pairs(vgg_s, vgg_t, x, "middle")) == [("block2", "block2")]  # RepDistiller's feat[2]
    assert names(default_pairs(vgg_s, vgg_t, x, "last")) == [("block4", "block4")]
    assert {t.name: (t.layers, t.default_layers) for t in TERMS.values() if t.uses_layers} == {
        "at": ("layers", "groups"), "fact": ("layers", "groups"), "nst": ("layers", "groups"),
        "sp": ("sp_layers", "last"), "hint": ("hint_layers", "middle"), "cam": ("cam_layers", "output")}


def test_each_term_gets_its_own_pairs_and_the_objective_follows_the_students_mode():
    torch.manual_seed(0)
    student, teacher = create_model("wrn", depth=10, width=0.5, num_classes=3), create_model("wrn", depth=10, num_classes=3).eval()
    x = torch.zeros(1, 3, 16, 16)
    pairs = {"at": default_pairs(student, teacher, x, "groups"), "hint": default_pairs(student, teacher, x, "middle"),
             "cam": default_pairs(student, teacher, x, "output")}
    config = DistillConfig(at_beta=1000.0, hint_beta=100.0, cam_beta=1000.0)
    objective = Objective(plan_terms(config), student, teacher, pairs)
    assert objective.teacher_map_capture.paths == ["relu"] and objective.student_capture.paths == [
        "layer1", "layer2", "layer3", "relu"]
    images, labels = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 0])
    with objective:
        result = objective(student.train(), teacher, images, labels)
    assert objective.training and set(result.terms) == {"ce", "at", "hint", "cam"}
    with objective:
        objective(student.eval(), teacher, images, labels)
    assert not objective.training and not objective.losses["hint"].regressors[0].bn.training
    with pytest.raises(ValueError, match="distill.hint_layers: no student/teacher layer pairs"):
        Objective(plan_terms(config), student, teacher, {"at": pairs["at"], "cam": pairs["cam"]})


def test_ls_kd_weighs_ce_and_the_standardised_kd_apart():
    torch.manual_seed(0)
    student, teacher = create_model("wrn", depth=10, width=0.5, num_classes=4), create_model("wrn", depth=10, num_classes=4).eval()
    config = config_from_dict(method_values("LS-KD")).distill
    images, labels = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    result = Objective(plan_terms(config), student, teacher)(student, teacher, images, labels)
    logits, t_logits = student(images), teacher(images)
    expected_kd = 9.0 * KDLoss(2.0, standardize=True)(logits, t_logits)
    assert result.terms["ce"].item() == pytest.approx(0.1 * torch.nn.functional.cross_entropy(logits, labels).item(), rel=1e-5)
    assert result.terms["kd"].item() == pytest.approx(expected_kd.item(), rel=1e-5)
