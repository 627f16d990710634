"""Schedules as pure functions of the step: ``schedule(step) -> value``.

Each schedule is a small frozen dataclass holding plain numbers, so it pickles, compares by value, and can be
saved inside a scheduler's ``state_dict`` (``torch.load(weights_only=True)`` accepts it).  Calling it with a step
returns the value at that step in closed form: nothing is accumulated, so a resumed run reproduces a fresh one
exactly.

They drive :class:`optimlab.lr_scheduler.HyperparameterScheduler` (any hyperparameter: ``momentum``,
``weight_decay``, ``betas[1]``, ...), work as ``lr_lambda`` of :class:`~optimlab.lr_scheduler.LambdaLR`
(with ``peak=1.0`` they are multipliers), and the learning-rate schedulers
:class:`~optimlab.lr_scheduler.LinearWarmupCosineAnnealingLR` and
:class:`~optimlab.lr_scheduler.WarmupStableDecayLR` evaluate them per param group with ``peak = base_lr``
(which may be a Tensor: the arithmetic is written so that it works on both).

Steps are counted from 0, as ``scheduler.last_epoch`` is: step 0 is the value right after construction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = ["DECAY_SHAPES", "Constant", "Cosine", "Linear", "WarmupCosine", "WarmupStableDecay"]

#: Shapes of the decay phase of :class:`WarmupStableDecay`.
DECAY_SHAPES = ("linear", "cosine", "1-sqrt", "exp")


def _check_steps(name: str, steps: Any, *, allow_zero: bool) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0 or (steps == 0 and not allow_zero):
        kind = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{name} must be a {kind} integer, got {steps!r}")


def _ramp(start: Any, end: Any, done: float, steps: int) -> Any:
    """``start + (end - start) * done / steps``: the straight line from ``start`` to ``end``."""
    return start + (end - start) * done / steps


def _decay(peak: Any, end: Any, progress: float, shape: str) -> Any:
    """Value at ``progress`` in [0, 1) of a decay from ``peak`` (progress 0) towards ``end`` (progress 1).

    Written from ``end`` (``end + (peak - end) * remaining``), which keeps small values near the end of a decay
    to 0 accurate even in float32; progress 0 returns ``peak`` itself, and callers return ``end`` itself once the
    decay is over, so both ends are exact.
    """
    if progress == 0:
        return peak
    if shape == "linear":
        return end + (peak - end) * (1.0 - progress)
    if shape == "cosine":
        return end + (peak - end) * (1.0 + math.cos(math.pi * progress)) / 2.0
    if shape == "1-sqrt":
        return end + (peak - end) * (1.0 - math.sqrt(progress))
    # "exp": geometric interpolation, the continuous form of MiniCPM's 0.5 ** (steps / half_life) annealing.
    return peak * (end / peak) ** progress


@dataclass(frozen=True)
class Constant:
    """``value`` at every step."""

    value: float

    def __call__(self, step: int) -> float:
        return self.value


@dataclass(frozen=True)
class Linear:
    """Straight line from ``start`` (step 0) to ``end`` (step ``steps``), then ``end``.

    ``value(t) = start + (end - start) * t / steps`` for ``t < steps``, ``end`` afterwards.  With ``start < end``
    it is a warmup (Goyal et al. 2017, "Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour",
    arXiv:1706.02677); with ``start > end`` a linear decay.
    """

    start: float
    end: float
    steps: int

    def __post_init__(self) -> None:
        _check_steps("steps", self.steps, allow_zero=False)

    def __call__(self, step: int) -> float:
        if step >= self.steps:
            return self.end
        return _ramp(self.start, self.end, step, self.steps)


@dataclass(frozen=True)
class Cosine:
    """Half cosine from ``start`` (step 0) to ``end`` (step ``steps``), then ``end``.

    ``value(t) = end + (start - end) * (1 + cos(pi * t / steps)) / 2`` for ``t < steps``, ``end`` afterwards
    (SGDR without restarts,
    Loshchilov & Hutter 2017, "SGDR: Stochastic Gradient Descent with Warm Restarts", arXiv:1608.03983).
    """

    start: float
    end: float
    steps: int

    def __post_init__(self) -> None:
        _check_steps("steps", self.steps, allow_zero=False)

    def __call__(self, step: int) -> float:
        if step >= self.steps:
            return self.end
        return _decay(self.start, self.end, step / self.steps, "cosine")


@dataclass(frozen=True)
class WarmupCosine:
    """Linear warmup from ``start`` to ``peak`` over ``warmup_steps``, then a half cosine down to ``end``.

    With ``W = warmup_steps`` and ``T = total_steps``::

        value(t) = start + (peak - start) * t / W                                  for t < W
                 = end + (peak - end) * (1 + cos(pi * (t - W) / (T - W))) / 2        for W <= t < T
                 = end                                                             for t >= T

    The warmup is Goyal et al. 2017 (arXiv:1706.02677), the cosine Loshchilov & Hutter 2017 (arXiv:1608.03983);
    together they are the default schedule of most transformer training recipes.
    """

    peak: float
    warmup_steps: int
    total_steps: int
    start: float = 0.0
    end: float = 0.0

    def __post_init__(self) -> None:
        _check_steps("warmup_steps", self.warmup_steps, allow_zero=True)
        _check_steps("total_steps", self.total_steps, allow_zero=False)
        if self.total_steps <= self.warmup_steps:
            raise ValueError(
                f"total_steps ({self.total_steps}) must be greater than warmup_steps ({self.warmup_steps})"
            )

    def __call__(self, step: int) -> Any:
        warmup, total = self.warmup_steps, self.total_steps
        if step < warmup:
            return _ramp(self.start, self.peak, step, warmup)
        if step >= total:
            return self.end
        return _decay(self.peak, self.end, (step - warmup) / (total - warmup), "cosine")


@dataclass(frozen=True)
class WarmupStableDecay:
    """Warmup-stable-decay (WSD): linear warmup, a long constant phase at ``peak``, a short decay to ``end``.

    With ``W = warmup_steps``, ``S = stable_steps``, ``D = decay_steps`` and ``p = (t - W - S) / D``::

        value(t) = start + (peak - start) * t / W        for t < W
                 = peak                                  for W <= t < W + S
                 = decay(p)                              for W + S <= t < W + S + D
                 = end                                   for t >= W + S + D

    where ``decay(p)`` goes from ``peak`` (p = 0) to ``end`` (p = 1) with the chosen ``decay`` shape:

    * ``"linear"``: ``end + (peak - end) * (1 - p)``
    * ``"cosine"``: ``end + (peak - end) * (1 + cos(pi * p)) / 2``
    * ``"1-sqrt"``: ``end + (peak - end) * (1 - sqrt(p))`` (Hägele et al. 2024, "Scaling Laws and
      Compute-Optimal Training Beyond Fixed Training Durations", arXiv:2405.18392, found it the best cooldown)
    * ``"exp"``: ``peak * (end / peak) ** p`` (exponential annealing as in MiniCPM; needs ``end > 0``)

    Source: Hu et al. 2024, "MiniCPM: Unveiling the Potential of Small Language Models with Scalable Training
    Strategies", arXiv:2404.06395.  Because the stable phase does not depend on the total length, a run can be
    extended, and the decay branched off from any checkpoint of the stable phase.
    """

    peak: float
    warmup_steps: int
    stable_steps: int
    decay_steps: int
    start: float = 0.0
    end: float = 0.0
    decay: str = "linear"

    def __post_init__(self) -> None:
        _check_steps("warmup_steps", self.warmup_steps, allow_zero=True)
        _check_steps("stable_steps", self.stable_steps, allow_zero=True)
        _check_steps("decay_steps", self.decay_steps, allow_zero=False)
        if self.decay not in DECAY_SHAPES:
            raise ValueError(f"decay must be one of {DECAY_SHAPES}, got {self.decay!r}")
        if self.decay == "exp" and not (_positive(self.end) and _positive(self.peak)):
            raise ValueError(f"decay='exp' needs peak > 0 and end > 0, got peak={self.peak!r}, end={self.end!r}")

    def __call__(self, step: int) -> Any:
        warmup = self.warmup_steps
        decay_start = warmup + self.stable_steps
        if step < warmup:
            return _ramp(self.start, self.peak, step, warmup)
        if step < decay_start:
            return self.peak
        if step >= decay_start + self.decay_steps:
            return self.end
        return _decay(self.peak, self.end, (step - decay_start) / self.decay_steps, self.decay)


def _positive(x: Any) -> bool:
    return bool(x > 0)
