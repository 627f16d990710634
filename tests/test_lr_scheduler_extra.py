"""The schedules torch lacks, and the SequentialLR resume fix (pytorch issue #162591).

* optimlab.schedules and the schedulers built on them against their closed-form formulas (written out again here,
  independently), at every step, for float and Tensor lrs;
* resume of each new scheduler, from state dicts and from ``last_epoch``, bit-exact against a fresh run;
* SequentialLR: torch's resume with ``last_epoch`` is reproduced as wrong, ours is exact, and fresh runs stay
  identical to torch.
"""

from __future__ import annotations

import copy
import itertools
import math
import pickle
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.optim.lr_scheduler as TL
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

import optimlab
import optimlab.lr_scheduler as OL
from optimlab import schedules
from test_lr_scheduler import make_optimizer, roundtrip, snap

# Most loops here step schedulers without stepping the optimizer (whose parameters have no gradients).
pytestmark = pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")

# ------------------------------------------------------------------------------------------------------------
# Reference formulas, written independently of optimlab


def ref_warmup(t: int, start: float, peak: float, warmup: int) -> float:
    return start + (peak - start) * (t / warmup)


def ref_cosine(progress: float, peak: float, end: float) -> float:
    return end + 0.5 * (peak - end) * (1.0 + math.cos(math.pi * progress))


def ref_warmup_cosine(t: int, peak: float, warmup: int, total: int, start: float, end: float) -> float:
    if t < warmup:
        return ref_warmup(t, start, peak, warmup)
    if t >= total:
        return end
    return ref_cosine((t - warmup) / (total - warmup), peak, end)


def ref_wsd(t: int, peak: float, w: int, s: int, d: int, start: float, end: float, shape: str) -> float:
    if t < w:
        return ref_warmup(t, start, peak, w)
    if t < w + s:
        return peak
    if t >= w + s + d:
        return end
    p = (t - w - s) / d
    if shape == "linear":
        return peak - (peak - end) * p
    if shape == "cosine":
        return ref_cosine(p, peak, end)
    if shape == "1-sqrt":
        return peak - (peak - end) * math.sqrt(p)
    return math.exp(math.log(peak) + p * (math.log(end) - math.log(peak)))


def close(a: Any, b: float, rel: float = 1e-12) -> bool:
    return math.isclose(float(a), b, rel_tol=rel, abs_tol=1e-15)


# ------------------------------------------------------------------------------------------------------------
# optimlab.schedules


@settings(max_examples=60, deadline=None)
@given(
    peak=st.floats(1e-4, 10.0),
    warmup=st.integers(0, 50),
    extra=st.integers(1, 80),
    start_frac=st.floats(0.0, 1.0),
    end_frac=st.floats(0.0, 1.0),
)
def test_warmup_cosine_formula(peak: float, warmup: int, extra: int, start_frac: float, end_frac: float) -> None:
    total = warmup + extra
    sched = schedules.WarmupCosine(peak, warmup, total, start=peak * start_frac, end=peak * end_frac)
    values = [sched(t) for t in range(total + 5)]
    for t, v in enumerate(values):
        assert close(v, ref_warmup_cosine(t, peak, warmup, total, peak * start_frac, peak * end_frac))
    assert values[warmup] == peak and values[total] == peak * end_frac
    if warmup:
        assert values[0] == peak * start_frac
    assert all(a <= b for a, b in itertools.pairwise(values[: warmup + 1]))  # rises during warmup
    assert all(a >= b for a, b in itertools.pairwise(values[warmup:]))  # then only decays


@settings(max_examples=80, deadline=None)
@given(
    peak=st.floats(1e-4, 10.0),
    w=st.integers(0, 30),
    s=st.integers(0, 60),
    d=st.integers(1, 40),
    end_frac=st.floats(1e-3, 1.0),
    shape=st.sampled_from(schedules.DECAY_SHAPES),
)
def test_wsd_formula(peak: float, w: int, s: int, d: int, end_frac: float, shape: str) -> None:
    end = peak * end_frac
    sched = schedules.WarmupStableDecay(peak, w, s, d, start=0.0, end=end, decay=shape)
    values = [sched(t) for t in range(w + s + d + 5)]
    for t, v in enumerate(values):
        assert close(v, ref_wsd(t, peak, w, s, d, 0.0, end, shape), rel=1e-9)
    assert all(v == peak for v in values[w : w + s + 1])  # stable phase, and the first decay step, are peak
    assert values[w + s + d] == end
    assert all(a >= b for a, b in itertools.pairwise(values[w:]))


def test_linear_cosine_constant() -> None:
    lin, cos = schedules.Linear(0.85, 0.95, 300), schedules.Cosine(1.0, 0.1, 10)
    for t in range(320):
        assert close(lin(t), 0.85 + (0.95 - 0.85) * min(t, 300) / 300)
    assert lin(0) == 0.85 and lin(300) == lin(1000) == 0.95
    for t in range(15):
        assert close(cos(t), ref_cosine(min(t, 10) / 10, 1.0, 0.1))
    assert schedules.Constant(0.3)(12345) == 0.3


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: schedules.Linear(0, 1, 0), "steps must be a positive integer"),
        (lambda: schedules.Cosine(0, 1, 2.5), "steps must be a positive integer"),
        (lambda: schedules.WarmupCosine(1.0, 10, 10), r"total_steps \(10\) must be greater than warmup_steps"),
        (lambda: schedules.WarmupCosine(1.0, -1, 10), "warmup_steps must be a non-negative integer"),
        (lambda: schedules.WarmupStableDecay(1.0, 1, 2, 0), "decay_steps must be a positive integer"),
        (lambda: schedules.WarmupStableDecay(1.0, 1, 2, 3, decay="step"), "decay must be one of"),
        (lambda: schedules.WarmupStableDecay(1.0, 1, 2, 3, end=0.0, decay="exp"), "needs peak > 0 and end > 0"),
    ],
)
def test_schedule_validation(build: Callable[[], Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


def test_schedules_are_plain_data() -> None:
    sched = schedules.WarmupStableDecay(1.0, 10, 20, 5, end=0.1, decay="1-sqrt")
    assert pickle.loads(pickle.dumps(sched)) == sched
    assert roundtrip(dict(sched.__dict__)) == sched.__dict__  # saveable inside a weights_only state dict


# ------------------------------------------------------------------------------------------------------------
# The new lr schedulers, step by step against the formulas


def lrs_of(opt: torch.optim.Optimizer) -> list[Any]:
    return [g["lr"] for g in opt.param_groups]


def drive(
    opt: torch.optim.Optimizer, sched: Any, steps: int, step: Callable[[Any, int], None] | None = None
) -> list[list[float]]:
    """lrs (as floats) after construction and after each of ``steps`` steps; Tensor lrs must stay in place."""
    tensors = [lr for lr in lrs_of(opt) if isinstance(lr, Tensor)]
    out = [[float(lr) for lr in lrs_of(opt)]]
    for i in range(steps):
        opt.step()
        if step is None:
            sched.step()
        else:
            step(sched, i)
        out.append([float(lr) for lr in lrs_of(opt)])
    assert all(any(t is lr for lr in lrs_of(opt)) for t in tensors), "a Tensor lr was replaced"
    return out


BASE_LRS = (0.05, 0.5)  # the two_groups layout: a float lr and a Tensor lr


def check_against(
    per_step: list[list[float]], formula: Callable[[int, float], float], bases: tuple[float, ...] = BASE_LRS
) -> None:
    for t, row in enumerate(per_step):
        for group, (lr, base) in enumerate(zip(row, bases)):
            expected = formula(t, base)
            if group == 0:
                assert close(lr, expected), (t, group, lr, expected)
            else:  # the Tensor group computes in float32
                assert math.isclose(lr, expected, rel_tol=1e-6, abs_tol=1e-7 * base), (t, group, lr, expected)


@pytest.mark.parametrize("kind", ["optimlab.SGD", "torch.SGD", "optimlab.Adam", "torch.Adam"])
@pytest.mark.parametrize(
    ("warmup", "total", "start", "eta_min"), [(5, 20, 0.0, 0.0), (0, 7, 0.5, 1e-3), (3, 4, 0.1, 0)]
)
def test_warmup_cosine_scheduler(kind: str, warmup: int, total: int, start: float, eta_min: float) -> None:
    opt = make_optimizer(kind, "two_groups")
    sched = OL.LinearWarmupCosineAnnealingLR(opt, warmup, total, warmup_start_factor=start, eta_min=eta_min)
    values = drive(opt, sched, total + 4)
    check_against(values, lambda t, base: ref_warmup_cosine(t, base, warmup, total, base * start, eta_min))
    assert isinstance(opt.param_groups[1]["lr"], Tensor) and opt.param_groups[1]["lr"].dtype == torch.float32


@pytest.mark.parametrize("shape", schedules.DECAY_SHAPES)
@pytest.mark.parametrize(("w", "s", "d"), [(4, 10, 6), (0, 3, 1), (2, 0, 5)])
def test_wsd_scheduler(shape: str, w: int, s: int, d: int) -> None:
    opt = make_optimizer("optimlab.Adam", "two_groups")
    eta_min = 1e-3
    sched = OL.WarmupStableDecayLR(opt, w, s, d, warmup_start_factor=0.1, eta_min=eta_min, decay=shape)
    values = drive(opt, sched, w + s + d + 3)
    check_against(values, lambda t, base: ref_wsd(t, base, w, s, d, base * 0.1, eta_min, shape))


def test_wsd_extend_stable_phase() -> None:
    """A WSD run extended mid-way (more stable steps) is the run that had them from the start."""
    opt = make_optimizer("optimlab.SGD", "float")
    sched = OL.WarmupStableDecayLR(opt, 3, 10, 4)
    drive(opt, sched, 8)
    state = roundtrip(sched.state_dict())
    opt2 = make_optimizer("optimlab.SGD", "float")
    resumed = OL.WarmupStableDecayLR(opt2, 3, 10, 4)
    resumed.load_state_dict(state)
    resumed.stable_steps = 20
    longer = drive(opt2, resumed, 30)
    opt3 = make_optimizer("optimlab.SGD", "float")
    reference = drive(opt3, OL.WarmupStableDecayLR(opt3, 3, 20, 4), 38)
    assert longer[1:] == reference[9:]


def test_new_scheduler_validation() -> None:
    opt = make_optimizer("optimlab.SGD", "two_groups")
    before = copy.deepcopy(opt.param_groups)
    with pytest.raises(ValueError, match="warmup_start_factor must be a number in"):
        OL.LinearWarmupCosineAnnealingLR(opt, 2, 10, warmup_start_factor=1.5)
    with pytest.raises(ValueError, match="must be greater than warmup_steps"):
        OL.LinearWarmupCosineAnnealingLR(opt, 10, 10)
    with pytest.raises(ValueError, match="decay='exp' needs eta_min > 0"):
        OL.WarmupStableDecayLR(opt, 1, 1, 1, decay="exp")
    with pytest.raises(ValueError, match="decay must be one of"):
        OL.WarmupStableDecayLR(opt, 1, 1, 1, decay="quadratic")
    with pytest.raises(ValueError, match="warmup_steps must be a positive integer"):
        OL.LinearWarmupLR(opt, 0)
    with pytest.raises(TypeError, match="is not an Optimizer"):
        OL.LinearWarmupLR(None, 3)
    with pytest.raises(ValueError, match="expects all schedulers to belong to the same optimizer"):
        OL.LinearWarmupLR(opt, 3, after=OL.StepLR(make_optimizer("optimlab.SGD", "float"), 2))
    assert repr(opt.param_groups) == repr(before), "a failed constructor changed the optimizer"


# ------------------------------------------------------------------------------------------------------------
# LinearWarmupLR: warmup, then any scheduler


def test_linear_warmup_then_cosine_matches_formula() -> None:
    warmup, total = 5, 25
    opt = make_optimizer("optimlab.SGD", "two_groups")
    sched = OL.LinearWarmupLR(opt, warmup, after=OL.CosineAnnealingLR(opt, T_max=total - warmup))
    values = drive(opt, sched, total)
    # The cosine part is torch's chainable CosineAnnealingLR: equal to the closed form up to rounding.
    for t, row in enumerate(values):
        for lr, base in zip(row, BASE_LRS):
            assert close(lr, ref_warmup_cosine(t, base, warmup, total, 0.0, 0.0), rel=1e-6) or abs(lr) < 1e-9


def test_linear_warmup_then_any_scheduler_starts_it_at_base_lr() -> None:
    """After the warmup, ``after`` runs exactly as it would alone (same floats), shifted by the warmup."""
    warmup = 4
    for make_after in (
        lambda L, o: L.ExponentialLR(o, 0.9),
        lambda L, o: L.MultiplicativeLR(o, lambda e: 0.8),  # chainable: must start from base_lr
        lambda L, o: L.StepLR(o, 3, 0.5),
        lambda L, o: L.CyclicLR(o, 0.01, 0.1, 3, cycle_momentum=False),
        lambda L, o: TL.CosineAnnealingLR(o, 10),  # a torch scheduler works too
    ):
        opt = make_optimizer("optimlab.SGD", "two_groups")
        sched = OL.LinearWarmupLR(opt, warmup, after=make_after(OL, opt), warmup_start_factor=0.25)
        values = drive(opt, sched, warmup + 15)
        bases = tuple(float(g["initial_lr"]) for g in opt.param_groups)  # CyclicLR sets its own base_lr
        check_against(values[:warmup], lambda t, base: ref_warmup(t, base * 0.25, base, warmup), bases)
        alone_opt = make_optimizer("optimlab.SGD", "two_groups")
        alone_sched = make_after(OL, alone_opt)
        # At the handover the scheduler restarts from its epoch 0 (closed form where it has one).
        assert values[warmup:] == drive(alone_opt, alone_sched, 15)


def test_linear_warmup_without_after_holds_base_lr() -> None:
    opt = make_optimizer("optimlab.Adam", "two_groups")
    values = drive(opt, OL.LinearWarmupLR(opt, 4), 10)
    check_against(values, lambda t, base: ref_warmup(min(t, 4), 0.0, base, 4))
    assert values[-1] == [0.05, 0.5]


# ------------------------------------------------------------------------------------------------------------
# Resume of every new scheduler: from state dicts at every step, and from last_epoch


NEW_SCHEDULERS: dict[str, Callable[[torch.optim.Optimizer], Any]] = {
    "warmup-cosine": lambda o: OL.LinearWarmupCosineAnnealingLR(o, 4, 15, eta_min=1e-4),
    "wsd-linear": lambda o: OL.WarmupStableDecayLR(o, 3, 5, 6),
    "wsd-1-sqrt": lambda o: OL.WarmupStableDecayLR(o, 2, 6, 5, eta_min=0.01, decay="1-sqrt"),
    "wsd-exp": lambda o: OL.WarmupStableDecayLR(o, 2, 4, 8, eta_min=0.001, decay="exp"),
    "warmup-then-exp": lambda o: OL.LinearWarmupLR(o, 4, after=OL.ExponentialLR(o, 0.9)),
    "warmup-then-cos": lambda o: OL.LinearWarmupLR(o, 3, after=OL.CosineAnnealingLR(o, 8, 0.001)),
    "warmup-then-onecycle": lambda o: OL.LinearWarmupLR(o, 3, after=OL.OneCycleLR(o, 0.3, 20)),
    "momentum-cosine": lambda o: OL.HyperparameterScheduler(o, _momentum_key(o), schedules.Cosine(0.85, 0.95, 9)),
    "beta2-linear": lambda o: OL.HyperparameterScheduler(o, "betas[1]", schedules.Linear(0.9, 0.999, 10)),
    "lr-relative": lambda o: OL.HyperparameterScheduler(o, "lr", lambda t: 0.9**t, relative=True),
    "weight-decay-wsd": lambda o: OL.HyperparameterScheduler(
        o, "weight_decay", schedules.WarmupStableDecay(0.1, 2, 4, 5, end=0.01)
    ),
}
ADAM_ONLY = {"beta2-linear"}


def _momentum_key(opt: torch.optim.Optimizer) -> str:
    return "betas[0]" if "betas" in opt.defaults else "momentum"


def state_of(opt: torch.optim.Optimizer, sched: Any) -> Any:
    groups = tuple(
        (snap(g["lr"]), snap(g.get("momentum")), snap(g.get("betas")), snap(g.get("weight_decay")))
        for g in opt.param_groups
    )
    return groups, getattr(sched, "last_epoch", None)


def trajectory(build: Callable[[Any], Any], kind: str, steps: int) -> list[Any]:
    opt = make_optimizer(kind, "two_groups")
    sched = build(opt)
    out = [state_of(opt, sched)]
    for _ in range(steps):
        sched.step()
        out.append(state_of(opt, sched))
    return out


RESUME_CASES = [
    (name, kind)
    for name in NEW_SCHEDULERS
    for kind in ("optimlab.SGD", "torch.SGD", "optimlab.Adam", "torch.Adam")
    if name not in ADAM_ONLY or "Adam" in kind  # betas exist only in Adam's param groups
]


@pytest.mark.parametrize(("name", "kind"), RESUME_CASES)
def test_new_schedulers_resume_exactly(name: str, kind: str) -> None:
    build, steps = NEW_SCHEDULERS[name], 18
    fresh = trajectory(build, kind, steps)
    for k in range(steps):
        # Run k steps, save, rebuild, load both states (torch.save / torch.load(weights_only=True)), continue.
        opt = make_optimizer(kind, "two_groups")
        sched = build(opt)
        for _ in range(k):
            sched.step()
        opt_state, sched_state = copy.deepcopy(opt.state_dict()), roundtrip(sched.state_dict())
        opt = make_optimizer(kind, "two_groups")
        sched = build(opt)
        opt.load_state_dict(opt_state)
        sched.load_state_dict(sched_state)
        resumed = [state_of(opt, sched)]
        for _ in range(k, steps):
            sched.step()
            resumed.append(state_of(opt, sched))
        assert resumed == fresh[k:], f"state-dict resume after {k} steps"

        if k == 0:
            continue
        # Resume from last_epoch: load the optimizer, build with last_epoch=k-1 (torch's convention: the
        # index of the last finished epoch), continue.
        opt = make_optimizer(kind, "two_groups")
        opt.load_state_dict(opt_state)
        sched = _build_resumed(name, opt, k - 1, kind)
        resumed = [state_of(opt, sched)]
        for _ in range(k, steps):
            sched.step()
            resumed.append(state_of(opt, sched))
        assert resumed == fresh[k:], f"last_epoch resume after {k} steps"


def _build_resumed(name: str, opt: torch.optim.Optimizer, last_epoch: int, kind: str) -> Any:
    """The scheduler of ``name`` rebuilt with ``last_epoch`` (children of composites with -1, as users do)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if name == "warmup-cosine":
            return OL.LinearWarmupCosineAnnealingLR(opt, 4, 15, eta_min=1e-4, last_epoch=last_epoch)
        if name.startswith("wsd"):
            built = NEW_SCHEDULERS[name](make_optimizer("optimlab.SGD", "float"))
            return OL.WarmupStableDecayLR(
                opt,
                built.warmup_steps,
                built.stable_steps,
                built.decay_steps,
                eta_min=built.eta_min,
                decay=built.decay,
                last_epoch=last_epoch,
            )
        if name == "warmup-then-exp":
            return OL.LinearWarmupLR(opt, 4, after=OL.ExponentialLR(opt, 0.9), last_epoch=last_epoch)
        if name == "warmup-then-cos":
            return OL.LinearWarmupLR(opt, 3, after=OL.CosineAnnealingLR(opt, 8, 0.001), last_epoch=last_epoch)
        if name == "warmup-then-onecycle":
            after = OL.OneCycleLR(opt, 0.3, 20, last_epoch=last_epoch)
            return OL.LinearWarmupLR(opt, 3, after=after, last_epoch=last_epoch)
        fresh = NEW_SCHEDULERS[name](make_optimizer(kind, "two_groups"))
        return OL.HyperparameterScheduler(
            opt, fresh.hyperparameter, fresh.schedules, relative=fresh.relative, last_epoch=last_epoch
        )


# ------------------------------------------------------------------------------------------------------------
# HyperparameterScheduler


@pytest.mark.parametrize("layout", ["two_groups", "float", "tensor"])
@pytest.mark.parametrize("kind", ["optimlab.SGD", "torch.SGD", "optimlab.Adam", "torch.Adam"])
def test_relative_lr_schedule_is_lambdalr(layout: str, kind: str) -> None:
    """Scheduling "lr" relatively is LambdaLR, float for float (Tensor lrs included)."""
    fn = lambda t: 0.93**t + 0.01 * t
    results = []
    for build in (lambda o: OL.LambdaLR(o, fn), lambda o: OL.HyperparameterScheduler(o, "lr", fn, relative=True)):
        opt = make_optimizer(kind, layout)
        sched = build(opt)
        row = []
        for _ in range(15):
            opt.step()
            sched.step()
            row.append([snap(g["lr"]) for g in opt.param_groups])
        results.append(row)
    assert results[0] == results[1]


def test_betas_elements_scheduled_inside_the_tuple() -> None:
    opt = optimlab.Adam([torch.nn.Parameter(torch.zeros(2))], lr=1e-3, betas=(0.9, 0.95))
    beta2 = OL.HyperparameterScheduler(opt, "betas[1]", schedules.Linear(0.95, 0.999, 4))
    beta1 = OL.HyperparameterScheduler(opt, "betas[0]", schedules.Cosine(0.85, 0.95, 4))
    seen = []
    for t in range(6):
        betas = opt.param_groups[0]["betas"]
        assert isinstance(betas, tuple) and len(betas) == 2
        assert close(betas[1], 0.95 + (0.999 - 0.95) * min(t, 4) / 4)
        assert close(betas[0], ref_cosine(min(t, 4) / 4, 0.85, 0.95))
        seen.append(betas)
        opt.param_groups[0]["params"][0].grad = torch.ones(2)
        opt.step()  # Adam accepts the scheduled tuple
        beta2.step()
        beta1.step()
    assert opt.param_groups[0]["initial_betas[1]"] == 0.95 and opt.param_groups[0]["initial_betas[0]"] == 0.9
    assert beta2.get_last_value() == [opt.param_groups[0]["betas"][1]]


def test_tensor_hyperparameters_filled_in_place() -> None:
    b1, b2 = torch.tensor(0.9), torch.tensor(0.999)
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=torch.tensor(0.01), betas=(b1, b2))
    sched = OL.HyperparameterScheduler(opt, "betas[1]", schedules.Linear(0.99, 0.999, 3))
    assert opt.param_groups[0]["betas"][1] is b2 and b2.item() == pytest.approx(0.99)
    sched.step()
    assert opt.param_groups[0]["betas"][1] is b2 and b2.item() == pytest.approx(0.993)
    assert opt.param_groups[0]["initial_betas[1]"] is not b2
    lr = opt.param_groups[0]["lr"]
    lr_sched = OL.HyperparameterScheduler(opt, "lr", schedules.Constant(0.5))
    lr_sched.step()
    assert opt.param_groups[0]["lr"] is lr and lr.item() == 0.5
    assert lr_sched.get_last_value()[0] is not lr


def test_hyperparameter_scheduler_composes_with_lr_schedulers() -> None:
    """One ChainedScheduler steps the lr schedule and a momentum schedule together; state dicts nest."""

    def build(opt: torch.optim.Optimizer) -> Any:
        return OL.ChainedScheduler(
            [
                OL.LinearWarmupCosineAnnealingLR(opt, 3, 12),
                OL.HyperparameterScheduler(opt, "momentum", schedules.Linear(0.85, 0.95, 6)),
            ]
        )

    fresh = trajectory(build, "optimlab.SGD", 14)
    assert [row[0][0][1][1] for row in fresh[:8]] == pytest.approx([0.85 + 0.1 * min(t, 6) / 6 for t in range(8)])
    opt = make_optimizer("optimlab.SGD", "two_groups")
    sched = build(opt)
    for _ in range(5):
        opt.step()
        sched.step()
    states = copy.deepcopy(opt.state_dict()), roundtrip(sched.state_dict())
    opt = make_optimizer("optimlab.SGD", "two_groups")
    sched = build(opt)
    opt.load_state_dict(states[0])
    sched.load_state_dict(states[1])
    resumed = []
    for _ in range(9):
        opt.step()
        sched.step()
        resumed.append(state_of(opt, sched)[0])
    assert resumed == [row[0] for row in fresh[6:]]


def test_hyperparameter_scheduler_errors_change_nothing() -> None:
    opt = make_optimizer("optimlab.Adam", "two_groups")
    before = repr(opt.param_groups)
    cases: list[tuple[type[Exception], str, Callable[[], Any]]] = [
        (ValueError, "has no hyperparameter 'momentum'", lambda: OL.HyperparameterScheduler(opt, "momentum", abs)),
        (ValueError, "has no element 2", lambda: OL.HyperparameterScheduler(opt, "betas[2]", abs)),
        (ValueError, "not a number", lambda: OL.HyperparameterScheduler(opt, "amsgrad", abs)),
        (ValueError, "not a number", lambda: OL.HyperparameterScheduler(opt, "betas", abs)),
        (ValueError, "param-group key", lambda: OL.HyperparameterScheduler(opt, "betas[-1]", abs)),
        (ValueError, "Expected 2 schedules, but got 1", lambda: OL.HyperparameterScheduler(opt, "eps", [abs])),
        (TypeError, "should be a function", lambda: OL.HyperparameterScheduler(opt, "eps", 0.5)),
        (KeyError, "initial_eps", lambda: OL.HyperparameterScheduler(opt, "eps", abs, last_epoch=3)),
        (TypeError, "is not an Optimizer", lambda: OL.HyperparameterScheduler("opt", "eps", abs)),
    ]
    for error, message, build in cases:
        with pytest.raises(error, match=message):
            build()
    assert repr(opt.param_groups) == before


def test_callable_object_schedule_state_saved() -> None:
    class Ramp:
        def __init__(self, slope: float) -> None:
            self.slope = slope

        def __call__(self, t: int) -> float:
            return min(1.0, self.slope * t)

    opt = make_optimizer("optimlab.SGD", "float")
    ramp = Ramp(0.1)
    sched = OL.HyperparameterScheduler(opt, "weight_decay", ramp)
    ramp.slope = 0.2
    state = roundtrip(sched.state_dict())
    other = Ramp(0.1)
    OL.HyperparameterScheduler(make_optimizer("optimlab.SGD", "float"), "weight_decay", other).load_state_dict(state)
    assert other.slope == 0.2
    assert state["schedules"] == [{"slope": 0.2}]


# ------------------------------------------------------------------------------------------------------------
# SequentialLR: pytorch issue #162591


def issue_schedulers(lib: Any, opt: torch.optim.Optimizer, second: str, sub_last_epoch: int) -> list[Any]:
    """The issue's setup: ConstantLR(factor=0.1, total_iters=20), then ExponentialLR(0.9) or CosineAnnealingLR."""
    first = lib.ConstantLR(opt, factor=0.1, total_iters=20, last_epoch=sub_last_epoch)
    if second == "exp":
        return [first, lib.ExponentialLR(opt, gamma=0.9, last_epoch=sub_last_epoch)]
    return [first, lib.CosineAnnealingLR(opt, T_max=7, last_epoch=sub_last_epoch)]


def fresh_lrs(lib: Any, second: str, steps: int, kind: str = "torch.Adam") -> list[Any]:
    opt = make_optimizer(kind, "two_groups")
    sched = lib.SequentialLR(opt, issue_schedulers(lib, opt, second, -1), milestones=[3])
    out = []
    for _ in range(steps):
        out.append([snap(lr) for lr in lrs_of(opt)])
        opt.step()
        sched.step()
    return out


def resumed_lrs(lib: Any, second: str, n: int, steps: int, sub_last_epoch: int, kind: str = "torch.Adam") -> Any:
    """Train ``n`` steps, save the optimizer, rebuild with ``last_epoch=n - 1``, continue to ``steps``."""
    opt = make_optimizer(kind, "two_groups")
    sched = OL.SequentialLR(opt, issue_schedulers(OL, opt, second, -1), milestones=[3])
    for _ in range(n):
        opt.step()
        sched.step()
    saved = copy.deepcopy(opt.state_dict())
    opt = make_optimizer(kind, "two_groups")
    opt.load_state_dict(saved)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        children = issue_schedulers(lib, opt, second, n - 1 if sub_last_epoch >= 0 else -1)
        sched = lib.SequentialLR(opt, children, milestones=[3], last_epoch=n - 1)
    out = []
    for _ in range(n, steps):
        out.append([snap(lr) for lr in lrs_of(opt)])
        opt.step()
        sched.step()
    return out, sched.last_epoch


def initial_lrs() -> list[Any]:
    return [snap(lr) for lr in lrs_of(make_optimizer("torch.Adam", "two_groups"))]


@pytest.mark.parametrize("second", ["exp", "cos"])
def test_issue_162591_torch_resume_is_wrong_ours_is_exact(second: str) -> None:
    steps = 14
    reference = fresh_lrs(TL, second, steps)
    assert fresh_lrs(OL, second, steps) == reference  # fresh runs: identical to torch
    for n in range(1, 10):
        for sub_last_epoch in (-1, 0):
            ours, ours_last_epoch = resumed_lrs(OL, second, n, steps, sub_last_epoch)
            assert ours == reference[n:], f"resume after {n} steps"
            theirs, theirs_last_epoch = resumed_lrs(TL, second, n, steps, sub_last_epoch)
            assert ours_last_epoch == theirs_last_epoch == steps  # the counter was always right
            # The failure: torch resets the lr to initial_lr and takes the *first* scheduler's initial step whatever
            # last_epoch is, so the lr it resumes with does not depend on n at all: the first scheduler's epoch-0
            # lr when the children are fresh (ConstantLR: 0.1 * base), initial_lr itself when they were built with
            # last_epoch=n-1.  Every later step then chains from that wrong lr.
            assert theirs[0] == (reference[0] if sub_last_epoch < 0 else initial_lrs())
            if n >= 4:  # once the second scheduler runs, the resumed run is wrong for good
                assert theirs != reference[n:], f"torch resumed correctly after {n} steps?"
                assert theirs[-1] != reference[-1]


def test_issue_162591_example() -> None:
    """The issue's example after 4 steps: the lr must be 0.9 (ExponentialLR's first decay); torch restarts at 1."""
    values = {}
    for lib in (TL, OL):
        opt = torch.optim.Adam(torch.nn.Linear(1, 1).parameters(), lr=1.0)
        sched = lib.SequentialLR(opt, issue_schedulers(lib, opt, "exp", -1), milestones=[3])
        for _ in range(4):
            opt.step()
            sched.step()
        saved = copy.deepcopy(opt.state_dict())
        assert opt.param_groups[0]["lr"] == pytest.approx(0.9)
        opt = torch.optim.Adam(torch.nn.Linear(1, 1).parameters(), lr=1.0)
        opt.load_state_dict(saved)
        sched = lib.SequentialLR(opt, issue_schedulers(lib, opt, "exp", -1), milestones=[3], last_epoch=3)
        values[lib] = [opt.param_groups[0]["lr"]]
        for _ in range(3):
            opt.step()
            sched.step()
            values[lib].append(opt.param_groups[0]["lr"])
    assert values[OL] == pytest.approx([0.9, 0.81, 0.729, 0.6561])
    # torch: lr reset to initial_lr, the *first* scheduler's initial step (ConstantLR: 1.0 * 0.1), then the
    # ExponentialLR (active at epoch 4) chains from that: 0.1 * 0.9 ** k instead of 0.9 ** (k + 1).
    assert values[TL] == pytest.approx([0.1, 0.09, 0.081, 0.0729])


# Each builds a SequentialLR whose children are fresh (last_epoch=-1) and which itself gets ``le``.
SEQUENCES: dict[str, Callable[[torch.optim.Optimizer, int], Any]] = {
    "three-phases": lambda o, le: OL.SequentialLR(
        o,
        [OL.LinearLR(o, 0.2, total_iters=3), OL.StepLR(o, 2, 0.5), OL.CosineAnnealingLR(o, 8, 0.001)],
        [4, 10],
        last_epoch=le,
    ),
    "sgdr-then-exp": lambda o, le: OL.SequentialLR(
        o, [OL.CosineAnnealingWarmRestarts(o, 3, 2), OL.ExponentialLR(o, 0.8)], [9], le
    ),
    "onecycle-momentum": lambda o, le: OL.SequentialLR(
        o, [OL.ConstantLR(o, 0.5, 2), OL.OneCycleLR(o, 0.2, 20)], [3], le
    ),
    "multiplicative": lambda o, le: OL.SequentialLR(
        o, [OL.MultiplicativeLR(o, lambda e: 0.9), OL.LinearLR(o, 0.5)], [4], le
    ),
    "nested": lambda o, le: OL.SequentialLR(
        o,
        [OL.SequentialLR(o, [OL.ConstantLR(o, 0.5, 2), OL.ExponentialLR(o, 0.9)], [2]), OL.StepLR(o, 3, 0.5)],
        [6],
        le,
    ),
    "torch-children": lambda o, le: OL.SequentialLR(
        o, [TL.LinearLR(o, 0.3, total_iters=4), TL.ExponentialLR(o, 0.7)], [5], le
    ),
}


@pytest.mark.parametrize("name", list(SEQUENCES))
@pytest.mark.parametrize("kind", ["optimlab.SGD", "torch.Adam"])
def test_sequential_last_epoch_resume_replays_exactly(name: str, kind: str) -> None:
    """For any children (momentum cycling, warm restarts, nesting, torch's own), resume == fresh run, bit for bit."""
    build, steps = SEQUENCES[name], 16
    fresh = trajectory(lambda o: build(o, -1), kind, steps)
    assert fresh[1] != fresh[-1]
    for n in range(1, steps):
        opt = make_optimizer(kind, "two_groups")
        sched = build(opt, -1)
        for _ in range(n):
            sched.step()
        saved = copy.deepcopy(opt.state_dict())
        opt = make_optimizer(kind, "two_groups")
        opt.load_state_dict(saved)
        sched = build(opt, n - 1)
        resumed = [state_of(opt, sched)]
        for _ in range(n, steps):
            sched.step()
            resumed.append(state_of(opt, sched))
        assert resumed == fresh[n:], f"{name}: last_epoch resume after {n} steps"


def test_sequential_fresh_runs_unchanged_with_tensor_lr() -> None:
    """The fix touches only last_epoch >= 0; fresh runs (incl. Tensor lrs) equal torch's (see also the
    differential tests in test_lr_scheduler.py)."""
    assert fresh_lrs(OL, "cos", 15, kind="optimlab.SGD") == fresh_lrs(TL, "cos", 15, kind="optimlab.SGD")
