"""Adadelta: a per-coordinate step whose units match the parameter's, from two running averages."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from optimlab.algorithms._base import (
    ElementwiseOptimizer,
    check_lr,
    check_non_negative,
    new_step,
    setdefault_flags,
    tensor_steps,
)
from optimlab.engines import Hyper, TensorList, as_real
from optimlab.optimizer import ParamsT, _to_scalar

__all__ = ["Adadelta"]


class Adadelta(ElementwiseOptimizer):
    r"""Adadelta: scale the gradient by RMS[previous updates] / RMS[gradients].

    .. math::
        v \leftarrow \rho v + (1-\rho) g^2,\quad
        \Delta = \frac{\sqrt{u + \epsilon}}{\sqrt{v + \epsilon}}\, g,\quad
        u \leftarrow \rho u + (1-\rho)\Delta^2,\quad \theta \leftarrow \theta - \gamma\Delta

    Args:
        params: parameters or parameter groups to optimize.
        lr: coefficient :math:`\gamma` that scales delta before it is applied (default 1.0).
        rho: decay rate of the running averages (default 0.9).
        eps: added inside both square roots (default 1e-6).
        weight_decay: L2 penalty added to the gradient (default 0).
        foreach, capturable, maximize, differentiable: as in ``torch.optim.Adadelta``.
        fused: run the update with optimlab's fused engine (``optimlab.engines.flat``); an optimlab extension.
            The group gets a ``fused`` key only when it is set, so default groups and state_dicts stay torch's.
        fused: run the update with optimlab\'s fused engine (an optimlab extension; torch has no fused here).

    Reference: Zeiler, "ADADELTA: An Adaptive Learning Rate Method" (2012, arXiv:1212.5701).
    """

    _sparse_error = "Adadelta does not support sparse gradients"
    _capturable_xla = (False, False)

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1.0,
        rho: float = 0.9,
        eps: float = 1e-6,
        weight_decay: float = 0,
        foreach: bool | None = None,
        *,
        capturable: bool = False,
        maximize: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        check_lr(lr)
        if not 0.0 <= rho <= 1.0:
            raise ValueError(f"Invalid rho value: {rho}")
        check_non_negative(eps, "Invalid epsilon value")
        check_non_negative(weight_decay, "Invalid weight_decay value")
        defaults = {
            "lr": lr,
            "rho": rho,
            "eps": eps,
            "weight_decay": weight_decay,
            "maximize": maximize,
            "capturable": capturable,
            "foreach": foreach,
            "differentiable": differentiable,
        }
        self._init_optional_fused(params, defaults, fused)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        setdefault_flags(self, foreach=None, maximize=False, differentiable=False, capturable=False)
        tensor_steps(self, device_if=lambda g: g["capturable"])

    def _init_state(self, group: dict[str, Any], p: Tensor, state: dict[str, Any]) -> None:
        state["step"] = new_step(p, group, group["capturable"])
        state["square_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["acc_delta"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def _hyper(self, group: dict[str, Any]) -> Hyper:
        return Hyper(
            lr=_to_scalar(group["lr"]),
            rho=group["rho"],
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            maximize=group["maximize"],
            differentiable=group["differentiable"],
        )

    def _scalars(self, h: Hyper, state: dict[str, Any]) -> Hyper:
        state["step"] += 1
        return h

    @staticmethod
    def _update(param: Any, grad: Any, state: dict[str, Any], h: Hyper) -> None:
        g = -grad if h.maximize else grad
        if h.weight_decay != 0:
            g = g.add(param, alpha=h.weight_decay)
        # As torch: the state and the gradient are viewed as real, the parameter is updated in complex form.
        g = as_real(g)
        square_avg, acc_delta = as_real(state["square_avg"]), as_real(state["acc_delta"])
        rho = h.rho
        square_avg.mul_(rho).addcmul_(g, g, value=1 - rho)
        std = square_avg.add(h.eps).sqrt_()
        delta = acc_delta.add(h.eps).sqrt_()
        if h.differentiable:
            delta = delta.clone()
        delta.div_(std).mul_(g)
        acc_delta.mul_(rho).addcmul_(delta, delta, value=1 - rho)
        param.add_(_as_complex_like(delta, param), alpha=-h.lr)


def _as_complex_like(delta: Any, param: Any) -> Any:
    """Undo ``as_real`` on ``delta`` wherever ``param`` is complex (elementwise over lists)."""
    if isinstance(delta, TensorList):
        return TensorList(_as_complex_like(d, p) for d, p in zip(delta, param))
    return torch.view_as_complex(delta) if torch.is_complex(param) else delta
