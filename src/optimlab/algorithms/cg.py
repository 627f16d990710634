"""Nonlinear conjugate gradient: closure-based, with the strong-Wolfe line search LBFGS uses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from optimlab.algorithms._base import check_lr
from optimlab.algorithms.line_search import LineSearchOptimizer, Scalar
from optimlab.optimizer import ParamsT

__all__ = ["BETA_FORMULAS", "CG", "conjugate_beta"]

#: The choices of ``beta``: Fletcher-Reeves, Polak-Ribiere, Polak-Ribiere+, Hestenes-Stiefel, Dai-Yuan.
BETA_FORMULAS = ("FR", "PR", "PR+", "HS", "DY")


def conjugate_beta(formula: str, grad: Tensor, prev_grad: Tensor, prev_dir: Tensor) -> Tensor:
    r"""The coefficient :math:`\beta` of the new direction :math:`d = -g + \beta d_{prev}`.

    With :math:`y = g - g_{prev}` (Nocedal & Wright, §5.2):

    * ``"FR"``: :math:`g^\top g / g_{prev}^\top g_{prev}` (Fletcher & Reeves, 1964);
    * ``"PR"``: :math:`g^\top y / g_{prev}^\top g_{prev}` (Polak & Ribière, 1969), ``"PR+"``: its positive part
      (Powell 1986; Gilbert & Nocedal 1992), which restarts by itself when progress stalls;
    * ``"HS"``: :math:`g^\top y / d_{prev}^\top y` (Hestenes & Stiefel, 1952);
    * ``"DY"``: :math:`g^\top g / d_{prev}^\top y` (Dai & Yuan, 1999).
    """
    if formula == "FR":
        return grad.dot(grad) / prev_grad.dot(prev_grad)
    if formula == "DY":
        return grad.dot(grad) / prev_dir.dot(grad - prev_grad)
    y = grad - prev_grad
    if formula == "PR":
        return grad.dot(y) / prev_grad.dot(prev_grad)
    if formula == "PR+":
        return (grad.dot(y) / prev_grad.dot(prev_grad)).clamp(min=0)
    if formula == "HS":
        return grad.dot(y) / prev_dir.dot(y)
    raise ValueError(f"Invalid beta: {formula!r}; expected one of {', '.join(map(repr, BETA_FORMULAS))}")


class CG(LineSearchOptimizer):
    r"""Nonlinear conjugate gradient: :math:`d_k = -g_k + \beta_k d_{k-1}`, each step found by a line search.

    The method of Hestenes & Stiefel for linear systems, extended to nonlinear functions by Fletcher & Reeves.
    It needs only a few vectors of memory (the direction, the previous gradient) where L-BFGS keeps
    ``2 * history_size`` of them, at the price of more iterations on ill-conditioned problems.  On a quadratic
    with exact line searches it is the linear CG method and converges in at most ``n`` iterations.

    Like :class:`~optimlab.LBFGS`, it is closure-based: one ``step(closure)`` runs up to ``max_iter`` iterations
    and calls ``closure`` (zero the gradients, compute the loss, ``backward``, return the loss) as often as the
    line search needs.  Each iteration:

    1. computes :math:`\beta` by the chosen formula (see :func:`conjugate_beta`);
    2. restarts with the steepest-descent direction :math:`-g` every ``restart`` iterations, when successive
       gradients are far from orthogonal (Powell's test :math:`|g_k^\top g_{k-1}| \ge \nu \|g_k\|^2`, with
       :math:`\nu` = ``restart_threshold``), when :math:`\beta` is not finite, or when the new direction is not a
       descent direction;
    3. moves along the direction by the strong-Wolfe line search (shared with LBFGS), first trying
       :math:`t = \min(\mathrm{lr}, 2.02 (f_k - f_{k-1}) / g_k^\top d_k)` (Nocedal & Wright eq. 3.60; the very first
       iteration tries :math:`\mathrm{lr} \cdot \min(1, 1/\|g\|_1)` as LBFGS does), or by the fixed step ``lr`` when
       ``line_search_fn=None``.

    The curvature constant ``c2`` defaults to 0.1, not LBFGS's 0.9: conjugate directions need nearly exact line
    searches, and with :math:`c_2 < 1/2` Fletcher-Reeves directions are guaranteed to be descent directions
    (Nocedal & Wright, Lemma 5.6).

    Args:
        params: parameters to optimize (a single group).
        lr: largest first trial step of the line search, or the fixed step without one (float or 1-element
            Tensor, default 1).
        max_iter: maximal number of iterations per ``step`` (default 20).
        max_eval: maximal number of closure evaluations per ``step`` (default ``max_iter * 5 // 2``: CG's
            line searches take about two evaluations per iteration).
        tolerance_grad: stop when :math:`\max_i |g_i|` is at most this (default 1e-7).
        tolerance_change: stop when the loss or the parameters change by less than this (default 1e-9).
        beta: ``"PR+"`` (default), ``"PR"``, ``"FR"``, ``"HS"`` or ``"DY"``.
        restart: restart every this many iterations (default: the number of parameters, the classic choice).
        restart_threshold: :math:`\nu` of Powell's restart test (default 0.1), or None to switch it off.
        line_search_fn: ``"strong_wolfe"`` (default) or None for fixed steps of length ``lr``.
        c1: sufficient-decrease constant of the line search (default 1e-4).
        c2: curvature constant of the line search (default 0.1).

    State (in the state of the first parameter): ``func_evals``, ``n_iter`` (totals), ``d`` (last direction),
    ``t`` (last step length), ``prev_flat_grad``, ``prev_loss``, ``since_restart`` (iterations since the last
    steepest-descent direction) and ``restarts`` (restarts so far, the first iteration not counted).

    References: M. R. Hestenes & E. Stiefel, "Methods of conjugate gradients for solving linear systems",
    J. Res. Nat. Bur. Standards 49 (1952); R. Fletcher & C. M. Reeves, "Function minimization by conjugate
    gradients", The Computer Journal 7 (1964); E. Polak & G. Ribière, "Note sur la convergence de méthodes de
    directions conjuguées", Rev. Française Informat. Recherche Opérationnelle 3 (1969); M. J. D. Powell,
    "Restart procedures for the conjugate gradient method", Math. Programming 12 (1977); Y. H. Dai & Y. Yuan,
    "A nonlinear conjugate gradient method with a strong global convergence property", SIAM J. Optim. 10 (1999);
    J. Nocedal & S. J. Wright, Numerical Optimization, 2nd ed. (2006), ch. 5 and §3.5.
    """

    _memory_keys = ("d", "t", "prev_flat_grad", "prev_loss", "since_restart", "restarts")
    # minFunc's and Nocedal & Wright's usual cap: a search that needs more has failed, and a fresh direction helps.
    _max_ls = 25

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1,
        max_iter: int = 20,
        max_eval: int | None = None,
        tolerance_grad: float = 1e-7,
        tolerance_change: float = 1e-9,
        *,
        beta: str = "PR+",
        restart: int | None = None,
        restart_threshold: float | None = 0.1,
        line_search_fn: str | None = "strong_wolfe",
        c1: float = 1e-4,
        c2: float = 0.1,
    ) -> None:
        check_lr(lr)
        if not (isinstance(max_iter, int) and max_iter >= 1):
            raise ValueError(f"Invalid max_iter value: {max_iter}")
        if max_eval is None:
            max_eval = max_iter * 5 // 2
        if not (isinstance(max_eval, int) and max_eval >= 1):
            raise ValueError(f"Invalid max_eval value: {max_eval}")
        if not tolerance_grad >= 0.0:
            raise ValueError(f"Invalid tolerance_grad value: {tolerance_grad}")
        if not tolerance_change >= 0.0:
            raise ValueError(f"Invalid tolerance_change value: {tolerance_change}")
        if beta not in BETA_FORMULAS:
            raise ValueError(f"Invalid beta: {beta!r}; expected one of {', '.join(map(repr, BETA_FORMULAS))}")
        if restart is not None and not (isinstance(restart, int) and not isinstance(restart, bool) and restart >= 1):
            raise ValueError(
                f"Invalid restart value: {restart!r}; expected a positive number of iterations, "
                "or None for the number of parameters"
            )
        if restart_threshold is not None and not restart_threshold > 0.0:
            raise ValueError(f"Invalid restart_threshold value: {restart_threshold}")
        if line_search_fn not in (None, "strong_wolfe"):
            raise ValueError(
                f"Invalid line_search_fn: {line_search_fn!r}; only 'strong_wolfe' (or None for a fixed step) "
                "is supported"
            )
        if not 0.0 < c1 < c2 < 1.0:
            raise ValueError(f"Invalid Wolfe constants: need 0 < c1 < c2 < 1, got c1={c1}, c2={c2}")
        defaults = {
            "lr": lr,
            "max_iter": max_iter,
            "max_eval": max_eval,
            "tolerance_grad": tolerance_grad,
            "tolerance_change": tolerance_change,
            "beta": beta,
            "restart": restart,
            "restart_threshold": restart_threshold,
            "line_search_fn": line_search_fn,
            "c1": c1,
            "c2": c2,
        }
        self._init_one_group(params, defaults, "CG")

    # Defined here, not in the base, so that a call without a closure names this class, as torch's message does.
    def step(self, closure: Callable[[], Any]) -> Any:  # type: ignore[override]
        """Perform one optimization step: up to ``max_iter`` conjugate-gradient iterations.

        Args:
            closure: re-evaluates the model and returns the loss (zeroing the gradients and calling
                ``backward`` itself); it is called with autograd enabled.

        Returns:
            The closure's first result (the loss before the step), whatever its type.
        """
        return self._minimize(closure)

    def _wolfe_constants(self, group: dict[str, Any]) -> tuple[float, float, float]:
        return group["c1"], group["c2"], group["tolerance_change"]

    def _direction(
        self, group: dict[str, Any], state: dict[str, Any], memory: dict[str, Any], flat_grad: Tensor
    ) -> Tensor:
        if state["n_iter"] == 1 or memory["d"] is None:
            memory["since_restart"], memory["restarts"] = 1, 0
            return flat_grad.neg()

        prev_grad, prev_dir = memory["prev_flat_grad"], memory["d"]
        period = group["restart"] if group["restart"] is not None else self._numel()
        threshold = group["restart_threshold"]
        direction = None
        if memory["since_restart"] < period and not (
            threshold is not None and abs(flat_grad.dot(prev_grad)) >= threshold * flat_grad.dot(flat_grad)
        ):
            beta = conjugate_beta(group["beta"], flat_grad, prev_grad, prev_dir)
            if torch.isfinite(beta):
                direction = prev_dir.mul(beta).sub_(flat_grad)
                if direction.dot(flat_grad) >= 0:
                    direction = None  # not a descent direction

        if direction is None:
            memory["since_restart"] = 1
            memory["restarts"] += 1
            return flat_grad.neg()
        memory["since_restart"] += 1
        return direction

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
        if state["n_iter"] == 1:
            return min(1.0, 1.0 / flat_grad.abs().sum()) * lr
        if group["line_search_fn"] is None:
            return lr
        # The step that makes the first-order change equal to the last decrease (N&W eq. 3.60), safeguarded.
        estimate = 2.02 * (loss - memory["prev_loss"]) / gtd
        if 0 < estimate < lr:
            return estimate
        return lr
