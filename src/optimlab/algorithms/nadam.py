"""NAdam: Adam with Nesterov momentum and a momentum schedule."""

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
from optimlab.optimizer import ParamsT, _get_scalar_dtype, _get_value, _to_scalar

__all__ = ["NAdam"]


class NAdam(ElementwiseOptimizer):
    r"""NAdam: Adam whose first-moment step looks ahead (Nesterov), with Dozat's momentum schedule.

    .. math::
        \mu_t = \beta_1\bigl(1 - \tfrac12 0.96^{t\psi}\bigr),\quad
        \theta \leftarrow \theta - \gamma\Bigl(\frac{(1-\mu_t)\,g}{1-\prod_{i\le t}\mu_i}
            + \frac{\mu_{t+1}\,m}{1-\prod_{i\le t+1}\mu_i}\Bigr)\Big/\bigl(\sqrt{\hat v} + \epsilon\bigr)

    Args:
        params: parameters or parameter groups to optimize.
        lr: learning rate (default 2e-3).
        betas: decay rates of the moment estimates (default (0.9, 0.999)).
        eps: added to the denominator (default 1e-8).
        weight_decay: weight decay (default 0), L2 unless ``decoupled_weight_decay`` (then NAdamW).
        momentum_decay: :math:`\psi` of the momentum schedule (default 4e-3).
        decoupled_weight_decay: decay the weights directly as AdamW does.
        foreach, maximize, capturable, differentiable: as in ``torch.optim.NAdam``.
        fused: run the update with optimlab's fused engine (``optimlab.engines.flat``); an optimlab extension.
            The group gets a ``fused`` key only when it is set, so default groups and state_dicts stay torch's.
        fused: run the update with optimlab\'s fused engine (an optimlab extension; torch has no fused here).

    Reference: Dozat, "Incorporating Nesterov Momentum into Adam" (ICLR 2016 workshop).
    """

    _sparse_error = "NAdam does not support sparse gradients"
    _scalar_state = ("step", "mu_product")
    _capturable_scalars = ("step", "mu_product")
    _capturable_what = ("params, mu_products and state_steps", "params, mu_products, and state_steps")

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum_decay: float = 4e-3,
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
        check_non_negative(momentum_decay, "Invalid momentum_decay value")
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "momentum_decay": momentum_decay,
            "decoupled_weight_decay": decoupled_weight_decay,
            "maximize": maximize,
            "foreach": foreach,
            "capturable": capturable,
            "differentiable": differentiable,
        }
        self._init_optional_fused(params, defaults, fused)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        setdefault_flags(
            self,
            maximize=False,
            foreach=None,
            capturable=False,
            differentiable=False,
            decoupled_weight_decay=False,
        )
        tensor_steps(self, "mu_product", device_if=lambda g: g["capturable"])

    def _init_state(self, group: dict[str, Any], p: Tensor, state: dict[str, Any]) -> None:
        state["step"] = new_step(p, group, group["capturable"])
        state["mu_product"] = (
            torch.ones((), dtype=_get_scalar_dtype(), device=p.device)
            if group["capturable"]
            else torch.tensor(1.0, dtype=_get_scalar_dtype())
        )
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
            momentum_decay=group["momentum_decay"],
            decoupled=group["decoupled_weight_decay"],
            maximize=group["maximize"],
            tensor_math=group["capturable"] or group["differentiable"],
            capturable=group["capturable"],
        )

    def _scalars(self, h: Hyper, state: dict[str, Any]) -> Hyper:
        step_t, mu_product = state["step"], state["mu_product"]
        step_t += 1
        step = step_t if h.capturable else _get_value(step_t)
        bias_correction2 = 1 - h.beta2**step
        # Dozat's momentum schedule mu_t and the look-ahead mu_{t+1}.
        mu = h.beta1 * (1.0 - 0.5 * (0.96 ** (step * h.momentum_decay)))
        mu_next = h.beta1 * (1.0 - 0.5 * (0.96 ** ((step + 1) * h.momentum_decay)))
        mu_product *= mu
        lr = h.lr
        if h.tensor_math:
            mu_product_next = mu_product * mu_next
            grad_coef = -lr * (1.0 - mu) / (1.0 - mu_product)
            exp_avg_coef = -lr * mu_next / (1.0 - mu_product_next)
        else:
            mu_product_next = _get_value(mu_product) * mu_next
            grad_coef = -lr * (1.0 - mu) / (1.0 - _get_value(mu_product))
            exp_avg_coef = (-lr * mu_next) / (1.0 - mu_product_next)
        return h.with_(bias_correction2=bias_correction2, grad_coef=grad_coef, exp_avg_coef=exp_avg_coef)

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
        denom = exp_avg_sq.div(h.bias_correction2).sqrt()
        if h.tensor_math:
            # Scale the operands instead of passing value=: autograd must see the coefficients.
            denom = denom.add(h.eps)
            param.addcdiv_(g * h.grad_coef, denom)
            param.addcdiv_(exp_avg * h.exp_avg_coef, denom)
        else:
            denom.add_(h.eps)
            param.addcdiv_(g, denom, value=h.grad_coef)
            param.addcdiv_(exp_avg, denom, value=h.exp_avg_coef)
