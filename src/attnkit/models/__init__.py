"""Models behind one registry, every one with the same feature contract (see ``_features.py``).

>>> from attnkit.models import create_model, list_models
>>> "wrn_16_1" in list_models("wrn_*")
True

Besides registry names, ``create_model`` takes ``package.module:callable``, ``torchvision:NAME`` and ``timm:NAME``
(``_external.py``); models without ``feature_info`` get their attention points traced
(:func:`attnkit.features.resolution_groups`).
"""

from ._features import FeatureInfo, GapLinearModel
from ._registry import check_model_name, create_model, is_model, list_models, register_model
from ._summary import ModelSummary, count_macs, count_parameters, markdown_table, summarize_models

# Importing a family module registers its models.
from . import ltpa, nin, resnet, resnet_cifar, residual_attention, vgg, wrn  # noqa: E402,F401  (isort: skip)

__all__ = [
    "FeatureInfo",
    "GapLinearModel",
    "ModelSummary",
    "check_model_name",
    "count_macs",
    "count_parameters",
    "create_model",
    "is_model",
    "list_models",
    "markdown_table",
    "register_model",
    "summarize_models",
]
