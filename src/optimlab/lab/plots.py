"""The lab's figures, drawn with matplotlib from plain numbers (lists and dicts) measured by real runs.

Figures are built with the object-oriented API (``matplotlib.figure.Figure``), which needs no display and no
global backend, so the lab runs on headless machines and never changes a notebook's backend.  Every figure is
meant to be read by someone learning optimizers without the code: a title that states the point, labelled axes
with their scale, a legend, and the key facts annotated on the plot.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from optimlab.lab.functions import TestFunction, Trajectory
    from optimlab.lab.lr_finder import LRRangeTestResult
    from optimlab.lab.tasks import TrainHistory

__all__ = [
    "new_figure",
    "plot_ewa",
    "plot_final_bars",
    "plot_lr_range_test",
    "plot_lr_sweep",
    "plot_momentum",
    "plot_param_groups",
    "plot_quadratic_steps",
    "plot_schedules",
    "plot_step_factor",
    "plot_training_curves",
    "plot_trajectories",
    "plot_trajectory_values",
    "save_figure",
]

DPI = 110
_PALETTE = [
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
    "#393b79",
    "#637939",
]


def colors(labels: Sequence[str]) -> dict[str, str]:
    """A stable colour per label, so one optimizer has the same colour in every figure of a report."""
    return {label: _PALETTE[i % len(_PALETTE)] for i, label in enumerate(labels)}


def new_figure(nrows: int = 1, ncols: int = 1, width: float = 6.4, height: float = 4.4) -> tuple[Figure, Any]:
    """A figure of ``nrows`` x ``ncols`` panels (``width`` x ``height`` inches each) with a tidy layout."""
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.flat:
        ax.grid(True, alpha=0.3, which="major")
    return fig, axes


def save_figure(fig: Figure, path: str | Path, dpi: int = DPI) -> Path:
    """Write ``fig`` as a PNG (creating the folder) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, facecolor="white")
    return path


def _loss_axis(ax: Axes, values: Sequence[float], what: str) -> None:
    """A log y-axis for losses spanning several factors of ten, a linear one for a short range (a quick run)."""
    finite = [v for v in values if math.isfinite(v) and v > 0]
    if finite and max(finite) / min(finite) > 3:
        _plain_log_axis(ax)
        ax.set_ylabel(f"{what} (log scale)")
    else:
        ax.set_ylabel(f"{what} (linear scale)")


def _plain_log_axis(ax: Axes) -> None:
    """Log-scale y-axis labelled with plain numbers (0.1, 0.2, 0.5) rather than 2×10⁻¹, on short ranges too."""
    ax.set_yscale("log")

    def minor(value: float, _: int) -> str:
        lo, hi = ax.get_ylim()
        if hi / max(lo, 1e-300) > 1000:
            return ""  # the decades are labelled; more would crowd the axis
        lead = round(value / 10 ** math.floor(math.log10(value)), 6)
        return f"{value:g}" if lead in (2.0, 5.0) or (hi / lo < 10 and lead in (3.0, 4.0, 6.0, 8.0)) else ""

    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(minor))


def _fmt_lr(lr: float) -> str:
    return f"{lr:.3g}"


def _finite(values: Sequence[float]) -> list[float]:
    return [v if math.isfinite(v) else math.nan for v in values]


# ------------------------------------------------------------------------------------------------- 1. y = 4x²


def plot_quadratic_steps(runs: Mapping[float, Sequence[float]], curvature: float = 8.0) -> Figure:
    """Gradient descent on y = 4x², one panel per learning rate: the parabola and the iterates x₀ → x₁ → ...

    Args:
        runs: lr -> the iterates x_t of a real run (x_0 first).
        curvature: f'' (8 for 4x²), used in the annotations.
    """
    n = len(runs)
    ncols = 2 if n > 1 else 1
    nrows = math.ceil(n / ncols)
    fig, axes = new_figure(nrows, ncols, 6.0, 4.6)
    for ax, (lr, xs) in zip(axes.flat, runs.items()):
        xs = [x for x in xs if math.isfinite(x)]
        factor = 1 - curvature * lr
        # Enough iterates to see the behaviour without the plot's scale hiding it.
        shown = xs[:3] if abs(factor) > 1 else xs[:2] if factor == 0 else xs[:6]
        span = max(2.3, 1.12 * max(abs(x) for x in shown))
        grid = [-span + 2 * span * i / 400 for i in range(401)]
        ax.plot(grid, [curvature / 2 * g**2 for g in grid], color="#444", lw=1.5, label="y = 4x²")
        ys = [curvature / 2 * x**2 for x in shown]
        ax.plot(shown, ys, "o", color="#d62728", ms=6, zorder=3, label="iterates $x_t$ (real run)")
        for t in range(len(shown) - 1):
            ax.annotate(
                "",
                xy=(shown[t + 1], ys[t + 1]),
                xytext=(shown[t], ys[t]),
                arrowprops={"arrowstyle": "->", "color": "#d62728", "lw": 1.2, "connectionstyle": "arc3,rad=0.2"},
            )
        diverging = abs(factor) > 1
        for t, (x, y) in enumerate(zip(shown[:4], ys[:4])):
            if diverging and t < 2:
                continue  # drawn in the zoomed inset instead
            # Alternate sides so neighbouring labels do not overlap.
            right = (t % 2 == 0) if x >= 0 else (t % 2 == 1)
            ax.annotate(
                f"$x_{t}$ = {x:.4g}",
                (x, y),
                textcoords="offset points",
                xytext=(8, -4) if right else (-8, 4),
                ha="left" if right else "right",
                fontsize=9.5,
                color="#7f0000",
                weight="bold",
            )
        if abs(factor) > 1 and len(xs) > 3:
            rest = " → ".join(f"{x:.4g}" for x in xs[3:5])
            ax.text(
                0.5,
                0.45,
                f"and then x₃, x₄ = {rest} …",
                transform=ax.transAxes,
                ha="center",
                fontsize=9.5,
                color="#7f0000",
            )
            _zoom_first_step(ax, xs[0], xs[1], curvature)
        if factor == 0:
            ax.text(
                0.5,
                0.55,
                "x₁ = 2 − 0.125·(8·2) = 0\nand it stays there",
                transform=ax.transAxes,
                ha="center",
                fontsize=9.5,
                color="#7f0000",
            )
        if abs(factor) > 1:
            verdict = f"diverges: |x| grows ×{abs(factor):.3g} per step"
        elif factor == 0:
            verdict = "lands on the minimum in ONE step (lr = 1/f'')"
        elif factor < 0:
            verdict = f"overshoots, flips sign, shrinks ×{abs(factor):.3g} per step"
        else:
            verdict = f"creeps towards 0, shrinks ×{factor:.3g} per step"
        ax.set_title(f"lr = {_fmt_lr(lr)}: x ← x − lr·8x = ({factor + 0.0:.3g})·x\n{verdict}", fontsize=10.5)
        ax.set_xlabel("x")
        ax.set_ylabel("y = 4x²")
        ax.legend(loc="lower right" if diverging else "upper center", fontsize=8.5)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.suptitle("Gradient descent on y = 4x² from x₀ = 2 (f'(x) = 8x, f'' = 8)", fontsize=13, weight="bold")
    return fig


def _zoom_first_step(ax: Axes, x0: float, x1: float, curvature: float) -> None:
    """An inset showing x₀ → x₁, which the scale of a diverging run squashes to the bottom of the panel."""
    ins = ax.inset_axes((0.33, 0.55, 0.3, 0.28))
    lo, hi = min(x0, x1), max(x0, x1)
    pad = 0.25 * (hi - lo)
    grid = [lo - pad + (hi - lo + 2 * pad) * i / 200 for i in range(201)]
    ins.plot(grid, [curvature / 2 * g**2 for g in grid], color="#444", lw=1.2)
    ins.plot([x0, x1], [curvature / 2 * x0**2, curvature / 2 * x1**2], "o", color="#d62728", ms=4)
    ins.annotate(
        "",
        xy=(x1, curvature / 2 * x1**2),
        xytext=(x0, curvature / 2 * x0**2),
        arrowprops={"arrowstyle": "->", "color": "#d62728", "connectionstyle": "arc3,rad=0.3"},
    )
    ins.set_title(f"zoom: x₀ = {x0:.4g} → x₁ = {x1:.4g}", fontsize=8)
    ins.tick_params(labelsize=7)
    ins.grid(True, alpha=0.3)


def plot_step_factor(measured: Mapping[float, float], curvature: float = 8.0, lr_max: float = 0.32) -> Figure:
    """|x₁/x₀| = |1 − f''·lr| against lr: the theory line and the ratios measured in the runs."""
    fig, axes = new_figure(1, 1, 8.0, 4.6)
    ax = axes[0, 0]
    grid = [lr_max * i / 400 for i in range(401)]
    ax.plot(grid, [abs(1 - curvature * g) for g in grid], color="#444", lw=1.8, label="theory: |1 − 8·lr|")
    shown = {lr: r for lr, r in measured.items() if lr <= lr_max}
    ax.plot(list(shown), list(shown.values()), "o", color="#d62728", ms=6, label="measured |x₁ / x₀| (real runs)")
    ax.axhline(1.0, color="#999", ls="--", lw=1)
    one_step, limit = 1 / curvature, 2 / curvature
    ax.axvspan(limit, lr_max, color="#d62728", alpha=0.08)
    ax.axvspan(one_step, limit, color="#ff7f0e", alpha=0.06)
    ax.annotate(
        f"lr = 1/f'' = {one_step:g}\nfactor 0: one-step landing",
        (one_step, 0),
        xytext=(one_step - 0.07, 0.55),
        arrowprops={"arrowstyle": "->"},
        fontsize=9,
    )
    ax.annotate(
        f"lr = 2/f'' = {limit:g}\nfactor 1: stability edge",
        (limit, 1.0),
        xytext=(limit - 0.075, 1.45),
        arrowprops={"arrowstyle": "->"},
        fontsize=9,
    )
    ax.text(one_step / 2, 1.6, "converges,\nno overshoot", ha="center", fontsize=9, color="#1f77b4")
    ax.text((one_step + limit) / 2, 1.9, "converges,\noscillating", ha="center", fontsize=9, color="#c05000")
    ax.text((limit + lr_max) / 2, 1.9, "diverges", ha="center", fontsize=10, color="#d62728")
    big = {lr: r for lr, r in measured.items() if lr > lr_max}
    if big:
        txt = ", ".join(f"lr = {_fmt_lr(lr)}: ×{r:.3g}" for lr, r in big.items())
        ax.text(lr_max * 0.98, 0.08, f"off the chart: {txt}", ha="right", fontsize=9, color="#d62728")
    ax.set_xlim(0, lr_max)
    ax.set_ylim(0, 2.3)
    ax.set_xlabel("learning rate (linear scale)")
    ax.set_ylabel("|x after a step| / |x before|")
    ax.set_title("How much one gradient step shrinks (or grows) x on y = 4x²", fontsize=12, weight="bold")
    ax.legend(loc="upper left", fontsize=9)
    return fig


def plot_lr_sweep(
    sweep: Mapping[float, Sequence[float]], at_step: int, curvature: float = 8.0, x0: float = 2.0
) -> Figure:
    """Left: loss against iteration for each lr (log scale).  Right: loss after ``at_step`` steps against lr."""
    import matplotlib as mpl

    fig, axes = new_figure(1, 2, 6.4, 4.6)
    ax, ax2 = axes[0]
    lrs = sorted(sweep)
    cmap = mpl.colormaps["viridis"]
    floor = 1e-30
    for i, lr in enumerate(lrs):
        color = cmap(i / max(1, len(lrs) - 1))
        ax.plot([max(v, floor) for v in _finite(sweep[lr])], color=color, lw=1.6, label=f"lr = {_fmt_lr(lr)}")
    ax.set_yscale("log")
    ax.set_ylim(1e-20, None)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss y = 4x² (log scale)")
    ax.set_title(f"{len(lrs)} learning rates, {len(next(iter(sweep.values()))) - 1} iterations each")
    ax.legend(fontsize=8, ncols=2, loc="lower left")
    ax.text(
        0.98,
        0.97,
        "fastest: lr near 1/8 = 0.125\n(curves leaving the bottom\nhave converged further)",
        transform=ax.transAxes,
        ha="right",
        va="top",
        fontsize=8.5,
    )
    grid = [0.3 * i / 600 for i in range(1, 601)]
    theory = [max(curvature / 2 * (x0 * (1 - curvature * g) ** at_step) ** 2, floor) for g in grid]
    ax2.plot(grid, theory, color="#444", lw=1.5, label=f"theory: 16·(1 − 8·lr)^{2 * at_step}")
    measured = [max(sweep[lr][at_step], floor) for lr in lrs if len(sweep[lr]) > at_step]
    ax2.plot(lrs[: len(measured)], measured, "o", color="#d62728", label="measured (the runs on the left)")
    ax2.axvline(1 / curvature, color="#2ca02c", ls="--", lw=1)
    ax2.axvline(2 / curvature, color="#d62728", ls="--", lw=1)
    ax2.text(1 / curvature, 1e3, " lr = 1/8:\n exact in 1 step", fontsize=8.5, color="#2ca02c")
    ax2.text(2 / curvature, 1e-12, " lr = 2/8:\n diverges\n beyond", fontsize=8.5, color="#d62728")
    ax2.set_yscale("log")
    ax2.set_ylim(1e-30, 1e8)
    ax2.set_xlabel("learning rate (linear scale)")
    ax2.set_ylabel(f"loss after {at_step} iterations (log scale)")
    ax2.set_title(f"Loss after {at_step} iterations against the learning rate")
    ax2.legend(fontsize=8.5, loc="lower left")
    fig.suptitle("Learning-rate sweep on y = 4x² from x₀ = 2", fontsize=13, weight="bold")
    return fig


# ------------------------------------------------------------------------------------------------- 2. EWA


def plot_ewa(
    weights: Mapping[float, Sequence[float]],
    signal: Sequence[float],
    averages: Mapping[float, Sequence[float]],
) -> Figure:
    """Left: the weight (1 − β)·β^t an exponentially weighted average gives to the value t steps back.
    Right: the same averages run over a noisy signal."""
    fig, axes = new_figure(1, 2, 6.4, 4.6)
    ax, ax2 = axes[0]
    cols = colors([f"{b}" for b in weights])
    for beta, w in weights.items():
        c = cols[f"{beta}"]
        n = len(w)
        ax.plot(range(n), w, color=c, lw=1.8, label=f"β = {beta}: sum of {n} weights = {sum(w):.3f} = 1 − β^{n}")
        window = 1 / (1 - beta)
        if window < n:
            ax.plot([window], [(1 - beta) * beta**window], "o", color=c, ms=5)
    ax.set_xlabel("t = how many steps back the value is")
    ax.set_ylabel("weight (1 − β)·β^t (linear scale)")
    ax.set_title("Weights of an exponentially weighted average\n(dot: t = 1/(1 − β), the 'effective window')")
    ax.legend(fontsize=8, loc="upper right")
    ax2.plot(signal, ".", color="#999", ms=4, label="noisy values")
    for beta, avg in averages.items():
        ax2.plot(avg, color=cols[f"{beta}"], lw=1.8, label=f"β = {beta} (window ≈ {1 / (1 - beta):.0f})")
    ax2.set_xlabel("step")
    ax2.set_ylabel("value")
    ax2.set_title(
        "The averages over a noisy signal: larger β is smoother but later\n(no bias correction: it starts at 0)"
    )
    ax2.legend(fontsize=8, loc="lower right")
    fig.suptitle("Exponentially weighted averages: v ← β·v + (1 − β)·x", fontsize=13, weight="bold")
    return fig


def plot_momentum(runs: Mapping[str, Sequence[float]], curvature: float = 8.0) -> Figure:
    """x_t and the loss over iterations for plain SGD and SGD with momentum on y = 4x²."""
    fig, axes = new_figure(1, 2, 6.4, 4.6)
    ax, ax2 = axes[0]
    cols = colors(list(runs))
    for label, xs in runs.items():
        ax.plot(xs, color=cols[label], lw=1.6, label=label)
        ax2.plot([max(curvature / 2 * x * x, 1e-30) for x in xs], color=cols[label], lw=1.6, label=label)
        if min(xs) < 0:
            t = min(range(len(xs)), key=xs.__getitem__)
            ax.annotate(
                f"overshoot to {xs[t]:.2f}",
                (t, xs[t]),
                xytext=(t + 12, xs[t] - 0.05),
                arrowprops={"arrowstyle": "->", "color": cols[label]},
                fontsize=8.5,
                color=cols[label],
            )
    ax.axhline(0, color="#444", lw=1)
    ax.text(len(next(iter(runs.values()))) * 0.98, 0.05, "minimum x = 0", ha="right", fontsize=8.5)
    ax.set_xlabel("iteration")
    ax.set_ylabel("x")
    ax.set_title("Position: momentum runs past the minimum and swings back")
    ax.legend(fontsize=8.5)
    ax2.set_yscale("log")
    ax2.set_xlabel("iteration")
    ax2.set_ylabel("loss y = 4x² (log scale)")
    ax2.set_title("Loss: the dips are the crossings of x = 0")
    ax2.legend(fontsize=8.5, loc="lower left")
    fig.suptitle(
        "torch-style momentum (v ← m·v + g; x ← x − lr·v) against plain SGD on y = 4x²",
        fontsize=13,
        weight="bold",
    )
    return fig


# ------------------------------------------------------------------------------------------------- 3-4. digits


def plot_training_curves(histories: Sequence[TrainHistory], title: str) -> Figure:
    """Train/validation loss (log scale unless the range is short) and accuracy per epoch, one line per run."""
    fig, axes = new_figure(2, 2, 6.0, 4.0)
    cols = colors([h.label for h in histories])
    panels = [
        (axes[0, 0], "train_loss", "training loss (cross-entropy)", True),
        (axes[0, 1], "val_loss", "validation loss (cross-entropy)", True),
        (axes[1, 0], "train_acc", "training accuracy", False),
        (axes[1, 1], "val_acc", "validation accuracy", False),
    ]
    for ax, key, ylabel, log in panels:
        for h in histories:
            values = getattr(h, key)
            ax.plot(range(len(values)), values, color=cols[h.label], lw=1.6, marker=".", ms=4, label=h.label)
        ax.set_xlabel("epoch (0 = before training)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if log:
            _loss_axis(ax, [v for h in histories for v in getattr(h, key)], ylabel)
        else:
            ax.set_ylabel(ylabel)
            ax.set_ylim(0, 1.0)
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0%}"))
    axes[1, 1].legend(fontsize=8, loc="lower right", ncols=2)
    axes[0, 0].set_title("Training loss")
    axes[0, 1].set_title("Validation loss (held-out images)")
    axes[1, 0].set_title("Training accuracy")
    axes[1, 1].set_title("Validation accuracy")
    fig.suptitle(title, fontsize=13, weight="bold")
    return fig


def plot_final_bars(histories: Sequence[TrainHistory], title: str) -> Figure:
    """Final validation accuracy and loss per run, as horizontal bars sorted by accuracy."""
    order = sorted(histories, key=lambda h: h.val_acc[-1])
    cols = colors([h.label for h in histories])
    fig, axes = new_figure(1, 2, 5.6, 0.45 * len(histories) + 1.6)
    ax, ax2 = axes[0]
    labels = [h.label for h in order]
    accs = [h.val_acc[-1] for h in order]
    losses = [h.val_loss[-1] for h in order]
    ax.barh(labels, accs, color=[cols[h.label] for h in order])
    for i, a in enumerate(accs):
        ax.text(a, i, f" {a:.1%}", va="center", fontsize=8.5)
    ax.set_xlim(0, 1.12)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0%}"))
    ax.set_xlabel("validation accuracy after the last epoch (higher is better)")
    ax2.barh(labels, losses, color=[cols[h.label] for h in order])
    for i, v in enumerate(losses):
        ax2.text(v, i, f" {v:.3f}", va="center", fontsize=8.5)
    ax2.set_xlim(0, max(losses) * 1.25)
    ax2.set_xlabel("validation loss after the last epoch (lower is better)")
    ax2.set_yticklabels([])
    fig.suptitle(title, fontsize=12, weight="bold")
    return fig


def plot_param_groups(
    histories: Sequence[TrainHistory], movement: Mapping[str, Mapping[str, Sequence[float]]]
) -> Figure:
    """Validation accuracy and loss of each setting, and how far the feature and classifier weights moved."""
    fig, axes = new_figure(1, 3, 5.0, 4.4)
    ax, ax2, ax3 = axes[0]
    cols = colors([h.label for h in histories])
    for h in histories:
        ax.plot(h.val_acc, color=cols[h.label], lw=1.8, marker=".", label=h.label)
        ax2.plot(h.val_loss, color=cols[h.label], lw=1.8, marker=".", label=h.label)
    ax.set_ylim(0, 1)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0%}"))
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy")
    ax.set_title("Validation accuracy")
    ax.legend(fontsize=8, loc="lower right")
    _loss_axis(ax2, [v for h in histories for v in h.val_loss], "validation loss")
    ax2.set_xlabel("epoch")
    ax2.set_title("Validation loss")
    for a in (ax, ax2, ax3):
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
    for label, parts in movement.items():
        for part, style in (("features", "-"), ("classifier", "--")):
            if part in parts:
                ax3.plot(parts[part], color=cols[label], ls=style, lw=1.8)
    ax3.set_xlabel("epoch")
    ax3.set_ylabel("‖w − w₀‖ / ‖w₀‖ (relative change)")
    ax3.set_title("How far the weights moved from their start\n(solid: features, dashed: classifier)")
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], color="#444", ls="-", label="feature layers"),
        Line2D([], [], color="#444", ls="--", label="classifier"),
    ]
    ax3.legend(handles=handles, fontsize=8, loc="upper left")
    fig.suptitle(
        "Per-group learning rates: one lr for the whole model vs a small lr on the features "
        "and a larger one on the classifier",
        fontsize=12,
        weight="bold",
    )
    return fig


# ------------------------------------------------------------------------------------------------- 5. 2-D functions


def _contours(ax: Axes, function: TestFunction, resolution: int = 160) -> None:
    import torch

    x0, x1 = function.xlim
    y0, y1 = function.ylim
    xs = torch.linspace(x0, x1, resolution, dtype=torch.float64)
    ys = torch.linspace(y0, y1, resolution, dtype=torch.float64)
    gx, gy = torch.meshgrid(xs, ys, indexing="xy")
    z = function.fn(gx, gy)
    if function.log_levels:
        shift = (function.min_value or 0.0) - 1e-3
        z = z - shift
        levels = torch.logspace(math.log10(1e-3), math.log10(float(z.max())), 25).tolist()
        kw: dict[str, Any] = {"levels": levels, "locator": LogLocator()}
    else:
        kw = {"levels": 25}
    filled = ax.contourf(gx.numpy(), gy.numpy(), z.numpy(), cmap="Blues_r", alpha=0.55, **kw)
    lines = ax.contour(gx.numpy(), gy.numpy(), z.numpy(), colors="#557", linewidths=0.4, alpha=0.6, **kw)
    # The contours fill the axes anyway; measuring their thousands of paths for the layout is slow and useless.
    filled.set_in_layout(False)
    lines.set_in_layout(False)
    for mx, my in function.minima:
        ax.plot(mx, my, "*", color="gold", mec="black", ms=15, zorder=5)
    ax.plot(*function.start, "o", color="white", mec="black", ms=7, zorder=5)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_xlabel("x")
    ax.set_ylabel("y")


def plot_trajectories(
    runs: Mapping[str, tuple[TestFunction, Sequence[Trajectory]]],
    lrs: Mapping[str, Mapping[str, float]] | None = None,
    resolution: int = 160,
) -> Figure:
    """One panel per function: contours (darker = lower), the start (white dot), minima (stars) and paths.

    ``resolution`` is the number of grid points per axis the contours are computed on."""
    n = len(runs)
    ncols = 2 if n > 1 else 1
    nrows = math.ceil(n / ncols)
    fig, axes = new_figure(nrows, ncols, 6.2, 5.4)
    all_labels = list(dict.fromkeys(t.label for _, trajs in runs.values() for t in trajs))
    cols = colors(all_labels)
    for ax, (name, (function, trajs)) in zip(axes.flat, runs.items()):
        _contours(ax, function, resolution)
        for t in trajs:
            px = [p[0] for p in t.points]
            py = [p[1] for p in t.points]
            lr = (lrs or {}).get(name, {}).get(t.label)
            label = t.label if lr is None else f"{t.label} (lr {_fmt_lr(lr)})"
            if t.diverged or len(t.points) < 2:
                label += " — diverged"
            ax.plot(px, py, color=cols[t.label], lw=1.6, label=label, alpha=0.9)
            ax.plot(px[-1:], py[-1:], "x", color=cols[t.label], ms=8, mew=2)
        steps = max(len(t.points) for t in trajs) - 1
        note = textwrap.fill(f"{steps} steps; {function.note}", 75)
        ax.set_title(f"{name}: f = {function.formula}\n{note}", fontsize=9.5)
        ax.legend(fontsize=7.5, loc="lower right", framealpha=0.85)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    title = "Optimizer paths over the contours (white dot: start, ★: minimum, ×: where each ended)"
    fig.suptitle(textwrap.fill(title, 60 * ncols), fontsize=13 if ncols > 1 else 11.5, weight="bold")
    return fig


def plot_trajectory_values(runs: Mapping[str, tuple[TestFunction, Sequence[Trajectory]]]) -> Figure:
    """One panel per function: f(x_t) − f* over the steps, log scale."""
    n = len(runs)
    ncols = 2 if n > 1 else 1
    nrows = math.ceil(n / ncols)
    fig, axes = new_figure(nrows, ncols, 6.0, 4.0)
    all_labels = list(dict.fromkeys(t.label for _, trajs in runs.values() for t in trajs))
    cols = colors(all_labels)
    for ax, (name, (function, trajs)) in zip(axes.flat, runs.items()):
        fstar = function.min_value or 0.0
        for t in trajs:
            gap = [max(v - fstar, 1e-16) if math.isfinite(v) else math.nan for v in t.values]
            ax.plot(gap, color=cols[t.label], lw=1.5, label=t.label)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel(f"f(x, y) − f*  (f* = {fstar:g}, log scale)")
        ax.set_title(f"{name}: distance to the best value")
        ax.legend(fontsize=7.5, loc="lower left")
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    title = "How fast each optimizer gets down (lower is better; flat = stuck)"
    fig.suptitle(textwrap.fill(title, 60 * ncols), fontsize=13 if ncols > 1 else 11.5, weight="bold")
    return fig


# ------------------------------------------------------------------------------------------------- LR range test


def plot_lr_range_test(
    result: LRRangeTestResult, ax: Axes | None = None, path: str | Path | None = None, title: str | None = None
) -> Axes:
    """Loss against lr (log x-axis in exponential mode) with the raw and smoothed curves and the suggestions."""
    fig = None
    if ax is None:
        if path is not None:
            fig, axes = new_figure(1, 1, 8.0, 5.0)
            ax = axes[0, 0]
        else:
            import matplotlib.pyplot as plt

            _, ax = plt.subplots(figsize=(8, 5), layout="constrained")
            ax.grid(True, alpha=0.3)
    lrs = result.lrs
    ax.plot(lrs, result.losses, color="#9ab", lw=1, label="loss at each step")
    ax.plot(lrs, result.smoothed, color="#1f77b4", lw=2, label=f"smoothed (weight {result.smoothing:g}, no lag)")
    marks = {"steepest": ("#d62728", "o"), "valley": ("#2ca02c", "D"), "min10": ("#9467bd", "s")}
    names = {"steepest": "steepest descent", "valley": "valley", "min10": "lowest loss / 10"}
    for rule, i in result.suggestion_steps.items():
        if i is None:
            continue
        c, m = marks[rule]
        star = " ← suggested" if rule == result.rule else ""
        ax.plot(
            lrs[i],
            result.smoothed[i],
            m,
            color=c,
            ms=9,
            mec="black",
            zorder=5,
            label=f"{names[rule]}: lr = {lrs[i]:.3g}{star}",
        )
    if result.mode == "exp":
        ax.set_xscale("log")
        ax.set_xlabel("learning rate (log scale)")
    else:
        ax.set_xlabel("learning rate (linear scale)")
    if result.smoothed:
        top = max(result.smoothed[: max(1, len(result.smoothed) - result.skip_end)])
        bottom = min(min(result.losses), min(result.smoothed))
        ax.set_ylim(bottom - 0.05 * (top - bottom), top + 0.2 * (top - bottom))
    y_top = ax.get_ylim()[1]
    if result.min_loss_lr is not None:
        ax.axvline(result.min_loss_lr, color="#777", ls=":", lw=1.2)
        ax.text(
            result.min_loss_lr,
            y_top,
            f"lowest smoothed loss\nlr = {result.min_loss_lr:.3g}\n(too high to train with) ",
            ha="right",
            va="top",
            fontsize=8.5,
            color="#555",
        )
    if result.stop_lr is not None:
        ax.axvline(result.stop_lr, color="#d62728", ls="--", lw=1)
        y_mid = sum(ax.get_ylim()) / 2
        ax.text(
            result.stop_lr,
            y_mid,
            f"stopped: {result.stop_reason}\nat lr {result.stop_lr:.3g} ",
            color="#d62728",
            fontsize=8.5,
            va="center",
            ha="right",
        )
    n_groups = len(result.group_lrs[0]) if result.group_lrs else 1
    title = title or f"Learning-rate range test ({result.mode} sweep, {len(lrs)} steps)"
    if n_groups > 1:
        last = result.group_lrs[-1]
        ratios = ", ".join(f"{v / last[0]:.3g}" for v in last)
        title += f"\n{n_groups} parameter groups, lr axis = group 0's (groups' lrs relative to it: {ratios})"
    ax.set_ylabel("loss")
    ax.set_title(title, fontsize=12 if n_groups == 1 else 10.5, weight="bold")
    ax.legend(fontsize=8.5, loc="lower left")
    if fig is not None and path is not None:
        save_figure(fig, path)
    return ax


# ------------------------------------------------------------------------------------------------- schedules


def plot_schedules(records: Mapping[str, Mapping[str, Sequence[float]]], title: str = "") -> Figure:
    """Learning rate (and momentum or β₁ when a schedule changes it) against the step, one line per schedule."""
    with_momentum = any(len(set(r.get("momentum", []))) > 1 for r in records.values())
    fig, axes = new_figure(2 if with_momentum else 1, 1, 12.0, 3.8)
    ax = axes[0, 0]
    cols = colors(list(records))
    for label, rec in records.items():
        ax.plot(rec["lr"], color=cols[label], lw=1.8, label=label)
    ax.set_xlabel("step (optimizer steps taken)")
    ax.set_ylabel("learning rate (linear scale)")
    ax.set_title("Learning rate")
    # Outside the axes: schedule labels are long and the curves fill the whole panel.
    ax.legend(fontsize=8.5, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    if with_momentum:
        ax2 = axes[1, 0]
        for label, rec in records.items():
            if len(set(rec.get("momentum", []))) > 1:  # constant momentum says nothing about the schedule
                ax2.plot(rec["momentum"], color=cols[label], lw=1.8, label=label)
        ax2.set_xlabel("step (optimizer steps taken)")
        ax2.set_ylabel("momentum (SGD) or β₁ (Adam)")
        ax2.set_title("Momentum (schedules that change it): cycled opposite to the lr")
        ax2.legend(fontsize=8.5, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(title or "Schedules", fontsize=13, weight="bold")
    return fig


def is_blank(path: str | Path) -> bool:
    """Whether a PNG is one flat colour (a figure that failed to draw anything)."""
    from matplotlib.image import imread

    img = imread(str(path))
    return bool(img.min() == img.max()) or float(img.std()) < 1e-3
