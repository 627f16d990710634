"""RAdam: Adam with the variance of the adaptive learning rate rectified."""

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

__all__ = ["RAdam"]


class RAdam(ElementwiseOptimizer):
    r"""RAdam: Adam whose adaptive step is rectified by the length of the approximated simple moving average.

    .. math::
        \rho_\infty = \frac{2}{1-\beta_2} - 1,\quad
        \rho_t = \rho_\infty - \frac{2t\beta_2^t}{1-\beta_2^t},\quad
        \theta \leftarrow \theta - \gamma\,\hat m\cdot
        \begin{cases} r_t\,\sqrt{1-\beta_2^t}/(\sqrt{v}+\epsilon) & \rho_t > 5\\ 1 & \text{otherwise}\end{cases}

    with :math:`r_t = \sqrt{\frac{(\rho_t-4)(\rho_t-2)\rho_\infty}{(\rho_\infty-4)(\rho_\infty-2)\rho_t}}`:
    the first steps are plain momentum SGD, then Adam with a warm-up built in.

    Args:
        params: parameters or parameter groups to optimize.
        lr: learning rate (default 1e-3).
        betas: decay rates of the moment estimates (default (0.9, 0.999)).
        eps: added to the denominator (default 1e-8).
        weight_decay: weight decay (default 0), L2 unless ``decoupled_weight_decay``.
        decoupled_weight_decay: decay the weights directly as AdamW does (RAdamW).
        foreach, maximize, capturable, differentiable: as in ``torch.optim.RAdam``.
        fused: run the update with optimlab's fused engine (``optimlab.engines.flat``); an optimlab extension.
            The group gets a ``fused`` key only when it is set, so default groups and state_dicts stay torch's.
        fused: run the update with optimlab\'s fused engine (an optimlab extension; torch has no fused here).

    Reference: Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond" (ICLR 2020,
    arXiv:1908.03265).
    """

    _sparse_error = "RAdam does not support sparse gradients"

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        decoupled_weight_decay: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
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
            "maximize": maximize,
            "foreach": foreach,
            "capturable": capturable,
            "decoupled_weight_decay": decoupled_weight_decay,
            "differentiable": differentiable,
        }
        self._init_optional_fused(params, defaults, fused)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        setdefault_flags(
            self,
            foreach=None,
            maximize=False,
            differentiable=False,
            decoupled_weight_decay=False,
            capturable=False,
        )
        tensor_steps(self, device_if=lambda g: g["capturable"])

    def _init_state(self, group: dict[str, Any], p: Tensor, state: dict[str, Any]) -> None:
        state["step"] = new_step(p, group, group["capturable"])
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def _hyper(self, group: dict[str, Any]) -> Hyper:
        beta1, beta2 = group["betas"]
        return Hyper(
            lr=_to_scalar(group["lr"]),
            beta1=beta1,
            beta2=beta2,
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            decoupled=group["decoupled_weight_decay"],
            maximize=group["maximize"],
            differentiable=group["differentiable"],
            capturable=group["capturable"],
        )

    def _scalars(self, h: Hyper, state: dict[str, Any]) -> Hyper:
        step_t = state["step"]
        step_t += 1
        step = step_t if h.capturable else _get_value(step_t)
        beta2 = h.beta2
        bias_correction1 = 1 - h.beta1**step
        bias_correction2 = 1 - beta2**step
        rho_inf = 2 / (1 - beta2) - 1
        rho_t = rho_inf - 2 * step * (beta2**step) / bias_correction2
        # Only the rectified branch uses rect (for rho_t <= 4 the radicand is negative).
        rectified = h.capturable or rho_t > 5.0
        rect = (
            ((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5 if rectified else 0.0
        )
        return h.with_(
            bias_correction1=bias_correction1,
            bias_correction2_sqrt=bias_correction2**0.5,
            rho_t=rho_t,
            rect=rect,
            rectified=None if h.capturable else bool(rho_t > 5.0),
        )

    @staticmethod
    def _update(param: Any, grad: Any, state: dict[str, Any], h: Hyper) -> None:
        g = -grad if h.maximize else grad
        param, g = as_real(param), as_real(g)
        exp_avg, exp_avg_sq = as_real(state["exp_avg"]), as_real(state["exp_avg_sq"])
        if h.weight_decay != 0:
            if h.decoupled:
                param.mul_(1 - h.lr * h.weight_decay)
            else:
                g = g.add(param, alpha=h.weight_decay)
        exp_avg.lerp_(g, 1 - h.beta1)
        exp_avg_sq.mul_(h.beta2).addcmul_(g, g, value=1 - h.beta2)
        bias_corrected_exp_avg = exp_avg / h.bias_correction1

        def adaptive_lr() -> Any:
            exp_avg_sq_sqrt = exp_avg_sq.sqrt()
            exp_avg_sq_sqrt = exp_avg_sq_sqrt.add(h.eps) if h.differentiable else exp_avg_sq_sqrt.add_(h.eps)
            return h.bias_correction2_sqrt / exp_avg_sq_sqrt  # torch: reciprocal() * scalar

        if h.capturable:
            update = torch.where(h.rho_t > 5.0, h.rect * adaptive_lr(), 1.0)
            param.add_(bias_corrected_exp_avg * h.lr * update, alpha=-1.0)
        elif h.rectified:
            param.add_(bias_corrected_exp_avg * h.lr * adaptive_lr() * h.rect, alpha=-1.0)
        else:
            param.add_(bias_corrected_exp_avg * h.lr, alpha=-1.0)
