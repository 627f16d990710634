"""Stochastic gradient descent, with heavy-ball or Nesterov momentum."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from optimlab.algorithms._base import ElementwiseOptimizer, check_fused_flags, check_lr, setdefault_flags
from optimlab.engines import Hyper
from optimlab.optimizer import ParamsT, _to_scalar

__all__ = ["SGD"]


class SGD(ElementwiseOptimizer):
    r"""Stochastic gradient descent, optionally with momentum (torch's formulation).

    .. math::
        g \leftarrow \nabla f(\theta) + \lambda\theta,\qquad
        b \leftarrow \mu b + (1-\tau) g \ (b_1 = g),\qquad
        \theta \leftarrow \theta - \gamma\,(g + \mu b \text{ if nesterov else } b)

    Momentum here is torch's "velocity without the :math:`1-\mu` factor": with momentum :math:`\mu` the
    steady-state step on a constant gradient is :math:`\gamma g / (1-\mu)`, ten times plain SGD's at
    :math:`\mu = 0.9`.

    Args:
        params: parameters or parameter groups to optimize.
        lr: learning rate :math:`\gamma` (float or 1-element Tensor, default 1e-3).
        momentum: momentum factor :math:`\mu` (default 0).
        dampening: dampening :math:`\tau` for momentum (default 0).
        weight_decay: L2 penalty :math:`\lambda` added to the gradient (default 0).
        nesterov: use Nesterov momentum (needs momentum > 0 and dampening 0).
        maximize: maximize the objective instead of minimizing it.
        foreach: run the update over tensor lists (``torch._foreach_*``); None picks torch's default.
        differentiable: let autograd differentiate through the step (slower).
        fused: run the update with optimlab's fused engine.

    References: Robbins & Monro (1951); Polyak, "Some methods of speeding up the convergence of iteration
    methods" (1964); Sutskever et al., "On the importance of initialization and momentum in deep learning" (2013).
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float | Tensor = 0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        check_lr(lr)
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
            "maximize": maximize,
            "foreach": foreach,
            "differentiable": differentiable,
            "fused": fused,
        }
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        super().__init__(params, defaults)
        check_fused_flags(fused, foreach, differentiable)

    _scalar_state = ()

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        setdefault_flags(self, nesterov=False, maximize=False, foreach=None, differentiable=False, fused=False)

    def _has_state(self, group: dict[str, Any]) -> bool:
        return group["momentum"] != 0

    def _hyper(self, group: dict[str, Any]) -> Hyper:
        return Hyper(
            lr=_to_scalar(group["lr"]),
            momentum=group["momentum"],
            dampening=group["dampening"],
            weight_decay=group["weight_decay"],
            nesterov=group["nesterov"],
            maximize=group["maximize"],
            first=False,
        )

    def _scalars(self, h: Hyper, state: dict[str, Any]) -> Hyper:
        if h.momentum != 0 and state.get("momentum_buffer") is None:
            return h.with_(first=True)  # the buffer starts as the gradient itself, undamped
        return h

    @staticmethod
    def _update(param: Any, grad: Any, state: dict[str, Any], h: Hyper) -> None:
        g = -grad if h.maximize else grad
        wd = h.weight_decay
        if wd != 0:
            if isinstance(wd, Tensor) and wd.requires_grad:
                g = g.addcmul_(param.clone(), wd)  # differentiable path: in place on g, as torch
            else:
                g = g.add(param, alpha=wd)
        if h.momentum != 0:
            if h.first:
                buf = g.detach().clone()
                state["momentum_buffer"] = buf
            else:
                buf = state["momentum_buffer"]
                buf.mul_(h.momentum).add_(g, alpha=1 - h.dampening)
            g = g.add(buf, alpha=h.momentum) if h.nesterov else buf
        lr = h.lr
        if isinstance(lr, Tensor) and lr.requires_grad:
            param.addcmul_(g, lr, value=-1)
        else:
            param.add_(g, alpha=-lr)
