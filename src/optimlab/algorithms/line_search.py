"""The strong-Wolfe line search, and the iteration the closure-based optimizers (LBFGS, CG) share around it.

Written once, used by :class:`~optimlab.LBFGS` and :class:`~optimlab.CG`:

* :func:`cubic_interpolate` -- the minimiser of the cubic through two points with values and slopes, clamped;
* :func:`strong_wolfe` -- a step length satisfying the strong Wolfe conditions: the bracketing phase and the
  "zoom" phase of Nocedal & Wright, *Numerical Optimization* (2nd ed., 2006), Algorithms 3.5 and 3.6, with the
  trial points chosen by cubic interpolation and safeguarded as in Mark Schmidt's minFunc (the variant torch7's
  ``lswolfe.lua`` and ``torch.optim.LBFGS`` use, which this reproduces bit for bit);
* :class:`LineSearchOptimizer` -- the parameters seen as one flat vector, and the loop "direction, initial step,
  line search (or a fixed step), termination tests" that L-BFGS and nonlinear CG share.  An algorithm supplies
  only its search direction and its initial trial step.

Step lengths are kept as whatever type the arithmetic produces (``int``, ``float`` or 0-dim ``Tensor``), and every
comparison and expression keeps torch's operand order: float32 results depend on both, and LBFGS's parity with
``torch.optim.LBFGS`` depends on the results.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple, TypeAlias

import torch
from torch import Tensor

from optimlab.optimizer import Optimizer, _to_scalar

__all__ = ["LineSearchOptimizer", "LineSearchResult", "cubic_interpolate", "strong_wolfe"]

#: A step length or a function value/slope along the search direction: Python number or 0-dim tensor.
Scalar: TypeAlias = int | float | Tensor


def cubic_interpolate(
    x1: Scalar,
    f1: Scalar,
    g1: Scalar,
    x2: Scalar,
    f2: Scalar,
    g2: Scalar,
    bounds: tuple[Scalar, Scalar] | None = None,
) -> Scalar:
    """Minimiser of the cubic interpolating ``(x1, f1, f'=g1)`` and ``(x2, f2, f'=g2)``, clamped to ``bounds``.

    ``bounds`` defaults to the interval between the two points.  When the cubic has no minimiser (its
    discriminant is negative) the midpoint of the bounds is returned.  Nocedal & Wright eq. (3.59).
    """
    if bounds is not None:
        lower, upper = bounds
    else:
        lower, upper = (x1, x2) if x1 <= x2 else (x2, x1)

    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    discriminant = d1**2 - g1 * g2
    if not discriminant >= 0:
        return (lower + upper) / 2.0
    d2 = discriminant.sqrt() if isinstance(discriminant, Tensor) else math.sqrt(discriminant)
    # Written from the point further right ("b"), towards the one on the left ("a").
    if x1 <= x2:
        xa, ga, xb, gb = x1, g1, x2, g2
    else:
        xa, ga, xb, gb = x2, g2, x1, g1
    minimiser = xb - (xb - xa) * ((gb + d2 - d1) / (gb - ga + 2 * d2))
    # Python's max/min (first of equals wins) decide which object, hence which type, is returned.
    return min(max(minimiser, lower), upper)


class _Trial(NamedTuple):
    """One evaluated point on the line: step ``t``, value ``f``, gradient ``g`` and slope ``gtd = g . d``."""

    t: Scalar
    f: float
    g: Tensor
    gtd: Scalar


class LineSearchResult(NamedTuple):
    """What :func:`strong_wolfe` found: the value and gradient at the accepted step, the step, and how many
    function evaluations it took."""

    f: float
    g: Tensor
    t: Scalar
    evals: int


def strong_wolfe(
    evaluate: Callable[[Scalar], tuple[float, Tensor]],
    t: Scalar,
    d: Tensor,
    f: float,
    g: Tensor,
    gtd: Scalar,
    c1: float = 1e-4,
    c2: float = 0.9,
    tolerance_change: float = 1e-9,
    max_ls: int = 25,
) -> LineSearchResult:
    r"""Find a step length along ``d`` satisfying the strong Wolfe conditions.

    .. math::
        f(x + t d) \le f(x) + c_1 t\, \nabla f(x)^\top d, \qquad
        |\nabla f(x + t d)^\top d| \le c_2 |\nabla f(x)^\top d|

    Bracketing phase (Nocedal & Wright, Alg. 3.5): starting from the trial step ``t``, extrapolate by cubic
    interpolation, within ``[t + 0.01 (t - t_prev), 10 t]``, until an interval is known to contain acceptable
    steps.  Zoom phase (Alg. 3.6): shrink that interval by cubic interpolation; a trial that falls within 10% of
    the interval's length from an end twice in a row (or outside it) is moved to that 10% mark, so the interval
    keeps shrinking.  The search stops when a step satisfies both conditions, after ``max_ls`` further
    evaluations, or when the interval is shorter than ``tolerance_change`` (measured as ``|dt| * max|d|``); it
    then returns the best point seen so far.

    Args:
        evaluate: ``evaluate(t) -> (f(x + t d), grad f(x + t d))``, leaving the parameters at ``x``.
        t: first trial step.
        d: the search direction (a descent direction: ``gtd < 0``).
        f, g, gtd: value, gradient and slope ``g . d`` at ``t = 0``.
        c1: sufficient-decrease constant (Armijo).
        c2: curvature constant; 0.9 suits quasi-Newton directions, 0.1 conjugate gradients.
        tolerance_change: smallest change of the parameters worth another evaluation.
        max_ls: evaluation budget beyond the first one.

    Reference: J. Nocedal & S. J. Wright, *Numerical Optimization*, 2nd ed. (2006), §3.5; M. Schmidt, minFunc.
    """
    d_norm = d.abs().max()
    f_new, g_new = evaluate(t)
    evals = 1
    origin = _Trial(0, f, g, gtd)
    prev, new = origin, _Trial(t, f_new, g_new, g_new.dot(d))

    bracket: list[_Trial] | None = None
    done = False
    ls_iter = 0
    while ls_iter < max_ls:
        if new.f > f + c1 * new.t * gtd or (ls_iter > 1 and new.f >= prev.f):
            bracket = [prev, new]
            break
        if abs(new.gtd) <= -c2 * gtd:
            bracket = [new]
            done = True
            break
        if new.gtd >= 0:
            bracket = [prev, new]
            break
        t_next = cubic_interpolate(
            prev.t, prev.f, prev.gtd, new.t, new.f, new.gtd, bounds=(new.t + 0.01 * (new.t - prev.t), new.t * 10)
        )
        prev = new
        f_new, g_new = evaluate(t_next)
        evals += 1
        new = _Trial(t_next, f_new, g_new, g_new.dot(d))
        ls_iter += 1
    if bracket is None:
        # Budget spent while still extrapolating: fall back to the interval [0, last trial].
        bracket = [origin, new]

    low, high = (0, 1) if bracket[0].f <= bracket[-1].f else (1, 0)
    insufficient_progress = False
    while not done and ls_iter < max_ls:
        a, b = bracket
        if abs(b.t - a.t) * d_norm < tolerance_change:
            break
        t = cubic_interpolate(a.t, a.f, a.gtd, b.t, b.f, b.gtd)
        right, left = max(a.t, b.t), min(a.t, b.t)
        margin = 0.1 * (right - left)
        if min(right - t, t - left) < margin:
            if insufficient_progress or t >= right or t <= left:
                t = right - margin if abs(t - right) < abs(t - left) else left + margin
                insufficient_progress = False
            else:
                insufficient_progress = True
        else:
            insufficient_progress = False

        f_new, g_new = evaluate(t)
        evals += 1
        ls_iter += 1
        new = _Trial(t, f_new, g_new, g_new.dot(d))
        if new.f > f + c1 * t * gtd or new.f >= bracket[low].f:
            # Not a sufficient decrease, or no better than the best point: the new point closes the interval.
            bracket[high] = new
            low, high = (0, 1) if bracket[0].f <= bracket[1].f else (1, 0)
        else:
            if abs(new.gtd) <= -c2 * gtd:
                done = True
            elif new.gtd * (bracket[high].t - bracket[low].t) >= 0:
                bracket[high] = bracket[low]
            bracket[low] = new

    best = bracket[low]
    return LineSearchResult(best.f, best.g, best.t, evals)


class LineSearchOptimizer(Optimizer):
    """Base of the closure-based optimizers that minimise along a search direction: L-BFGS and nonlinear CG.

    The parameters (one group) are treated as one flat vector, complex parameters as pairs of reals.  One
    ``step(closure)`` runs up to ``max_iter`` iterations of: search direction (:meth:`_direction`), initial
    trial step (:meth:`_initial_step`), then either the strong-Wolfe line search or a fixed step, and the
    termination tests.  All state lives in the state of the first parameter (so that ``load_state_dict`` casts
    it), under ``func_evals``, ``n_iter`` and the algorithm's :attr:`_memory_keys`, written in that order after
    each step.  The private helper names are torch's ``LBFGS`` ones, for code that subclasses it.
    """

    #: Entries of the algorithm's state saved after every step, in this order; the loop itself reads and
    #: writes ``d``, ``t``, ``prev_flat_grad`` and ``prev_loss``.
    _memory_keys: ClassVar[tuple[str, ...]] = ("d", "t", "prev_flat_grad", "prev_loss")
    #: Cap on the evaluations of one line search (None: the whole remaining ``max_eval`` budget, as torch's LBFGS).
    _max_ls: ClassVar[int | None] = None

    def _init_one_group(self, params: Any, defaults: dict[str, Any], name: str) -> None:
        """``Optimizer.__init__``, then torch's refusal of parameter groups (``name`` as torch's message has it)."""
        Optimizer.__init__(self, params, defaults)
        if len(self.param_groups) != 1:
            raise ValueError(f"{name} doesn't support per-parameter options (parameter groups)")

    # ------------------------------------------------------------------ to be defined by an algorithm

    def _direction(
        self, group: dict[str, Any], state: dict[str, Any], memory: dict[str, Any], flat_grad: Tensor
    ) -> Tensor:
        """The search direction at the current point (``memory`` holds the previous iteration's entries)."""
        raise NotImplementedError

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
        """The first trial step along the new direction (called before ``prev_loss`` is updated)."""
        raise NotImplementedError

    def _wolfe_constants(self, group: dict[str, Any]) -> tuple[float, float, float]:
        """``(c1, c2, tolerance_change)`` of the line search."""
        raise NotImplementedError

    # ------------------------------------------------------------------ the parameters as one vector

    @property
    def _params(self) -> list[Tensor]:
        # Derived, not stored: torch stores it and so loses it when an LBFGS is deep-copied or unpickled.
        return self.param_groups[0]["params"]

    def _numel(self) -> int:
        return sum(2 * p.numel() if torch.is_complex(p) else p.numel() for p in self._params)

    def _gather_flat_grad(self) -> Tensor:
        """All gradients as one real vector: missing ones as zeros, sparse ones densified."""
        views = []
        for p in self._params:
            if p.grad is None:
                view = torch.zeros(p.numel(), dtype=p.dtype, device=p.device)
            elif p.grad.is_sparse:
                view = p.grad.to_dense().reshape(-1)
            else:
                # reshape, not view: the gradient of a non-contiguous parameter is non-contiguous too.
                view = p.grad.reshape(-1)
            if torch.is_complex(view):
                view = torch.view_as_real(view).reshape(-1)
            views.append(view)
        return torch.cat(views, 0)

    def _add_grad(self, step_size: Scalar, update: Tensor) -> None:
        """``params += step_size * update`` with ``update`` laid out as :meth:`_gather_flat_grad` lays out grads."""
        offset = 0
        for p in self._params:
            target = torch.view_as_real(p) if torch.is_complex(p) else p
            numel = target.numel()
            target.add_(update[offset : offset + numel].view_as(target), alpha=step_size)
            offset += numel
        if offset != self._numel():
            raise AssertionError(f"Expected offset {offset} to equal {self._numel()}")

    def _clone_param(self) -> list[Tensor]:
        return [p.clone(memory_format=torch.contiguous_format) for p in self._params]

    def _set_param(self, params_data: list[Tensor]) -> None:
        for p, data in zip(self._params, params_data, strict=True):
            p.copy_(data)

    def _directional_evaluate(
        self, closure: Callable[[], Any], x: list[Tensor], t: Scalar, d: Tensor
    ) -> tuple[float, Tensor]:
        """Loss and flat gradient at ``x + t d``; the parameters are left at ``x``."""
        self._add_grad(t, d)
        loss = float(closure())
        flat_grad = self._gather_flat_grad()
        self._set_param(x)
        return loss, flat_grad

    # ------------------------------------------------------------------ the iteration

    def _check_line_search(self, line_search_fn: str | None) -> None:
        if line_search_fn is not None and line_search_fn != "strong_wolfe":
            raise RuntimeError("only 'strong_wolfe' is supported")

    @torch.no_grad()
    def _minimize(self, closure: Callable[[], Any]) -> Any:
        if len(self.param_groups) != 1:
            raise AssertionError(f"Expected exactly one param_group, but got {len(self.param_groups)}")
        group = self.param_groups[0]
        # Checked before the first evaluation, so that a bad value changes nothing.
        self._check_line_search(group["line_search_fn"])
        evaluate_closure = torch.enable_grad()(closure)
        lr = _to_scalar(group["lr"])
        max_iter = group["max_iter"]
        max_eval = group["max_eval"]
        tolerance_grad = group["tolerance_grad"]
        tolerance_change = group["tolerance_change"]
        use_line_search = group["line_search_fn"] is not None

        state = self.state[self._params[0]]
        state.setdefault("func_evals", 0)
        state.setdefault("n_iter", 0)

        orig_loss = evaluate_closure()
        loss = float(orig_loss)
        current_evals = 1
        state["func_evals"] += 1
        flat_grad = self._gather_flat_grad()
        if flat_grad.abs().max() <= tolerance_grad:
            return orig_loss

        memory = {key: state.get(key) for key in self._memory_keys}
        n_iter = 0
        while n_iter < max_iter:
            n_iter += 1
            state["n_iter"] += 1

            d = self._direction(group, state, memory, flat_grad)
            gtd = flat_grad.dot(d)
            t = self._initial_step(group, state, memory, flat_grad, loss, gtd, lr)
            memory["d"], memory["t"] = d, t
            if memory["prev_flat_grad"] is None:
                memory["prev_flat_grad"] = flat_grad.clone(memory_format=torch.contiguous_format)
            else:
                memory["prev_flat_grad"].copy_(flat_grad)
            prev_loss = memory["prev_loss"] = loss

            if gtd > -tolerance_change:
                break  # not a descent direction, or a negligible slope

            opt_cond = False
            evals = 0
            if use_line_search:
                x_init = self._clone_param()
                max_ls = max_eval - current_evals
                if self._max_ls is not None:
                    max_ls = min(max_ls, self._max_ls)
                c1, c2, ls_tolerance_change = self._wolfe_constants(group)
                loss, flat_grad, t, evals = strong_wolfe(
                    lambda step, x=x_init, d=d: self._directional_evaluate(evaluate_closure, x, step, d),
                    t,
                    d,
                    loss,
                    flat_grad,
                    gtd,
                    c1=c1,
                    c2=c2,
                    tolerance_change=ls_tolerance_change,
                    max_ls=max_ls,
                )
                memory["t"] = t
                self._add_grad(t, d)
                opt_cond = flat_grad.abs().max() <= tolerance_grad
            else:
                self._add_grad(t, d)
                # The last iteration skips the evaluation: the next step starts with one anyway.
                if n_iter != max_iter:
                    loss = float(evaluate_closure())
                    flat_grad = self._gather_flat_grad()
                    opt_cond = flat_grad.abs().max() <= tolerance_grad
                    evals = 1
            current_evals += evals
            state["func_evals"] += evals

            if n_iter == max_iter or current_evals >= max_eval or opt_cond:
                break
            if d.mul(t).abs().max() <= tolerance_change:
                break  # the parameters barely moved
            if abs(loss - prev_loss) < tolerance_change:
                break  # the loss barely moved

        for key in self._memory_keys:
            state[key] = memory[key]
        return orig_loss
