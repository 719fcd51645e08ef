"""Models behind one registry, every one with the same feature contract (see ``_features.py``).

>>> from attnkit.models import create_model, list_models
>>> "wrn_16_1" in list_models("wrn_*")
True
"""

from ._features import FeatureInfo
from ._registry import create_model, is_model, list_models, register_model

# Importing a family module registers its models.
from . import wrn  # noqa: E402,F401  (isort: skip)

__all__ = ["FeatureInfo", "create_model", "is_model", "list_models", "register_model"]
