"""A stand-in for torchvision in the tests (the real one cannot be imported here): ``torchvision.models`` with
a tiny ResNet built the way torchvision builds its ResNets (same module names and keyword arguments).

Put ``tests/fakes`` on ``sys.path`` (``PYTHONPATH``) in a subprocess to use it; never on the suite's own path.
"""

__version__ = "0.0-fake"
