"""The demo's experiments: each one runs optimlab's optimizers for real, saves its figures and raw numbers, and
returns a :class:`~optimlab.lab.report.Section` that explains what to look at and why it happens.

:func:`run_demo` runs them all (or some) and writes the report folder.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

import optimlab
from optimlab.lab import plots
from optimlab.lab.functions import FUNCTIONS, TestFunction, Trajectory, quadratic_1d, run_trajectory
from optimlab.lab.lr_finder import lr_range_test
from optimlab.lab.progress import Progress
from optimlab.lab.report import ReportWriter, Section, Table
from optimlab.lab.specs import OptimizerSpec
from optimlab.lab.tasks import DigitsData, TrainHistory, load_digits_data, make_model, train

__all__ = [
    "COMPARISON",
    "EXPERIMENTS",
    "TRAJECTORY_OPTIMIZERS",
    "DemoConfig",
    "DemoResult",
    "ewa_weights",
    "run_demo",
]


@dataclass(frozen=True)
class DemoConfig:
    """Settings of a demo run.

    Args:
        quick: a much smaller run (fewer epochs, images, steps; lower-resolution figures), for tests and a
            first look; the pictures keep their meaning but the digits curves are short.
        seed: seed of every random choice (data split, initial weights, batch order, noise).
        epochs: epochs of the digits runs (default 20, quick 3).
        images: how many digit images to use (default all 1,797; quick 600).
        model: ``"cnn"`` or ``"mlp"`` for the digits runs.
        dpi: resolution of the figures.
        threads: torch's intra-op threads during the run.  The lab's models are tiny: one thread is as fast as
            several on an idle machine and many times faster on a busy one (threads waiting for each other).
    """

    quick: bool = False
    seed: int = 0
    epochs: int | None = None
    images: int | None = None
    model: str = "cnn"
    dpi: int | None = None
    threads: int = 1

    @property
    def n_epochs(self) -> int:
        return self.epochs if self.epochs is not None else (3 if self.quick else 20)

    @property
    def n_images(self) -> int | None:
        return self.images if self.images is not None else (600 if self.quick else None)

    @property
    def figure_dpi(self) -> int:
        return self.dpi if self.dpi is not None else (60 if self.quick else 110)

    def steps(self, full: int) -> int:
        """A step count scaled down in quick mode."""
        return max(10, full // 5) if self.quick else full


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch threads, then restore the previous number."""
    if n < 1:
        raise ValueError(f"threads must be at least 1, got {n}")
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class _Context:
    writer: ReportWriter
    cfg: DemoConfig
    progress: Progress
    digits: DigitsData | None = None

    def data(self) -> DigitsData:
        if self.digits is None:
            self.digits = load_digits_data(seed=self.cfg.seed, limit=self.cfg.n_images)
        return self.digits


def _fmt(v: float) -> str:
    return f"{v:.4g}"


# ------------------------------------------------------------------------------------------------- 1. y = 4x²

X0 = 2.0
CURVATURE = 8.0  # f''(x) for f(x) = 4x²


def _gd_on_quadratic(lr: float, steps: int, momentum: float = 0.0, nesterov: bool = False) -> list[float]:
    """Iterates x_0..x_steps of optimlab.SGD on y = 4x² from x_0 = 2, in float64 (so 2 → -14 → 98 is exact)."""
    x = torch.tensor([X0], dtype=torch.float64, requires_grad=True)
    opt = optimlab.SGD([x], lr=lr, momentum=momentum, nesterov=nesterov)
    xs = [X0]
    for _ in range(steps):
        opt.zero_grad()
        quadratic_1d(x).sum().backward()
        opt.step()
        value = float(x.detach())
        xs.append(value)
        if not math.isfinite(value):
            break
    return xs


def quadratic_experiment(ctx: _Context) -> Section:
    """Gradient descent on y = 4x²: divergence at lr = 1, one-step landing at lr = 1/8, a sweep of 10 lrs."""
    w, progress = ctx.writer, ctx.progress
    step_lrs = [1.0, 0.125, 0.2, 0.01]
    sweep_lrs = [0.01 + (0.2 - 0.01) * i / 9 for i in range(10)]
    iterations = 100
    progress.stage("y = 4x²: learning rates", len(step_lrs) + len(sweep_lrs) + 3)
    runs: dict[float, list[float]] = {}
    for lr in step_lrs:
        runs[lr] = _gd_on_quadratic(lr, 10)
        progress.advance()
    sweep: dict[float, list[float]] = {}
    sweep_x: dict[float, list[float]] = {}
    for lr in sweep_lrs:
        xs = _gd_on_quadratic(lr, iterations)
        sweep_x[lr] = xs
        sweep[lr] = [4 * x * x for x in xs]
        progress.advance()
    measured = {lr: abs(xs[1] / xs[0]) for lr, xs in {**sweep_x, **runs}.items()}

    data = {
        "function": "y = 4x^2",
        "x0": X0,
        "second_derivative": CURVATURE,
        "one_step_lr": 1 / CURVATURE,
        "stability_limit_lr": 2 / CURVATURE,
        "update": "x <- x - lr * 8x = (1 - 8 lr) x",
        "runs": {str(lr): {"lr": lr, "x": xs, "loss": [4 * x * x for x in xs]} for lr, xs in runs.items()},
        "sweep": {
            "iterations": iterations,
            "lrs": sweep_lrs,
            "final_loss": {str(lr): v[-1] for lr, v in sweep.items()},
            "step_factor": {str(lr): measured[lr] for lr in sweep_lrs},
        },
    }
    files = [w.json("quadratic", data)]
    files.append(
        w.csv(
            "quadratic_steps",
            ["lr", "t", "x", "loss"],
            [[lr, t, x, 4 * x * x] for lr, xs in runs.items() for t, x in enumerate(xs)],
        )
    )
    files.append(
        w.csv(
            "quadratic_sweep",
            ["iteration", *[f"loss_lr={lr!r}" for lr in sweep_lrs]],
            [[t, *[sweep[lr][t] for lr in sweep_lrs]] for t in range(iterations + 1)],
        )
    )
    x1 = runs[1.0]
    figs = [
        w.figure(
            plots.plot_quadratic_steps({lr: runs[lr] for lr in step_lrs}),
            "quadratic_steps",
            f"Real runs of <code>optimlab.SGD</code> on y = 4x² from x₀ = 2. At lr = 1 each step multiplies x by "
            f"1 − 8 = −7: x goes {_fmt(x1[0])} → {_fmt(x1[1])} → {_fmt(x1[2])} → {_fmt(x1[3])}. At lr = 0.125 "
            f"the first step lands exactly on x = {_fmt(runs[0.125][1])}.",
        ),
    ]
    progress.advance()
    figs.append(
        w.figure(
            plots.plot_step_factor(measured),
            "quadratic_step_factor",
            "The factor by which one step multiplies x, against the learning rate: theory (line) and the "
            "measured x₁/x₀ of every run (dots). Below 1 the runs converge, above 1 they diverge.",
        )
    )
    progress.advance()
    at_step = 10
    figs.append(
        w.figure(
            plots.plot_lr_sweep(sweep, at_step),
            "quadratic_lr_sweep",
            f"Left: the loss of {len(sweep_lrs)} runs (lr from 0.01 to 0.2) over {iterations} iterations, log "
            f"scale. Right: the loss after {at_step} iterations against the lr — a valley with its bottom at "
            "lr = 1/8 and a wall at lr = 2/8.",
        )
    )
    progress.advance()
    best = min(sweep_lrs, key=lambda lr: sweep[lr][at_step])
    table = Table(
        ["lr", "x₁ (after one step)", "factor 1 − 8·lr", f"loss after {at_step} it.", f"loss after {iterations} it."],
        [[lr, sweep_x[lr][1], 1 - 8 * lr, sweep[lr][at_step], sweep[lr][-1]] for lr in sweep_lrs],
        "The sweep, measured (float64).",
    )
    return Section(
        slug="quadratic",
        title="1. The learning rate on y = 4x²",
        lead="Gradient descent takes a step against the slope: x ← x − lr·f'(x). On y = 4x² the slope is 8x, so "
        "every step multiplies x by the same number, 1 − 8·lr. Everything about the learning rate can be seen "
        "in that one number.",
        look=f"In the first figure, lr = 1 throws x from 2 to −14 to 98: each step lands further up the other "
        f"side of the valley (×−7 per step). lr = 0.125 lands on the minimum in one step. lr = 0.2 overshoots "
        f"but each bounce is smaller (×−0.6); lr = 0.01 is safe but slow (×0.92). In the sweep, the fastest "
        f"lr tried is {_fmt(best)}, the one closest to 0.125; every lr below 0.25 converges.",
        why="For a quadratic, f'' (the curvature, here 8) says how fast the slope changes. A step of lr = 1/f'' is "
        "exactly Newton's step x − f'(x)/f''(x), which jumps to the bottom of any parabola in one move: "
        "2 − 0.125·16 = 0. Larger steps overshoot; beyond lr = 2/f'' = 0.25 the factor |1 − 8·lr| exceeds 1 "
        "and every overshoot is bigger than the last, so x grows geometrically. In a neural network the "
        "curvature differs between directions and changes during training: the largest curvature sets the "
        "largest usable lr, the smallest sets how slow the slow directions are.",
        figures=figs,
        tables=[table],
        data_files=files,
    )


# ------------------------------------------------------------------------------------------------- 2. EWA + momentum

BETAS = (0.98, 0.95, 0.9, 0.8)


def ewa_weights(beta: float, n: int) -> list[float]:
    """The weight an EWA ``v ← β·v + (1 − β)·x`` (started at v = 0) gives to each of the last ``n`` values.

    Measured, not assumed: the average is run over ``n`` inputs and autograd gives d v_n / d x_{n-1-t}, the
    weight of the value ``t`` steps back.  They are (1 − β)·β^t and sum to 1 − β^n.
    """
    xs = torch.zeros(n, dtype=torch.float64, requires_grad=True)
    v = torch.zeros((), dtype=torch.float64)
    for i in range(n):
        v = beta * v + (1 - beta) * xs[i]
    (grad,) = torch.autograd.grad(v, xs)
    return grad.flip(0).tolist()


def _ewa_run(values: Sequence[float], beta: float) -> list[float]:
    v, out = 0.0, []
    for x in values:
        v = beta * v + (1 - beta) * x
        out.append(v)
    return out


MOMENTUM_RUNS: dict[str, dict[str, Any]] = {
    "SGD, lr 0.03": {"lr": 0.03},
    "SGD, lr 0.01": {"lr": 0.01},
    "SGD + momentum 0.9, lr 0.01": {"lr": 0.01, "momentum": 0.9},
    "Nesterov 0.9, lr 0.01": {"lr": 0.01, "momentum": 0.9, "nesterov": True},
}


def ewa_experiment(ctx: _Context) -> Section:
    """EWA weights for β ∈ {0.98, 0.95, 0.9, 0.8} and torch-style momentum against plain SGD on y = 4x²."""
    w, progress = ctx.writer, ctx.progress
    n = 100
    progress.stage("averages and momentum", len(BETAS) + len(MOMENTUM_RUNS) + 2)
    weights = {}
    for beta in BETAS:
        weights[beta] = ewa_weights(beta, n)
        progress.advance()
    gen = torch.Generator().manual_seed(ctx.cfg.seed)
    signal = [math.sin(2 * math.pi * t / n) + 0.5 + 0.4 * float(torch.randn((), generator=gen)) for t in range(n)]
    averages = {beta: _ewa_run(signal, beta) for beta in BETAS}
    iterations = 100  # cheap (a scalar), and the swings need room even in a quick run
    runs = {}
    for label, hp in MOMENTUM_RUNS.items():
        runs[label] = _gd_on_quadratic(steps=iterations, **hp)
        progress.advance()

    def crossings(xs: list[float]) -> int:
        return sum(1 for a, b in itertools.pairwise(xs) if (a > 0) != (b > 0) and b != 0)

    momentum_summary = {
        label: {
            **MOMENTUM_RUNS[label],
            "min_x": min(xs),
            "sign_changes": crossings(xs),
            "final_abs_x": abs(xs[-1]),
            "x": xs,
        }
        for label, xs in runs.items()
    }
    data = {
        "n": n,
        "ewa": {
            str(beta): {
                "beta": beta,
                "weights": wts,
                "sum": sum(wts),
                "one_minus_beta_pow_n": 1 - beta**n,
                "effective_window": 1 / (1 - beta),
            }
            for beta, wts in weights.items()
        },
        "momentum": momentum_summary,
    }
    files = [w.json("ewa_momentum", data)]
    files.append(
        w.csv(
            "ewa_weights",
            ["t_steps_back", *[f"weight_beta={b}" for b in BETAS]],
            [[t, *[weights[b][t] for b in BETAS]] for t in range(n)],
        )
    )
    labels = list(runs)
    files.append(
        w.csv(
            "momentum_vs_sgd",
            ["iteration", *[f"x[{lab}]" for lab in labels]],
            [[t, *[runs[lab][t] if t < len(runs[lab]) else "" for lab in labels]] for t in range(iterations + 1)],
        )
    )
    figs = [
        w.figure(
            plots.plot_ewa(weights, signal, averages),
            "ewa_weights",
            "Left: the weight of the value t steps back, measured by differentiating the average with "
            "autograd; the legend gives each sum, 1 − β^100. Right: the same averages over noisy values.",
        )
    ]
    progress.advance()
    figs.append(
        w.figure(
            plots.plot_momentum(runs),
            "momentum_vs_sgd",
            "Real runs of <code>optimlab.SGD</code> on y = 4x² from x = 2, with and without momentum.",
        )
    )
    progress.advance()
    mom = momentum_summary["SGD + momentum 0.9, lr 0.01"]
    sgd = momentum_summary["SGD, lr 0.03"]
    table = Table(
        ["β", "effective window 1/(1 − β)", "weight of the newest value 1 − β", "sum of 100 weights", "1 − β¹⁰⁰"],
        [[b, 1 / (1 - b), weights[b][0], sum(weights[b]), 1 - b**n] for b in BETAS],
        "Exponentially weighted averages, measured.",
    )
    table2 = Table(
        ["run", "lowest x (overshoot if < 0)", "sign changes of x", f"|x| after {iterations} iterations"],
        [[label, s["min_x"], s["sign_changes"], s["final_abs_x"]] for label, s in momentum_summary.items()],
        "Momentum against plain SGD on y = 4x², measured.",
    )
    return Section(
        slug="ewa-momentum",
        title="2. Averages and momentum",
        lead="Momentum, Adam's moments and many smoothing tricks are exponentially weighted averages: "
        "v ← β·v + (1 − β)·x. How far back do they look, and what does averaging gradients do to a descent?",
        look=f"The weights fall off geometrically: β = 0.9 gives the newest value 10% and looks back about 10 "
        f"steps; β = 0.98 looks back about 50. With 100 values the weights add up to 1 − β¹⁰⁰, not 1 "
        f"({sum(weights[0.98]):.3f} for β = 0.98): the average started at 0 is biased low at first, which is "
        f"why Adam divides by "
        f"1 − βᵗ (bias correction). In the momentum figure, SGD with momentum 0.9 and lr 0.01 runs past "
        f"the minimum to x = {mom['min_x']:.2f} and crosses zero {mom['sign_changes']} times, while plain SGD "
        f"with lr 0.03 glides in without ever crossing and ends closer ({sgd['final_abs_x']:.1e} against "
        f"{mom['final_abs_x']:.1e}).",
        why="torch's momentum (and optimlab's) is v ← m·v + g without the (1 − m) factor, so on a steady slope "
        "v grows to g/(1 − m): with m = 0.9 the steps are 10 times larger than lr·g. That speed is also "
        "inertia: when the slope changes sign at the minimum, v still points the old way and carries x past "
        "it, then back. On this quadratic, the error shrinks at best by √m ≈ 0.95 per step once it starts "
        "swinging, slower than plain SGD's 0.76 at lr 0.03. Nesterov's variant looks at the slope one step "
        "ahead and brakes earlier: smaller swings. Momentum pays off where the landscape is long and "
        "shallow in some directions and steep in others (see the 2-D paths below and the digits runs).",
        figures=figs,
        tables=[table, table2],
        data_files=files,
    )


# ------------------------------------------------------------------------------------------------- 3. digits

COMPARISON: list[tuple[str, str]] = [
    ("SGD, lr 0.1", "sgd:lr=0.1"),
    ("SGD+momentum 0.9, lr 0.01", "sgd:lr=0.01,momentum=0.9"),
    ("Nesterov 0.9, lr 0.01", "sgd:lr=0.01,momentum=0.9,nesterov=true"),
    ("Adam, lr 0.001", "adam:lr=0.001"),
    ("AdamW, lr 0.001, wd 0.01", "adamw:lr=0.001,weight_decay=0.01"),
    ("RMSprop, lr 0.001", "rmsprop:lr=0.001"),
    ("Adagrad, lr 0.01", "adagrad:lr=0.01"),
    ("NAdam, lr 0.002", "nadam:lr=0.002"),
    ("RAdam, lr 0.001", "radam:lr=0.001"),
    ("Adamax, lr 0.002", "adamax:lr=0.002"),
]


def comparison_specs() -> list[OptimizerSpec]:
    from optimlab.lab.specs import parse_optimizer_spec

    return [parse_optimizer_spec(spec, label) for label, spec in COMPARISON]


def train_specs(
    specs: Sequence[OptimizerSpec],
    data: DigitsData,
    epochs: int,
    model: str,
    seed: int,
    progress: Progress,
    batch_size: int = 64,
) -> list[TrainHistory]:
    """Train the same freshly initialised model once per optimizer spec (same weights, same batches)."""
    histories = []
    for spec in specs:
        net = make_model(model, seed=seed)
        opt = spec.create(net.parameters())
        histories.append(
            train(
                net, opt, data, epochs, batch_size, seed=seed, label=spec.label, on_epoch=lambda _: progress.advance()
            )
        )
    return histories


def history_rows(histories: Sequence[TrainHistory]) -> tuple[list[str], list[list[Any]]]:
    """Long-format rows (one per run and epoch) for a CSV file."""
    cols = ["run", "epoch", "train_loss", "val_loss", "train_acc", "val_acc"]
    rows = [
        [h.label, e, h.train_loss[e], h.val_loss[e], h.train_acc[e], h.val_acc[e]]
        for h in histories
        for e in range(len(h.val_loss))
    ]
    return cols, rows


def final_table(histories: Sequence[TrainHistory], specs: Sequence[OptimizerSpec] | None = None) -> Table:
    rows = []
    for i, h in enumerate(histories):
        f = h.final()
        setting = specs[i].text if specs is not None else ""
        rows.append(
            [
                h.label,
                setting,
                f["train_loss"],
                f["val_loss"],
                f"{f['train_acc']:.1%}",
                f"{f['val_acc']:.1%}",
                f"{f['best_val_acc']:.1%} (epoch {f['best_epoch']})",
                round(f["seconds"], 2),
                "yes" if h.diverged else "",
            ]
        )
    rows.sort(key=lambda r: -float(r[5].rstrip("%")))
    return Table(
        [
            "run",
            "optimizer spec",
            "train loss",
            "val loss",
            "train acc",
            "val acc",
            "best val acc",
            "seconds",
            "diverged",
        ],
        rows,
        "Final numbers after the last epoch, best validation accuracy first.",
    )


def optimizers_experiment(ctx: _Context) -> Section:
    """Ten optimizers on the digits task: curves and a table of final numbers."""
    w, cfg, progress = ctx.writer, ctx.cfg, ctx.progress
    specs = comparison_specs()
    progress.stage(f"{len(specs)} optimizers on digits", len(specs) * cfg.n_epochs)
    data = ctx.data()
    histories = train_specs(specs, data, cfg.n_epochs, cfg.model, cfg.seed, progress)
    cols, rows = history_rows(histories)
    files = [w.csv("digits_optimizers", cols, rows)]
    files.append(
        w.json(
            "digits_optimizers",
            {
                "task": {
                    "data": "sklearn load_digits (8x8)",
                    "train": data.sizes[0],
                    "val": data.sizes[1],
                    "model": cfg.model,
                    "epochs": cfg.n_epochs,
                    "batch_size": 64,
                    "seed": cfg.seed,
                },
                "runs": {
                    h.label: {
                        "spec": s.text,
                        **h.final(),
                        "curves": {k: getattr(h, k) for k in ("train_loss", "val_loss", "train_acc", "val_acc")},
                        "step_loss": h.step_loss,
                    }
                    for h, s in zip(histories, specs)
                },
            },
        )
    )
    n_train, n_val = data.sizes
    title = (
        f"{len(specs)} optimizers training the same {cfg.model.upper()} on digits "
        f"({n_train} train / {n_val} val images)"
    )
    figs = [
        w.figure(
            plots.plot_training_curves(histories, title),
            "digits_curves",
            "Loss and accuracy after every epoch, on the training images and on held-out validation images. "
            "Every run starts from the same weights and sees the same batches in the same order.",
        ),
        w.figure(
            plots.plot_final_bars(histories, "Where each optimizer ended (validation set, last epoch)"),
            "digits_final",
            "The last epoch's validation accuracy and loss, sorted.",
        ),
    ]
    best = max(histories, key=lambda h: h.val_acc[-1])
    worst = min(histories, key=lambda h: h.val_acc[-1])
    return Section(
        slug="optimizers",
        title="3. Ten optimizers on a real task: handwritten digits",
        lead=f"A small convolutional network learns to read scikit-learn's bundled 8×8 digit images (no download). "
        f"Each optimizer runs at a commonly used learning rate (torch's default for the adaptive ones) for "
        f"{cfg.n_epochs} epochs.",
        look=f"How fast each training loss falls in the first epochs, and whether the validation curves follow "
        f"the training curves or flatten (the gap is over-fitting). Here {best.label} ends best "
        f"({best.val_acc[-1]:.1%} validation accuracy) and {worst.label} last ({worst.val_acc[-1]:.1%}). Note "
        f"SGD lr 0.1 against SGD+momentum lr 0.01: the same long-run step size (0.01/(1 − 0.9) = 0.1), "
        f"different paths.",
        why="Plain SGD uses one step size for every weight. Adam, RMSprop and Adagrad divide each weight's step by "
        "a running size of its gradients, so rarely-updated or small-gradient weights still move: fast starts "
        "with little tuning. Adagrad's divisor only grows, so it slows down over time. AdamW decays weights "
        "directly instead of through the gradient. RAdam scales Adam's early steps down while its estimate of the "
        "gradients' variance is still unreliable (a built-in warmup lasting hundreds of steps), which shows "
        "here as a late start. Rankings here depend on the learning rates chosen: tune "
        "each optimizer's lr before concluding that one is better (<code>optimlab lr-find</code>, section 6).",
        figures=figs,
        tables=[final_table(histories, specs)],
        data_files=files,
    )


# ------------------------------------------------------------------------------------------------- 4. param groups

PARAM_GROUP_RUNS: list[tuple[str, float, float]] = [
    ("one lr 0.01 for all", 0.01, 0.01),
    ("one lr 0.1 for all", 0.1, 0.1),
    ("features 0.01, classifier 0.1", 0.01, 0.1),
]


def _relative_change(params: Sequence[torch.Tensor], start: Sequence[torch.Tensor]) -> float:
    num = math.sqrt(sum(float((p.detach() - s).pow(2).sum()) for p, s in zip(params, start)))
    den = math.sqrt(sum(float(s.pow(2).sum()) for s in start))
    return num / den


def param_groups_experiment(ctx: _Context) -> Section:
    """The same model with one lr, and with a small lr on the features and a larger one on the classifier."""
    w, cfg, progress = ctx.writer, ctx.cfg, ctx.progress
    progress.stage("per-group learning rates", len(PARAM_GROUP_RUNS) * cfg.n_epochs)
    data = ctx.data()
    histories: list[TrainHistory] = []
    movement: dict[str, dict[str, list[float]]] = {}
    momentum = 0.9
    for label, lr_features, lr_classifier in PARAM_GROUP_RUNS:
        net = make_model(cfg.model, seed=cfg.seed)
        parts = {"features": list(net.features.parameters()), "classifier": list(net.classifier.parameters())}
        start = {k: [p.detach().clone() for p in ps] for k, ps in parts.items()}
        opt = optimlab.SGD(
            [{"params": parts["features"], "lr": lr_features}, {"params": parts["classifier"], "lr": lr_classifier}],
            lr=lr_features,
            momentum=momentum,
        )
        moved: dict[str, list[float]] = {k: [0.0] for k in parts}

        def on_epoch(
            _: int,
            parts: dict[str, list[torch.Tensor]] = parts,
            moved: dict[str, list[float]] = moved,
            start: dict[str, list[torch.Tensor]] = start,
        ) -> None:
            for k in parts:
                moved[k].append(_relative_change(parts[k], start[k]))
            progress.advance()

        histories.append(train(net, opt, data, cfg.n_epochs, seed=cfg.seed, label=label, on_epoch=on_epoch))
        movement[label] = moved
    cols, rows = history_rows(histories)
    files = [w.csv("param_groups", cols, rows)]
    files.append(
        w.json(
            "param_groups",
            {
                "optimizer": f"SGD momentum={momentum}",
                "runs": {
                    label: {
                        "lr_features": lf,
                        "lr_classifier": lc,
                        "group_lrs_per_epoch": h.group_lrs,
                        "relative_change": movement[label],
                        **h.final(),
                    }
                    for (label, lf, lc), h in zip(PARAM_GROUP_RUNS, histories)
                },
            },
        )
    )
    figs = [
        w.figure(
            plots.plot_param_groups(histories, movement),
            "param_groups",
            "SGD with momentum 0.9 and two parameter groups, <code>[{'params': features, 'lr': …}, "
            "{'params': classifier, 'lr': …}]</code>. Right: ‖w − w₀‖/‖w₀‖ of each part after every epoch.",
        )
    ]
    table = Table(
        ["run", "lr features", "lr classifier", "val acc", "val loss", "features moved", "classifier moved"],
        [
            [
                label,
                lf,
                lc,
                f"{h.val_acc[-1]:.1%}",
                h.val_loss[-1],
                movement[label]["features"][-1],
                movement[label]["classifier"][-1],
            ]
            for (label, lf, lc), h in zip(PARAM_GROUP_RUNS, histories)
        ],
        "After the last epoch. 'moved' is the relative change of the weights from their initial values.",
    )
    split = movement["features 0.01, classifier 0.1"]
    big = movement["one lr 0.1 for all"]
    acc = {h.label: h.val_acc[-1] for h in histories}
    return Section(
        slug="param-groups",
        title="4. Per-group learning rates",
        lead="An optimizer takes parameter groups, each with its own hyperparameters. A common use: a small lr on "
        "the feature layers (often pre-trained, to be kept) and a larger one on the classifier on top.",
        look=f"Validation accuracy after the last epoch: {acc['features 0.01, classifier 0.1']:.1%} with the "
        f"split, {acc['one lr 0.1 for all']:.1%} with lr 0.1 everywhere and {acc['one lr 0.01 for all']:.1%} with "
        f"lr 0.01 everywhere. With the split the feature layers moved {split['features'][-1]:.0%} of their "
        f"initial size, against {big['features'][-1]:.0%} with lr 0.1 everywhere, while the classifier moved "
        f"{split['classifier'][-1]:.0%}: the groups really learn at different speeds.",
        why="Each group's lr scales only its own weights' steps. The classifier is a single linear layer that "
        "must adapt to whatever the features produce, and tolerates a large lr; the features feed everything "
        "above them, so large changes there disturb the whole network (and would erase pre-trained "
        "knowledge when fine-tuning). Schedulers scale every group's lr by the same factor, keeping the ratio.",
        figures=figs,
        tables=[table],
        data_files=files,
    )


# ------------------------------------------------------------------------------------------------- 5. 2-D paths

TRAJECTORY_OPTIMIZERS: list[tuple[str, str, str]] = [
    # label, spec without lr, key into TestFunction.default_lrs
    ("SGD", "sgd", "sgd"),
    ("Momentum 0.9", "sgd:momentum=0.9", "momentum"),
    ("Nesterov 0.9", "sgd:momentum=0.9,nesterov=true", "nesterov"),
    ("Adam", "adam", "adam"),
    ("RMSprop", "rmsprop", "rmsprop"),
    ("Adagrad", "adagrad", "adagrad"),
]


def run_function_comparison(
    function: TestFunction, specs: Sequence[OptimizerSpec], steps: int | None = None
) -> list[Trajectory]:
    """Each optimizer spec's path on ``function`` (specs must carry their lr)."""
    return [run_trajectory(function, s.create, steps=steps, label=s.label) for s in specs]


def trajectories_experiment(ctx: _Context) -> Section:
    """Six optimizers on Rosenbrock, Beale, a saddle and a quadratic, drawn over the contours."""
    from optimlab.lab.specs import parse_optimizer_spec

    w, cfg, progress = ctx.writer, ctx.cfg, ctx.progress
    progress.stage("paths on 2-D functions", len(FUNCTIONS) * len(TRAJECTORY_OPTIMIZERS) + 2)
    runs: dict[str, tuple[TestFunction, list[Trajectory]]] = {}
    lrs: dict[str, dict[str, float]] = {}
    for name, function in FUNCTIONS.items():
        trajs = []
        lrs[name] = {}
        for label, spec_text, key in TRAJECTORY_OPTIMIZERS:
            lr = function.default_lr(key)
            spec = parse_optimizer_spec(spec_text, label).with_defaults(lr=lr)
            lrs[name][label] = lr
            trajs.append(run_trajectory(function, spec.create, steps=cfg.steps(function.steps), label=label))
            progress.advance()
        runs[name] = (function, trajs)
    files = [
        w.json(
            "trajectories",
            {
                name: {
                    "formula": f.formula,
                    "start": f.start,
                    "minima": f.minima,
                    "min_value": f.min_value,
                    "runs": {
                        t.label: {
                            "lr": lrs[name][t.label],
                            "points": t.points,
                            "values": t.values,
                            "diverged": t.diverged,
                        }
                        for t in trajs
                    },
                }
                for name, (f, trajs) in runs.items()
            },
        )
    ]
    files.append(
        w.csv(
            "trajectories",
            ["function", "optimizer", "lr", "step", "x", "y", "f"],
            [
                [name, t.label, lrs[name][t.label], i, p[0], p[1], v]
                for name, (_, trajs) in runs.items()
                for t in trajs
                for i, (p, v) in enumerate(zip(t.points, t.values))
            ],
        )
    )
    figs = [
        w.figure(
            plots.plot_trajectories(runs, lrs, resolution=60 if cfg.quick else 160),
            "trajectories",
            "Each optimizer's path from the same start (white dot). Darker contours are lower; the star is "
            "the minimum. The learning rate of each run is in its legend.",
        )
    ]
    progress.advance()
    figs.append(
        w.figure(
            plots.plot_trajectory_values(runs),
            "trajectories_values",
            "The same runs: how far the function value is above its minimum, step by step (log scale).",
        )
    )
    progress.advance()
    table = Table(
        ["function", *[label for label, _, _ in TRAJECTORY_OPTIMIZERS]],
        [
            [name, *[t.values[-1] - (f.min_value or 0.0) if not t.diverged else math.inf for t in trajs]]
            for name, (f, trajs) in runs.items()
        ],
        "f − f* at the end of each run (— : diverged). Lower is better.",
    )
    return Section(
        slug="trajectories",
        title="5. Paths on 2-D test functions",
        lead="In two dimensions we can watch every step. Four classic landscapes, six optimizers from the same start.",
        look="On the <b>quadratic</b> 4x² + y²/4 (steep across, shallow along), SGD zig-zags across the steep "
        "direction while crawling along the shallow one; momentum builds speed along the valley. On "
        "<b>Rosenbrock</b> everyone finds the curved valley fast and then crawls along its floor towards (1, 1). "
        "On <b>Beale</b> the gradient is tiny on the plateaus and huge near the walls, so plain SGD needs a small "
        "lr. On the <b>saddle</b> the start is almost on the ridge (y = 0.001): the gradient along y is tiny, "
        "and how quickly each method escapes to one of the two minima shows how it treats small gradients.",
        why="Adam, RMSprop and Adagrad divide each coordinate's step by the size of its recent gradients: a tiny "
        "gradient (the saddle, Beale's plateaus) still gives a step of about lr, and a steep direction does not "
        "blow up. That is why they escape the saddle fast and do not zig-zag on the quadratic; it also means "
        "their steps do not shrink near a minimum on their own, so they can hover around it. Momentum "
        "accumulates consistent directions (along valleys) and cancels alternating ones (across them).",
        figures=figs,
        tables=[table],
        data_files=files,
    )


# ------------------------------------------------------------------------------------------------- 6. range test


def lr_range_experiment(ctx: _Context) -> Section:
    """The LR range test on the digits CNN, and a check of its suggestions by short training runs."""
    w, cfg, progress = ctx.writer, ctx.cfg, ctx.progress
    num_steps = cfg.steps(200)
    check_epochs = max(1, cfg.n_epochs // 4)
    progress.stage("learning-rate range test", num_steps + 4 * check_epochs)
    data = ctx.data()
    net = make_model(cfg.model, seed=cfg.seed)
    opt = optimlab.SGD(net.parameters(), lr=0.01, momentum=0.9)
    gen = torch.Generator().manual_seed(cfg.seed)

    def batches() -> Any:
        order = torch.randperm(len(data.y_train), generator=gen)
        for i in range(0, len(order), 64):
            idx = order[i : i + 64]
            yield data.x_train[idx], data.y_train[idx]

    class _Loader:
        def __iter__(self) -> Any:
            return batches()

    result = lr_range_test(
        opt,
        lambda b: nn.functional.cross_entropy(net(b[0]), b[1]),
        loader=_Loader(),
        model=net,
        start_lr=1e-4,
        end_lr=10.0,
        num_steps=num_steps,
        skip_start=max(1, num_steps // 20),
        callback=lambda *_: progress.advance(),
    )
    checks: dict[str, float] = {f"{rule} rule": lr for rule, lr in result.suggestions.items() if lr is not None}
    if result.min_loss_lr is not None:
        checks["lowest-loss lr (too high)"] = result.min_loss_lr
    check_histories = []
    for label, lr in checks.items():
        net2 = make_model(cfg.model, seed=cfg.seed)
        opt2 = optimlab.SGD(net2.parameters(), lr=lr, momentum=0.9)
        check_histories.append(
            train(
                net2,
                opt2,
                data,
                check_epochs,
                seed=cfg.seed,
                label=f"{label}: lr {lr:.3g}",
                on_epoch=lambda _: progress.advance(),
            )
        )
    files = [w.json("lr_range_test", {**result.to_dict(), "checks": {h.label: h.final() for h in check_histories}})]
    result.to_csv(w.out_dir / "data" / "lr_range_test.csv")
    files.append("data/lr_range_test.csv")
    fig, axes = plots.new_figure(1, 1, 8.5, 5.0)
    result.plot(ax=axes[0, 0], title="Learning-rate range test: SGD (momentum 0.9) on the digits CNN")
    figs = [
        w.figure(
            fig,
            "lr_range_test",
            f"The lr grows exponentially from 1e-4 to 10 over {num_steps} mini-batches; the test stopped "
            f"({result.stop_reason}) at lr {result.stop_lr if result.stop_lr is not None else 10:.3g}. The "
            "markers are the three suggestion rules.",
        )
    ]
    table = Table(
        ["trained with", "val acc", "val loss", "diverged"],
        [[h.label, f"{h.val_acc[-1]:.1%}", h.val_loss[-1], "yes" if h.diverged else ""] for h in check_histories],
        f"Check: {check_epochs} epoch(s) of training from scratch with each suggested lr.",
    )
    sug = result.suggested_lr
    return Section(
        slug="lr-range-test",
        title="6. Finding a learning rate: the range test",
        lead="Train for one short run while raising the learning rate exponentially every mini-batch, and watch "
        "the loss: flat (lr too small), falling (useful), then exploding (too large). "
        "<code>optimlab.lab.lr_range_test</code> does this on any model and restores it exactly afterwards; "
        "<code>optimlab lr-find</code> runs it from the command line.",
        look=f"The steep part of the curve. The suggested lr (valley rule) here is "
        f"{'—' if sug is None else f'{sug:.3g}'}; the table checks each suggestion with a short real training "
        "run, next to the lr where the loss was lowest, which is already on the edge of divergence.",
        why="While the lr is tiny, the weights barely change, so the loss is flat. Once the lr is large enough the "
        "loss drops quickly; past about 2/curvature (section 1) steps overshoot and the loss climbs. The "
        "lowest point is too far: the network has been trained for only a few steps there, and a whole run at "
        "that lr trains badly or diverges (see the table). A point on the steep descent, roughly a decade lower, "
        "is a safe, fast choice. "
        "The curve is smoothed without lag (a forward and a backward average), so the marked points are where "
        "the loss really changed.",
        figures=figs,
        tables=[table],
        data_files=files,
    )


# ------------------------------------------------------------------------------------------------- the demo

EXPERIMENTS: dict[str, Callable[[_Context], Section]] = {
    "quadratic": quadratic_experiment,
    "ewa": ewa_experiment,
    "optimizers": optimizers_experiment,
    "param-groups": param_groups_experiment,
    "trajectories": trajectories_experiment,
    "lr-range-test": lr_range_experiment,
}


@dataclass
class DemoResult:
    """Where the report was written, what it contains and how long it took."""

    out_dir: Path
    index: Path
    sections: list[Section] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def figures(self) -> list[Path]:
        return [self.out_dir / "figures" / f.filename for s in self.sections for f in s.figures]


def run_demo(
    out_dir: str | Path = "optimlab-report",
    config: DemoConfig | None = None,
    only: Sequence[str] | None = None,
    progress: Progress | None = None,
) -> DemoResult:
    """Run the demo's experiments and write the report folder.

    Args:
        out_dir: the report folder.
        config: the settings (default: the full demo).
        only: run just these experiments (names from :data:`EXPERIMENTS`).
        progress: where to report progress (default: nowhere).
    """
    config = config or DemoConfig()
    names = list(EXPERIMENTS) if not only else list(dict.fromkeys(only))
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        raise ValueError(f"unknown experiment {', '.join(unknown)}; choose from {', '.join(EXPERIMENTS)}")
    if config.model not in ("cnn", "mlp"):
        raise ValueError(f"unknown model {config.model!r}; choose from cnn, mlp")
    if config.n_epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {config.n_epochs}")
    progress = progress or Progress()
    start = time.perf_counter()
    writer = ReportWriter(
        out_dir, "optimlab lab: what learning rate, momentum and the optimizer do", dpi=config.figure_dpi
    )
    ctx = _Context(writer, config, progress)
    with torch.random.fork_rng(devices=[]), torch_threads(config.threads):
        torch.manual_seed(config.seed)
        for name in names:
            t0 = time.perf_counter()
            section = EXPERIMENTS[name](ctx)
            section.seconds = time.perf_counter() - t0
            writer.add(section)
    seconds = time.perf_counter() - start
    mode = "quick run (--quick): short curves, low-resolution figures" if config.quick else "full run"
    intro = (
        '<section id="about"><h2>About this report</h2>'
        "<p>Every number and figure below comes from real runs of optimlab's optimizers (the drop-in "
        "replacements of <code>torch.optim</code>), made on this machine by <code>optimlab demo</code> in "
        f"{seconds:.0f} seconds ({mode}, seed {config.seed}). Each section says what to look at and why it "
        "happens; the raw numbers behind each figure are in the <code>data/</code> folder next to this page, "
        "the figures in <code>figures/</code>.</p>"
        "<p>Try it on your own problem: <code>optimlab compare</code> (optimizers on a built-in task or 2-D "
        "function), <code>optimlab lr-find</code> (the range test), <code>optimlab schedule</code> (plot a "
        "learning-rate schedule), <code>optimlab list</code> (every optimizer and its hyperparameters), and "
        "<code>optimlab.lab.lr_range_test</code> from Python.</p></section>"
    )
    index = writer.write_html(
        intro=intro,
        subtitle=f"<p>{len(writer.sections)} experiments · {seconds:.0f} s · {mode}</p>",
        footer=f"optimlab {optimlab.__version__} · torch {torch.__version__} · generated by <code>optimlab demo</code>",
    )
    writer.write_summary(
        {"command": "demo", "config": {**config.__dict__, "epochs_used": config.n_epochs}, "seconds": seconds}
    )
    return DemoResult(Path(out_dir), index, writer.sections, seconds)
