"""RMSprop: divide the gradient by a running root mean square of recent gradients."""

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
from optimlab.engines import Hyper, as_real
from optimlab.optimizer import ParamsT, _to_scalar

__all__ = ["RMSprop"]


class RMSprop(ElementwiseOptimizer):
    r"""RMSprop, optionally centered and with momentum.

    .. math::
        v \leftarrow \alpha v + (1-\alpha) g^2,\quad
        \tilde v = v - \bar g^2 \ (\text{centered: } \bar g \leftarrow \alpha\bar g + (1-\alpha)g),\quad
        b \leftarrow \mu b + \frac{g}{\sqrt{\tilde v}+\epsilon},\quad \theta \leftarrow \theta - \gamma b

    Args:
        params: parameters or parameter groups to optimize.
        lr: learning rate (default 1e-2).
        alpha: smoothing constant of the squared-gradient average (default 0.99).
        eps: added to the denominator (default 1e-8).
        weight_decay: L2 penalty added to the gradient (default 0).
        momentum: momentum factor (default 0).
        centered: normalize by an estimate of the gradient's variance instead of its second moment.
        capturable, foreach, maximize, differentiable: as in ``torch.optim.RMSprop``.
        fused: run the update with optimlab's fused engine (``optimlab.engines.flat``); an optimlab extension.
            The group gets a ``fused`` key only when it is set, so default groups and state_dicts stay torch's.
        fused: run the update with optimlab\'s fused engine (an optimlab extension; torch has no fused here).

    References: Tieleman & Hinton, Lecture 6.5 of "Neural Networks for Machine Learning" (Coursera, 2012);
    Graves, "Generating Sequences With Recurrent Neural Networks" (2013, arXiv:1308.0850) for the centered form.
    """

    _sparse_error = "RMSprop does not support sparse gradients"
    _capturable_xla = (True, True)

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum: float = 0,
        centered: bool = False,
        capturable: bool = False,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
        *,
        fused: bool | None = None,
    ) -> None:
        check_lr(lr)
        check_non_negative(eps, "Invalid epsilon value")
        check_non_negative(momentum, "Invalid momentum value")
        check_non_negative(weight_decay, "Invalid weight_decay value")
        check_non_negative(alpha, "Invalid alpha value")
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "alpha": alpha,
            "eps": eps,
            "centered": centered,
            "weight_decay": weight_decay,
            "capturable": capturable,
            "foreach": foreach,
            "maximize": maximize,
            "differentiable": differentiable,
        }
        self._init_optional_fused(params, defaults, fused)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        setdefault_flags(
            self,
            momentum=0,
            centered=False,
            foreach=None,
            maximize=False,
            differentiable=False,
            capturable=False,
        )
        tensor_steps(self, device_if=lambda g: g["capturable"])

    def _init_state(self, group: dict[str, Any], p: Tensor, state: dict[str, Any]) -> None:
        state["step"] = new_step(p, group, group["capturable"])
        state["square_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if group["momentum"] > 0:
            state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if group["centered"]:
            state["grad_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def _hyper(self, group: dict[str, Any]) -> Hyper:
        return Hyper(
            lr=_to_scalar(group["lr"]),
            alpha=group["alpha"],
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            momentum=group["momentum"],
            centered=group["centered"],
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
        param, g = as_real(param), as_real(g)
        square_avg = as_real(state["square_avg"])
        alpha = h.alpha
        square_avg.mul_(alpha).addcmul_(g, g, value=1 - alpha)
        if h.centered:
            grad_avg = as_real(state["grad_avg"])
            grad_avg.lerp_(g, 1 - alpha)
            avg = square_avg.addcmul(grad_avg, grad_avg, value=-1).sqrt_()
        else:
            avg = square_avg.sqrt()
        avg = avg.add(h.eps) if h.differentiable else avg.add_(h.eps)
        if h.momentum > 0:
            buf = as_real(state["momentum_buffer"])
            buf.mul_(h.momentum).addcdiv_(g, avg)
            param.add_(buf, alpha=-h.lr)
        else:
            param.addcdiv_(g, avg, value=-h.lr)
