"""Engines: how one algorithm's update runs over the parameters of a group.

An elementwise algorithm supplies three pieces (see ``optimlab.algorithms._base.ElementwiseOptimizer``):

* ``_scalars(h, state) -> Hyper``: the per-parameter scalar work (advance ``step``, bias corrections), written once
  in Python numbers exactly as torch computes them;
* ``_update(param, grad, state, h)``: the tensor math, written once against the ``torch.Tensor`` API;
* optionally ``_finish(h, state)``: scalar-state work after the update (ASGD's ``eta``/``mu``).

The engines differ only in what they hand to ``_update``:

* ``per_tensor``: one call per parameter with the parameter's own tensors (torch's default CPU path, bitwise);
* ``foreach``: one call per bucket of parameters with ``TensorList``s, each op a ``torch._foreach_*`` call;
* ``flat`` (``optimlab.engines.flat``): one call per bucket over flat contiguous buffers, optionally compiled.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from torch import Tensor

from optimlab.engines.tensorlist import ScalarList, TensorList, as_real

__all__ = ["Hyper", "ScalarList", "TensorList", "UpdateRule", "as_real", "run_foreach", "run_per_tensor"]


class Hyper(dict):
    """The scalars one update needs (``h.lr``, ``h.beta1``, ``h.step_size``...): a dict read as attributes."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def with_(self, **values: Any) -> Hyper:
        """A copy with ``values`` added or replaced."""
        out = Hyper(self)
        out.update(values)
        return out


class UpdateRule(Protocol):
    def _scalars(self, h: Hyper, state: dict[str, Any]) -> Hyper: ...

    def _update(self, param: Any, grad: Any, state: dict[str, Any], h: Hyper) -> None: ...

    _finish: Callable[[Hyper, dict[str, Any]], None] | None


def run_per_tensor(rule: UpdateRule, h: Hyper, params: list[Tensor], states: list[dict[str, Any]]) -> None:
    """Update each parameter in turn with its own tensors."""
    finish = rule._finish
    for p, state in zip(params, states):
        hp = rule._scalars(h, state)
        rule._update(p, p.grad, state, hp)
        if finish is not None:
            finish(hp, state)


class _StateLists(dict):
    """``state`` for a bucket: each tensor entry a TensorList; records entries the update assigns."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.assigned: set[str] = set()

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self.assigned.add(key)


def _is_static(v: Any) -> bool:
    # Values an update branches on: they split a bucket instead of becoming a per-tensor ScalarList.
    return v is None or isinstance(v, bool | str | tuple)


def _merge(hypers: list[Hyper]) -> Hyper:
    first = hypers[0]
    merged = Hyper()
    for key, v0 in first.items():
        values = [hp[key] for hp in hypers]
        if all(v is v0 for v in values) or (
            not isinstance(v0, Tensor) and all(not isinstance(v, Tensor) and v == v0 for v in values)
        ):
            merged[key] = v0
        else:
            merged[key] = ScalarList(values)
    return merged


def run_foreach(rule: UpdateRule, h: Hyper, params: list[Tensor], states: list[dict[str, Any]]) -> None:
    """Update buckets of parameters (same device, dtype, state layout and branches) with one call each."""
    hypers = [rule._scalars(h, s) for s in states]
    buckets: dict[tuple[Any, ...], list[int]] = {}
    for i, (p, s, hp) in enumerate(zip(params, states, hypers)):
        layout = tuple(k for k, v in s.items() if isinstance(v, Tensor))
        branches = tuple((k, v) for k, v in hp.items() if _is_static(v))
        buckets.setdefault((p.device, p.dtype, layout, branches), []).append(i)

    for (_, _, layout, _), idx in buckets.items():
        bucket_states = [states[i] for i in idx]
        state_lists = _StateLists({k: TensorList(s[k] for s in bucket_states) for k in layout})
        rule._update(
            TensorList(params[i] for i in idx),
            TensorList(params[i].grad for i in idx),  # type: ignore[misc]
            state_lists,
            _merge([hypers[i] for i in idx]),
        )
        for key in state_lists.assigned:
            value = state_lists[key]
            for j, s in enumerate(bucket_states):
                s[key] = value.tensors[j] if isinstance(value, TensorList) else value
    if rule._finish is not None:
        for s, hp in zip(states, hypers):
            rule._finish(hp, s)
