"""ASGD: averaged stochastic gradient descent (Polyak-Ruppert averaging)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from optimlab.algorithms._base import (
    ElementwiseOptimizer,
    check_lr,
    check_non_negative,
    setdefault_flags,
)
from optimlab.engines import Hyper, as_real
from optimlab.optimizer import ParamsT, _get_scalar_dtype, _get_value, _to_scalar

__all__ = ["ASGD"]


class ASGD(ElementwiseOptimizer):
    r"""Averaged SGD: SGD with a decaying step, plus a running average ``ax`` of the iterates.

    .. math::
        \theta \leftarrow \theta(1 - \lambda\eta_t) - \eta_t g,\quad
        \bar\theta \leftarrow \bar\theta + \mu_t(\theta - \bar\theta),\quad
        \eta_{t} = \frac{\gamma}{(1 + \lambda\gamma t)^{\alpha}},\quad \mu_t = \frac{1}{\max(1, t - t_0)}

    The average (``optimizer.state[p]["ax"]``) starts after ``t0`` steps; evaluate with it for the averaged model.

    Args:
        params: parameters or parameter groups to optimize.
        lr: learning rate :math:`\gamma` (default 1e-2).
        lambd: decay term :math:`\lambda` (default 1e-4).
        alpha: power of the step-size decay (default 0.75).
        t0: step at which averaging starts (default 1e6).
        weight_decay: L2 penalty added to the gradient (default 0).
        foreach, maximize, differentiable, capturable: as in ``torch.optim.ASGD``.
        fused: run the update with optimlab's fused engine (``optimlab.engines.flat``); an optimlab extension.
            The group gets a ``fused`` key only when it is set, so default groups and state_dicts stay torch's.
        fused: run the update with optimlab\'s fused engine (an optimlab extension; torch has no fused here).

    Reference: Polyak & Juditsky, "Acceleration of Stochastic Approximation by Averaging" (SIAM J. Control
    Optim. 1992).
    """

    _sparse_error = "ASGD does not support sparse gradients"
    _scalar_state = ("step", "eta", "mu")
    _capturable_scalars = ("step", "eta", "mu")
    _capturable_what = ("params, mus, etas, and state_steps", "params, mus, etas, and state_steps")

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-2,
        lambd: float = 1e-4,
        alpha: float = 0.75,
        t0: float = 1e6,
        weight_decay: float = 0,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
        capturable: bool = False,
        *,
        fused: bool | None = None,
    ) -> None:
        check_lr(lr)
        check_non_negative(weight_decay, "Invalid weight_decay value")
        defaults = {
            "lr": lr,
            "lambd": lambd,
            "alpha": alpha,
            "t0": t0,
            "weight_decay": weight_decay,
            "foreach": foreach,
            "maximize": maximize,
            "differentiable": differentiable,
            "capturable": capturable,
        }
        self._init_optional_fused(params, defaults, fused)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        setdefault_flags(self, foreach=None, maximize=False, differentiable=False, capturable=False)
        for group in self.param_groups:
            for p in group["params"]:
                p_state = self.state.get(p, [])
                if len(p_state) == 0:
                    continue
                for key in ("step", "eta", "mu"):
                    if not torch.is_tensor(p_state[key]):
                        value = float(p_state[key]) if key == "step" else p_state[key]
                        p_state[key] = torch.tensor(value, dtype=_get_scalar_dtype(), device=p.device)

    def _init_state(self, group: dict[str, Any], p: Tensor, state: dict[str, Any]) -> None:
        # ASGD keeps its scalars on the parameter's device.
        state["step"] = torch.zeros((), device=p.device, dtype=_get_scalar_dtype())
        state["eta"] = (
            torch.as_tensor(_to_scalar(group["lr"]), device=p.device, dtype=_get_scalar_dtype()).clone().detach()
        )
        state["mu"] = torch.ones((), device=p.device, dtype=_get_scalar_dtype())
        state["ax"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def _hyper(self, group: dict[str, Any]) -> Hyper:
        return Hyper(
            lr=_to_scalar(group["lr"]),
            lambd=group["lambd"],
            alpha=group["alpha"],
            t0=group["t0"],
            weight_decay=group["weight_decay"],
            maximize=group["maximize"],
            capturable=group["capturable"],
        )

    def _scalars(self, h: Hyper, state: dict[str, Any]) -> Hyper:
        state["step"] += 1
        if h.capturable:
            return h
        return h.with_(eta=_get_value(state["eta"]), copy_average=state["mu"].item() == 1)

    @staticmethod
    def _update(param: Any, grad: Any, state: dict[str, Any], h: Hyper) -> None:
        g = -grad if h.maximize else grad
        param, g, ax = as_real(param), as_real(g), as_real(state["ax"])
        if h.weight_decay != 0:
            g = g.add(param, alpha=h.weight_decay)
        if h.capturable:
            eta = state["eta"]
            param.mul_(1 - h.lambd * eta)
            param.addcmul_(g, eta, value=-1)
        else:
            param.mul_(1 - h.lambd * h.eta)
            param.add_(g, alpha=-h.eta)
        if h.capturable or not h.copy_average:
            ax.add_(param.sub(ax).mul_(state["mu"]))
        else:
            ax.copy_(param)

    def _finish(self, h: Hyper, state: dict[str, Any]) -> None:
        # eta and mu for the next step, from the step just taken.
        step_t, eta, mu = state["step"], state["eta"], state["mu"]
        lr, lambd = h.lr, h.lambd
        if h.capturable:
            eta.copy_(lr / ((1 + lambd * lr * step_t) ** h.alpha))
            mu.copy_(1 / torch.maximum(step_t - h.t0, torch.ones_like(step_t)))
        else:
            step = _get_value(step_t)
            # fill_, not copy_ of a new tensor: the same rounding, one torch op fewer each (~100 µs cold)
            eta.fill_(lr / ((1 + lambd * lr * step) ** h.alpha))
            mu.fill_(1 / max(1, step - h.t0))
