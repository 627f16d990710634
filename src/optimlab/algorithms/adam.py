"""Adam and AdamW: adaptive moment estimation, with L2 or decoupled weight decay, and AMSGrad."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from optimlab.algorithms._base import (
    ElementwiseOptimizer,
    check_betas,
    check_fused_flags,
    check_lr,
    check_non_negative,
    check_step_not_requires_grad,
    new_step,
    setdefault_flags,
    tensor_steps,
)
from optimlab.engines import Hyper, as_real
from optimlab.optimizer import ParamsT, _get_value, _to_scalar

__all__ = ["Adam", "AdamW"]


def _check_tensor_hyper(value: Any, name: str, foreach: bool | None, capturable: bool) -> None:
    if isinstance(value, Tensor):
        if foreach and not capturable:
            raise ValueError(f"{name} as a Tensor is not supported for capturable=False and foreach=True")
        if value.numel() != 1:
            raise ValueError(f"Tensor {name} must be 1-element")


class Adam(ElementwiseOptimizer):
    r"""Adam: first and second moment estimates of the gradient, bias-corrected.

    .. math::
        m \leftarrow \beta_1 m + (1-\beta_1) g,\quad v \leftarrow \beta_2 v + (1-\beta_2) g^2,\quad
        \theta \leftarrow \theta - \frac{\gamma}{1-\beta_1^t}\,
            \frac{m}{\sqrt{v}/\sqrt{1-\beta_2^t} + \epsilon}

    Args:
        params: parameters or parameter groups to optimize.
        lr: learning rate :math:`\gamma` (float or 1-element Tensor, default 1e-3).
        betas: :math:`(\beta_1, \beta_2)`, decay rates of the moment estimates (default (0.9, 0.999)).
        eps: added to the denominator for numerical stability (default 1e-8).
        weight_decay: weight decay :math:`\lambda` (default 0), L2 (added to the gradient) unless
            ``decoupled_weight_decay``.
        amsgrad: use the maximum of past second moments (AMSGrad).
        foreach, maximize, capturable, differentiable, fused: as in ``torch.optim.Adam``.
        decoupled_weight_decay: decay the weights directly (:math:`\theta \leftarrow \theta(1-\gamma\lambda)`),
            which makes this AdamW.

    References: Kingma & Ba, "Adam: A Method for Stochastic Optimization" (2014, arXiv:1412.6980);
    Reddi et al., "On the Convergence of Adam and Beyond" (ICLR 2018) for AMSGrad.
    """

    _sparse_error = "Adam does not support sparse gradients, please consider SparseAdam instead"

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        betas: tuple[float | Tensor, float | Tensor] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        decoupled_weight_decay: bool = False,
    ) -> None:
        if isinstance(lr, Tensor) and foreach and not capturable:
            raise ValueError("lr as a Tensor is not supported for capturable=False and foreach=True")
        check_lr(lr)
        check_non_negative(eps, "Invalid epsilon value")
        check_betas(betas)
        check_non_negative(weight_decay, "Invalid weight_decay value")
        if not (
            (isinstance(betas[0], float) and isinstance(betas[1], float))
            or (isinstance(betas[0], Tensor) and isinstance(betas[1], Tensor))
        ):
            raise ValueError("betas must be either both floats or both Tensors")
        _check_tensor_hyper(betas[0], "betas[0]", foreach, capturable)
        _check_tensor_hyper(betas[1], "betas[1]", foreach, capturable)
        betas = tuple(map(_to_scalar, betas))  # type: ignore[assignment]
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "amsgrad": amsgrad,
            "maximize": maximize,
            "foreach": foreach,
            "capturable": capturable,
            "differentiable": differentiable,
            "fused": fused,
            "decoupled_weight_decay": decoupled_weight_decay,
        }
        super().__init__(params, defaults)
        check_fused_flags(fused, foreach, differentiable)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        setdefault_flags(
            self,
            amsgrad=False,
            maximize=False,
            foreach=None,
            capturable=False,
            differentiable=False,
            decoupled_weight_decay=False,
            fused=None,
        )
        tensor_steps(self, device_if=lambda g: g["capturable"] or g["fused"])

    def _uses_foreach(self, group: dict[str, Any], params: list[Tensor]) -> bool:
        if group["foreach"] is None and group["fused"] is None and torch.is_tensor(group["lr"]):
            return group["capturable"] and super()._uses_foreach(group, params)
        return super()._uses_foreach(group, params)

    def _check_group(self, group: dict[str, Any], params: list[Tensor]) -> None:
        check_step_not_requires_grad(self, group, params)
        if group["foreach"] and torch.is_tensor(group["lr"]) and not group["capturable"] and params:
            raise RuntimeError("lr as a Tensor is not supported for capturable=False and foreach=True")
        super()._check_group(group, params)

    def _init_state(self, group: dict[str, Any], p: Tensor, state: dict[str, Any]) -> None:
        state["step"] = new_step(p, group, group["capturable"] or group["fused"])
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def _hyper(self, group: dict[str, Any]) -> Hyper:
        beta1, beta2 = group["betas"]
        return Hyper(
            lr=_to_scalar(group["lr"]),
            beta1=_to_scalar(beta1),
            beta2=_to_scalar(beta2),
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            amsgrad=group["amsgrad"],
            maximize=group["maximize"],
            decoupled=group["decoupled_weight_decay"],
            differentiable=group["differentiable"],
            tensor_math=group["capturable"] or group["differentiable"],
        )

    def _scalars(self, h: Hyper, state: dict[str, Any]) -> Hyper:
        step_t = state["step"]
        step_t += 1
        beta1, beta2 = h.beta1, h.beta2
        if h.tensor_math:
            # capturable/differentiable: bias corrections stay tensors (no host sync, gradients flow).
            step = step_t

            def power(beta: Any) -> Any:
                if h.differentiable and isinstance(beta, Tensor) and beta.requires_grad:
                    return beta ** step.clone()
                return beta**step

            bias_correction1 = 1 - power(beta1)
            bias_correction2 = 1 - power(beta2)
            step_size_neg = (h.lr / bias_correction1).neg()
            return h.with_(step_size_neg=step_size_neg, bias_correction2_sqrt=bias_correction2.sqrt())
        step = _get_value(step_t)
        bias_correction1 = 1 - beta1**step
        bias_correction2 = 1 - beta2**step
        step_size = h.lr / bias_correction1
        return h.with_(neg_step_size=-step_size, bias_correction2_sqrt=bias_correction2**0.5)

    @staticmethod
    def _update(param: Any, grad: Any, state: dict[str, Any], h: Hyper) -> None:
        g = -grad if h.maximize else grad
        wd = h.weight_decay
        if wd != 0:
            if h.decoupled:
                param.mul_(1 - h.lr * wd)
            elif h.differentiable and isinstance(wd, Tensor) and wd.requires_grad:
                g = g.addcmul_(param.clone(), wd)
            else:
                g = g.add(param, alpha=wd)
        param, g = as_real(param), as_real(g)
        exp_avg, exp_avg_sq = as_real(state["exp_avg"]), as_real(state["exp_avg_sq"])

        beta1, beta2 = h.beta1, h.beta2
        if isinstance(beta1, Tensor):
            beta1 = beta1.to(device=param.device, dtype=param.dtype, non_blocking=True)
        exp_avg.lerp_(g, 1 - beta1)
        if h.differentiable and isinstance(beta2, Tensor) and beta2.requires_grad:
            exp_avg_sq.lerp_(torch.square(g), weight=1 - beta2)
        else:
            exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)

        second = exp_avg_sq
        if h.amsgrad:
            max_exp_avg_sq = as_real(state["max_exp_avg_sq"])
            if h.tensor_math:
                previous = max_exp_avg_sq.clone() if h.differentiable else max_exp_avg_sq
                max_exp_avg_sq.copy_(torch.maximum(previous, exp_avg_sq))
            else:
                torch.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
            second = max_exp_avg_sq

        if h.tensor_math:
            # The step size is folded into the denominator: addcdiv_'s value cannot be a Tensor.
            step_size_neg = h.step_size_neg
            denom = (second.sqrt() / (h.bias_correction2_sqrt * step_size_neg)).add_(h.eps / step_size_neg)
            param.addcdiv_(exp_avg.clone() if h.differentiable else exp_avg, denom)
        else:
            denom = (second.sqrt() / h.bias_correction2_sqrt).add_(h.eps)
            param.addcdiv_(exp_avg, denom, value=h.neg_step_size)


class AdamW(Adam):
    r"""AdamW: Adam with decoupled weight decay, :math:`\theta \leftarrow \theta(1 - \gamma\lambda)` before the
    Adam step (default ``weight_decay=1e-2``).

    Args: as :class:`Adam`, without ``decoupled_weight_decay`` (always on).

    Reference: Loshchilov & Hutter, "Decoupled Weight Decay Regularization" (ICLR 2019, arXiv:1711.05101).
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        betas: tuple[float | Tensor, float | Tensor] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        super().__init__(
            params,
            lr,
            betas,
            eps,
            weight_decay,
            amsgrad,
            foreach=foreach,
            maximize=maximize,
            capturable=capturable,
            differentiable=differentiable,
            fused=fused,
            decoupled_weight_decay=True,
        )

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        # An AdamW is always decoupled, whatever checkpoint it loads (torch does the same).
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True
