"""SparseAdam: lazy Adam for dense parameters with sparse gradients (``nn.Embedding(sparse=True)``)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from optimlab.algorithms._base import ElementwiseOptimizer, check_betas
from optimlab.engines import Hyper, run_per_tensor
from optimlab.optimizer import ParamsT, _to_scalar

__all__ = ["SparseAdam"]


class SparseAdam(ElementwiseOptimizer):
    r"""Lazy Adam: only the rows a sparse gradient touches get their moments and parameters updated.

    For the indices :math:`I` present in the (coalesced) sparse gradient :math:`g`, and nothing else:

    .. math::
        m_I \leftarrow \beta_1 m_I + (1-\beta_1) g_I,\quad v_I \leftarrow \beta_2 v_I + (1-\beta_2) g_I^2,\quad
        \theta_I \leftarrow \theta_I - \gamma\frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t}\,\frac{m_I}{\sqrt{v_I}+\epsilon}

    where :math:`t` counts the steps this parameter received a gradient (also those with an empty one).
    Every stored value in the gradient's sparse layout is treated as present, zero or not.  Parameters must be
    dense and real; gradients must be sparse (use :class:`~optimlab.Adam` for dense ones).

    Args:
        params: parameters or parameter groups to optimize.
        lr: learning rate :math:`\gamma` (float or 1-element Tensor, default 1e-3, must be > 0).
        betas: :math:`(\beta_1, \beta_2)`, decay rates of the moment estimates (default (0.9, 0.999)).
        eps: added to the denominator for numerical stability (default 1e-8, must be > 0).
        maximize: maximize the objective instead of minimizing it.

    References: Kingma & Ba, "Adam: A Method for Stochastic Optimization" (2014, arXiv:1412.6980), applied
    lazily to the gradient's non-zero rows as in torch.optim.SparseAdam.
    """

    _graph_check = False

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        maximize: bool = False,
    ) -> None:
        # Unlike Adam, lr and eps must be strictly positive.
        if isinstance(lr, Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        if not lr > 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not eps > 0.0:
            raise ValueError(f"Invalid epsilon value: {eps}")
        check_betas(betas)
        defaults = {"lr": lr, "betas": betas, "eps": eps, "maximize": maximize}
        super().__init__(params, defaults)

        # Checked once, at construction (torch does not check groups added later).
        sparse_params = []
        complex_params = []
        for group_index, group in enumerate(self.param_groups):
            for param_index, p in enumerate(group["params"]):
                if p.is_sparse:
                    sparse_params.append([group_index, param_index])
                if p.is_complex():
                    complex_params.append([group_index, param_index])
        if sparse_params:
            raise ValueError(f"Sparse params at indices {sparse_params}: SparseAdam requires dense parameter tensors")
        if complex_params:
            raise ValueError(
                f"Complex params at indices {complex_params}: SparseAdam does not support complex parameters"
            )

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """Perform one optimization step.

        Args:
            closure: re-evaluates the model and returns the loss (optional).

        Every gradient is checked before anything changes: a dense gradient raises ``RuntimeError`` and leaves
        parameters and state as they were.
        """
        return self._step(closure)

    def _check_grad(self, group: dict[str, Any], p: Tensor) -> None:
        if not p.grad.is_sparse:  # type: ignore[union-attr]
            raise RuntimeError("SparseAdam does not support dense gradients, please consider Adam instead")

    def _engine(self, group: dict[str, Any], params: list[Tensor]) -> Callable[..., None]:
        return run_per_tensor  # sparse updates have no multi-tensor form

    def _init_state(self, group: dict[str, Any], p: Tensor, state: dict[str, Any]) -> None:
        state["step"] = 0  # a Python int, as torch keeps it (its state_dicts carry an int)
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def _hyper(self, group: dict[str, Any]) -> Hyper:
        beta1, beta2 = group["betas"]
        return Hyper(
            lr=_to_scalar(group["lr"]),
            beta1=beta1,
            beta2=beta2,
            eps=group["eps"],
            maximize=group.get("maximize", False),
        )

    def _scalars(self, h: Hyper, state: dict[str, Any]) -> Hyper:
        # The step advances even when the gradient turns out to be empty.
        state["step"] += 1
        step = state["step"]
        bias_correction1 = 1 - h.beta1**step
        bias_correction2 = 1 - h.beta2**step
        return h.with_(step_size=h.lr * math.sqrt(bias_correction2) / bias_correction1)

    @staticmethod
    def _update(param: Any, grad: Any, state: dict[str, Any], h: Hyper) -> None:
        g = -grad if h.maximize else grad
        # The update is non-linear in g: repeated indices must be summed first.
        g = g.coalesce()
        indices, values = g._indices(), g._values()
        if values.numel() == 0:
            return

        def on_rows(row_values: Tensor) -> Tensor:
            # Indices come from a coalesced tensor, so they are valid and unique: no invariant check needed.
            return torch.sparse_coo_tensor(indices, row_values, g.size(), check_invariants=False)

        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        # m <- m + (1 - beta1)(g - m) on the touched rows only (and likewise v with g^2).
        old_exp_avg = exp_avg.sparse_mask(g)._values()
        exp_avg_delta = values.sub(old_exp_avg).mul_(1 - h.beta1)
        exp_avg.add_(on_rows(exp_avg_delta))
        old_exp_avg_sq = exp_avg_sq.sparse_mask(g)._values()
        exp_avg_sq_delta = values.pow(2).sub_(old_exp_avg_sq).mul_(1 - h.beta2)
        exp_avg_sq.add_(on_rows(exp_avg_sq_delta))

        # The new moments of the touched rows, rebuilt densely from old + delta rather than masked again
        # (torch's order of operations, which the bits depend on).
        numer = exp_avg_delta.add_(old_exp_avg)
        denom = exp_avg_sq_delta.add_(old_exp_avg_sq).sqrt_().add_(h.eps)
        param.add_(on_rows(-h.step_size * numer.div_(denom)))
