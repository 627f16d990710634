"""L-BFGS: limited-memory BFGS, closure-based, with an optional strong-Wolfe line search."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from optimlab.algorithms._base import check_lr
from optimlab.algorithms.line_search import LineSearchOptimizer, Scalar
from optimlab.optimizer import ParamsT

__all__ = ["LBFGS"]

# Curvature pairs with y.s at or below this are skipped: they would not keep the inverse Hessian positive definite.
_MIN_CURVATURE = 1e-10


class LBFGS(LineSearchOptimizer):
    r"""L-BFGS: a quasi-Newton method keeping the last ``history_size`` curvature pairs (torch's formulation).

    Each iteration builds the direction :math:`d = -H g` by the two-loop recursion over the pairs
    :math:`s_i = x_{i+1} - x_i`, :math:`y_i = g_{i+1} - g_i` (Nocedal & Wright, Alg. 7.4), with the initial
    inverse Hessian :math:`H_0 = \frac{s^\top y}{y^\top y} I` from the latest pair, then moves along it by a fixed
    step ``lr`` or by a step from the strong-Wolfe line search.  One ``step(closure)`` runs up to ``max_iter`` such
    iterations, so ``closure`` (which must zero the gradients, compute the loss, call ``backward`` and return the
    loss) is called several times per step.  A drop-in for ``torch.optim.LBFGS``: same arguments, state layout
    and results, bit for bit.

    Only one parameter group is supported, and all parameters must be on one device.  Memory: ``2 * history_size
    + 2`` vectors the size of all parameters together are kept between steps, a few more during a step.

    Args:
        params: parameters to optimize (a single group).
        lr: step length (float or 1-element Tensor, default 1); with the line search, its first trial step.
        max_iter: maximal number of iterations per ``step`` (default 20).
        max_eval: maximal number of closure evaluations per ``step`` (default ``max_iter * 5 // 4``).
        tolerance_grad: stop when :math:`\max_i |g_i|` is at most this (default 1e-7).
        tolerance_change: stop when the loss or the parameters change by less than this (default 1e-9).
        history_size: number of curvature pairs kept (default 100).
        line_search_fn: ``"strong_wolfe"`` or ``None`` (fixed step ``lr``, the default).

    Beyond torch: an ``LBFGS`` that was deep-copied or unpickled can step (torch's raises ``AttributeError``),
    parameters may be non-contiguous (torch's raises in ``view``), ``history_size`` must be at least 1 (torch's
    fails at its second iteration otherwise), and an unknown ``line_search_fn`` raises before the closure is first
    called.

    References: D. C. Liu & J. Nocedal, "On the limited memory BFGS method for large scale optimization",
    Mathematical Programming 45 (1989); J. Nocedal & S. J. Wright, Numerical Optimization, 2nd ed. (2006),
    ch. 7 and §3.5; M. Schmidt, minFunc (2005).
    """

    _memory_keys = ("d", "t", "old_dirs", "old_stps", "ro", "H_diag", "prev_flat_grad", "prev_loss")

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1,
        max_iter: int = 20,
        max_eval: int | None = None,
        tolerance_grad: float = 1e-7,
        tolerance_change: float = 1e-9,
        history_size: int = 100,
        line_search_fn: str | None = None,
    ) -> None:
        check_lr(lr)
        if max_eval is None:
            max_eval = max_iter * 5 // 4
        if not history_size >= 1:
            raise ValueError(f"Invalid history_size value: {history_size}")
        defaults = {
            "lr": lr,
            "max_iter": max_iter,
            "max_eval": max_eval,
            "tolerance_grad": tolerance_grad,
            "tolerance_change": tolerance_change,
            "history_size": history_size,
            "line_search_fn": line_search_fn,
        }
        self._init_one_group(params, defaults, "LBFGS")

    # Defined here, not in the base, so that a call without a closure names this class, as torch's message does.
    def step(self, closure: Callable[[], Any]) -> Any:  # type: ignore[override]
        """Perform one optimization step: up to ``max_iter`` L-BFGS iterations.

        Args:
            closure: re-evaluates the model and returns the loss (zeroing the gradients and calling
                ``backward`` itself); it is called with autograd enabled.

        Returns:
            The closure's first result (the loss before the step), whatever its type.
        """
        return self._minimize(closure)

    def _wolfe_constants(self, group: dict[str, Any]) -> tuple[float, float, float]:
        # torch does not pass its tolerance_change to the line search: the search always uses 1e-9.
        return 1e-4, 0.9, 1e-9

    def _direction(
        self, group: dict[str, Any], state: dict[str, Any], memory: dict[str, Any], flat_grad: Tensor
    ) -> Tensor:
        if state["n_iter"] == 1:
            memory.update(old_dirs=[], old_stps=[], ro=[], H_diag=1)
            return flat_grad.neg()

        history_size = group["history_size"]
        old_dirs: list[Tensor] = memory["old_dirs"]  # the y_i
        old_stps: list[Tensor] = memory["old_stps"]  # the s_i
        ro: list[Tensor] = memory["ro"]  # the 1 / (y_i . s_i)

        y = flat_grad.sub(memory["prev_flat_grad"])
        s = memory["d"].mul(memory["t"])
        ys = y.dot(s)
        if ys > _MIN_CURVATURE:
            # ">=" rather than "==": a history_size lowered by load_state_dict must not let the memory grow.
            while len(old_dirs) >= history_size:
                old_dirs.pop(0)
                old_stps.pop(0)
                ro.pop(0)
            old_dirs.append(y)
            old_stps.append(s)
            ro.append(1.0 / ys)
            memory["H_diag"] = ys / y.dot(y)

        num_old = len(old_dirs)
        if "al" not in state:
            state["al"] = [None] * history_size
        al = state["al"]
        if len(al) < num_old:  # history_size raised by load_state_dict
            al.extend([None] * (num_old - len(al)))

        # Two-loop recursion (Nocedal & Wright, Alg. 7.4) applied to -g, in place in one buffer.
        q = flat_grad.neg()
        for i in range(num_old - 1, -1, -1):
            al[i] = old_stps[i].dot(q) * ro[i]
            q.add_(old_dirs[i], alpha=-al[i])
        r = q.mul(memory["H_diag"])
        for i in range(num_old):
            be_i = old_dirs[i].dot(r) * ro[i]
            r.add_(old_stps[i], alpha=al[i] - be_i)
        return r

    def _initial_step(
        self,
        group: dict[str, Any],
        state: dict[str, Any],
        memory: dict[str, Any],
        flat_grad: Tensor,
        loss: float,
        gtd: Tensor,
        lr: Scalar,
    ) -> Scalar:
        # The very first direction is the raw gradient, so its step is scaled down to at most 1 / |g|_1.
        if state["n_iter"] == 1:
            return min(1.0, 1.0 / flat_grad.abs().sum()) * lr
        return lr
