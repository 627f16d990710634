"""Adafactor: adaptive steps with a factored (row x column) second moment, sublinear memory."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from optimlab.algorithms._base import ElementwiseOptimizer, setdefault_flags, tensor_steps
from optimlab.engines import Hyper, ScalarList
from optimlab.optimizer import ParamsT, _get_scalar_dtype, _get_value, _to_scalar

__all__ = ["Adafactor"]


def _max(floor: float, value: Any) -> Any:
    """Python's ``max(floor, value)``; per tensor when ``value`` is a ScalarList."""
    if isinstance(value, ScalarList):
        return ScalarList(max(floor, v) for v in value)
    return max(floor, value)


class Adafactor(ElementwiseOptimizer):
    r"""Adafactor (torch's formulation): relative step sizes, update clipping, factored second moments.

    At step :math:`t`, with :math:`\hat\beta_{2,t} = 1 - t^{\tau}`, :math:`\rho_t = \min(\gamma, 1/\sqrt t)` and
    :math:`\alpha_t = \max(\epsilon_2, \mathrm{RMS}(\theta))\,\rho_t`:

    .. math::
        \theta \leftarrow \theta(1 - \gamma\lambda),\qquad
        \hat V = \begin{cases}
            R\,C / \max(\mathrm{mean}(R), \epsilon_1) & \text{for a matrix (}R, C\text{: row and column means of
            } g^2\text{, averaged with } \hat\beta_{2,t}) \\
            V & \text{for a vector (}V\text{: } g^2 \text{ averaged with } \hat\beta_{2,t})
        \end{cases}

    .. math::
        U = g / \sqrt{\max(\hat V, \epsilon_1^2)},\qquad
        \theta \leftarrow \theta - \frac{\alpha_t}{\max(1, \mathrm{RMS}(U)/d)}\, U

    Parameters with more than one dimension are factored over their last two dimensions (``row_var`` of shape
    ``[..., n, 1]``, ``col_var`` of shape ``[..., 1, m]``), so the second moment of an n x m matrix takes n + m
    numbers; vectors and scalars keep a full ``variance``.

    As torch (and unlike the paper) ``lr`` caps the relative step size :math:`\rho_t` and scales the decoupled
    weight decay, and :math:`\epsilon_1` is applied to the variance estimate rather than to the squared
    gradient.

    Args:
        params: parameters or parameter groups to optimize (real, dense gradients).
        lr: learning rate :math:`\gamma`, the maximum relative step size (float or 1-element Tensor, default
            1e-2, the paper's constant).
        beta2_decay: :math:`\tau \le 0`, decay exponent of :math:`\hat\beta_{2,t}` (default -0.8).
        eps: :math:`(\epsilon_1, \epsilon_2)` (default ``(None, 1e-3)``); :math:`\epsilon_1` None means the
            machine epsilon of the dtype of the group's first parameter with a gradient, used for the whole
            group (with ``foreach`` and mixed dtypes in a group: of the dtype torch's foreach path picks).
        d: update clipping threshold :math:`d \ge 1` (default 1.0).
        weight_decay: decoupled weight decay :math:`\lambda` (default 0).
        foreach: run the update over tensor lists, with torch's foreach formulation (default None: the
            for-loop, on every device, as torch).
        maximize: maximize the objective instead of minimizing it.

    References: Shazeer & Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost" (ICML 2018,
    arXiv:1804.04235).
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-2,
        beta2_decay: float = -0.8,
        eps: tuple[float | None, float] = (None, 1e-3),
        d: float = 1.0,
        weight_decay: float = 0.0,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
    ) -> None:
        if isinstance(lr, Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        if not lr >= 0.0:
            raise ValueError(f"Learning rate should be >= 0 but is: {lr}")
        if not beta2_decay <= 0.0:
            raise ValueError(f"beta2_decay should be <= 0 but is: {beta2_decay}")
        if eps[0] is not None and not eps[0] >= 0.0:
            raise ValueError(f"epsilon1 should be >= 0 but is: {eps[0]}")
        if not eps[1] >= 0.0:
            raise ValueError(f"epsilon2 should be >= 0 but is: {eps[1]}")
        if not d >= 1.0:
            raise ValueError(f"Clipping threshold d should be >= 1 but is: {d}")
        if not weight_decay >= 0.0:
            raise ValueError(f"weight_decay should be >= 0 but is: {weight_decay}")
        defaults = {
            "lr": lr,
            "beta2_decay": beta2_decay,
            "eps": eps,
            "d": d,
            "weight_decay": weight_decay,
            "foreach": foreach,
            "maximize": maximize,
        }
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        setdefault_flags(self, foreach=None)
        tensor_steps(self)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """Perform one optimization step.

        Args:
            closure: re-evaluates the model and returns the loss (optional).

        Every gradient is checked before anything changes: a step that raises leaves parameters and state as
        they were.
        """
        return self._step(closure)

    def _check_grad(self, group: dict[str, Any], p: Tensor) -> None:
        if torch.is_complex(p):
            raise RuntimeError("Adafactor does not support complex parameters")
        if p.grad.is_sparse:  # type: ignore[union-attr]
            raise RuntimeError("Adafactor does not support sparse gradients")

    def _check_group(self, group: dict[str, Any], params: list[Tensor]) -> None:
        # GradScaler's unscale-inside-step protocol is not supported (torch refuses it the same way; its
        # foreach path only once there is something to update).
        if group["foreach"] and not params:
            return
        if getattr(self, "grad_scale", None) is not None or getattr(self, "found_inf", None) is not None:
            raise AssertionError("Grad scaling should occur outside of optimizer.step()")

    def _uses_foreach(self, group: dict[str, Any], params: list[Tensor]) -> bool:
        # Only on request: Adafactor is chosen to save memory, and foreach needs a temporary per parameter.
        return bool(group["foreach"])

    def _init_state(self, group: dict[str, Any], p: Tensor, state: dict[str, Any]) -> None:
        grad: Tensor = p.grad  # type: ignore[assignment]
        state["step"] = torch.tensor(0.0, dtype=_get_scalar_dtype())
        if grad.dim() > 1:
            # Second-moment factors, reduced over the last dimension (rows) and the one before (columns).
            state["row_var"] = grad.new_zeros((*grad.shape[:-1], 1))
            state["col_var"] = grad.new_zeros((*grad.shape[:-2], 1, grad.shape[-1]))
        else:
            state["variance"] = torch.zeros_like(grad, memory_format=torch.preserve_format)

    @staticmethod
    def _eps1_dtype(group: dict[str, Any]) -> torch.dtype:
        """The dtype whose machine epsilon is eps1=None: torch resolves it once per group and uses it for every
        parameter of the group, whatever their dtypes."""
        params = [p for p in group["params"] if p.grad is not None]
        kinds = {(p.device, p.dtype) for p in params}
        if not group["foreach"] or len(kinds) == 1:
            return params[0].dtype  # the for-loop takes the first parameter's
        # torch's foreach takes the first (device, dtype) bucket of its C++ grouping, whose order is that of a
        # hash map, not of the parameters: ask the same function for it.
        buckets = torch._C._group_tensors_by_device_and_dtype([params], False)
        return next(iter(buckets))[1]

    def _hyper(self, group: dict[str, Any]) -> Hyper:
        eps1, eps2 = group["eps"]
        if eps1 is None:
            eps1 = torch.finfo(self._eps1_dtype(group)).eps
        return Hyper(
            lr=_to_scalar(group["lr"]),
            beta2_decay=group["beta2_decay"],
            eps1=eps1,
            eps2=eps2,
            d=group["d"],
            weight_decay=group["weight_decay"],
            maximize=group["maximize"],
            foreach=bool(group["foreach"]),
        )

    def _scalars(self, h: Hyper, state: dict[str, Any]) -> Hyper:
        step_t = state["step"]
        step_t += 1
        step = _get_value(step_t)
        return h.with_(
            one_minus_beta2_t=step**h.beta2_decay,
            rho_t=min(h.lr, 1 / (step**0.5)),  # relative step size, capped by lr
        )

    @staticmethod
    def _update(param: Any, grad: Any, state: dict[str, Any], h: Hyper) -> None:
        g = -grad if h.maximize else grad
        # Parameter scale: the step is relative to the RMS of the weights before decay.
        alpha = _max(h.eps2, param.norm(2).item() / param.numel() ** 0.5) * h.rho_t
        if h.weight_decay != 0:
            param.mul_(1 - h.lr * h.weight_decay)

        if "row_var" in state:
            row_var, col_var = state["row_var"], state["col_var"]
            # Mean of g^2 over a dimension as a squared norm: no g-sized temporary (x.mul_(x) is square_'s bits).
            row_mean = g.norm(dim=-1, keepdim=True)
            row_mean.mul_(row_mean).div_(g.size(-1))
            row_var.lerp_(row_mean, h.one_minus_beta2_t)
            col_mean = g.norm(dim=-2, keepdim=True)
            col_mean.mul_(col_mean).div_(g.size(-2))
            col_var.lerp_(col_mean, h.one_minus_beta2_t)
            # Rank-1 reconstruction R C / mean(R) (Shazeer & Stern, Algorithm 4).
            var_estimate = row_var.matmul(col_var)
            var_estimate.div_(row_var.mean(dim=-2, keepdim=True).clamp_min_(h.eps1))
        else:
            variance = state["variance"]
            variance.lerp_(g * g, h.one_minus_beta2_t)
            var_estimate = variance.clone()

        # eps1 squared because of the square root that follows.
        update = var_estimate.clamp_min_(h.eps1 * h.eps1).rsqrt_()
        update.mul_(g)
        # Update clipping (Shazeer & Stern, section 5): RMS(update) at most d.
        scale = -alpha / _max(1.0, update.norm(2).item() / (update.numel() ** 0.5 * h.d))
        if h.foreach:
            param.add_(update.mul_(scale))  # torch's foreach path scales first, then adds
        else:
            param.add_(update, alpha=scale)
