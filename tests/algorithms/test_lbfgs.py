"""optimlab.LBFGS against torch.optim.LBFGS, step by step and bit for bit.

Each test runs both optimizers on identical copies of a problem (a quadratic, Rosenbrock, a small network, a
complex least-squares problem) with the same closure, and after every ``step`` compares the returned loss, the
parameters and every state entry (including the history lists, ``al``, ``t`` and their types) bitwise.
"""

from __future__ import annotations

import copy
import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch.optim.lbfgs import _cubic_interpolate as torch_cubic_interpolate
from torch.optim.lbfgs import _strong_wolfe as torch_strong_wolfe

import optimlab
from optimlab.algorithms.line_search import cubic_interpolate, strong_wolfe
from parity import assert_same, assert_states_same, leaf

LossFn = Callable[[list[torch.Tensor]], torch.Tensor]


@dataclass
class Problem:
    """Initial parameters and a loss that is a pure function of the parameter list."""

    params: list[torch.Tensor]
    loss: LossFn

    def fresh(self) -> list[torch.Tensor]:
        return [leaf(p.detach().clone()) for p in self.params]


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def quadratic(dtype: torch.dtype) -> Problem:
    gen = _gen(0)
    m = torch.randn(7, 7, generator=gen, dtype=torch.float64)
    a = (m @ m.T + 0.5 * torch.eye(7, dtype=torch.float64)).to(dtype)
    b = torch.randn(7, generator=gen, dtype=torch.float64).to(dtype)
    x0 = torch.randn(7, generator=gen, dtype=torch.float64).to(dtype)

    def loss(params: list[torch.Tensor]) -> torch.Tensor:
        v = torch.cat([p.reshape(-1) for p in params])
        return 0.5 * v @ a @ v - b @ v

    return Problem([leaf(x0[:4].reshape(2, 2)), leaf(x0[4:])], loss)


def rosenbrock(dtype: torch.dtype) -> Problem:
    def loss(params: list[torch.Tensor]) -> torch.Tensor:
        x = params[0].reshape(-1)
        return (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum()

    return Problem([leaf(torch.tensor([[-1.2, 1.0], [-1.2, 1.0], [0.5, 0.3]], dtype=dtype))], loss)


def network(dtype: torch.dtype) -> Problem:
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).to(dtype)
    names = [n for n, _ in module.named_parameters()]
    gen = _gen(1)
    x = torch.randn(16, 4, generator=gen, dtype=torch.float64).to(dtype)
    y = torch.randn(16, 1, generator=gen, dtype=torch.float64).to(dtype)

    def loss(params: list[torch.Tensor]) -> torch.Tensor:
        out = torch.func.functional_call(module, dict(zip(names, params)), (x,))
        return torch.nn.functional.mse_loss(out, y)

    return Problem([leaf(p.detach().clone()) for p in module.parameters()], loss)


def complex_least_squares(dtype: torch.dtype) -> Problem:
    cdtype = torch.complex64 if dtype == torch.float32 else torch.complex128
    gen = _gen(2)
    a = torch.randn(6, 5, generator=gen, dtype=torch.complex128).to(cdtype)
    b = torch.randn(6, generator=gen, dtype=torch.complex128).to(cdtype)
    z0 = torch.randn(5, generator=gen, dtype=torch.complex128).to(cdtype)
    r0 = torch.randn(3, generator=gen, dtype=torch.float64).to(dtype)

    def loss(params: list[torch.Tensor]) -> torch.Tensor:
        z, r = params
        return (a @ z - b).abs().pow(2).sum() + (r - 1).pow(2).sum() * z.abs().pow(2).sum()

    return Problem([leaf(z0), leaf(r0)], loss)


PROBLEMS = {"quadratic": quadratic, "rosenbrock": rosenbrock, "network": network, "complex": complex_least_squares}


def make_closure(opt: torch.optim.Optimizer, loss_fn: LossFn, calls: list[int] | None = None) -> Callable[[], Any]:
    params = opt.param_groups[0]["params"]

    def closure() -> torch.Tensor:
        if calls is not None:
            calls[0] += 1
        opt.zero_grad()
        loss = loss_fn(params)
        loss.backward()
        return loss

    return closure


def lockstep(ref: torch.optim.Optimizer, ours: torch.optim.Optimizer, loss_fn: LossFn, steps: int, where: str) -> None:
    for step in range(steps):
        ref_loss = ref.step(make_closure(ref, loss_fn))
        our_loss = ours.step(make_closure(ours, loss_fn))
        assert_same(ref_loss, our_loss, True, f"{where} step {step} loss")
        assert_states_same(ref, ours, True, f"{where} step {step}")


def pair(problem: Problem, **kwargs: Any) -> tuple[torch.optim.LBFGS, optimlab.LBFGS]:
    ref = torch.optim.LBFGS(problem.fresh(), **copy.deepcopy(kwargs))
    ours = optimlab.LBFGS(problem.fresh(), **copy.deepcopy(kwargs))
    assert repr(ref) == repr(ours)
    return ref, ours


# ---------------------------------------------------------------------------------------------- step by step


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("line_search_fn", [None, "strong_wolfe"], ids=["fixed", "wolfe"])
@pytest.mark.parametrize("name", list(PROBLEMS))
def test_bitwise_equal_to_torch(name: str, line_search_fn: str | None, dtype: torch.dtype) -> None:
    problem = PROBLEMS[name](dtype)
    # A fixed step of 1 overshoots on the curved problems; 0.1 keeps them finite without a line search.
    lr = 1 if line_search_fn or name == "quadratic" else 0.1
    ref, ours = pair(problem, lr=lr, max_iter=6, history_size=4, line_search_fn=line_search_fn)
    lockstep(ref, ours, problem.loss, 6, name)
    state = ours.state[ours.param_groups[0]["params"][0]]
    assert state["n_iter"] > 4 and len(state["old_dirs"]) == 4, "history never filled: the test is too short"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"lr": torch.tensor(0.8)},
        {"lr": torch.tensor([0.8]), "line_search_fn": "strong_wolfe"},
        {"max_iter": 1},
        {"max_iter": 3, "max_eval": 4, "line_search_fn": "strong_wolfe"},
        {"tolerance_grad": 1e-2, "tolerance_change": 1e-3, "line_search_fn": "strong_wolfe"},
        {"history_size": 1, "line_search_fn": "strong_wolfe"},
        {"max_iter": 0},
    ],
    ids=["tensor_lr", "tensor_lr_1d_wolfe", "max_iter_1", "max_eval_4", "tolerances", "history_1", "max_iter_0"],
)
def test_options_bitwise_equal_to_torch(kwargs: dict[str, Any]) -> None:
    problem = rosenbrock(torch.float32)
    ref, ours = pair(problem, **kwargs)
    lockstep(ref, ours, problem.loss, 5, str(kwargs))


def test_converges_to_the_minimum() -> None:
    problem = rosenbrock(torch.float64)
    opt = optimlab.LBFGS(problem.fresh(), line_search_fn="strong_wolfe", max_iter=100, tolerance_change=0)
    for _ in range(3):
        opt.step(make_closure(opt, problem.loss))
    torch.testing.assert_close(opt.param_groups[0]["params"][0][:, 0], torch.ones(3, dtype=torch.float64))


# ---------------------------------------------------------------------------------------------- gradients


def test_sparse_none_and_zero_dim_grads() -> None:
    """A sparse gradient is densified, a missing one counts as zeros, a 0-dim parameter is one entry."""
    gen = _gen(3)
    weight0 = torch.randn(6, 3, generator=gen)
    unused0 = torch.randn(4, generator=gen)
    scalar0 = torch.tensor(0.7)
    idx = torch.tensor([0, 2, 2, 5])

    def build(cls: type) -> tuple[torch.optim.Optimizer, Callable[[], torch.Tensor]]:
        emb = torch.nn.Embedding(6, 3, sparse=True)
        with torch.no_grad():
            emb.weight.copy_(weight0)
        unused, scalar = leaf(unused0.clone()), leaf(scalar0.clone())
        opt = cls([emb.weight, unused, scalar], line_search_fn="strong_wolfe", max_iter=4)

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = (emb(idx) - 1).pow(2).sum() * (1 + scalar**2)
            loss.backward()
            assert emb.weight.grad.is_sparse and unused.grad is None
            return loss

        return opt, closure

    (ref, ref_closure), (ours, our_closure) = build(torch.optim.LBFGS), build(optimlab.LBFGS)
    for step in range(3):
        assert_same(ref.step(ref_closure), ours.step(our_closure), True, f"step {step} loss")
        assert_states_same(ref, ours, True, f"step {step}")


def test_non_contiguous_param() -> None:
    """torch's LBFGS fails on a non-contiguous parameter (``view`` of its gradient); ours steps it exactly as
    torch steps a contiguous copy."""
    base = torch.randn(4, 6, generator=_gen(4), dtype=torch.float64)
    target = torch.linspace(-1, 1, 24, dtype=torch.float64).reshape(6, 4)

    def loss(params: list[torch.Tensor]) -> torch.Tensor:
        # the same layout on both sides: torch may sum a transposed tensor in another order than a contiguous one
        p = params[0].contiguous()
        return ((p - target) ** 2 * (1 + target.abs())).sum() + p.pow(4).sum()

    non_contiguous = leaf(base.clone().t())
    assert not non_contiguous.is_contiguous()
    torch_opt = torch.optim.LBFGS([leaf(base.clone().t())])
    with pytest.raises(RuntimeError, match="view size is not compatible"):
        torch_opt.step(make_closure(torch_opt, loss))

    ours = optimlab.LBFGS([non_contiguous], line_search_fn="strong_wolfe", max_iter=5)
    ref = torch.optim.LBFGS([leaf(base.t().contiguous())], line_search_fn="strong_wolfe", max_iter=5)
    lockstep(ref, ours, loss, 3, "non-contiguous")
    assert not non_contiguous.is_contiguous()


# ---------------------------------------------------------------------------------------------- state dicts


@pytest.mark.parametrize("direction", ["torch_to_optimlab", "optimlab_to_torch"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_state_dict_handover_mid_run(direction: str, dtype: torch.dtype) -> None:
    problem = network(dtype)
    kwargs = {"line_search_fn": "strong_wolfe", "max_iter": 4, "history_size": 3}
    ref, ours = pair(problem, **kwargs)
    lockstep(ref, ours, problem.loss, 2, "before")

    src, dst_cls = (ref, optimlab.LBFGS) if direction == "torch_to_optimlab" else (ours, torch.optim.LBFGS)
    params = [leaf(p.detach().clone()) for p in src.param_groups[0]["params"]]
    dst = dst_cls(params)  # default hyperparameters: the state_dict brings the saved ones
    dst.load_state_dict(copy.deepcopy(src.state_dict()))
    assert_states_same(src, dst, True, "after loading")
    assert dst.param_groups[0]["history_size"] == 3
    # The source carries on beside the optimizer that took over; both must stay equal.
    lockstep(src, dst, problem.loss, 3, "after")


@pytest.mark.parametrize("line_search_fn", [None, "strong_wolfe"], ids=["fixed", "wolfe"])
def test_save_load_weights_only_round_trip(line_search_fn: str | None) -> None:
    problem = complex_least_squares(torch.float32)
    ref, ours = pair(problem, line_search_fn=line_search_fn, max_iter=3, lr=0.5)
    lockstep(ref, ours, problem.loss, 2, "before")

    buffer = io.BytesIO()
    torch.save(ours.state_dict(), buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    resumed = optimlab.LBFGS([leaf(p.detach().clone()) for p in ours.param_groups[0]["params"]])
    resumed.load_state_dict(loaded)
    assert_states_same(ours, resumed, True, "after loading")
    lockstep(ref, resumed, problem.loss, 3, "resumed")


def test_state_layout() -> None:
    problem = quadratic(torch.float64)
    _, ours = pair(problem, max_iter=1)
    ours.step(make_closure(ours, problem.loss))
    state = ours.state_dict()["state"]
    assert list(state) == [0]
    assert list(state[0]) == [
        "func_evals",
        "n_iter",
        "d",
        "t",
        "old_dirs",
        "old_stps",
        "ro",
        "H_diag",
        "prev_flat_grad",
        "prev_loss",
    ]
    ours.step(make_closure(ours, problem.loss))
    assert list(state[0])[-1] == "al" and len(state[0]["al"]) == 100
    assert isinstance(state[0]["prev_loss"], float) and isinstance(state[0]["func_evals"], int)


# ---------------------------------------------------------------------------------------------- beyond torch


def test_deepcopy_and_pickle_then_step() -> None:
    """torch's LBFGS loses ``_params`` in a copy (``AttributeError`` at step); ours derives it."""
    problem = rosenbrock(torch.float64)
    _, ours = pair(problem, line_search_fn="strong_wolfe", max_iter=3)
    ours.step(make_closure(ours, problem.loss))
    clone = copy.deepcopy(ours)
    assert clone.param_groups[0]["params"][0] is not ours.param_groups[0]["params"][0]
    for step in range(2):
        a = ours.step(make_closure(ours, problem.loss))
        b = clone.step(make_closure(clone, problem.loss))
        assert_same(a, b, True, f"step {step} loss")
        assert_states_same(ours, clone, True, f"step {step}")


def test_history_size_changed_between_steps() -> None:
    """Lowering ``history_size`` shrinks the memory (torch's keeps growing), raising it does not overflow ``al``
    (torch's raises IndexError)."""
    problem = network(torch.float64)
    opt = optimlab.LBFGS(problem.fresh(), history_size=3, max_iter=5, line_search_fn="strong_wolfe")
    opt.step(make_closure(opt, problem.loss))
    state = opt.state[opt.param_groups[0]["params"][0]]
    assert len(state["old_dirs"]) == 3
    opt.param_groups[0]["history_size"] = 2
    opt.step(make_closure(opt, problem.loss))
    assert len(state["old_dirs"]) == 2
    opt.param_groups[0]["history_size"] = 6
    for _ in range(2):
        opt.step(make_closure(opt, problem.loss))
    assert len(state["old_dirs"]) == 6 and len(state["al"]) >= 6
    assert all(torch.isfinite(p).all() for p in opt.param_groups[0]["params"])


def test_line_search_budget_below_one_evaluation() -> None:
    """``max_eval`` below the evaluations already spent (torch: UnboundLocalError in its line search): the
    search evaluates its first trial and keeps the better of it and the start."""
    problem = rosenbrock(torch.float64)
    opt = optimlab.LBFGS(problem.fresh(), line_search_fn="strong_wolfe", max_eval=0)
    start = problem.loss(problem.fresh()).item()
    opt.step(make_closure(opt, problem.loss))
    state = opt.state[opt.param_groups[0]["params"][0]]
    assert state["func_evals"] == 2 and state["n_iter"] == 1
    assert problem.loss(opt.param_groups[0]["params"]).item() <= start


# ---------------------------------------------------------------------------------------------- the step contract


@pytest.mark.parametrize(
    "make_result", [lambda t: t, lambda t: t.item(), lambda t: t.detach().numpy()], ids=["tensor", "float", "numpy"]
)
def test_returns_the_first_closure_result(make_result: Callable[[torch.Tensor], Any]) -> None:
    problem = quadratic(torch.float64)
    results: list[Any] = []
    for cls in (torch.optim.LBFGS, optimlab.LBFGS):
        opt = cls(problem.fresh(), max_iter=4)
        params = opt.param_groups[0]["params"]
        first: list[Any] = []

        def closure(
            opt: torch.optim.Optimizer = opt, params: list[torch.Tensor] = params, first: list[Any] = first
        ) -> Any:
            opt.zero_grad()
            loss = problem.loss(params)
            loss.backward()
            result = make_result(loss)
            first.append(result)
            return result

        out = opt.step(closure)
        assert out is first[0]
        results.append(out)
    assert_same(results[0], results[1], True, "returned loss")


def test_closure_runs_with_grad_enabled_and_hooks_once() -> None:
    problem = quadratic(torch.float64)
    opt = optimlab.LBFGS(problem.fresh(), line_search_fn="strong_wolfe", max_iter=5)
    calls: list[int] = [0]
    hook_calls: list[str] = []
    opt.register_step_pre_hook(lambda *_: hook_calls.append("pre"))
    opt.register_step_post_hook(lambda *_: hook_calls.append("post"))
    with torch.no_grad():
        opt.step(make_closure(opt, problem.loss, calls))
    assert calls[0] > 2
    assert hook_calls == ["pre", "post"]
    assert opt._step_count == 1
    assert isinstance(opt, torch.optim.Optimizer)


# ---------------------------------------------------------------------------------------------- errors


def _outcome(fn: Callable[[], Any]) -> tuple[type, str]:
    try:
        fn()
    except Exception as e:
        return type(e), str(e)
    return type(None), ""


def _two_params() -> list[torch.Tensor]:
    return [leaf(torch.ones(2)), leaf(torch.ones(3))]


CONSTRUCTION_ERRORS = {
    "tensor_lr_2_elements": lambda cls: cls(_two_params(), lr=torch.tensor([0.1, 0.2])),
    "negative_lr": lambda cls: cls(_two_params(), lr=-0.5),
    "nan_lr": lambda cls: cls(_two_params(), lr=math.nan),
    "param_groups": lambda cls: cls([{"params": [leaf(torch.ones(2))]}, {"params": [leaf(torch.ones(3))], "lr": 0.1}]),
    "tensor_params": lambda cls: cls(leaf(torch.ones(2))),
    "empty": lambda cls: cls([]),
    "non_leaf": lambda cls: cls([leaf(torch.ones(2)) * 2]),
    "unknown_kwarg": lambda cls: cls(_two_params(), momentum=0.9),
}


@pytest.mark.parametrize("case", list(CONSTRUCTION_ERRORS))
def test_construction_errors_match_torch(case: str) -> None:
    make = CONSTRUCTION_ERRORS[case]
    expected = _outcome(lambda: make(torch.optim.LBFGS))
    got = _outcome(lambda: make(optimlab.LBFGS))
    assert expected[0] is not type(None)
    if case == "unknown_kwarg":  # the class name is part of the message
        assert got == (expected[0], expected[1].replace("torch.optim.LBFGS", "LBFGS"))
    else:
        assert got == expected


def test_step_errors_match_torch() -> None:
    problem = quadratic(torch.float64)
    outcomes = []
    for cls in (torch.optim.LBFGS, optimlab.LBFGS):
        opt = cls(problem.fresh())
        opt.add_param_group({"params": [leaf(torch.ones(2))]})
        outcomes.append(_outcome(lambda opt=opt: opt.step(make_closure(opt, problem.loss))))
    assert outcomes[0] == outcomes[1] == (AssertionError, "Expected exactly one param_group, but got 2")

    outcomes = []
    for cls in (torch.optim.LBFGS, optimlab.LBFGS):
        opt = cls(problem.fresh(), line_search_fn="backtracking")
        outcomes.append(_outcome(lambda opt=opt: opt.step(make_closure(opt, problem.loss))))
    assert outcomes[0] == outcomes[1] == (RuntimeError, "only 'strong_wolfe' is supported")

    outcomes = []
    for cls in (torch.optim.LBFGS, optimlab.LBFGS):
        opt = cls(problem.fresh())
        outcomes.append(_outcome(lambda opt=opt: opt.step()))  # type: ignore[call-arg]
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][0] is TypeError and "closure" in outcomes[0][1]


def test_unknown_line_search_changes_nothing() -> None:
    """Ours refuses before the first closure call (torch's evaluates once and bumps its counters first)."""
    problem = quadratic(torch.float64)
    opt = optimlab.LBFGS(problem.fresh(), line_search_fn="backtracking")
    before = [p.detach().clone() for p in opt.param_groups[0]["params"]]
    calls = [0]
    with pytest.raises(RuntimeError, match="only 'strong_wolfe' is supported"):
        opt.step(make_closure(opt, problem.loss, calls))
    assert calls[0] == 0 and len(opt.state) == 0
    for a, b in zip(before, opt.param_groups[0]["params"]):
        assert torch.equal(a, b)


def test_history_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="Invalid history_size value: 0"):
        optimlab.LBFGS(_two_params(), history_size=0)


# ---------------------------------------------------------------------------------------------- line search


def _cases() -> list[tuple[Any, ...]]:
    """Inputs to the interpolation of every type combination the line search produces."""
    f32 = torch.float32
    return [
        (0, 1.0, torch.tensor(-2.0, dtype=f32), 1, 0.5, torch.tensor(0.3, dtype=f32), None),
        (
            0,
            1.0,
            torch.tensor(-2.0, dtype=f32),
            torch.tensor(0.25, dtype=f32),
            0.9,
            torch.tensor(-0.5, dtype=f32),
            (0.2525, 2.5),
        ),
        (2.0, 0.5, torch.tensor(1.0), 0.5, 0.7, torch.tensor(-1.0), None),
        (0.0, 1.0, -1.0, 1.0, 3.0, 0.5, None),  # plain floats
        (0.0, 1.0, torch.tensor(-1.0), 1.0, 0.0, torch.tensor(-8.0), None),  # no real minimiser: midpoint
    ]


@pytest.mark.parametrize("case", _cases())
def test_cubic_interpolate_matches_torch(case: tuple[Any, ...]) -> None:
    *points, bounds = case
    if all(not isinstance(v, torch.Tensor) for v in points):
        # torch's needs a tensor for sqrt; ours also takes floats: check the value against the closed form.
        x = cubic_interpolate(*points, bounds=bounds)
        assert isinstance(x, float) and 0.0 <= x <= 1.0
        return
    expected = torch_cubic_interpolate(*points, bounds=bounds)
    got = cubic_interpolate(*points, bounds=bounds)
    assert_same(expected, got, True, "interpolated step")


def test_strong_wolfe_matches_torch_and_satisfies_the_conditions() -> None:
    a = torch.tensor([[3.0, 0.5], [0.5, 1.0]], dtype=torch.float64)

    def f_and_g(x: torch.Tensor) -> tuple[float, torch.Tensor]:
        f = 0.5 * x @ a @ x + torch.sin(3 * x).sum()
        g = a @ x + 3 * torch.cos(3 * x)
        return f.item(), g

    x0 = torch.tensor([1.0, -2.0], dtype=torch.float64)
    f0, g0 = f_and_g(x0)
    d = -g0
    gtd = g0.dot(d)
    for t0 in (1e-3, 0.05, 1.0, 30.0):
        expected = torch_strong_wolfe(lambda x, t, d: f_and_g(x + t * d), x0, t0, d, f0, g0, gtd, c2=0.1)
        got = strong_wolfe(lambda t: f_and_g(x0 + t * d), t0, d, f0, g0, gtd, c2=0.1)
        assert_same(list(expected), list(got), True, f"t0={t0}")
        f, g, t, _ = got
        assert f <= f0 + 1e-4 * t * gtd
        assert abs(g.dot(d)) <= 0.1 * abs(gtd)


finite = st.floats(min_value=-50, max_value=50, allow_nan=False, allow_infinity=False)


@settings(max_examples=150, deadline=None)
@given(
    x1=finite,
    f1=finite,
    g1=finite,
    x2=finite,
    f2=finite,
    g2=finite,
    as_tensor=st.sampled_from(["slopes", "x2_and_slopes", "all_but_values"]),
    bounded=st.booleans(),
)
def test_cubic_interpolate_matches_torch_everywhere(
    x1: float, f1: float, g1: float, x2: float, f2: float, g2: float, as_tensor: str, bounded: bool
) -> None:
    assume(x1 != x2)
    f32 = torch.float32
    g1_, g2_ = torch.tensor(g1, dtype=f32), torch.tensor(g2, dtype=f32)
    x1_: Any = torch.tensor(x1, dtype=f32) if as_tensor == "all_but_values" else x1
    x2_: Any = x2 if as_tensor == "slopes" else torch.tensor(x2, dtype=f32)
    bounds = (min(x1, x2) - 1.0, max(x1, x2) * 10) if bounded else None
    args = (x1_, f1, g1_, x2_, f2, g2_)
    assert_same(torch_cubic_interpolate(*args, bounds=bounds), cubic_interpolate(*args, bounds=bounds), True, "t")


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    t0=st.floats(min_value=1e-4, max_value=50.0),
    c2=st.sampled_from([0.9, 0.1, 0.01]),
    max_ls=st.integers(0, 25),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_strong_wolfe_matches_torch_everywhere(
    seed: int, t0: float, c2: float, max_ls: int, dtype: torch.dtype
) -> None:
    """Random smooth nonconvex functions, first trial steps, curvature constants and budgets."""
    gen = torch.Generator().manual_seed(seed)
    m = torch.randn(4, 4, generator=gen, dtype=torch.float64)
    a = (m @ m.T).to(dtype)
    w = torch.randn(4, generator=gen, dtype=torch.float64).to(dtype)
    x0 = torch.randn(4, generator=gen, dtype=torch.float64).to(dtype)

    def f_and_g(x: torch.Tensor) -> tuple[float, torch.Tensor]:
        x = leaf(x.detach())
        with torch.enable_grad():
            f = 0.5 * x @ a @ x + torch.sin(w * x).sum() * 3
            f.backward()
        return f.item(), x.grad

    f0, g0 = f_and_g(x0)
    d = -g0
    gtd = g0.dot(d)
    expected = torch_strong_wolfe(lambda x, t, d: f_and_g(x + t * d), x0, t0, d, f0, g0, gtd, c2=c2, max_ls=max_ls)
    got = strong_wolfe(lambda t: f_and_g(x0 + t * d), t0, d, f0, g0, gtd, c2=c2, max_ls=max_ls)
    assert_same(list(expected), list(got), True, "line search result")
