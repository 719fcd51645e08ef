"""attnkit: attention in convolutional networks.

* :mod:`attnkit.functional` - attention maps and every transfer loss as pure tensor functions.
* :mod:`attnkit.losses` - the same as ``nn.Module`` wrappers holding their hyperparameters.
* :mod:`attnkit.features` - capture intermediate features by module path; pair student and teacher layers.
* :mod:`attnkit.models` - WRN, ResNet, VGG, NIN, Residual Attention and Learn-to-Pay-Attention networks.
* :mod:`attnkit.data` - data sets, checked downloads, device-resident and streaming loaders.
* :mod:`attnkit.engine` - training, distillation, checkpoints, evaluation (``train``, ``load_model``).
* :mod:`attnkit.explain` - where a network looks: attention-map methods, figures, metrics.
* :mod:`attnkit.report` - results tables and HTML reports of finished runs; :mod:`attnkit.demo` the demo.
* :mod:`attnkit.recipes` - the papers' experiments as YAML recipes (``list_recipes``, ``load_recipe``).

The last six load on first use (``attnkit.engine.train(...)`` works after ``import attnkit``).
"""

import importlib

from . import features, functional, losses, models
from .features import FeatureCapture, extract_features, pair_layers
from .functional import at_loss, attention_map, kd_loss
from .models import create_model, list_models

__version__ = "0.2.0"

_LAZY_SUBMODULES = ("bench", "data", "demo", "engine", "explain", "recipes", "report")

__all__ = [
    "FeatureCapture",
    "__version__",
    "at_loss",
    "attention_map",
    "create_model",
    "extract_features",
    "features",
    "functional",
    "kd_loss",
    "list_models",
    "losses",
    "models",
    "pair_layers",
    *_LAZY_SUBMODULES,
]


def __getattr__(name: str):
    # Heavier parts (the engine, captum-based maps, matplotlib reports) are imported when first used.
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'attnkit' has no attribute {name!r}")
