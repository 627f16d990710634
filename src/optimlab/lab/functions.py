"""Two-dimensional test functions for watching optimizers move, and a runner that records their trajectories.

Each :class:`TestFunction` is written once in torch (so autograd gives the gradient the optimizers see) and
evaluates on tensors of any shape, which is how the contour plots are drawn from the same formula.

References: Rosenbrock, "An automatic method for finding the greatest or least value of a function" (1960);
Beale, "On an iterative method for finding a local minimum of a function of more than one variable" (1958).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from optimlab.optimizer import Optimizer

__all__ = [
    "FUNCTIONS",
    "TestFunction",
    "Trajectory",
    "beale",
    "get_function",
    "quadratic",
    "quadratic_1d",
    "rosenbrock",
    "run_trajectory",
    "saddle",
]


def quadratic_1d(x: Tensor) -> Tensor:
    """y = 4x²: f'(x) = 8x, f'' = 8, so gradient descent multiplies x by (1 - 8·lr) at every step."""
    return 4 * x**2


@dataclass(frozen=True)
class TestFunction:
    """A function of two variables with what is needed to draw it and start an optimizer on it.

    Args:
        name: short name used on the command line (``rosenbrock``).
        formula: the formula as text, for titles.
        fn: ``fn(x, y)`` on tensors of any (broadcastable) shape.
        start: where optimizers start.
        minima: the global minima (empty when the function is unbounded below).
        min_value: the value at the minima (used to plot f - f*), or None.
        xlim, ylim: the plotted region.
        log_levels: draw contour levels on a log scale (for functions with a deep narrow valley).
        default_lrs: a learning rate per optimizer name that makes a readable picture on this function.
        steps: the default number of steps.
        note: one sentence on what the function tests.
    """

    name: str
    formula: str
    fn: Callable[[Tensor, Tensor], Tensor]
    start: tuple[float, float]
    minima: tuple[tuple[float, float], ...]
    min_value: float | None
    xlim: tuple[float, float]
    ylim: tuple[float, float]
    log_levels: bool
    default_lrs: dict[str, float] = field(default_factory=dict)
    steps: int = 300
    note: str = ""

    def __call__(self, xy: Tensor) -> Tensor:
        """Evaluate at a point ``xy`` of shape (2,)."""
        return self.fn(xy[0], xy[1])

    def default_lr(self, key: str) -> float:
        """A learning rate that gives a readable picture for ``key`` on this function (0.01 if unknown).

        ``key`` is an optimizer's name in lower case, or ``"momentum"``/``"nesterov"`` for SGD with momentum.
        """
        return self.default_lrs.get(key.lower(), 1e-2)


def _rosenbrock(x: Tensor, y: Tensor) -> Tensor:
    return (1 - x) ** 2 + 100 * (y - x**2) ** 2


def _beale(x: Tensor, y: Tensor) -> Tensor:
    return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2


def _saddle(x: Tensor, y: Tensor) -> Tensor:
    # x² - y² alone is unbounded below; the quartic term adds two minima at y = ±√2 so runs can settle.
    return x**2 - y**2 + y**4 / 4


def _quadratic(x: Tensor, y: Tensor) -> Tensor:
    # The demo's y = 4x² along x plus a 16 times flatter direction: condition number 16.
    return 4 * x**2 + y**2 / 4


rosenbrock = TestFunction(
    name="rosenbrock",
    formula="(1 - x)² + 100 (y - x²)²",
    fn=_rosenbrock,
    start=(-1.5, 2.0),
    minima=((1.0, 1.0),),
    min_value=0.0,
    xlim=(-2.0, 2.0),
    ylim=(-1.0, 3.0),
    log_levels=True,
    default_lrs={"sgd": 1e-3, "momentum": 1e-3, "nesterov": 1e-3, "adam": 0.1, "rmsprop": 1e-2, "adagrad": 0.5},
    steps=500,
    note="a curved, narrow valley: finding it is easy, following it to (1, 1) is slow",
)

beale = TestFunction(
    name="beale",
    formula="(1.5 - x + xy)² + (2.25 - x + xy²)² + (2.625 - x + xy³)²",
    fn=_beale,
    start=(1.0, 1.5),
    minima=((3.0, 0.5),),
    min_value=0.0,
    xlim=(-4.5, 4.5),
    ylim=(-4.5, 4.5),
    log_levels=True,
    default_lrs={"sgd": 1e-2, "momentum": 1e-3, "nesterov": 1e-3, "adam": 0.1, "rmsprop": 1e-2, "adagrad": 0.3},
    steps=500,
    note="flat plateaus and steep walls: gradient sizes vary by orders of magnitude",
)

saddle = TestFunction(
    name="saddle",
    formula="x² - y² + y⁴/4",
    fn=_saddle,
    start=(-1.5, 1e-3),
    minima=((0.0, 2**0.5), (0.0, -(2**0.5))),
    min_value=-1.0,
    xlim=(-2.0, 2.0),
    ylim=(-2.0, 2.0),
    log_levels=False,
    default_lrs={"sgd": 2e-2, "momentum": 1e-2, "nesterov": 1e-2, "adam": 5e-2, "rmsprop": 1e-2, "adagrad": 0.1},
    steps=200,
    note="a saddle point at (0, 0): started almost on the ridge, the question is who escapes and how fast",
)

quadratic = TestFunction(
    name="quadratic",
    formula="4x² + y²/4",
    fn=_quadratic,
    start=(-1.8, 1.8),
    minima=((0.0, 0.0),),
    min_value=0.0,
    xlim=(-2.0, 2.0),
    ylim=(-2.0, 2.0),
    log_levels=False,
    default_lrs={"sgd": 0.2, "momentum": 0.03, "nesterov": 0.03, "adam": 0.1, "rmsprop": 0.03, "adagrad": 0.5},
    steps=100,
    note="an ill-conditioned bowl (curvature 8 along x, 0.5 along y): zig-zag across, crawl along",
)

FUNCTIONS: dict[str, TestFunction] = {f.name: f for f in (rosenbrock, beale, saddle, quadratic)}


def get_function(name: str) -> TestFunction:
    """The test function called ``name``; ``KeyError`` listing the choices otherwise."""
    try:
        return FUNCTIONS[name.lower()]
    except KeyError:
        raise KeyError(f"unknown test function {name!r}; choose from {', '.join(FUNCTIONS)}") from None


@dataclass
class Trajectory:
    """The points an optimizer visited and the function values there (index 0 is the start)."""

    label: str
    points: list[tuple[float, float]]
    values: list[float]

    @property
    def diverged(self) -> bool:
        return not all(v == v and abs(v) != float("inf") for v in self.values)


def run_trajectory(
    function: TestFunction,
    make_optimizer: Callable[[list[Tensor]], Optimizer],
    steps: int | None = None,
    start: tuple[float, float] | None = None,
    label: str = "",
    escape_radius: float = 1e6,
) -> Trajectory:
    """Run an optimizer on ``function`` from ``start`` and record every point.

    Args:
        function: the test function.
        make_optimizer: builds the optimizer from the single parameter list ``[xy]``.
        steps: number of optimizer steps (default: the function's).
        start: starting point (default: the function's).
        label: a name for the legend.
        escape_radius: stop early once the point is this far away (a divergent run), so plots stay finite.
    """
    steps = function.steps if steps is None else steps
    xy = torch.tensor(start or function.start, dtype=torch.float64, requires_grad=True)
    opt = make_optimizer([xy])

    def closure() -> Tensor:
        opt.zero_grad()
        loss = function(xy)
        loss.backward()
        return loss

    points = [tuple(xy.detach().tolist())]
    values = [float(function(xy.detach()))]
    for _ in range(steps):
        opt.step(closure)
        with torch.no_grad():
            value = float(function(xy))
        points.append(tuple(xy.detach().tolist()))
        values.append(value)
        if not torch.isfinite(xy).all() or float(xy.detach().abs().max()) > escape_radius:
            break
    return Trajectory(label=label, points=points, values=values)  # type: ignore[arg-type]
