"""optimlab: a drop-in ``torch.optim`` with faster engines, modern optimizers and a lab.

``import optimlab as optim`` reads like ``import torch.optim as optim``: the same optimizer classes, plus the
``lr_scheduler`` and ``swa_utils`` modules.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from optimlab.algorithms import __all__ as _algorithm_names
from optimlab.optimizer import Optimizer, register_optimizer_step_post_hook, register_optimizer_step_pre_hook

__version__ = "0.1.0"

_SUBMODULES = ("lr_scheduler", "schedules", "swa_utils", "registry", "engines", "lab")

__all__ = [
    "ASGD",
    "CG",
    "LBFGS",
    "SGD",
    "Adadelta",
    "Adafactor",
    "Adagrad",
    "Adam",
    "AdamW",
    "Adamax",
    "Muon",
    "NAdam",
    "Optimizer",
    "RAdam",
    "RMSprop",
    "Rprop",
    "SparseAdam",
    "lr_scheduler",
    "register_optimizer_step_post_hook",
    "register_optimizer_step_pre_hook",
    "swa_utils",
]

if TYPE_CHECKING:
    from optimlab import lr_scheduler, swa_utils
    from optimlab.algorithms import (
        ASGD,
        CG,
        LBFGS,
        SGD,
        Adadelta,
        Adafactor,
        Adagrad,
        Adam,
        Adamax,
        AdamW,
        Muon,
        NAdam,
        RAdam,
        RMSprop,
        Rprop,
        SparseAdam,
    )


def __getattr__(name: str) -> Any:
    # Imported on first use, so ``import optimlab`` stays cheap.
    if name in _algorithm_names:
        value = getattr(importlib.import_module("optimlab.algorithms"), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"optimlab.{name}")
    else:
        raise AttributeError(f"module 'optimlab' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
