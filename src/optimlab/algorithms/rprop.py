"""Rprop: resilient backpropagation, a per-coordinate step size driven by the sign of the gradient."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from optimlab.algorithms._base import (
    ElementwiseOptimizer,
    check_lr,
    new_step,
    setdefault_flags,
    tensor_steps,
)
from optimlab.engines import Hyper, as_real
from optimlab.optimizer import ParamsT, _to_scalar

__all__ = ["Rprop"]


class Rprop(ElementwiseOptimizer):
    r"""Rprop: grow a coordinate's step while its gradient keeps its sign, shrink it when the sign flips.

    .. math::
        \eta_t = \begin{cases}\eta^+ & g_t g_{t-1} > 0\\ \eta^- & g_t g_{t-1} < 0\\ 1 & \text{else}\end{cases},\quad
        s \leftarrow \mathrm{clip}(\eta_t s, s_{\min}, s_{\max}),\quad
        \theta \leftarrow \theta - s\,\mathrm{sign}(g_t)

    (after a sign flip the gradient is treated as zero for one step). Meant for full-batch training.

    Args:
        params: parameters or parameter groups to optimize.
        lr: initial step size of every coordinate (default 1e-2); used only to initialize the state.
        etas: multiplicative decrease and increase factors :math:`(\eta^-, \eta^+)` (default (0.5, 1.2)).
        step_sizes: minimal and maximal step sizes (default (1e-6, 50)).
        capturable, foreach, maximize, differentiable: as in ``torch.optim.Rprop``.
        fused: run the update with optimlab's fused engine (``optimlab.engines.flat``); an optimlab extension.
            The group gets a ``fused`` key only when it is set, so default groups and state_dicts stay torch's.
        fused: run the update with optimlab\'s fused engine (an optimlab extension; torch has no fused here).

    Reference: Riedmiller & Braun, "A direct adaptive method for faster backpropagation learning: the RPROP
    algorithm" (ICNN 1993).
    """

    _sparse_error = "Rprop does not support sparse gradients"
    _capturable_xla = (True, True)

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-2,
        etas: tuple[float, float] = (0.5, 1.2),
        step_sizes: tuple[float, float] = (1e-6, 50),
        *,
        capturable: bool = False,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        check_lr(lr)
        if not 0.0 < etas[0] < 1.0 < etas[1]:
            raise ValueError(f"Invalid eta values: {etas[0]}, {etas[1]}")
        defaults = {
            "lr": lr,
            "etas": etas,
            "step_sizes": step_sizes,
            "foreach": foreach,
            "maximize": maximize,
            "differentiable": differentiable,
            "capturable": capturable,
        }
        self._init_optional_fused(params, defaults, fused)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        setdefault_flags(self, foreach=None, maximize=False, differentiable=False, capturable=False)
        tensor_steps(self, device_if=lambda g: g["capturable"])

    def _init_state(self, group: dict[str, Any], p: Tensor, state: dict[str, Any]) -> None:
        state["step"] = new_step(p, group, group["capturable"])
        state["prev"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        lr = group["lr"]
        # A complex coordinate is two real ones: the imaginary part gets a step size of its own.
        init = complex(lr, lr) if p.dtype.is_complex else _to_scalar(lr)
        state["step_size"] = torch.full_like(p.grad, init)  # type: ignore[arg-type]

    def _hyper(self, group: dict[str, Any]) -> Hyper:
        etaminus, etaplus = group["etas"]
        step_size_min, step_size_max = group["step_sizes"]
        return Hyper(
            etaminus=etaminus,
            etaplus=etaplus,
            step_size_min=step_size_min,
            step_size_max=step_size_max,
            maximize=group["maximize"],
            differentiable=group["differentiable"],
            capturable=group["capturable"],
        )

    def _scalars(self, h: Hyper, state: dict[str, Any]) -> Hyper:
        state["step"] += 1
        return h

    @staticmethod
    def _update(param: Any, grad: Any, state: dict[str, Any], h: Hyper) -> None:
        g = -grad if h.maximize else grad
        param, g = as_real(param), as_real(g)
        prev, step_size = as_real(state["prev"]), as_real(state["step_size"])
        sign = g.mul(prev.clone() if h.differentiable else prev).sign()
        if h.capturable:
            sign.copy_(torch.where(sign.gt(0), h.etaplus, sign))
            sign.copy_(torch.where(sign.lt(0), h.etaminus, sign))
            sign.copy_(torch.where(sign.eq(0), 1, sign))
        else:
            sign.masked_fill_(sign.gt(0), h.etaplus)
            sign.masked_fill_(sign.lt(0), h.etaminus)
            sign.masked_fill_(sign.eq(0), 1)
        step_size.mul_(sign).clamp_(h.step_size_min, h.step_size_max)
        # After a sign change the gradient counts as zero: no move now, and no flip detected next step.
        g = g.clone(memory_format=torch.preserve_format)
        if h.capturable:
            g.copy_(torch.where(sign.eq(h.etaminus), 0, g))
        else:
            g.masked_fill_(sign.eq(h.etaminus), 0)
        param.addcmul_(g.sign(), step_size, value=-1)
        prev.copy_(g)
