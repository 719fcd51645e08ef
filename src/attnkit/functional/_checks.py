"""Former name of :mod:`attnkit.functional.checks`; kept so that older imports keep working."""

from .attention import REDUCTIONS, check_reduction  # noqa: F401
from .checks import *  # noqa: F401,F403
from .checks import __all__ as _public

__all__ = [*_public, "REDUCTIONS", "check_reduction"]
