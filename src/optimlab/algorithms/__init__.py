"""The algorithms: one file per algorithm or close family."""

from optimlab.algorithms.adam import Adam, AdamW
from optimlab.algorithms.sgd import SGD

__all__ = ["SGD", "Adam", "AdamW"]
