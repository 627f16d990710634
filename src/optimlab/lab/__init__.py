"""optimlab's lab: experiments that show what the learning rate, momentum and the optimizer do, and tools to
do the same on your own problems.

* :func:`lr_range_test` — the learning-rate range test for any model, loss and data (needs only torch).
* :func:`run_demo` — the report made by ``optimlab demo`` (figures, raw numbers and an HTML page).
* :func:`run_compare`, :func:`run_lr_find`, :func:`run_schedule` — what ``optimlab compare``, ``lr-find`` and
  ``schedule`` run.
* :mod:`optimlab.lab.functions` (2-D test functions), :mod:`optimlab.lab.tasks` (the digits task),
  :mod:`optimlab.lab.plots` (the figures).

Everything but :func:`lr_range_test` needs the ``lab`` extra (``pip install 'optimlab[lab]'``: matplotlib,
scikit-learn, click, rich, numpy); those modules are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from optimlab.lab.lr_finder import LRRangeTestResult, lr_range_test, smooth_losses, suggest_lr

__all__ = [
    "DemoConfig",
    "LRRangeTestResult",
    "lr_range_test",
    "run_compare",
    "run_demo",
    "run_lr_find",
    "run_schedule",
    "smooth_losses",
    "suggest_lr",
]

_LAZY = {
    "DemoConfig": "optimlab.lab.experiments",
    "run_demo": "optimlab.lab.experiments",
    "run_compare": "optimlab.lab.tools",
    "run_lr_find": "optimlab.lab.tools",
    "run_schedule": "optimlab.lab.tools",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
