"""Adamax: Adam with the infinity norm in place of the second moment."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from optimlab.algorithms._base import (
    ElementwiseOptimizer,
    check_betas,
    check_lr,
    check_non_negative,
    new_step,
    setdefault_flags,
    tensor_steps,
)
from optimlab.engines import Hyper, as_real
from optimlab.optimizer import ParamsT, _get_value, _to_scalar

__all__ = ["Adamax"]


class Adamax(ElementwiseOptimizer):
    r"""Adamax: Adam's update with :math:`u = \max(\beta_2 u, |g| + \epsilon)` as the denominator.

    .. math::
        m \leftarrow \beta_1 m + (1-\beta_1) g,\quad u \leftarrow \max(\beta_2 u, |g| + \epsilon),\quad
        \theta \leftarrow \theta - \frac{\gamma}{1-\beta_1^t}\frac{m}{u}

    Args:
        params: parameters or parameter groups to optimize.
        lr: learning rate (default 2e-3).
        betas: decay rates of the first moment and of the infinity norm (default (0.9, 0.999)).
        eps: added to :math:`|g|` for numerical stability (default 1e-8).
        weight_decay: L2 penalty added to the gradient (default 0).
        foreach, maximize, differentiable, capturable: as in ``torch.optim.Adamax``.
        fused: run the update with optimlab's fused engine (``optimlab.engines.flat``); an optimlab extension.
            The group gets a ``fused`` key only when it is set, so default groups and state_dicts stay torch's.
        fused: run the update with optimlab\'s fused engine (an optimlab extension; torch has no fused here).

    Reference: Kingma & Ba, "Adam: A Method for Stochastic Optimization" (2014, arXiv:1412.6980), section 7.1.
    """

    _sparse_error = "Adamax does not support sparse gradients"

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        capturable: bool = False,
        fused: bool | None = None,
    ) -> None:
        check_lr(lr)
        check_non_negative(eps, "Invalid epsilon value")
        check_betas(betas)
        check_non_negative(weight_decay, "Invalid weight_decay value")
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
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
        tensor_steps(self, device_if=lambda g: g["capturable"])

    def _init_state(self, group: dict[str, Any], p: Tensor, state: dict[str, Any]) -> None:
        state["step"] = new_step(p, group, group["capturable"])
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["exp_inf"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def _hyper(self, group: dict[str, Any]) -> Hyper:
        beta1, beta2 = group["betas"]
        return Hyper(
            lr=_to_scalar(group["lr"]),
            beta1=beta1,
            beta2=beta2,
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            maximize=group["maximize"],
            differentiable=group["differentiable"],
            capturable=group["capturable"],
        )

    def _scalars(self, h: Hyper, state: dict[str, Any]) -> Hyper:
        step_t = state["step"]
        step_t += 1
        if h.capturable:
            # Negated and divided by lr so the update is one addcdiv_ without a host-side scalar.
            neg_bias_correction = h.beta1**step_t - 1
            neg_bias_correction.div_(h.lr)
            return h.with_(neg_bias_correction=neg_bias_correction)
        bias_correction = 1 - h.beta1 ** _get_value(step_t)
        return h.with_(neg_clr=-(h.lr / bias_correction))

    @staticmethod
    def _update(param: Any, grad: Any, state: dict[str, Any], h: Hyper) -> None:
        g = -grad if h.maximize else grad
        if h.weight_decay != 0:
            g = g.add(param, alpha=h.weight_decay)
        param, g = as_real(param), as_real(g)
        exp_avg, exp_inf = as_real(state["exp_avg"]), as_real(state["exp_inf"])

        exp_avg.lerp_(g, 1 - h.beta1)
        if h.differentiable:
            norm_buf = torch.cat([exp_inf.mul_(h.beta2).unsqueeze(0), g.abs().add_(h.eps).unsqueeze_(0)], 0)
            exp_inf.copy_(torch.amax(norm_buf, 0, keepdim=False))
        else:
            torch.maximum(exp_inf.mul_(h.beta2), g.abs().add_(h.eps), out=exp_inf)

        if h.capturable:
            param.addcdiv_(exp_avg, exp_inf * h.neg_bias_correction)
        else:
            param.addcdiv_(exp_avg, exp_inf, value=h.neg_clr)
