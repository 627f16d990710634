"""optimlab.lr_scheduler against torch.optim.lr_scheduler, float for float.

Every scheduler runs over many configs, in three param-group layouts (torch's ``TestLRScheduler.setUp`` layout:
two groups, one float lr and one Tensor lr; a float lr alone; a Tensor lr alone), driven by optimlab and torch
optimizers.  At every step the lr, momentum and betas of every group, ``get_last_lr()``, whether a Tensor lr was
kept in place, any exception and every warning (text and count) must be identical (``==``) between torch and
optimlab.  The same runs are then resumed mid-way from state dicts (``torch.save`` + ``torch.load(weights_only=
True)``, fresh optimizer and scheduler, load both, continue), from optimlab's and from torch's state dicts.
"""

from __future__ import annotations

import copy
import gc
import io
import math
import types
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
import torch.optim.lr_scheduler as TL
from torch import Tensor

import optimlab
import optimlab.lr_scheduler as OL
import optimlab.optimizer

# ------------------------------------------------------------------------------------------------------------
# Harness (also used by test_swa_utils.py and test_lr_scheduler_extra.py)

OPTIMIZERS: dict[str, tuple[Callable[..., Any], dict[str, Any]]] = {
    "optimlab.SGD": (lambda *a, **k: optimlab.SGD(*a, **k), {"momentum": 0.9}),
    "torch.SGD": (torch.optim.SGD, {"momentum": 0.9}),
    "optimlab.Adam": (lambda *a, **k: optimlab.Adam(*a, **k), {}),
    "torch.Adam": (torch.optim.Adam, {}),
}
LAYOUTS = ("two_groups", "float", "tensor")


def make_optimizer(kind: str, layout: str) -> torch.optim.Optimizer:
    """A fresh optimizer of ``kind`` with the param groups of ``layout`` (parameters never get gradients)."""
    cls, extra = OPTIMIZERS[kind]
    p1, p2 = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(3))
    if layout == "two_groups":  # as torch's TestLRScheduler.setUp
        groups = [{"params": [p1]}, {"params": [p2], "lr": torch.tensor(0.5)}]
        return cls(groups, lr=0.05, **extra)
    if layout == "float":
        return cls([p1], lr=0.05, **extra)
    return cls([p1], lr=torch.tensor(0.05), **extra)


def snap(value: Any) -> Any:
    """A comparable, exact image of a hyperparameter value (type included: 0 and 0.0 differ)."""
    if isinstance(value, Tensor):
        return ("tensor", value.dtype, tuple(value.shape), value.item())
    if isinstance(value, (tuple, list)):
        return (type(value).__name__, tuple(snap(v) for v in value))
    return (type(value).__name__, value)


def roundtrip(obj: Any) -> Any:
    """``torch.save`` then ``torch.load(weights_only=True)``."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@dataclass
class Config:
    """One scheduler configuration: how to build it from a library module, how to step it."""

    name: str
    build: Callable[[Any, torch.optim.Optimizer], Any]
    steps: int = 25
    step: Callable[[Any, int], None] = lambda sched, i: sched.step()
    edit: Callable[[torch.optim.Optimizer, int], None] | None = None
    optimizers: tuple[str, ...] = tuple(OPTIMIZERS)
    layouts: tuple[str, ...] = LAYOUTS
    resume: bool = True
    last_value: str = "get_last_lr"
    extra: dict[str, Any] = field(default_factory=dict)


STATS = {"runs": 0, "steps": 0, "compared_fresh": 0, "compared_resumed": 0}  # for reporting coverage


def record(opt: torch.optim.Optimizer, sched: Any, last_value: str) -> tuple[Any, ...]:
    groups = tuple(
        (snap(g["lr"]), snap(g.get("momentum")), snap(g.get("betas")), snap(g.get("weight_decay")))
        for g in opt.param_groups
    )
    last = getattr(sched, last_value)()
    aliased = any(v is g["lr"] for v in last for g in opt.param_groups if isinstance(v, Tensor))
    return groups, tuple(snap(v) for v in last), aliased


def run(
    lib: Any,
    cfg: Config,
    layout: str,
    kind: str,
    resume_at: int | None = None,
    resume_from: tuple[dict[str, Any], dict[str, Any]] | None = None,
) -> tuple[list[Any], list[tuple[str, str]], tuple[dict[str, Any], dict[str, Any]] | None]:
    """Run ``cfg`` with ``lib``'s schedulers; returns the trajectory, the warnings and the state at ``resume_at``.

    With ``resume_at``, the run is interrupted before step ``resume_at``: the states are saved (torch.save /
    torch.load(weights_only=True)), a fresh optimizer and scheduler are built, the saved states (or
    ``resume_from``, states saved by another run) are loaded, and the run continues.
    """
    saved = None
    trajectory: list[Any] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        opt = make_optimizer(kind, layout)
        sched = cfg.build(lib, opt)
        trajectory.append(record(opt, sched, cfg.last_value))
        for i in range(cfg.steps):
            if resume_at == i:
                saved = (copy.deepcopy(opt.state_dict()), roundtrip(sched.state_dict()))
                opt_state, sched_state = resume_from if resume_from is not None else saved
                opt = make_optimizer(kind, layout)
                sched = cfg.build(lib, opt)
                opt.load_state_dict(opt_state)
                sched.load_state_dict(sched_state)
            if cfg.edit is not None:
                cfg.edit(opt, i)
            lr_objects = [g["lr"] for g in opt.param_groups]
            if i == 0 or i == resume_at:
                # Only the first step after (re)building matters to a scheduler (the call-order warning);
                # stepping the optimizer every time would only cost time (its parameters have no gradients).
                opt.step()
            try:
                cfg.step(sched, i)
            except Exception as error:  # both libraries must fail the same way
                trajectory.append(("raised", type(error).__name__, str(error)))
                break
            in_place = tuple(g["lr"] is old for g, old in zip(opt.param_groups, lr_objects))
            trajectory.append((record(opt, sched, cfg.last_value), in_place))
    STATS["runs"] += 1
    STATS["steps"] += len(trajectory)
    return trajectory, [(w.category.__name__, str(w.message)) for w in caught], saved


def check_config(cfg: Config, torch_lib: Any = TL, ours: Any = OL) -> None:
    """The differential check of one config over its layouts and optimizers, fresh and resumed.

    The optimizer state is carried over with deepcopy, the scheduler state through torch.save/torch.load
    (weights_only=True).
    """
    for li, layout in enumerate(cfg.layouts):
        # Every layout meets every optimizer kind across the configs; each config uses one per layout.
        kind = cfg.optimizers[(li + zlib.crc32(cfg.name.encode())) % len(cfg.optimizers)]
        expected, expected_warnings, _ = run(torch_lib, cfg, layout, kind)
        got, got_warnings, _ = run(ours, cfg, layout, kind)
        assert got == expected, f"{cfg.name} [{layout}, {kind}]: trajectories differ"
        STATS["compared_fresh"] += len(expected)
        assert got_warnings == expected_warnings, f"{cfg.name} [{layout}, {kind}]: warnings differ"
        for g_index, entry in enumerate(got[1:]):
            if entry[0] != "raised":
                assert not entry[0][2], f"{cfg.name}: get_last_lr aliases a live Tensor lr at step {g_index}"
        if not cfg.resume:
            continue
        completed = sum(1 for entry in expected[1:] if entry[0] != "raised")
        # One resume point per layout: early, middle, late.
        k = min((1, completed // 2, completed - 2)[li % 3], completed - 1)
        if k >= 0:
            torch_resumed, _, torch_saved = run(torch_lib, cfg, layout, kind, resume_at=k)
            ours_resumed, _, ours_saved = run(ours, cfg, layout, kind, resume_at=k)
            assert ours_resumed == torch_resumed, f"{cfg.name} [{layout}, {kind}]: resume at {k} differs from torch"
            assert ours_resumed == got, f"{cfg.name} [{layout}, {kind}]: resume at {k} is not exact"
            # The state dicts have one format: torch's load into optimlab's schedulers and the other way round.
            crossed, _, _ = run(ours, cfg, layout, kind, resume_at=k, resume_from=torch_saved)
            assert crossed == expected, f"{cfg.name} [{layout}, {kind}]: resume from torch's state at {k}"
            crossed_back, _, _ = run(torch_lib, cfg, layout, kind, resume_at=k, resume_from=ours_saved)
            assert crossed_back == expected, f"{cfg.name} [{layout}, {kind}]: torch resumed from ours at {k}"
            STATS["compared_resumed"] += len(torch_resumed) + len(got) + 2 * len(expected)


# ------------------------------------------------------------------------------------------------------------
# Configs


class Scaled:
    """A callable object with state (its attributes are saved in state dicts)."""

    def __init__(self, base: float) -> None:
        self.base = base

    def __call__(self, epoch: int) -> float:
        return self.base**epoch


class Pulse:
    """A custom CyclicLR scale function with state."""

    def __init__(self, depth: float) -> None:
        self.depth = depth

    def __call__(self, x: float) -> float:
        return 1.0 - self.depth * (1 + math.sin(x)) / 2


def per_group(*fns: Callable[[int], float]) -> Callable[[torch.optim.Optimizer], list[Callable[[int], float]]]:
    return lambda opt: [fns[i % len(fns)] for i in range(len(opt.param_groups))]


def per_group_values(*values: float) -> Callable[[torch.optim.Optimizer], list[float]]:
    return lambda opt: [values[i % len(values)] for i in range(len(opt.param_groups))]


def epochs_step(epochs: list[float]) -> Callable[[Any, int], None]:
    """Step with an explicit (deprecated, closed-form) epoch."""
    return lambda sched, i: sched.step(epochs[i])


def metrics_step(metrics: list[float]) -> Callable[[Any, int], None]:
    return lambda sched, i: sched.step(metrics[i])


def halve_lr_float(opt: torch.optim.Optimizer, i: int) -> None:
    """Hand edit between steps: assign a float (this replaces a Tensor lr, as it would in torch)."""
    if i in (3, 8):
        for g in opt.param_groups:
            g["lr"] = float(g["lr"]) * 0.5


def halve_lr_in_place(opt: torch.optim.Optimizer, i: int) -> None:
    """Hand edit between steps: Tensor lrs are changed in place, float lrs reassigned."""
    if i in (3, 8):
        for g in opt.param_groups:
            if isinstance(g["lr"], Tensor):
                g["lr"].mul_(0.5)
            else:
                g["lr"] = g["lr"] * 0.5


MIXED_EPOCHS = [1, 2, 5, 3, 3, 10, 0, 7, 8, 12, 4, 30, 31, 2, 6, 9, 11, 15, 14, 20]
CAWR_EPOCHS = [0, 0.1, 0.2, 1.3, 2.3, 17.5, 18.5, 19.5, 29.5, 30.5, 31.5, 50, 3, 4.25, 12, 27, 80, 81, 3.5, 7]
METRICS = [1.0, 0.9, 0.9, 0.95, 0.9, 0.9, 0.9, 0.5, 0.5, 0.6, 0.55, 0.5, 0.5, 0.5, 0.49, 0.5, 0.5, 0.5]
METRICS += [0.5, 0.51, 0.2, 0.2, 0.2, 0.2, 0.2, 0.3]
UP_METRICS = [-m for m in METRICS]

SGD_KINDS = ("optimlab.SGD", "torch.SGD")
ADAM_KINDS = ("optimlab.Adam", "torch.Adam")

CONFIGS: dict[str, list[Config]] = {
    "LambdaLR": [
        Config("lambda-exp", lambda L, o: L.LambdaLR(o, lambda e: 0.95**e)),
        Config("lambda-inv", lambda L, o: L.LambdaLR(o, lambda e: 1.0 / (e + 1))),
        Config("lambda-per-group", lambda L, o: L.LambdaLR(o, per_group(lambda e: 0.9**e, lambda e: 1 - e / 40)(o))),
        Config("lambda-object", lambda L, o: L.LambdaLR(o, Scaled(0.93))),
        Config("lambda-epoch", lambda L, o: L.LambdaLR(o, lambda e: 0.9**e), step=epochs_step(MIXED_EPOCHS)),
        Config("lambda-int", lambda L, o: L.LambdaLR(o, lambda e: e // 5 + 1)),
    ],
    "MultiplicativeLR": [
        Config("mult-0.95", lambda L, o: L.MultiplicativeLR(o, lambda e: 0.95)),
        Config("mult-alt", lambda L, o: L.MultiplicativeLR(o, lambda e: 0.9 if e % 3 else 1.1)),
        Config("mult-per-group", lambda L, o: L.MultiplicativeLR(o, per_group(lambda e: 0.9, lambda e: 0.8)(o))),
        Config("mult-object", lambda L, o: L.MultiplicativeLR(o, Scaled(0.99))),
        Config("mult-edit", lambda L, o: L.MultiplicativeLR(o, lambda e: 0.97), edit=halve_lr_float),
        Config("mult-epoch", lambda L, o: L.MultiplicativeLR(o, lambda e: 0.9), step=epochs_step(MIXED_EPOCHS)),
    ],
    "StepLR": [
        Config("step-3", lambda L, o: L.StepLR(o, 3)),
        Config("step-2-0.5", lambda L, o: L.StepLR(o, step_size=2, gamma=0.5)),
        Config("step-1-0.9", lambda L, o: L.StepLR(o, 1, 0.9), steps=40),
        Config("step-edit", lambda L, o: L.StepLR(o, 4, 0.3), edit=halve_lr_float),
        Config("step-edit-inplace", lambda L, o: L.StepLR(o, 4, 0.3), edit=halve_lr_in_place),
        Config("step-epoch", lambda L, o: L.StepLR(o, 3, 0.5), step=epochs_step(MIXED_EPOCHS)),
    ],
    "MultiStepLR": [
        Config("multistep", lambda L, o: L.MultiStepLR(o, [2, 5, 9])),
        Config("multistep-repeat", lambda L, o: L.MultiStepLR(o, [3, 3, 7], 0.5)),
        Config("multistep-zero", lambda L, o: L.MultiStepLR(o, milestones=[0, 4], gamma=0.2)),
        Config("multistep-unsorted", lambda L, o: L.MultiStepLR(o, [9, 2, 5])),
        Config("multistep-edit", lambda L, o: L.MultiStepLR(o, [2, 6, 10]), edit=halve_lr_in_place),
        Config("multistep-epoch", lambda L, o: L.MultiStepLR(o, [2, 5, 5, 9]), step=epochs_step(MIXED_EPOCHS)),
    ],
    "ConstantLR": [
        Config("constant-default", lambda L, o: L.ConstantLR(o)),
        Config("constant-half", lambda L, o: L.ConstantLR(o, factor=0.5, total_iters=4)),
        Config("constant-one", lambda L, o: L.ConstantLR(o, 1.0, 3)),
        Config("constant-zero-iters", lambda L, o: L.ConstantLR(o, 0.25, total_iters=0)),
        Config("constant-zero-factor", lambda L, o: L.ConstantLR(o, 0.0, total_iters=3)),  # 1 / 0 at epoch 3
        Config("constant-edit", lambda L, o: L.ConstantLR(o, 0.3, 6), edit=halve_lr_float),
        Config("constant-epoch", lambda L, o: L.ConstantLR(o, 0.4, 5), step=epochs_step(MIXED_EPOCHS)),
    ],
    "LinearLR": [
        Config("linear-default", lambda L, o: L.LinearLR(o)),
        Config("linear-torch-test", lambda L, o: L.LinearLR(o, start_factor=0.25, end_factor=0.6, total_iters=4)),
        Config("linear-decay", lambda L, o: L.LinearLR(o, 1.0, 0.1, 10)),
        Config("linear-to-zero", lambda L, o: L.LinearLR(o, 0.5, 0.0, 6)),
        Config("linear-one-iter", lambda L, o: L.LinearLR(o, 0.1, 1.0, 1)),
        Config("linear-long", lambda L, o: L.LinearLR(o, 1e-3, 1.0, 37), steps=45),
        Config("linear-edit", lambda L, o: L.LinearLR(o, 0.2, 1.0, 10), edit=halve_lr_in_place),
        Config("linear-epoch", lambda L, o: L.LinearLR(o, 0.2, 0.9, 8), step=epochs_step(MIXED_EPOCHS)),
    ],
    "ExponentialLR": [
        Config("exp-0.9", lambda L, o: L.ExponentialLR(o, 0.9)),
        Config("exp-0.5", lambda L, o: L.ExponentialLR(o, gamma=0.5)),
        Config("exp-1", lambda L, o: L.ExponentialLR(o, 1.0)),
        Config("exp-edit", lambda L, o: L.ExponentialLR(o, 0.8), edit=halve_lr_float),
        Config("exp-epoch", lambda L, o: L.ExponentialLR(o, 0.9), step=epochs_step(MIXED_EPOCHS)),
    ],
    "PolynomialLR": [
        Config("poly-default", lambda L, o: L.PolynomialLR(o)),
        Config("poly-sq", lambda L, o: L.PolynomialLR(o, total_iters=10, power=2.0)),
        Config("poly-sqrt", lambda L, o: L.PolynomialLR(o, 8, 0.5)),
        Config("poly-edit", lambda L, o: L.PolynomialLR(o, 12, 1.5), edit=halve_lr_in_place),
        Config("poly-epoch", lambda L, o: L.PolynomialLR(o, 10, 0.9), step=epochs_step(MIXED_EPOCHS)),
    ],
    "CosineAnnealingLR": [
        Config("cos-10", lambda L, o: L.CosineAnnealingLR(o, 10)),
        Config("cos-7-min", lambda L, o: L.CosineAnnealingLR(o, T_max=7, eta_min=0.001), steps=40),
        Config("cos-3-periods", lambda L, o: L.CosineAnnealingLR(o, 3, 0.01), steps=30),
        Config("cos-1", lambda L, o: L.CosineAnnealingLR(o, 1)),
        Config("cos-edit", lambda L, o: L.CosineAnnealingLR(o, 10, 0.002), edit=halve_lr_float),
        Config("cos-epoch", lambda L, o: L.CosineAnnealingLR(o, 10, 0.001), step=epochs_step(MIXED_EPOCHS)),
    ],
    "CosineAnnealingWarmRestarts": [
        Config("sgdr-3", lambda L, o: L.CosineAnnealingWarmRestarts(o, 3), steps=30),
        Config("sgdr-4-2", lambda L, o: L.CosineAnnealingWarmRestarts(o, 4, T_mult=2, eta_min=0.001), steps=40),
        Config("sgdr-2-3", lambda L, o: L.CosineAnnealingWarmRestarts(o, T_0=2, T_mult=3), steps=30),
        Config(
            "sgdr-epoch-1", lambda L, o: L.CosineAnnealingWarmRestarts(o, 10, 1, 1e-10), step=epochs_step(CAWR_EPOCHS)
        ),
        Config(
            "sgdr-epoch-2", lambda L, o: L.CosineAnnealingWarmRestarts(o, 10, 2, 1e-10), step=epochs_step(CAWR_EPOCHS)
        ),
        Config("sgdr-epoch-3", lambda L, o: L.CosineAnnealingWarmRestarts(o, 10, 3, 0), step=epochs_step(CAWR_EPOCHS)),
    ],
    "CyclicLR": [
        Config("cyclic-tri", lambda L, o: L.CyclicLR(o, 0.01, 0.1, step_size_up=4), steps=30),
        Config("cyclic-tri2", lambda L, o: L.CyclicLR(o, 0.001, 0.1, 3, 5, mode="triangular2"), steps=40),
        Config("cyclic-exp", lambda L, o: L.CyclicLR(o, 0.01, 0.2, 2, mode="exp_range", gamma=0.9), steps=30),
        Config("cyclic-custom-cycle", lambda L, o: L.CyclicLR(o, 0.01, 0.1, 3, scale_fn=Pulse(0.5))),
        Config(
            "cyclic-custom-iter",
            lambda L, o: L.CyclicLR(o, 0.01, 0.1, 3, scale_fn=lambda x: 0.97**x, scale_mode="iterations"),
        ),
        Config("cyclic-no-momentum", lambda L, o: L.CyclicLR(o, 0.02, 0.3, 5, cycle_momentum=False)),
        Config(
            "cyclic-lists",
            lambda L, o: L.CyclicLR(
                o,
                per_group_values(0.01, 0.05)(o),
                per_group_values(0.1, 0.4)(o),
                4,
                base_momentum=per_group_values(0.8, 0.85)(o),
                max_momentum=per_group_values(0.9, 0.95)(o),
            ),
        ),
        Config("cyclic-adam", lambda L, o: L.CyclicLR(o, 0.001, 0.01, 3, base_momentum=0.7), optimizers=ADAM_KINDS),
        Config("cyclic-sgd", lambda L, o: L.CyclicLR(o, 0.001, 0.01, 3, base_momentum=0.7), optimizers=SGD_KINDS),
        Config("cyclic-epoch", lambda L, o: L.CyclicLR(o, 0.01, 0.1, 4), step=epochs_step(MIXED_EPOCHS)),
    ],
    "OneCycleLR": [
        Config("onecycle-cos", lambda L, o: L.OneCycleLR(o, 0.1, total_steps=30), steps=32),  # raises at 31
        Config("onecycle-linear", lambda L, o: L.OneCycleLR(o, 25.0, 10, final_div_factor=2, anneal_strategy="linear")),
        Config("onecycle-3phase", lambda L, o: L.OneCycleLR(o, 0.1, total_steps=20, pct_start=0.4, three_phase=True)),
        Config("onecycle-epochs", lambda L, o: L.OneCycleLR(o, 0.05, epochs=3, steps_per_epoch=8, pct_start=0.5)),
        Config("onecycle-no-momentum", lambda L, o: L.OneCycleLR(o, 0.2, 24, cycle_momentum=False, div_factor=10.0)),
        Config("onecycle-lists", lambda L, o: L.OneCycleLR(o, per_group_values(0.1, 0.3)(o), 24, max_momentum=0.99)),
        Config("onecycle-adam", lambda L, o: L.OneCycleLR(o, 0.01, 26, base_momentum=0.8), optimizers=ADAM_KINDS),
        Config("onecycle-sgd", lambda L, o: L.OneCycleLR(o, 0.01, 26, base_momentum=0.8), optimizers=SGD_KINDS),
        Config("onecycle-epoch", lambda L, o: L.OneCycleLR(o, 0.1, 40), step=epochs_step(MIXED_EPOCHS)),
    ],
    "ReduceLROnPlateau": [
        Config("plateau-default", lambda L, o: L.ReduceLROnPlateau(o, patience=2), step=metrics_step(METRICS)),
        Config(
            "plateau-abs-cooldown",
            lambda L, o: L.ReduceLROnPlateau(o, threshold=0.05, threshold_mode="abs", patience=1, cooldown=2),
            step=metrics_step(METRICS),
        ),
        Config(
            "plateau-max",
            lambda L, o: L.ReduceLROnPlateau(o, mode="max", factor=0.5, patience=1),
            step=metrics_step(UP_METRICS),
        ),
        Config(
            "plateau-max-abs",
            lambda L, o: L.ReduceLROnPlateau(o, "max", 0.3, 0, 0.01, "abs", 1),
            step=metrics_step(UP_METRICS),
        ),
        Config(
            "plateau-min-lr",
            lambda L, o: L.ReduceLROnPlateau(o, factor=0.2, patience=0, min_lr=per_group_values(0.004, 0.05)(o)),
            step=metrics_step(METRICS),
        ),
        Config(
            "plateau-eps",
            lambda L, o: L.ReduceLROnPlateau(o, factor=0.5, patience=0, eps=0.01),
            step=metrics_step(METRICS),
        ),
        Config(
            "plateau-tensor-metric",
            lambda L, o: L.ReduceLROnPlateau(o, patience=1),
            step=lambda s, i: s.step(torch.tensor(METRICS[i])),
        ),
        Config(
            "plateau-epoch",
            lambda L, o: L.ReduceLROnPlateau(o, patience=1),
            step=lambda s, i: s.step(METRICS[i], epoch=MIXED_EPOCHS[i]),
        ),
        Config(
            "plateau-edit",
            lambda L, o: L.ReduceLROnPlateau(o, patience=1, factor=0.5),
            step=metrics_step(METRICS),
            edit=halve_lr_float,
        ),
    ],
    "SequentialLR": [
        Config(
            "seq-linear-cos",
            lambda L, o: L.SequentialLR(o, [L.LinearLR(o, 0.1, total_iters=4), L.CosineAnnealingLR(o, 10)], [5]),
        ),
        Config(
            "seq-const-exp", lambda L, o: L.SequentialLR(o, [L.ConstantLR(o, 0.1, 20), L.ExponentialLR(o, 0.9)], [3])
        ),
        Config(
            "seq-three",
            lambda L, o: L.SequentialLR(
                o, [L.LinearLR(o, 0.2, total_iters=3), L.StepLR(o, 2, 0.5), L.CosineAnnealingLR(o, 8, 0.001)], [4, 10]
            ),
        ),
        Config(
            "seq-milestone-zero",
            lambda L, o: L.SequentialLR(o, [L.ExponentialLR(o, 0.9), L.StepLR(o, 3)], milestones=[0]),
        ),
        Config(
            "seq-lambda-mult",
            lambda L, o: L.SequentialLR(
                o, [L.LambdaLR(o, lambda e: 0.5 + e / 10), L.MultiplicativeLR(o, lambda e: 0.9)], [5]
            ),
        ),
        Config(
            "seq-sgdr-exp",
            lambda L, o: L.SequentialLR(o, [L.CosineAnnealingWarmRestarts(o, 3), L.ExponentialLR(o, 0.8)], [7]),
        ),
        Config(
            "seq-poly-cyclic",
            lambda L, o: L.SequentialLR(o, [L.PolynomialLR(o, 4), L.CyclicLR(o, 0.01, 0.1, 3)], [6]),
        ),
        Config(
            "seq-edit",
            lambda L, o: L.SequentialLR(o, [L.ExponentialLR(o, 0.9), L.StepLR(o, 2)], [6]),
            edit=halve_lr_in_place,
        ),
    ],
    "ChainedScheduler": [
        Config("chain-const-exp", lambda L, o: L.ChainedScheduler([L.ConstantLR(o, 0.1, 4), L.ExponentialLR(o, 0.9)])),
        Config(
            "chain-three",
            lambda L, o: L.ChainedScheduler(
                [L.StepLR(o, 3, 0.5), L.LinearLR(o, 0.5, 1.0, 6), L.MultiplicativeLR(o, lambda e: 0.98)], optimizer=o
            ),
        ),
        Config(
            "chain-cos-exp",
            lambda L, o: L.ChainedScheduler([L.CosineAnnealingLR(o, 6, 0.001), L.ExponentialLR(o, 0.95)]),
        ),
        Config(
            "chain-edit",
            lambda L, o: L.ChainedScheduler([L.PolynomialLR(o, 10), L.ExponentialLR(o, 0.9)]),
            edit=halve_lr_float,
        ),
    ],
}


def _all_configs() -> list[tuple[str, Config]]:
    return [(cls, cfg) for cls, cfgs in CONFIGS.items() for cfg in cfgs]


@pytest.mark.parametrize(("scheduler", "cfg"), _all_configs(), ids=[c.name for _, c in _all_configs()])
def test_differential_against_torch(scheduler: str, cfg: Config) -> None:
    check_config(cfg)


def test_every_torch_scheduler_has_configs() -> None:
    torch_public = set(TL.__all__) - {"LRScheduler"}
    assert torch_public <= set(CONFIGS)


# ------------------------------------------------------------------------------------------------------------
# Module surface and identities


def test_module_surface() -> None:
    assert set(TL.__all__) <= set(OL.__all__)
    assert OL.EPOCH_DEPRECATION_WARNING == TL.EPOCH_DEPRECATION_WARNING
    assert issubclass(OL._LRScheduler, OL.LRScheduler)
    # Trainers check isinstance against torch's classes.
    assert issubclass(OL.StepLR, TL.LRScheduler)
    assert issubclass(OL.ReduceLROnPlateau, TL.ReduceLROnPlateau)


def test_no_method_is_torchs() -> None:
    """Subclassing torch's classes is for isinstance only: every method comes from optimlab."""
    for name in OL.__all__:
        cls = getattr(OL, name)
        if not isinstance(cls, type):
            continue
        for attr in dir(cls):
            if attr.startswith("__") and attr != "__init__":
                continue
            value = getattr(cls, attr)
            if isinstance(value, (types.FunctionType, property)):
                owner = next(k for k in cls.__mro__ if attr in k.__dict__)
                assert owner.__module__.startswith("optimlab"), f"{name}.{attr} comes from {owner}"


def test_signatures_match_torch() -> None:
    import inspect

    for name in TL.__all__:
        theirs = inspect.signature(getattr(TL, name))
        ours = inspect.signature(getattr(OL, name))
        assert list(ours.parameters) == list(theirs.parameters), name
        for param in theirs.parameters.values():
            assert ours.parameters[param.name].default == param.default, (name, param.name)


# ------------------------------------------------------------------------------------------------------------
# Errors: same type and message as torch, and a failed constructor leaves the optimizer as it was


def _sgd() -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)


def _two_groups() -> torch.optim.Optimizer:
    return make_optimizer("torch.SGD", "two_groups")


def _no_momentum() -> torch.optim.Optimizer:
    return torch.optim.Rprop([torch.nn.Parameter(torch.zeros(1))], lr=0.1)


def _step_n(sched: Any, n: int) -> None:
    for _ in range(n):
        sched.step()


BAD_INPUTS: list[tuple[str, Callable[[], torch.optim.Optimizer], Callable[[Any, Any], Any]]] = [
    ("not-an-optimizer", _sgd, lambda L, o: L.StepLR(object(), 3)),
    ("lambda-count", _two_groups, lambda L, o: L.LambdaLR(o, [lambda e: 1.0])),
    ("mult-not-callable", _sgd, lambda L, o: L.MultiplicativeLR(o, 0.95)),
    ("mult-list-not-callable", _two_groups, lambda L, o: L.MultiplicativeLR(o, [lambda e: 1.0, 0.9])),
    ("resume-without-initial-lr", _sgd, lambda L, o: L.StepLR(o, 3, last_epoch=4)),
    ("constant-factor", _sgd, lambda L, o: L.ConstantLR(o, factor=1.5)),
    ("constant-negative", _sgd, lambda L, o: L.ConstantLR(o, factor=-0.1)),
    ("linear-start", _sgd, lambda L, o: L.LinearLR(o, start_factor=0.0)),
    ("linear-end", _sgd, lambda L, o: L.LinearLR(o, end_factor=1.2)),
    ("sgdr-t0", _sgd, lambda L, o: L.CosineAnnealingWarmRestarts(o, 0)),
    ("sgdr-t0-float", _sgd, lambda L, o: L.CosineAnnealingWarmRestarts(o, 2.5)),
    ("sgdr-tmult", _sgd, lambda L, o: L.CosineAnnealingWarmRestarts(o, 3, T_mult=0)),
    ("sgdr-eta", _sgd, lambda L, o: L.CosineAnnealingWarmRestarts(o, 3, eta_min="0")),
    ("sgdr-negative-epoch", _sgd, lambda L, o: L.CosineAnnealingWarmRestarts(o, 3).step(-1)),
    ("cyclic-mode", _sgd, lambda L, o: L.CyclicLR(o, 0.01, 0.1, mode="square")),
    ("cyclic-no-momentum", _no_momentum, lambda L, o: L.CyclicLR(o, 0.01, 0.1)),
    ("cyclic-base-lr-count", _two_groups, lambda L, o: L.CyclicLR(o, [0.01], 0.1)),
    ("cyclic-momentum-counts", _two_groups, lambda L, o: L.CyclicLR(o, 0.01, 0.1, base_momentum=[1], max_momentum=[2])),
    ("cyclic-not-optimizer", _sgd, lambda L, o: L.CyclicLR(None, 0.01, 0.1)),
    ("onecycle-total", _sgd, lambda L, o: L.OneCycleLR(o, 0.1, total_steps=0)),
    ("onecycle-epochs", _sgd, lambda L, o: L.OneCycleLR(o, 0.1, epochs=0, steps_per_epoch=3)),
    ("onecycle-spe", _sgd, lambda L, o: L.OneCycleLR(o, 0.1, epochs=2, steps_per_epoch=1.5)),
    ("onecycle-missing", _sgd, lambda L, o: L.OneCycleLR(o, 0.1)),
    ("onecycle-pct", _sgd, lambda L, o: L.OneCycleLR(o, 0.1, 10, pct_start=1.1)),
    ("onecycle-pct-int", _sgd, lambda L, o: L.OneCycleLR(o, 0.1, 10, pct_start=1)),
    ("onecycle-anneal", _sgd, lambda L, o: L.OneCycleLR(o, 0.1, 10, anneal_strategy="CATS")),
    ("onecycle-no-momentum", _no_momentum, lambda L, o: L.OneCycleLR(o, 0.1, 10)),
    (
        "onecycle-momentum-counts",
        _two_groups,
        lambda L, o: L.OneCycleLR(o, 0.1, 10, base_momentum=[1], max_momentum=[2]),
    ),
    ("onecycle-max-lr-count", _two_groups, lambda L, o: L.OneCycleLR(o, [0.1, 0.2, 0.3], 10)),
    ("plateau-factor", _sgd, lambda L, o: L.ReduceLROnPlateau(o, factor=1.0)),
    ("plateau-not-optimizer", _sgd, lambda L, o: L.ReduceLROnPlateau("opt")),
    ("plateau-min-lrs", _two_groups, lambda L, o: L.ReduceLROnPlateau(o, min_lr=[0.1])),
    ("plateau-mode", _sgd, lambda L, o: L.ReduceLROnPlateau(o, mode="median")),
    ("plateau-threshold-mode", _sgd, lambda L, o: L.ReduceLROnPlateau(o, threshold_mode="ratio")),
    ("seq-empty", _sgd, lambda L, o: L.SequentialLR(o, [], [])),
    ("seq-no-optimizer", _sgd, lambda L, o: L.SequentialLR(o, [object()], [])),
    ("seq-plateau", _sgd, lambda L, o: L.SequentialLR(o, [L.ReduceLROnPlateau(o)], [])),
    ("seq-other-optimizer", _sgd, lambda L, o: L.SequentialLR(o, [L.StepLR(_sgd(), 2)], [])),
    ("seq-milestones", _sgd, lambda L, o: L.SequentialLR(o, [L.StepLR(o, 2), L.StepLR(o, 3)], [1, 2])),
    ("chain-empty", _sgd, lambda L, o: L.ChainedScheduler([])),
    ("chain-plateau", _sgd, lambda L, o: L.ChainedScheduler([L.StepLR(o, 2), L.ReduceLROnPlateau(o)])),
    ("chain-other-optimizer", _sgd, lambda L, o: L.ChainedScheduler([L.StepLR(o, 2), L.StepLR(_sgd(), 2)])),
    ("onecycle-past-end", _sgd, lambda L, o: _step_n(L.OneCycleLR(o, 0.1, 3), 4)),
]


# These build other schedulers on the optimizer first, or fail in step(): the optimizer changes legitimately.
BUILDS_CHILDREN_OR_STEPS = {"seq-milestones", "chain-plateau", "chain-other-optimizer", "onecycle-past-end"}
BUILDS_CHILDREN_OR_STEPS |= {"sgdr-negative-epoch"}


@pytest.mark.parametrize(("name", "make_opt", "build"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_errors_match_torch(name: str, make_opt: Callable[[], Any], build: Callable[[Any, Any], Any]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch_opt = make_opt()
        with pytest.raises(Exception) as theirs:
            build(TL, torch_opt)
        ours_opt = make_opt()
        before = [dict(g) for g in ours_opt.param_groups]
        with pytest.raises(Exception) as ours:
            build(OL, ours_opt)
    assert type(ours.value) is type(theirs.value)
    ours_message = str(ours.value).replace(repr(ours_opt), "<opt>")
    theirs_message = str(theirs.value).replace(repr(torch_opt), "<opt>")
    assert ours_message == theirs_message
    if name not in BUILDS_CHILDREN_OR_STEPS:
        assert [dict(g) for g in ours_opt.param_groups] == before, "a failed constructor changed the optimizer"


def test_plateau_param_group_added() -> None:
    """torch issue #104361: a group added later gets the default min_lr; a min_lr list must be extended."""
    for lib in (TL, OL):
        opt = make_optimizer("optimlab.SGD", "two_groups")
        sched = lib.ReduceLROnPlateau(opt, patience=0, min_lr=[1e-5, 1e-4])
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 0.05})
        sched.step(1.0)
        with pytest.raises(RuntimeError, match="The number of param groups in the"):
            sched.step(1.3)
        opt2 = make_optimizer("optimlab.SGD", "two_groups")
        sched2 = lib.ReduceLROnPlateau(opt2, patience=0)
        opt2.add_param_group({"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 0.05})
        sched2.step(1.0)
        sched2.step(1.3)
        assert math.isclose(opt2.param_groups[2]["lr"], 0.005)


# ------------------------------------------------------------------------------------------------------------
# Warnings about call order and get_lr


def _collect(fn: Callable[[], Any]) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn()
    return [str(w.message) for w in caught]


@pytest.mark.parametrize("kind", list(OPTIMIZERS))
def test_call_order_warnings_match_torch(kind: str) -> None:
    def old_pattern(lib: Any) -> list[str]:
        opt = make_optimizer(kind, "two_groups")
        sched = lib.StepLR(opt, 3)
        return _collect(lambda: [(sched.step(), opt.step()) for _ in range(5)])

    def new_pattern(lib: Any) -> list[str]:
        opt = make_optimizer(kind, "two_groups")
        sched = lib.StepLR(opt, 3)
        return _collect(lambda: [(opt.step(), sched.step()) for _ in range(5)])

    def overridden(lib: Any) -> list[str]:
        opt = make_optimizer(kind, "two_groups")
        sched = lib.StepLR(opt, 3)
        old_step = opt.step
        opt.step = types.MethodType(lambda self, *a, **k: old_step(*a, **k), opt)
        return _collect(lambda: [(opt.step(), sched.step()) for _ in range(5)])

    def get_lr_outside(lib: Any) -> list[str]:
        opt = make_optimizer(kind, "two_groups")
        sched = lib.ExponentialLR(opt, 0.9)
        return _collect(sched.get_lr)

    for scenario in (old_pattern, new_pattern, overridden, get_lr_outside):
        assert scenario(OL) == scenario(TL), scenario.__name__
    assert len(old_pattern(OL)) == 1 and "before `optimizer.step()`" in old_pattern(OL)[0]
    assert new_pattern(OL) == []
    assert len(overridden(OL)) == 1 and "has been overridden" in overridden(OL)[0]


def test_shared_optimizer_with_torch_scheduler() -> None:
    """Ours and torch's schedulers wrap the same optimizer once and share the step-called marker."""
    opt = make_optimizer("optimlab.SGD", "float")
    ours = OL.StepLR(opt, 2)
    wrapped = opt.step
    theirs = TL.ExponentialLR(opt, 0.9)
    assert opt.step is wrapped
    assert _collect(lambda: [(opt.step(), ours.step(), theirs.step()) for _ in range(3)]) == []


def test_getlr_with_argument_fails_at_construction() -> None:
    class NeedsArgument(OL.LRScheduler):
        def get_lr(self, step):  # type: ignore[override]
            return [0.1]

    with pytest.raises(TypeError):
        NeedsArgument(_sgd())


def test_custom_subclass_of_old_name() -> None:
    class Halving(OL._LRScheduler):
        def get_lr(self):  # type: ignore[override]
            return [base / 2**self.last_epoch for base in self.base_lrs]

    opt = _sgd()
    sched = Halving(opt)
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == 0.05 and sched.get_last_lr() == [0.05]


# ------------------------------------------------------------------------------------------------------------
# References, tensors, state dicts


def test_no_cyclic_references() -> None:
    """The optimizer is freed by reference counting once the scheduler is gone: nothing cyclic holds it.  (Checked
    by a weak reference with the collector off, not by ``gc.collect() == 0``: a background thread of another test
    in the same process, a fused engine's compile, makes garbage of its own.)"""
    import weakref

    gc.collect()
    gc.disable()
    try:
        opt = optimlab.SGD([torch.nn.Parameter(torch.empty(10))], lr=0.5)
        sched = OL.LambdaLR(opt, lambda epoch: 1.0)
        del sched
        assert len(gc.get_referrers(opt)) == 0, "the optimizer must not be referenced by the step wrapper"
        ref = weakref.ref(opt)
        del opt
        assert ref() is None
    finally:
        gc.enable()


def test_no_cyclic_references_in_step() -> None:
    import weakref

    def run_once() -> Any:
        param = torch.empty(10, requires_grad=True)
        opt = optimlab.SGD([param], lr=0.5)
        sched = OL.LambdaLR(opt, lambda epoch: 1.0)
        param.sum().backward()
        opt.step()
        sched.step()
        return weakref.ref(sched)

    gc.disable()
    try:
        assert run_once()() is None
    finally:
        gc.enable()


@pytest.mark.parametrize(
    "build",
    [
        lambda L, o: L.LambdaLR(o, lambda e: e // 10),
        lambda L, o: L.MultiplicativeLR(o, lambda e: 0.95),
        lambda L, o: L.StepLR(o, 30),
        lambda L, o: L.MultiStepLR(o, [30, 80]),
        lambda L, o: L.ConstantLR(o),
        lambda L, o: L.LinearLR(o),
        lambda L, o: L.ExponentialLR(o, 0.9),
        lambda L, o: L.PolynomialLR(o),
        lambda L, o: L.CosineAnnealingLR(o, 10),
        lambda L, o: L.CosineAnnealingWarmRestarts(o, 20),
    ],
)
def test_tensor_lr_never_aliased(build: Callable[[Any, Any], Any]) -> None:
    """As torch's test_constant_initial_lr: initial_lr and base_lrs are copies of a Tensor lr, not the lr."""
    lr = torch.as_tensor(0.1)
    opt = optimlab.SGD([torch.nn.Parameter(torch.randn(1))], lr=lr)
    sched = build(OL, opt)
    for i in range(2):
        opt.step()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sched.step(i)
        lr.multiply_(0.1)
        group = opt.param_groups[0]
        assert group["lr"] is lr
        assert group["initial_lr"] == torch.tensor(0.1) and group["initial_lr"] is not lr
        assert sched.base_lrs == [torch.tensor(0.1)] and sched.base_lrs[0] is not group["initial_lr"]
        assert all(v is not lr for v in sched.get_last_lr())


def test_cyclic_tensor_params_not_aliased() -> None:
    lr, max_lr = torch.as_tensor(0.1), torch.as_tensor(0.2)
    base_m, max_m = torch.as_tensor(0.8), torch.as_tensor(0.9)
    opt = optimlab.SGD([torch.nn.Parameter(torch.randn(1))], lr=lr, momentum=0.5)
    sched = OL.CyclicLR(opt, base_lr=lr, max_lr=max_lr, base_momentum=base_m, max_momentum=max_m)
    for i in range(2):
        for t in (lr, max_lr, base_m, max_m):
            t.multiply_(0.5)
        opt.step()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sched.step(i)
        group = opt.param_groups[0]
        assert sched.base_lrs == [0.1] and sched.max_lrs == [0.2]
        assert group["max_momentum"] == 0.9 and group["base_momentum"] == 0.8


@pytest.mark.parametrize(
    "build",
    [
        lambda L, o: L.LambdaLR(o, lambda e: e // 10),
        lambda L, o: L.MultiplicativeLR(o, lambda e: 0.95),
        lambda L, o: L.StepLR(o, 30),
        lambda L, o: L.MultiStepLR(o, [30, 80]),
        lambda L, o: L.ConstantLR(o),
        lambda L, o: L.LinearLR(o),
        lambda L, o: L.ExponentialLR(o, 0.9),
        lambda L, o: L.PolynomialLR(o),
        lambda L, o: L.CosineAnnealingLR(o, 10),
        lambda L, o: L.ChainedScheduler([L.ConstantLR(o), L.ConstantLR(o)]),
        lambda L, o: L.SequentialLR(o, [L.ConstantLR(o), L.ConstantLR(o)], [2]),
        lambda L, o: L.ReduceLROnPlateau(o),
        lambda L, o: L.CyclicLR(o, 0.01, 0.1),
        lambda L, o: L.OneCycleLR(o, 0.01, 10, anneal_strategy="linear"),
        lambda L, o: L.CosineAnnealingWarmRestarts(o, 20),
    ],
)
def test_state_dict_keys_and_weights_only(build: Callable[[Any, Any], Any]) -> None:
    theirs = build(TL, make_optimizer("torch.SGD", "two_groups")).state_dict()
    ours_sched = build(OL, make_optimizer("optimlab.SGD", "two_groups"))
    ours = ours_sched.state_dict()
    assert set(ours) == set(theirs)
    loaded = roundtrip(ours)
    again = build(OL, make_optimizer("optimlab.SGD", "two_groups"))
    again.load_state_dict(loaded)
    assert snap_state(again.state_dict()) == snap_state(ours)


def snap_state(state: Any) -> Any:
    if isinstance(state, dict):
        return {k: snap_state(v) for k, v in state.items()}
    if isinstance(state, list):
        return [snap_state(v) for v in state]
    return snap(state) if isinstance(state, Tensor) else state


def test_load_state_dict_leaves_callers_dict_alone() -> None:
    opt = make_optimizer("optimlab.SGD", "two_groups")
    for sched in (
        OL.LambdaLR(opt, Scaled(0.9)),
        OL.SequentialLR(opt, [OL.ConstantLR(opt), OL.ExponentialLR(opt, 0.9)], [2]),
        OL.CyclicLR(opt, 0.01, 0.1, scale_fn=Pulse(0.3)),
    ):
        state = sched.state_dict()
        keys = list(state)
        sched.load_state_dict(state)
        assert list(state) == keys


def test_callable_object_state_restored() -> None:
    opt = make_optimizer("optimlab.SGD", "float")
    lam = Scaled(0.9)
    sched = OL.LambdaLR(opt, lam)
    lam.base = 0.5
    state = roundtrip(sched.state_dict())
    assert state["lr_lambdas"] == [{"base": 0.5}]
    other = Scaled(0.9)
    OL.LambdaLR(make_optimizer("optimlab.SGD", "float"), other).load_state_dict(state)
    assert other.base == 0.5
    pulse = Pulse(0.25)
    cyclic = OL.CyclicLR(opt, 0.01, 0.1, scale_fn=pulse)
    assert cyclic.state_dict()["_scale_fn_custom"] == {"depth": 0.25}
    assert "_scale_fn_ref" not in cyclic.state_dict()
    builtin = OL.CyclicLR(opt, 0.01, 0.1)
    assert isinstance(builtin._scale_fn_ref, types.FunctionType)
    assert builtin.state_dict()["_scale_fn_custom"] is None


def test_cyclic_mode_restored_from_state_dict() -> None:
    opt = optimlab.Adam([torch.nn.Parameter(torch.zeros(1))])
    sched = OL.CyclicLR(opt, base_lr=1, max_lr=5, cycle_momentum=False, mode="triangular2")
    restored = OL.CyclicLR(opt, base_lr=1, max_lr=5, cycle_momentum=False)
    restored.load_state_dict(sched.state_dict())
    assert restored.mode == "triangular2" and restored._scale_fn_ref is OL.CyclicLR._triangular2_scale_fn


def test_onecycle_legacy_state_dict() -> None:
    """A OneCycleLR pickled before ``_anneal_func_type`` existed anneals with its ``anneal_func`` attribute."""
    results = []
    for lib in (TL, OL):
        opt = make_optimizer("torch.SGD", "two_groups")
        sched = lib.OneCycleLR(opt, 25, 10, final_div_factor=2, base_momentum=1, max_momentum=22)
        delattr(sched, "_anneal_func_type")
        state = sched.state_dict()
        state["anneal_func"] = lib.OneCycleLR._annealing_cos
        sched.load_state_dict(state)
        lrs = []
        for _ in range(9):
            opt.step()
            sched.step()
            lrs.append(snap(opt.param_groups[1]["lr"]))
        results.append(lrs)
    assert results[0] == results[1]


def test_cawr_t_cur_reset() -> None:
    sched = OL.CosineAnnealingWarmRestarts(_sgd(), T_0=4)
    for epoch in (7, 8, 9):
        sched.T_cur = epoch
        sched.step()
        assert sched.T_cur == (epoch + 1) % sched.T_0


def test_foreign_optimizer_interop() -> None:
    """torch's schedulers drive optimlab optimizers, ours drive torch's; both reject non-optimizers."""
    opt = make_optimizer("optimlab.Adam", "two_groups")
    sched = TL.OneCycleLR(opt, 0.1, total_steps=5)
    opt.step()
    sched.step()
    assert isinstance(opt.param_groups[1]["lr"], Tensor)
    with pytest.raises(TypeError, match="is not an Optimizer"):
        OL.ExponentialLR(optimlab.optimizer, 0.9)  # a module is not an optimizer
    with pytest.raises(ValueError, match="does not support `ReduceLROnPlateau`"):
        TL.SequentialLR(opt, [OL.ReduceLROnPlateau(opt)], [])
    with pytest.raises(ValueError, match="does not support `ReduceLROnPlateau`"):
        OL.ChainedScheduler([TL.ReduceLROnPlateau(opt)])
