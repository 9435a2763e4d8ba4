"""The built-in demo dataset, kept importable from its old place: everything lives in :mod:`rggan.demo`."""

from rggan.demo import *  # noqa: F403  (the public names of rggan.demo, listed in its __all__)
from rggan.demo import __all__  # noqa: F401
