"""Graph capture: torch.export on every WRN and one model of each other family; torch.compile on WRN-16-1."""

import copy

import pytest
import torch
import torch.nn.functional as F

from attnkit.models import create_model, list_models

# The smallest model of each family besides the WRNs (every model exports; these keep the test fast).
ONE_PER_FAMILY = ["nin_thin", "resnet20", "vgg8", "resnet18", "attention56_cifar", "ltpa_vgg_att2"]


@pytest.mark.parametrize("name", list_models("wrn*") + ONE_PER_FAMILY)
def test_torch_export_matches_eager(name):
    model = create_model(name).eval()
    _, height, _ = model.default_input_size
    x = torch.randn(2, 3, 64 if height == 224 else 32, 64 if height == 224 else 32)
    program = torch.export.export(model, (x,))
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), model(x))


def test_torch_compile_wrn_forward_and_backward():
    # aot_eager captures the whole forward and backward graph (fullgraph=True: no graph break allowed) through
    # dynamo and AOTAutograd, the same capture inductor uses; inductor itself spends ~45 s compiling C++ on this
    # 2-core CPU (measured), too slow for the test budget.
    torch._dynamo.reset()
    model = create_model("wrn_16_1")
    eager = copy.deepcopy(model)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    x, target = torch.randn(2, 3, 32, 32), torch.tensor([3, 7])
    F.cross_entropy(compiled(x), target).backward()
    F.cross_entropy(eager(x), target).backward()
    for (name, p), q in zip(model.named_parameters(), eager.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)
    torch._dynamo.reset()
