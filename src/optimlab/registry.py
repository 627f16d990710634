"""A self-describing list of optimlab's optimizers, for the CLI, the lab and the tests.

Every public optimizer class of ``optimlab.algorithms`` is listed; its hyperparameters and defaults come from its
signature and its reference from its docstring, so the list cannot drift from the code.
"""

from __future__ import annotations

import difflib
import inspect
import re
from dataclasses import dataclass
from typing import Any

import torch

import optimlab.algorithms as _algorithms
from optimlab.optimizer import Optimizer, ParamsT

__all__ = ["OptimInfo", "create", "get", "list_optimizers"]

_TORCH_NAMES = frozenset(n for n in dir(torch.optim) if isinstance(getattr(torch.optim, n), type))


@dataclass(frozen=True)
class OptimInfo:
    """One optimizer: its name, class, hyperparameters with defaults, and where it comes from."""

    name: str
    cls: type[Optimizer]

    @property
    def in_torch(self) -> bool:
        """Whether ``torch.optim`` has an optimizer of the same name (optimlab's is then a drop-in for it)."""
        return self.name in _TORCH_NAMES

    @property
    def hyperparameters(self) -> dict[str, Any]:
        """Constructor arguments after ``params`` with their defaults (``inspect.Parameter.empty`` if required)."""
        sig = inspect.signature(self.cls.__init__)
        return {
            n: p.default
            for n, p in sig.parameters.items()
            if n not in ("self", "params") and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        }

    @property
    def summary(self) -> str:
        doc = inspect.getdoc(self.cls) or ""
        return doc.split("\n\n")[0].replace("\n", " ").strip()

    @property
    def references(self) -> str:
        doc = inspect.getdoc(self.cls) or ""
        m = re.search(r"References?:\s*(.+?)(?:\n\s*\n|\Z)", doc, re.S)
        return " ".join(m.group(1).split()) if m else ""


def list_optimizers() -> list[OptimInfo]:
    """All optimizers, in alphabetical order."""
    infos = [
        OptimInfo(name, cls)
        for name in _algorithms.__all__
        if isinstance(cls := getattr(_algorithms, name), type) and issubclass(cls, Optimizer)
    ]
    return sorted(infos, key=lambda i: i.name.lower())


def get(name: str) -> OptimInfo:
    """The optimizer called ``name`` (case-insensitive); ``KeyError`` naming close matches otherwise."""
    by_name = {i.name.lower(): i for i in list_optimizers()}
    try:
        return by_name[name.lower()]
    except KeyError:
        close = difflib.get_close_matches(name.lower(), list(by_name), n=3)
        hint = f"; did you mean {', '.join(by_name[c].name for c in close)}?" if close else ""
        raise KeyError(f"unknown optimizer {name!r}{hint}") from None


def create(name: str, params: ParamsT, **hyperparameters: Any) -> Optimizer:
    """``create("adamw", model.parameters(), lr=3e-4)``: build an optimizer by name."""
    info = get(name)
    unknown = set(hyperparameters) - set(info.hyperparameters)
    if unknown:
        raise TypeError(
            f"{info.name} has no hyperparameter {', '.join(sorted(unknown))}; "
            f"it takes {', '.join(info.hyperparameters)}"
        )
    return info.cls(params, **hyperparameters)
