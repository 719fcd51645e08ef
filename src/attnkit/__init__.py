"""attnkit: attention in convolutional networks.

* :mod:`attnkit.functional` - attention maps and every transfer loss as pure tensor functions.
* :mod:`attnkit.losses` - the same as ``nn.Module`` wrappers holding their hyperparameters.
* :mod:`attnkit.features` - capture intermediate features by module path; pair student and teacher layers.
* :mod:`attnkit.models` - WRN, ResNet, VGG, NIN, Residual Attention and Learn-to-Pay-Attention networks.
* :mod:`attnkit.explain` - attention maps of trained models (activation, gradient, the models' own, saliency,
  CAM, Grad-CAM, HiResCAM, occlusion), their pictures and metrics (``attnkit maps``).
"""

from . import features, functional, losses, models
from .features import FeatureCapture, extract_features, pair_layers
from .functional import at_loss, attention_map, kd_loss
from .models import create_model, list_models

__version__ = "0.1.0"

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
]
