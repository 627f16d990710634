"""The algorithms: one module per algorithm or close family, imported on first use."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> module in this package
_MODULES = {
    "SGD": "sgd",
    "Adam": "adam",
    "AdamW": "adam",
    "Adamax": "adamax",
    "NAdam": "nadam",
    "RAdam": "radam",
    "Adagrad": "adagrad",
    "Adadelta": "adadelta",
    "RMSprop": "rmsprop",
    "Rprop": "rprop",
    "ASGD": "asgd",
    "SparseAdam": "sparse_adam",
    "LBFGS": "lbfgs",
    "CG": "cg",
    "Adafactor": "adafactor",
    "Muon": "muon",
}

__all__ = [  # noqa: RUF022  (torch's order of importance, not alphabetical)
    "SGD",
    "Adam",
    "AdamW",
    "Adamax",
    "NAdam",
    "RAdam",
    "Adagrad",
    "Adadelta",
    "RMSprop",
    "Rprop",
    "ASGD",
    "SparseAdam",
    "LBFGS",
    "CG",
    "Adafactor",
    "Muon",
]
assert set(__all__) == set(_MODULES)

if TYPE_CHECKING:
    from optimlab.algorithms.adadelta import Adadelta
    from optimlab.algorithms.adafactor import Adafactor
    from optimlab.algorithms.adagrad import Adagrad
    from optimlab.algorithms.adam import Adam, AdamW
    from optimlab.algorithms.adamax import Adamax
    from optimlab.algorithms.asgd import ASGD
    from optimlab.algorithms.cg import CG
    from optimlab.algorithms.lbfgs import LBFGS
    from optimlab.algorithms.muon import Muon
    from optimlab.algorithms.nadam import NAdam
    from optimlab.algorithms.radam import RAdam
    from optimlab.algorithms.rmsprop import RMSprop
    from optimlab.algorithms.rprop import Rprop
    from optimlab.algorithms.sgd import SGD
    from optimlab.algorithms.sparse_adam import SparseAdam


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        value = getattr(importlib.import_module(f"{__name__}.{_MODULES[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
