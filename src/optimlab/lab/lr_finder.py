"""The learning-rate range test: raise the lr step by step, watch the loss, pick an lr before it blows up.

:func:`lr_range_test` works with any model, loss and data: give it a ``loss_fn`` (it does ``zero_grad``,
``backward`` and ``optimizer.step`` for you, through a closure so LBFGS works too) or a whole ``train_step`` of
your own (mixed precision, gradient accumulation, several losses...), with or without a ``loader``.  Every
parameter group is swept: scaled together (their ratios kept) or each over its own range.  Afterwards the model,
its gradients, the optimizer's state and hyperparameters and torch's random number generator are put back
exactly as they were, bit for bit.

The suggestion is computed from the smoothed curve, with derivatives taken against log(lr) in exponential mode
(against lr in linear mode) using the real spacing of the points, so early stopping or skipped points cannot bias
it.  Three rules are offered: ``"steepest"`` (the steepest descent of the loss), ``"valley"`` (the middle of the
descending stretch) and ``"min10"`` (a tenth of the lr at the lowest loss).

References: Smith, "Cyclical Learning Rates for Training Neural Networks" (WACV 2017), which introduced the
range test; Smith, "A disciplined approach to neural network hyper-parameters" (2018).  The "valley" rule
follows the idea of fastai's "valley" suggestion (2021); "min10" is from Howard & Gugger, "fastai" (2020).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["RULES", "LRRangeTestResult", "lr_range_test", "smooth_losses", "suggest_lr"]

RULES = ("steepest", "valley", "min10")
Rule = Literal["steepest", "valley", "min10"]
Mode = Literal["exp", "linear"]


# ------------------------------------------------------------------------------------------------- analysis


def _ewa(values: Sequence[float], smoothing: float) -> list[float]:
    beta = 1.0 - smoothing
    avg, out = 0.0, []
    for t, v in enumerate(values, start=1):
        avg = beta * avg + smoothing * v
        out.append(avg / (1.0 - beta**t))  # bias correction, as in Adam: the first values are not pulled to 0
    return out


def smooth_losses(losses: Sequence[float], smoothing: float, zero_lag: bool = True) -> list[float]:
    """Smooth ``losses`` with an exponentially weighted average giving weight ``smoothing`` to each new value.

    A one-way average lags: with ``smoothing = 0.05`` it trails the raw curve by about 20 steps, which in a
    100-step range test over 8 decades moves every feature of the curve (the steepest point, the minimum) by
    more than a decade towards larger lrs.  With ``zero_lag`` (default) the average is run forwards and then
    backwards, which cancels the shift; the one-way average is what the test uses while running (to detect
    divergence, when the future is not known yet).  ``smoothing = 1`` returns the losses unchanged.
    """
    if not 0.0 < smoothing <= 1.0:
        raise ValueError(f"smoothing must be in (0, 1], got {smoothing}")
    out = _ewa(losses, smoothing)
    if zero_lag:
        out = _ewa(out[::-1], smoothing)[::-1]
    return out


def _analysis_curve(losses: Sequence[float], smoothing: float) -> list[float]:
    """The zero-lag smoothed curve the suggestions are read from.

    Losses above the starting level are capped at it first: once the loss is worse than where it started the lr
    is too large anyway, and one divergence spike (often 10-100 times the loss) would otherwise be smeared
    backwards by the smoothing over the good part of the curve and hide it.
    """
    if not losses:
        return []
    head = sorted(losses[: max(3, len(losses) // 20)])
    start = head[len(head) // 2]  # median of the first points: robust to one noisy batch
    return smooth_losses([min(v, start) if start > 0 else v for v in losses], smoothing)


def _derivative(y: Sequence[float], x: Sequence[float]) -> list[float]:
    """dy/dx at every point, second-order accurate on an uneven grid (one-sided at the ends)."""
    n = len(y)
    if n < 2:
        return [0.0] * n
    d = [0.0] * n
    d[0] = (y[1] - y[0]) / (x[1] - x[0])
    d[-1] = (y[-1] - y[-2]) / (x[-1] - x[-2])
    for i in range(1, n - 1):
        h0, h1 = x[i] - x[i - 1], x[i + 1] - x[i]
        # weights of the three-point formula for unequal spacing (exact for parabolas)
        d[i] = (h0**2 * y[i + 1] + (h1**2 - h0**2) * y[i] - h1**2 * y[i - 1]) / (h0 * h1 * (h0 + h1))
    return d


def suggest_lr(
    lrs: Sequence[float],
    losses: Sequence[float],
    rule: Rule = "valley",
    mode: Mode = "exp",
    skip_start: int = 0,
    skip_end: int = 0,
) -> int | None:
    """Index into ``lrs`` of the suggested learning rate, or None when too few points remain.

    Args:
        lrs: the learning rates tried, increasing.
        losses: the (smoothed) loss at each of them.
        rule: ``"steepest"``: where the loss falls fastest per unit of log(lr) (``mode="exp"``) or of lr
            (``mode="linear"``), looked for before the lowest loss; ``"valley"``: the middle, in steps, of the
            descending stretch that runs from where the loss has made 10% of its fall to its lowest point (the
            flat start, where nothing happens yet, is not part of the valley, so the answer does not depend on
            how low ``start_lr`` was); ``"min10"``: the lr closest to a tenth of the one at the lowest loss.
        mode: how the lrs were spaced; decides whether slopes are taken against log(lr) or lr.
        skip_start, skip_end: points ignored at each end (the start is flat noise, the end is divergence).
    """
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; choose from {', '.join(RULES)}")
    if mode not in ("exp", "linear"):
        raise ValueError(f"mode must be 'exp' or 'linear', got {mode!r}")
    if len(lrs) != len(losses):
        raise ValueError(f"lrs and losses differ in length ({len(lrs)} != {len(losses)})")
    lo, hi = skip_start, len(lrs) - skip_end
    if hi - lo < 3:
        lo, hi = 0, len(lrs)
    if hi - lo < 3:
        return None
    y = list(losses[lo:hi])
    x = [math.log(v) for v in lrs[lo:hi]] if mode == "exp" else list(lrs[lo:hi])
    best = min(range(len(y)), key=y.__getitem__)
    if rule == "min10":
        target = lrs[lo + best] / 10
        return min(range(lo, lo + best + 1), key=lambda i: abs(math.log(lrs[i] / target)))
    if rule == "steepest":
        # Past the lowest point the curve rises towards divergence; its slopes say nothing about a good lr.
        end = best + 1 if best >= 2 else len(y)
        slopes = _derivative(y[:end], x[:end])
        return lo + min(range(len(slopes)), key=slopes.__getitem__)
    drop = y[0] - y[best]
    first = next(i for i in range(best + 1) if y[i] <= y[0] - 0.1 * drop)
    return lo + (first + best) // 2


# ------------------------------------------------------------------------------------------------- result


@dataclass
class LRRangeTestResult:
    """What a range test measured and what it suggests.

    ``lrs`` are the first parameter group's learning rates (``group_lrs`` has every group's), ``losses`` the
    raw losses and ``smoothed`` their zero-lag smoothed values (see :func:`smooth_losses`; losses above the
    starting level are capped at it first, so a divergence spike cannot smear over the good part of the curve),
    one per completed step.  ``suggestions`` maps each rule to
    an lr of the first group (None if there were too few points); :meth:`suggested_group_lrs` gives the lr of
    every group at the suggested step.
    """

    lrs: list[float]
    group_lrs: list[list[float]]
    losses: list[float]
    smoothed: list[float]
    mode: Mode
    start_lr: list[float]
    end_lr: list[float]
    num_steps: int
    smoothing: float
    diverge_threshold: float | None
    skip_start: int
    skip_end: int
    rule: Rule
    stop_reason: str
    stop_lr: float | None = None
    suggestion_steps: dict[str, int | None] = field(default_factory=dict)

    @property
    def suggestions(self) -> dict[str, float | None]:
        return {r: (None if i is None else self.lrs[i]) for r, i in self.suggestion_steps.items()}

    @property
    def suggested_lr(self) -> float | None:
        """The first group's lr suggested by the chosen rule."""
        return self.suggestions.get(self.rule)

    def suggested_group_lrs(self, rule: Rule | None = None) -> list[float] | None:
        """Every parameter group's lr at the step the rule (default: the chosen one) suggests."""
        i = self.suggestion_steps.get(rule or self.rule)
        return None if i is None else list(self.group_lrs[i])

    @property
    def min_loss_lr(self) -> float | None:
        """The lr at the lowest smoothed loss (too high to train with: it is where things start to break)."""
        if not self.smoothed:
            return None
        return self.lrs[min(range(len(self.smoothed)), key=self.smoothed.__getitem__)]

    def to_dict(self) -> dict[str, Any]:
        """Everything as plain JSON-able numbers and strings."""
        return {
            "mode": self.mode,
            "start_lr": self.start_lr,
            "end_lr": self.end_lr,
            "num_steps": self.num_steps,
            "steps_done": len(self.lrs),
            "smoothing": self.smoothing,
            "diverge_threshold": self.diverge_threshold,
            "skip_start": self.skip_start,
            "skip_end": self.skip_end,
            "stop_reason": self.stop_reason,
            "stop_lr": self.stop_lr,
            "rule": self.rule,
            "suggested_lr": self.suggested_lr,
            "suggestions": self.suggestions,
            "suggested_group_lrs": {r: self.suggested_group_lrs(r) for r in self.suggestion_steps},  # type: ignore[arg-type]
            "min_loss_lr": self.min_loss_lr,
            "lrs": self.lrs,
            "group_lrs": self.group_lrs,
            "losses": self.losses,
            "smoothed": self.smoothed,
        }

    def to_csv(self, path: str | Path) -> Path:
        """One row per step: step, every group's lr, raw and smoothed loss."""
        path = Path(path)
        n_groups = len(self.group_lrs[0]) if self.group_lrs else 1
        header = ["step", *[f"lr_group{g}" for g in range(n_groups)], "loss", "smoothed_loss"]
        rows = [",".join(header)]
        for i, (glr, loss, sm) in enumerate(zip(self.group_lrs, self.losses, self.smoothed)):
            rows.append(",".join([str(i), *(repr(v) for v in glr), repr(loss), repr(sm)]))
        path.write_text("\n".join(rows) + "\n")
        return path

    def plot(self, ax: Axes | None = None, path: str | Path | None = None, title: str | None = None) -> Axes:
        """Draw loss against lr with the suggestions marked; save to ``path`` if given.  Needs matplotlib."""
        from optimlab.lab import plots

        return plots.plot_lr_range_test(self, ax=ax, path=path, title=title)


# ------------------------------------------------------------------------------------------------- state


class _Snapshot:
    """Everything a range test changes, copied so it can be put back bit for bit."""

    def __init__(self, optimizer: torch.optim.Optimizer, model: nn.Module | None, rng: bool) -> None:
        self.optimizer = optimizer
        self.model = model
        self.groups = [copy.deepcopy({k: v for k, v in g.items() if k != "params"}) for g in optimizer.param_groups]
        self.state = {k: copy.deepcopy(v) for k, v in optimizer.state.items()}
        self.step_count = optimizer.__dict__.get("_step_count", None)
        params: dict[int, Tensor] = {}
        for g in optimizer.param_groups:
            for p in g["params"]:
                params[id(p)] = p
        if model is not None:
            for p in model.parameters():
                params[id(p)] = p
        self.params = [
            (p, p.detach().clone(), None if p.grad is None else p.grad.detach().clone()) for p in params.values()
        ]
        self.buffers = [] if model is None else [(b, b.detach().clone()) for b in model.buffers()]
        self.training = [] if model is None else [(m, m.training) for m in model.modules()]
        self.rng = torch.get_rng_state() if rng else None
        self.cuda_rng = torch.cuda.get_rng_state_all() if rng and torch.cuda.is_initialized() else None

    @torch.no_grad()
    def restore(self) -> None:
        for p, data, grad in self.params:
            p.copy_(data)
            p.grad = grad
        for b, data in self.buffers:
            b.copy_(data)
        for m, training in self.training:
            m.training = training
        # In place, so whatever holds the optimizer's group dicts, state dicts or tensors (a scheduler, a hook,
        # a captured graph holding a Tensor lr) stays valid.
        for group, saved in zip(self.optimizer.param_groups, self.groups):
            _restore_dict(group, saved, keep=("params",))
        state = self.optimizer.state
        for p in [p for p in state if p not in self.state]:
            del state[p]
        for p, saved in self.state.items():
            if p in state and isinstance(state[p], dict) and isinstance(saved, dict):
                _restore_dict(state[p], saved)
            else:
                state[p] = saved
        if self.step_count is not None:
            self.optimizer._step_count = self.step_count  # type: ignore[attr-defined]
        if self.rng is not None:
            torch.set_rng_state(self.rng)
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state_all(self.cuda_rng)


def _restore_dict(current: dict[Any, Any], saved: dict[Any, Any], keep: tuple[str, ...] = ()) -> None:
    """Make ``current`` equal to ``saved``, copying into tensors of the same shape rather than replacing them."""
    for k in [k for k in current if k not in saved and k not in keep]:
        del current[k]
    for k, v in saved.items():
        cur = current.get(k)
        if (
            isinstance(cur, Tensor)
            and isinstance(v, Tensor)
            and cur.shape == v.shape
            and cur.dtype == v.dtype
            and cur.device == v.device
        ):
            with torch.no_grad():
                cur.copy_(v)
        else:
            current[k] = v


def _set_lr(group: dict[str, Any], value: float) -> None:
    lr = group["lr"]
    if isinstance(lr, Tensor):
        lr.fill_(value)  # keep the tensor (capturable/compiled optimizers hold on to it)
    else:
        group["lr"] = value


def _batches(loader: Iterable[Any]) -> Iterator[Any]:
    """Cycle through ``loader`` for as many steps as needed."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("the loader yielded no batches")


def _as_float(value: Any, where: str) -> float:
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"{where} must return a scalar loss, got a tensor of shape {tuple(value.shape)}")
        return float(value.detach())
    if isinstance(value, (int, float)):
        return float(value)
    raise TypeError(f"{where} must return the loss (a float or a 1-element tensor), got {type(value).__name__}")


def _per_group(value: float | Sequence[float], n: int, name: str) -> list[float] | None:
    if isinstance(value, (int, float)):
        return None
    values = [float(v) for v in value]
    if len(values) != n:
        raise ValueError(f"{name} has {len(values)} values but the optimizer has {n} parameter groups")
    return values


# ------------------------------------------------------------------------------------------------- the test


def lr_range_test(
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[..., Tensor] | None = None,
    *,
    train_step: Callable[..., Any] | None = None,
    loader: Iterable[Any] | None = None,
    model: nn.Module | None = None,
    eval_fn: Callable[[], Any] | None = None,
    start_lr: float | Sequence[float] = 1e-7,
    end_lr: float | Sequence[float] = 10.0,
    num_steps: int = 100,
    mode: Mode = "exp",
    smoothing: float = 0.1,
    diverge_threshold: float | None = 4.0,
    skip_start: int = 10,
    skip_end: int = 5,
    rule: Rule = "valley",
    restore: bool = True,
    restore_rng: bool = True,
    callback: Callable[[int, float, float], None] | None = None,
) -> LRRangeTestResult:
    """Run a learning-rate range test and return the curve and suggested learning rates.

    Args:
        optimizer: any ``torch.optim.Optimizer`` (optimlab's or torch's), already built on the model.
        loss_fn: ``loss_fn(batch) -> loss`` (or ``loss_fn() -> loss`` without a ``loader``): the forward pass
            only.  The test zeroes gradients, calls ``backward`` and steps the optimizer through a closure.
        train_step: instead of ``loss_fn``, a whole training step of your own, ``train_step(batch) -> loss``
            (or ``train_step()``); it must step ``optimizer`` itself.  The test only sets the lr before it.
        loader: where batches come from (a DataLoader or any iterable, cycled as needed); None to call
            ``loss_fn``/``train_step`` without arguments.
        model: the model, so its buffers (e.g. BatchNorm statistics) and train/eval modes are restored too.
            Parameters held by the optimizer are always restored.
        eval_fn: optional ``eval_fn() -> loss`` called after each step (e.g. on a fixed validation batch); its
            value is recorded instead of the training loss: slower, less noisy.
        start_lr, end_lr: the range of the first group's lr.  Other groups keep their ratio to the first
            group's current lr (scaled together).  Give one value per group to sweep each group over its own range.
        num_steps: number of steps (lrs tried); 20-30 per decade of lr gives a readable curve.
        mode: ``"exp"`` (evenly spaced in log(lr), the usual choice) or ``"linear"``.
        smoothing: weight of the newest loss in the smoothed curve (1 = no smoothing); the curve is averaged
            over roughly ``1/smoothing`` steps on each side, so use more steps rather than more smoothing when
            the curve is noisy: the loss often falls and blows up within a decade of lr.
        diverge_threshold: stop once the smoothed loss exceeds this multiple of the lowest smoothed loss so far
            (None to run all steps); a non-finite loss always stops the test.
        skip_start, skip_end: points left out when suggesting an lr.
        rule: which suggestion :attr:`LRRangeTestResult.suggested_lr` reports (all rules are computed).
        restore: put the model, gradients and optimizer back afterwards (also if the test raises).
        restore_rng: also restore torch's random number generator, so what follows runs as if no test had
            happened.
        callback: ``callback(step, lr, loss)`` after every step (for progress bars).

    Example::

        opt = optimlab.SGD(model.parameters(), lr=0.1, momentum=0.9)
        result = lr_range_test(opt, lambda b: F.cross_entropy(model(b[0]), b[1]), loader=train_loader, model=model)
        print(result.suggested_lr); result.plot(path="lr_find.png")
    """
    if (loss_fn is None) == (train_step is None):
        raise ValueError("give exactly one of loss_fn (the forward pass) or train_step (a whole training step)")
    if mode not in ("exp", "linear"):
        raise ValueError(f"mode must be 'exp' or 'linear', got {mode!r}")
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; choose from {', '.join(RULES)}")
    if not isinstance(num_steps, int) or num_steps < 2:
        raise ValueError(f"num_steps must be an integer >= 2, got {num_steps!r}")
    if not 0.0 < smoothing <= 1.0:
        raise ValueError(f"smoothing must be in (0, 1], got {smoothing}")
    if diverge_threshold is not None and not diverge_threshold > 1.0:
        raise ValueError(f"diverge_threshold must be > 1 (or None), got {diverge_threshold}")
    if skip_start < 0 or skip_end < 0:
        raise ValueError("skip_start and skip_end must be >= 0")

    groups = optimizer.param_groups
    n = len(groups)
    starts = _per_group(start_lr, n, "start_lr")
    ends = _per_group(end_lr, n, "end_lr")
    if starts is None or ends is None:
        # Scaled together: every group keeps its current ratio to the first group.
        first = float(groups[0]["lr"])
        if first <= 0 and n > 1:
            raise ValueError(
                "the first parameter group's lr is 0, so group ratios are undefined; give per-group ranges"
            )
        ratios = [float(g["lr"]) / first if n > 1 else 1.0 for g in groups]
        s0 = float(start_lr) if starts is None else starts[0]  # type: ignore[arg-type]
        e0 = float(end_lr) if ends is None else ends[0]  # type: ignore[arg-type]
        starts = [s0 * r for r in ratios]
        ends = [e0 * r for r in ratios]
    for s, e in zip(starts, ends):
        if not (math.isfinite(s) and math.isfinite(e)) or s < 0 or not e > s:
            raise ValueError(f"need 0 <= start_lr < end_lr, got start_lr={s}, end_lr={e}")
        if mode == "exp" and s <= 0:
            raise ValueError(f"start_lr must be > 0 in exponential mode, got {s}")

    def lr_at(i: int, g: int) -> float:
        frac = i / (num_steps - 1)
        if mode == "exp":
            return starts[g] * (ends[g] / starts[g]) ** frac
        return starts[g] + (ends[g] - starts[g]) * frac

    snapshot = _Snapshot(optimizer, model, restore_rng) if restore else None
    lrs: list[float] = []
    group_lrs: list[list[float]] = []
    losses: list[float] = []
    stop_reason, stop_lr = "completed", None
    avg, best = 0.0, math.inf
    beta = 1.0 - smoothing
    batches = _batches(loader) if loader is not None else None
    try:
        for i in range(num_steps):
            step_lrs = [lr_at(i, g) for g in range(n)]
            for group, lr in zip(groups, step_lrs):
                _set_lr(group, lr)
            args = () if batches is None else (next(batches),)
            if loss_fn is not None:

                def closure(args: tuple[Any, ...] = args) -> Tensor:
                    optimizer.zero_grad()
                    loss = loss_fn(*args)
                    loss.backward()
                    return loss

                value = _as_float(optimizer.step(closure), "loss_fn")
            else:
                value = _as_float(train_step(*args), "train_step")  # type: ignore[misc]
            if eval_fn is not None:
                value = _as_float(eval_fn(), "eval_fn")
            if not math.isfinite(value):
                stop_reason, stop_lr = "non-finite loss", step_lrs[0]
                break
            avg = beta * avg + smoothing * value
            sm = avg / (1.0 - beta ** (i + 1))
            lrs.append(step_lrs[0])
            group_lrs.append(step_lrs)
            losses.append(value)
            best = min(best, sm)
            if callback is not None:
                callback(i, step_lrs[0], value)
            if diverge_threshold is not None and best > 0 and sm > diverge_threshold * best:
                stop_reason, stop_lr = "diverged", step_lrs[0]
                break
    finally:
        if snapshot is not None:
            snapshot.restore()

    result = LRRangeTestResult(
        lrs=lrs,
        group_lrs=group_lrs,
        losses=losses,
        smoothed=_analysis_curve(losses, smoothing),
        mode=mode,
        start_lr=starts,
        end_lr=ends,
        num_steps=num_steps,
        smoothing=smoothing,
        diverge_threshold=diverge_threshold,
        skip_start=skip_start,
        skip_end=skip_end,
        rule=rule,
        stop_reason=stop_reason,
        stop_lr=stop_lr,
    )
    result.suggestion_steps = {
        r: suggest_lr(lrs, result.smoothed, r, mode, skip_start, skip_end)  # type: ignore[arg-type]
        for r in RULES
    }
    return result
