"""Imports every pruning method so that it registers itself."""
from . import fastv, hybrid, info, random_prune, visionzip  # noqa: F401
