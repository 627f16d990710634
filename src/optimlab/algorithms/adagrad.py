"""Adagrad: per-coordinate learning rates from the sum of squared gradients."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from optimlab.algorithms._base import (
    ElementwiseOptimizer,
    check_fused_flags,
    check_lr,
    check_non_negative,
    new_step,
    setdefault_flags,
    tensor_steps,
)
from optimlab.engines import Hyper, as_real
from optimlab.optimizer import ParamsT, _get_scalar_dtype, _get_value, _to_scalar

__all__ = ["Adagrad"]


class Adagrad(ElementwiseOptimizer):
    r"""Adagrad: divide each coordinate's step by the root of its accumulated squared gradients.

    .. math::
        \tilde\gamma = \frac{\gamma}{1 + (t-1)\eta},\quad s \leftarrow s + g^2,\quad
        \theta \leftarrow \theta - \tilde\gamma\,\frac{g}{\sqrt{s} + \epsilon}

    Sparse gradients are supported (only the touched coordinates are updated), without weight decay.

    Args:
        params: parameters or parameter groups to optimize.
        lr: learning rate :math:`\gamma` (default 1e-2).
        lr_decay: learning-rate decay :math:`\eta` (default 0).
        weight_decay: L2 penalty added to the gradient (default 0).
        initial_accumulator_value: starting value of :math:`s` (default 0).
        eps: added to the denominator (default 1e-10).
        foreach, maximize, differentiable, fused: as in ``torch.optim.Adagrad``.

    Reference: Duchi, Hazan & Singer, "Adaptive Subgradient Methods for Online Learning and Stochastic
    Optimization" (JMLR 2011).
    """

    _graph_check = False

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-2,
        lr_decay: float = 0,
        weight_decay: float = 0,
        initial_accumulator_value: float = 0,
        eps: float = 1e-10,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        check_lr(lr)
        check_non_negative(lr_decay, "Invalid lr_decay value")
        check_non_negative(weight_decay, "Invalid weight_decay value")
        check_non_negative(initial_accumulator_value, "Invalid initial_accumulator_value value")
        check_non_negative(eps, "Invalid epsilon value")
        defaults = {
            "lr": lr,
            "lr_decay": lr_decay,
            "eps": eps,
            "weight_decay": weight_decay,
            "initial_accumulator_value": initial_accumulator_value,
            "foreach": foreach,
            "maximize": maximize,
            "differentiable": differentiable,
            "fused": fused,
        }
        super().__init__(params, defaults)
        check_fused_flags(fused, foreach, differentiable)
        # Adagrad's state exists from the start (torch's layout: state_dict() lists every param before any step).
        for group in self.param_groups:
            for p in group["params"]:
                self._init_state(group, p, self.state[p], initial_accumulator_value)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        setdefault_flags(self, foreach=None, maximize=False, differentiable=False, fused=None)
        tensor_steps(self, device_if=lambda g: g["fused"])
        fused = self.param_groups[-1]["fused"] if self.param_groups else None
        states = list(self.state.values())
        if states and not torch.is_tensor(states[0]["step"]):
            for s in states:
                s["step"] = torch.tensor(float(s["step"]), dtype=_get_scalar_dtype(is_fused=fused))

    def share_memory(self) -> None:
        """Move the ``sum`` accumulators to shared memory (for Hogwild-style multiprocess training)."""
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p]["sum"].share_memory_()

    def _check_group(self, group: dict[str, Any], params: list[Tensor]) -> None:
        if group["weight_decay"] != 0 and any(p.grad.is_sparse for p in params):  # type: ignore[union-attr]
            raise RuntimeError("weight_decay option is not compatible with sparse gradients")

    def _init_state(
        self, group: dict[str, Any], p: Tensor, state: dict[str, Any], initial_value: float | None = None
    ) -> None:
        # Parameters added later start from the constructor's value, not their group's (torch's behaviour).
        value = self.defaults["initial_accumulator_value"] if initial_value is None else initial_value
        state["step"] = new_step(p, group, bool(group["fused"]))
        init = complex(value, value) if torch.is_complex(p) else value
        state["sum"] = torch.full_like(p, init, memory_format=torch.preserve_format)

    def _hyper(self, group: dict[str, Any]) -> Hyper:
        return Hyper(
            lr=_to_scalar(group["lr"]),
            lr_decay=group["lr_decay"],
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            maximize=group["maximize"],
            differentiable=group["differentiable"],
        )

    def _scalars(self, h: Hyper, state: dict[str, Any]) -> Hyper:
        step_t = state["step"]
        step_t += 1
        step = _get_value(step_t)
        return h.with_(neg_clr=-(h.lr / (1 + (step - 1) * h.lr_decay)))

    @staticmethod
    def _update(param: Any, grad: Any, state: dict[str, Any], h: Hyper) -> None:
        g = -grad if h.maximize else grad
        if h.weight_decay != 0:
            g = g.add(param, alpha=h.weight_decay)
        state_sum = state["sum"]
        if isinstance(g, Tensor) and g.is_sparse:
            g = g.coalesce()  # the update is non-linear in g: indices must be unique
            indices, values = g._indices(), g._values()
            state_sum.add_(torch.sparse_coo_tensor(indices, values.pow(2), g.size()))
            std_values = state_sum.sparse_mask(g)._values().sqrt_().add_(h.eps)
            param.add_(torch.sparse_coo_tensor(indices, values / std_values, g.size()), alpha=h.neg_clr)
            return
        param, g, state_sum = as_real(param), as_real(g), as_real(state_sum)
        state_sum.addcmul_(g, g, value=1)
        std = state_sum.sqrt() + h.eps if h.differentiable else state_sum.sqrt().add_(h.eps)
        param.addcdiv_(g, std, value=h.neg_clr)
