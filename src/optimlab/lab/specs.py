"""Optimizers and schedulers described as text: ``"sgd:lr=0.05,momentum=0.9"`` -> an optimlab optimizer.

The same small language is used by the command line and by the experiments, so what a figure's legend says is
exactly what was run.  Optimizers are looked up in :mod:`optimlab.registry`, so every optimlab optimizer is
available by name (case-insensitive), with its own hyperparameters and defaults.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Any

from optimlab import registry
from optimlab.optimizer import Optimizer, ParamsT

__all__ = ["OptimizerSpec", "SpecError", "parse_optimizer_spec", "parse_value", "split_spec"]


class SpecError(ValueError):
    """A spec that cannot be understood; the message says which part and why."""


_WORDS = {"true": True, "false": False, "none": None, "null": None}


def parse_value(text: str) -> Any:
    """``"0.1"`` -> 0.1, ``"true"`` -> True, ``"(0.9,0.99)"`` -> (0.9, 0.99); anything else stays a string."""
    text = text.strip()
    if text.lower() in _WORDS:
        return _WORDS[text.lower()]
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _split_top_level(text: str, sep: str = ",") -> list[str]:
    """Split on ``sep`` outside brackets, so ``betas=(0.9,0.99),lr=1e-3`` has two items."""
    parts, depth, current = [], 0, []
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == sep and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p for p in (p.strip() for p in parts) if p]


def split_spec(spec: str, what: str = "optimizer") -> tuple[str, dict[str, Any]]:
    """``"name:k=v,k2=v2"`` -> ``("name", {"k": v, "k2": v2})``; :class:`SpecError` if malformed."""
    spec = spec.strip()
    if not spec:
        raise SpecError(f"empty {what} spec")
    name, _, rest = spec.partition(":")
    name = name.strip()
    if not name.replace("_", "").isalnum():
        raise SpecError(f"bad {what} name {name!r} in {spec!r} (expected NAME or NAME:key=value,...)")
    kwargs: dict[str, Any] = {}
    for item in _split_top_level(rest):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key.isidentifier():
            raise SpecError(f"bad item {item!r} in {what} spec {spec!r} (expected key=value)")
        if key in kwargs:
            raise SpecError(f"{key!r} given twice in {what} spec {spec!r}")
        kwargs[key] = parse_value(value)
    return name, kwargs


@dataclass
class OptimizerSpec:
    """An optimizer by registry name with hyperparameters, and the label used in legends and tables.

    Args:
        name: the optimizer's name in :mod:`optimlab.registry` (``"SGD"``, ``"adamw"``, ...).
        hyperparameters: keyword arguments for its constructor.
        label: legend text (default: the spec text).
    """

    name: str
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    label: str = ""

    def __post_init__(self) -> None:
        try:
            info = registry.get(self.name)
        except KeyError as e:
            raise SpecError(e.args[0]) from None
        self.name = info.name
        unknown = sorted(set(self.hyperparameters) - set(info.hyperparameters))
        if unknown:
            raise SpecError(
                f"{info.name} has no hyperparameter {', '.join(unknown)}; it takes {', '.join(info.hyperparameters)}"
            )
        if not self.label:
            self.label = self.text

    @property
    def text(self) -> str:
        """The spec written back as text, e.g. ``SGD:lr=0.05,momentum=0.9``."""
        if not self.hyperparameters:
            return self.name
        return self.name + ":" + ",".join(f"{k}={v}".replace(" ", "") for k, v in self.hyperparameters.items())

    def with_defaults(self, **defaults: Any) -> OptimizerSpec:
        """A copy with ``defaults`` filled in where this spec gives no value (e.g. a task's default lr)."""
        hp = {**{k: v for k, v in defaults.items() if k not in self.hyperparameters}, **self.hyperparameters}
        return OptimizerSpec(self.name, hp, self.label)

    def create(self, params: ParamsT) -> Optimizer:
        """Build the optimizer; a bad hyperparameter value raises :class:`SpecError` naming this spec."""
        try:
            return registry.create(self.name, params, **self.hyperparameters)
        except (ValueError, TypeError, RuntimeError) as e:
            raise SpecError(f"{self.text}: {e}") from None


def parse_optimizer_spec(spec: str, label: str | None = None) -> OptimizerSpec:
    """Parse ``"NAME[:key=value,...]"`` (e.g. ``"sgd:lr=0.05,momentum=0.9,nesterov=true"``)."""
    name, kwargs = split_spec(spec, "optimizer")
    return OptimizerSpec(name, kwargs, label or spec.strip())
