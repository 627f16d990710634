"""Muon: momentum orthogonalized by a Newton-Schulz iteration, for the 2-D weights of hidden layers."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from optimlab.algorithms._base import ElementwiseOptimizer
from optimlab.engines import Hyper, run_per_tensor
from optimlab.optimizer import ParamsT, _to_scalar

__all__ = ["Muon", "adjust_lr", "zeropower_via_newtonschulz"]

# Keller Jordan's quintic coefficients (a, b, c), chosen to maximize the slope at zero, and his defaults.
DEFAULT_NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
DEFAULT_NS_STEPS = 5
DEFAULT_EPS = 1e-7
_ADJUST_LR_FNS = ("original", "match_rms_adamw")


def _check_newtonschulz_args(
    ns_coefficients: tuple[float, float, float], ns_steps: int, matrix: Tensor | None = None
) -> None:
    if ns_steps >= 100:
        raise ValueError("Number of steps must be less than 100 for computational efficiency")
    if matrix is not None and matrix.dim() != 2:
        raise ValueError("Input tensor gradient must be a 2D matrix")
    if len(ns_coefficients) != 3:
        raise ValueError("Coefficients must be a tuple of exactly 3 values")


def zeropower_via_newtonschulz(
    matrix: Tensor, ns_coefficients: tuple[float, float, float], ns_steps: int, eps: float
) -> Tensor:
    r"""Approximately orthogonalize ``matrix`` (:math:`G = USV^\top \mapsto \approx US'V^\top`, :math:`S' \approx I`).

    The matrix is scaled to spectral norm at most 1 (divided by its Frobenius norm, at least ``eps``), then
    ``ns_steps`` times :math:`X \leftarrow aX + (bA + cA^2)X` with :math:`A = XX^\top`, working on the wide
    orientation so that :math:`A` is the smaller Gram matrix.  The quintic's coefficients push small singular
    values up fast rather than converge exactly: for a reasonably conditioned input the singular values
    end up roughly in (0.5, 1.5).

    Runs in bfloat16 and returns bfloat16.  A bfloat16 input is worked on in place (no copy is made).

    Args:
        matrix: a 2-D tensor.
        ns_coefficients: :math:`(a, b, c)`.
        ns_steps: number of iterations (< 100).
        eps: floor of the norm the matrix is divided by.

    Reference: Jordan et al., "Muon: An optimizer for hidden layers in neural networks" (2024,
    kellerjordan.github.io/posts/muon).
    """
    _check_newtonschulz_args(ns_coefficients, ns_steps, matrix)
    a, b, c = ns_coefficients
    tall = matrix.size(0) > matrix.size(1)
    x = matrix.to(torch.bfloat16)
    if tall:
        x = x.T
    x.div_(x.norm().clamp(min=eps))
    for _ in range(ns_steps):
        gram = x @ x.T
        poly = torch.addmm(gram, gram, gram, beta=b, alpha=c)  # b*A + c*A^2
        x = torch.addmm(x, poly, x, beta=a)  # a*X + (b*A + c*A^2) X
    return x.T if tall else x


def adjust_lr(lr: Any, adjust_lr_fn: str | None, shape: torch.Size) -> Any:
    r"""The learning rate of an orthogonalized update of a parameter of ``shape`` :math:`(A, B, ...)`.

    ``"original"`` (and None): :math:`\gamma\sqrt{\max(1, A/B)}`, Keller Jordan's scaling for tall matrices.
    ``"match_rms_adamw"``: :math:`0.2\gamma\sqrt{\max(A, B)}`, giving the update the RMS of an AdamW update so
    that AdamW's learning rate and weight decay carry over (Liu et al., "Muon is Scalable for LLM Training",
    2025, arXiv:2502.16982).  Any other value leaves ``lr`` unchanged.
    """
    rows, cols = shape[:2]
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        ratio = math.sqrt(max(1, rows / cols))
    elif adjust_lr_fn == "match_rms_adamw":
        ratio = 0.2 * math.sqrt(max(rows, cols))
    else:
        ratio = 1.0
    return lr * ratio


class Muon(ElementwiseOptimizer):
    r"""Muon: SGD-momentum whose update is orthogonalized, for 2-D parameters.

    .. math::
        B \leftarrow \mu B + (1-\mu) g,\qquad
        \tilde B = g + \mu (B - g) \text{ if nesterov else } B,\qquad
        O = \mathrm{NS}_k^{(a,b,c)}(\tilde B),\qquad
        \theta \leftarrow \theta(1 - \gamma\lambda) - \mathrm{adjust}(\gamma)\, O

    (the buffer is an exponential moving average, torch's formulation), with :math:`\mathrm{NS}` the
    Newton-Schulz iteration of :func:`zeropower_via_newtonschulz` (in bfloat16) and :func:`adjust_lr` the
    shape-dependent learning-rate scaling.  Only 2-D parameters are accepted: optimize biases, embeddings and
    heads with e.g. :class:`~optimlab.AdamW`.

    Args:
        params: 2-D parameters or parameter groups to optimize.
        lr: learning rate :math:`\gamma` (float or 1-element Tensor, default 1e-3).
        weight_decay: decoupled weight decay :math:`\lambda` (default 0.1).
        momentum: momentum :math:`\mu` (default 0.95).
        nesterov: use the Nesterov look-ahead (default True).
        ns_coefficients: :math:`(a, b, c)` of the quintic iteration (default (3.4445, -4.7750, 2.0315)).
        eps: floor of the norm the update is divided by before the iteration (default 1e-7).
        ns_steps: number of Newton-Schulz iterations (default 5).
        adjust_lr_fn: ``"original"`` (the default when None) or ``"match_rms_adamw"``, see :func:`adjust_lr`.

    References: Jordan et al., "Muon: An optimizer for hidden layers in neural networks" (2024,
    kellerjordan.github.io/posts/muon); Liu et al., "Muon is Scalable for LLM Training" (2025, arXiv:2502.16982)
    for ``match_rms_adamw``.
    """

    _graph_check = False

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        weight_decay: float = 0.1,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_coefficients: tuple[float, float, float] = DEFAULT_NS_COEFFICIENTS,
        eps: float = DEFAULT_EPS,
        ns_steps: int = DEFAULT_NS_STEPS,
        adjust_lr_fn: str | None = None,
    ) -> None:
        if isinstance(lr, Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        if not lr >= 0.0:
            raise ValueError(f"Learning rate should be >= 0 but is: {lr}")
        if not momentum >= 0.0:
            raise ValueError(f"momentum should be >= 0 but is: {momentum}")
        if not weight_decay >= 0.0:
            raise ValueError(f"weight decay should be >= 0 but is: {weight_decay}")
        if adjust_lr_fn is not None and adjust_lr_fn not in _ADJUST_LR_FNS:
            raise ValueError(f"Adjust learning rate function {adjust_lr_fn} is not supported")
        defaults = {
            "lr": lr,
            "weight_decay": weight_decay,
            "momentum": momentum,
            "nesterov": nesterov,
            "ns_coefficients": ns_coefficients,
            "eps": eps,
            "ns_steps": ns_steps,
            "adjust_lr_fn": adjust_lr_fn,
        }
        super().__init__(params, defaults)
        # Checked at construction only, as torch does; a group added later is checked at step time.
        for group in self.param_groups:
            for p in group["params"]:
                if p.ndim != 2:
                    raise ValueError(
                        f"Muon only supports 2D parameters whereas we found a parameter with size: {p.size()}"
                    )

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """Perform one optimization step.

        Args:
            closure: re-evaluates the model and returns the loss (optional).

        Every gradient and group is checked before anything changes: a step that raises leaves parameters and
        state as they were.
        """
        return self._step(closure)

    def _check_grad(self, group: dict[str, Any], p: Tensor) -> None:
        if torch.is_complex(p):
            raise RuntimeError("Muon does not support complex parameters")
        if p.grad.is_sparse:  # type: ignore[union-attr]
            raise RuntimeError("Muon does not support sparse gradients")

    def _check_group(self, group: dict[str, Any], params: list[Tensor]) -> None:
        # torch meets these errors inside its update loop: the first gradient's shape, then the iteration's
        # arguments, then the other gradients' shapes. Same order here, but before anything is changed.
        if not params:
            return
        if params[0].grad.ndim != 2:  # type: ignore[union-attr]
            raise ValueError("Param gradient must be a 2D matrix")
        _check_newtonschulz_args(group["ns_coefficients"], group["ns_steps"])
        if any(p.grad.ndim != 2 for p in params):  # type: ignore[union-attr]
            raise ValueError("Param gradient must be a 2D matrix")

    def _engine(self, group: dict[str, Any], params: list[Tensor]) -> Callable[..., None]:
        return run_per_tensor  # each matrix is orthogonalized on its own

    def _init_state(self, group: dict[str, Any], p: Tensor, state: dict[str, Any]) -> None:
        grad: Tensor = p.grad  # type: ignore[assignment]
        state["momentum_buffer"] = torch.zeros_like(grad, memory_format=torch.preserve_format)

    def _hyper(self, group: dict[str, Any]) -> Hyper:
        return Hyper(
            lr=_to_scalar(group["lr"]),
            weight_decay=group["weight_decay"],
            momentum=group["momentum"],
            nesterov=group["nesterov"],
            ns_coefficients=group["ns_coefficients"],
            eps=group["eps"],
            ns_steps=group["ns_steps"],
            adjust_lr_fn=group["adjust_lr_fn"],
        )

    @staticmethod
    def _update(param: Any, grad: Any, state: dict[str, Any], h: Hyper) -> None:
        if "momentum_buffer" not in state:
            # torch creates a missing buffer even in a non-empty state (e.g. one pre-filled by hand).
            state["momentum_buffer"] = torch.zeros_like(grad, memory_format=torch.preserve_format)
        buf = state["momentum_buffer"]
        buf.lerp_(grad, 1 - h.momentum)
        update = grad.lerp(buf, h.momentum) if h.nesterov else buf
        ortho = zeropower_via_newtonschulz(update, h.ns_coefficients, h.ns_steps, h.eps)
        param.mul_(1 - h.lr * h.weight_decay)
        param.add_(ortho, alpha=-adjust_lr(h.lr, h.adjust_lr_fn, param.shape))
