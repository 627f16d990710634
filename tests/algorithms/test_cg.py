"""optimlab.CG, nonlinear conjugate gradient, against scipy.optimize.minimize(method="CG") and the theory.

scipy's CG is Polak-Ribiere+ with a strong-Wolfe line search (c2 = 0.4) and a sufficient-descent check; ours
takes its line search from LBFGS (c2 = 0.1) and restarts (period, Powell's test, non-descent).  On standard test
functions both must reach the same minimum, and ours with no more than 1.5 times scipy's function+gradient
evaluations.
"""

from __future__ import annotations

import copy
import io
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import scipy.optimize
import torch

import optimlab
from optimlab.algorithms.cg import BETA_FORMULAS, conjugate_beta
from parity import assert_same, assert_states_same, leaf

F64 = torch.float64


@dataclass
class Objective:
    name: str
    f: Callable[[torch.Tensor], torch.Tensor]
    x0: torch.Tensor
    minimum: torch.Tensor


def _quadratic(n: int, condition: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``A`` with eigenvalues spread geometrically over ``[1, condition]`` in a random basis, and ``b``."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=F64))
    a = q @ torch.diag(torch.logspace(0, np.log10(condition), n, dtype=F64)) @ q.T
    return (a + a.T) / 2, torch.randn(n, generator=gen, dtype=F64)


def quadratic(n: int = 30, condition: float = 1e3, seed: int = 0) -> Objective:
    a, b = _quadratic(n, condition, seed)
    return Objective(
        f"quadratic{n}_cond{condition:g}",
        lambda x: 0.5 * x @ a @ x - b @ x,
        torch.zeros(n, dtype=F64),
        torch.linalg.solve(a, b),
    )


def rosenbrock(n: int) -> Objective:
    return Objective(
        f"rosenbrock{n}",
        lambda x: (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum(),
        torch.tensor([-1.2, 1.0] * (n // 2), dtype=F64),
        torch.ones(n, dtype=F64),
    )


def beale() -> Objective:
    def f(x: torch.Tensor) -> torch.Tensor:
        u, v = x[0], x[1]
        return (1.5 - u + u * v) ** 2 + (2.25 - u + u * v**2) ** 2 + (2.625 - u + u * v**3) ** 2

    return Objective("beale", f, torch.tensor([1.0, 1.0], dtype=F64), torch.tensor([3.0, 0.5], dtype=F64))


FUNCTIONS = {fn.name: fn for fn in (quadratic(), rosenbrock(2), rosenbrock(10), beale())}


def minimize(fn: Objective, **kwargs: Any) -> tuple[torch.Tensor, optimlab.CG, int]:
    """Run CG in one ``step`` until the gradient tolerance is met; returns (x, optimizer, closure calls)."""
    x = leaf(fn.x0.clone())
    options = {"max_iter": 10_000, "max_eval": 100_000, "tolerance_grad": 1e-5, "tolerance_change": 0.0}
    opt = optimlab.CG([x], **{**options, **kwargs})
    calls = [0]

    def closure() -> torch.Tensor:
        calls[0] += 1
        opt.zero_grad()
        loss = fn.f(x)
        loss.backward()
        return loss

    opt.step(closure)
    return x.detach(), opt, calls[0]


def gradient(fn: Objective, x: torch.Tensor) -> torch.Tensor:
    x = leaf(x.clone())
    fn.f(x).backward()
    return x.grad


def scipy_cg(fn: Objective) -> scipy.optimize.OptimizeResult:
    def value_and_grad(x: np.ndarray) -> tuple[float, np.ndarray]:
        xt = leaf(torch.from_numpy(x).clone())
        value = fn.f(xt)
        value.backward()
        return value.item(), xt.grad.numpy()

    return scipy.optimize.minimize(value_and_grad, fn.x0.numpy(), jac=True, method="CG", options={"gtol": 1e-5})


# ---------------------------------------------------------------------------------------------- against scipy


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_same_minimum_as_scipy_with_comparable_evaluations(name: str) -> None:
    fn = FUNCTIONS[name]
    reference = scipy_cg(fn)
    assert reference.success
    x, opt, calls = minimize(fn)
    state = opt.state[opt.param_groups[0]["params"][0]]

    assert gradient(fn, x).abs().max() <= 1e-5  # scipy's criterion: max |g| <= gtol
    torch.testing.assert_close(x, torch.from_numpy(reference.x), rtol=0, atol=1e-4)
    torch.testing.assert_close(x, fn.minimum, rtol=0, atol=1e-4)
    # Every closure call is one function and one gradient evaluation; scipy's nfev counts the same calls.
    assert calls == state["func_evals"]
    assert calls <= 1.5 * reference.nfev, f"{calls} evaluations, scipy {reference.nfev}"


@pytest.mark.parametrize("restart_threshold", [0.1, None], ids=["powell", "no_powell"])
@pytest.mark.parametrize("beta", BETA_FORMULAS)
@pytest.mark.parametrize("name", ["quadratic30_cond1000", "rosenbrock10"])
def test_each_beta_converges(name: str, beta: str, restart_threshold: float | None) -> None:
    fn = FUNCTIONS[name]
    x, _, _ = minimize(fn, beta=beta, restart_threshold=restart_threshold, max_iter=2_000)
    assert gradient(fn, x).abs().max() <= 1e-5
    torch.testing.assert_close(x, fn.minimum, rtol=0, atol=1e-4)


@pytest.mark.parametrize("beta", BETA_FORMULAS)
def test_quadratic_finite_termination(beta: str) -> None:
    """With near-exact line searches every formula is linear CG on a quadratic: n iterations suffice, where
    steepest descent (a restart at every iteration) is still far from the minimum after 5n."""
    n = 10
    fn = quadratic(n, condition=100.0, seed=1)
    x, opt, _ = minimize(fn, beta=beta, c2=1e-3, tolerance_grad=1e-6, restart_threshold=None)
    state = opt.state[opt.param_groups[0]["params"][0]]
    assert state["n_iter"] <= n + 1
    assert gradient(fn, x).abs().max() <= 1e-6

    x_sd, opt_sd, _ = minimize(fn, beta=beta, c2=1e-3, tolerance_grad=1e-6, restart=1, max_iter=5 * n)
    assert opt_sd.state[opt_sd.param_groups[0]["params"][0]]["n_iter"] == 5 * n
    assert gradient(fn, x_sd).abs().max() > 1e-4


def test_float32_and_complex() -> None:
    x = leaf(torch.tensor([-1.2, 1.0]))
    opt = optimlab.CG([x], max_iter=200, tolerance_grad=1e-4)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = rosenbrock(2).f(x)
        loss.backward()
        return loss

    opt.step(closure)
    torch.testing.assert_close(x.detach(), torch.ones(2), rtol=0, atol=2e-3)

    target = torch.tensor([1 + 2j, -0.5j, 3.0], dtype=torch.complex128)
    z = leaf(torch.zeros(3, dtype=torch.complex128))
    copt = optimlab.CG([z], max_iter=100)

    def complex_closure() -> torch.Tensor:
        copt.zero_grad()
        loss = (z - target).abs().pow(2).sum() + 0.1 * (z - target).abs().pow(4).sum()
        loss.backward()
        return loss

    copt.step(complex_closure)
    torch.testing.assert_close(z.detach(), target, rtol=0, atol=1e-6)


def test_fixed_step_without_line_search() -> None:
    fn = quadratic(10, condition=10.0)
    x, opt, calls = minimize(fn, line_search_fn=None, lr=0.05, max_iter=500, tolerance_grad=1e-7)
    torch.testing.assert_close(x, fn.minimum, rtol=0, atol=1e-5)
    state = opt.state[opt.param_groups[0]["params"][0]]
    assert calls == state["func_evals"] == state["n_iter"] + 1


def test_network_training_with_module_closure() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1)).double()
    inputs = torch.randn(64, 3, dtype=F64)
    targets = torch.sin(inputs.sum(1, keepdim=True))
    opt = optimlab.CG(model.parameters(), max_iter=20)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(inputs), targets)
        loss.backward()
        return loss

    first = closure().item()
    losses = [opt.step(closure).item() for _ in range(5)]
    assert losses[0] == pytest.approx(first)
    assert all(b <= a for a, b in itertools.pairwise(losses))
    assert losses[-1] < 0.2 * first


# ---------------------------------------------------------------------------------------------- restarts


def test_beta_formulas() -> None:
    gen = torch.Generator().manual_seed(5)
    g, gp, dp = (torch.randn(6, generator=gen, dtype=F64) for _ in range(3))
    y = g - gp
    expected = {
        "FR": (g @ g) / (gp @ gp),
        "PR": (g @ y) / (gp @ gp),
        "PR+": max((g @ y) / (gp @ gp), torch.tensor(0.0, dtype=F64)),
        "HS": (g @ y) / (dp @ y),
        "DY": (g @ g) / (dp @ y),
    }
    for name, value in expected.items():
        torch.testing.assert_close(conjugate_beta(name, g, gp, dp), value, rtol=1e-14, atol=0)
    # PR+ is PR's positive part.
    assert conjugate_beta("PR+", g, g + g, dp).item() == 0.0 < -conjugate_beta("PR", g, g + g, dp).item()
    with pytest.raises(ValueError, match="Invalid beta"):
        conjugate_beta("CD", g, gp, dp)


def _one_iteration_from(prev_grad: list[float], prev_dir: list[float], **kwargs: Any) -> dict[str, Any]:
    """One CG iteration at x = (1, 0) on f = |x|^2 / 2 (so g = x), after a previous iteration with the given
    gradient and direction, planted in the state as a checkpoint would bring them."""
    x = leaf(torch.tensor([1.0, 0.0], dtype=F64))
    opt = optimlab.CG([x], max_iter=1, **kwargs)
    opt.state[x].update(
        func_evals=1,
        n_iter=1,
        d=torch.tensor(prev_dir, dtype=F64),
        t=1.0,
        prev_flat_grad=torch.tensor(prev_grad, dtype=F64),
        prev_loss=1.0,
        since_restart=1,
        restarts=0,
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = 0.5 * x.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return opt.state[x]


def test_no_restart_follows_the_formula() -> None:
    # g = (1, 0), g_prev = (0, 2): orthogonal gradients, FR beta = 1/4, d = beta d_prev - g.
    state = _one_iteration_from([0.0, 2.0], [-1.0, -1.0], beta="FR")
    assert state["restarts"] == 0 and state["since_restart"] == 2
    assert torch.equal(state["d"], torch.tensor([-1.25, -0.25], dtype=F64))


def test_powell_restart() -> None:
    # g . g_prev = 1 >= 0.1 |g|^2: successive gradients far from orthogonal.
    state = _one_iteration_from([1.0, 0.5], [-1.0, -1.0], beta="FR")
    assert state["restarts"] == 1 and state["since_restart"] == 1
    assert torch.equal(state["d"], torch.tensor([-1.0, -0.0], dtype=F64))
    state = _one_iteration_from([1.0, 0.5], [-1.0, -1.0], beta="FR", restart_threshold=None)
    assert state["restarts"] == 0


def test_non_descent_restart() -> None:
    # FR beta = 1/4 with d_prev = (8, 0): beta d_prev - g = (1, 0), uphill.
    state = _one_iteration_from([0.0, 2.0], [8.0, 0.0], beta="FR", restart_threshold=None)
    assert state["restarts"] == 1
    assert torch.equal(state["d"], torch.tensor([-1.0, -0.0], dtype=F64))


def test_non_finite_beta_restart() -> None:
    # HS: y = g - g_prev = (1, -2) is orthogonal to d_prev = (2, 1): beta = g.y / 0.
    state = _one_iteration_from([0.0, 2.0], [2.0, 1.0], beta="HS", restart_threshold=None)
    assert state["restarts"] == 1
    assert torch.equal(state["d"], torch.tensor([-1.0, -0.0], dtype=F64))


def test_pr_plus_clamps_where_pr_goes_negative() -> None:
    # g_prev = (1.5, 0): g . y < 0, so PR's beta is negative and PR+ takes the steepest-descent direction.
    plus = _one_iteration_from([1.5, 0.0], [-1.0, -1.0], beta="PR+", restart_threshold=None)
    assert plus["restarts"] == 0 and torch.equal(plus["d"], torch.tensor([-1.0, -0.0], dtype=F64))
    plain = _one_iteration_from([1.5, 0.0], [-1.0, -1.0], beta="PR", restart_threshold=None)
    beta = -0.5 / 2.25
    assert torch.allclose(plain["d"], torch.tensor([-beta - 1.0, -beta], dtype=F64), rtol=1e-15, atol=0)


@pytest.mark.parametrize("period", [1, 3])
def test_periodic_restart(period: int) -> None:
    fn = quadratic(10, condition=100.0)
    x = leaf(fn.x0.clone())
    opt = optimlab.CG([x], beta="FR", restart=period, restart_threshold=None, max_iter=1)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = fn.f(x)
        loss.backward()
        return loss

    state = opt.state[x]
    for step in range(1, 13):
        opt.step(closure)
        assert state["n_iter"] == step
        assert state["restarts"] == (step - 1) // period
        steepest = torch.equal(state["d"], state["prev_flat_grad"].neg())
        assert steepest == ((step - 1) % period == 0), f"iteration {step}"


# ---------------------------------------------------------------------------------------------- state


def _run(opt: optimlab.CG, fn: Objective, steps: int) -> list[float]:
    x = opt.param_groups[0]["params"][0]

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = fn.f(x)
        loss.backward()
        return loss

    return [opt.step(closure).item() for _ in range(steps)]


@pytest.mark.parametrize("beta", ["PR+", "FR"])
def test_state_dict_round_trip_resumes_exactly(beta: str) -> None:
    fn = rosenbrock(10)
    kwargs = {"beta": beta, "max_iter": 4, "restart": 7}
    straight = optimlab.CG([leaf(fn.x0.clone())], **kwargs)
    interrupted = optimlab.CG([leaf(fn.x0.clone())], **kwargs)
    assert _run(straight, fn, 3) == _run(interrupted, fn, 3)

    buffer = io.BytesIO()
    torch.save(interrupted.state_dict(), buffer)
    buffer.seek(0)
    resumed = optimlab.CG([leaf(interrupted.param_groups[0]["params"][0].detach().clone())])
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert resumed.param_groups[0]["beta"] == beta and resumed.param_groups[0]["restart"] == 7
    assert_states_same(interrupted, resumed, True, "loaded")
    assert list(resumed.state_dict()["state"][0]) == [
        "func_evals",
        "n_iter",
        "d",
        "t",
        "prev_flat_grad",
        "prev_loss",
        "since_restart",
        "restarts",
    ]

    assert _run(straight, fn, 3) == _run(resumed, fn, 3)
    assert_states_same(straight, resumed, True, "resumed")
    clone = copy.deepcopy(resumed)
    assert_same(_run(resumed, fn, 1), _run(clone, fn, 1), True, "deep copy")
    assert_states_same(resumed, clone, True, "deep copy")


def test_step_contract() -> None:
    fn = rosenbrock(2)
    x = leaf(fn.x0.clone())
    opt = optimlab.CG([x], max_iter=5)
    first: list[Any] = []
    hooks: list[str] = []
    opt.register_step_pre_hook(lambda *_: hooks.append("pre"))
    opt.register_step_post_hook(lambda *_: hooks.append("post"))

    def closure() -> float:
        opt.zero_grad()
        loss = fn.f(x)
        loss.backward()
        first.append(loss.item())
        return first[-1]

    with torch.no_grad():  # the closure still runs with autograd enabled
        out = opt.step(closure)
    assert out is first[0] and len(first) > 5
    assert hooks == ["pre", "post"] and opt._step_count == 1
    assert isinstance(opt, torch.optim.Optimizer)
    with pytest.raises(TypeError, match="closure"):
        opt.step()  # type: ignore[call-arg]
    info = optimlab.registry.get("cg")
    assert info.hyperparameters["beta"] == "PR+" and "Fletcher" in info.references


# ---------------------------------------------------------------------------------------------- errors


def _params() -> list[torch.Tensor]:
    return [leaf(torch.ones(3))]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"lr": -1.0}, "Invalid learning rate: -1.0"),
        ({"lr": torch.tensor([0.1, 0.2])}, "Tensor lr must be 1-element"),
        ({"max_iter": 0}, "Invalid max_iter value: 0"),
        ({"max_eval": 0}, "Invalid max_eval value: 0"),
        ({"tolerance_grad": -1e-7}, "Invalid tolerance_grad value: -1e-07"),
        ({"tolerance_change": -1.0}, "Invalid tolerance_change value: -1.0"),
        ({"beta": 0.9}, "Invalid beta: 0.9; expected one of 'FR', 'PR', 'PR+', 'HS', 'DY'"),
        ({"beta": "pr"}, "Invalid beta: 'pr'"),
        ({"restart": 0}, "Invalid restart value: 0"),
        ({"restart": True}, "Invalid restart value: True"),
        ({"restart": 2.5}, "Invalid restart value: 2.5"),
        ({"restart_threshold": 0.0}, "Invalid restart_threshold value: 0.0"),
        ({"line_search_fn": "backtracking"}, "Invalid line_search_fn: 'backtracking'"),
        ({"c1": 0.5, "c2": 0.1}, "Invalid Wolfe constants: need 0 < c1 < c2 < 1, got c1=0.5, c2=0.1"),
        ({"c2": 1.0}, "Invalid Wolfe constants: need 0 < c1 < c2 < 1"),
    ],
)
def test_construction_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as raised:
        optimlab.CG(_params(), **kwargs)
    assert str(raised.value).startswith(message)


def test_one_group_only() -> None:
    with pytest.raises(ValueError, match="CG doesn't support per-parameter options"):
        optimlab.CG([{"params": _params()}, {"params": _params(), "lr": 0.1}])
    opt = optimlab.CG(_params())
    opt.add_param_group({"params": _params()})
    calls = [0]

    def closure() -> torch.Tensor:
        calls[0] += 1
        return torch.zeros(())

    with pytest.raises(AssertionError, match="Expected exactly one param_group, but got 2"):
        opt.step(closure)
    assert calls[0] == 0


def test_line_search_changed_after_construction() -> None:
    opt = optimlab.CG(_params())
    opt.param_groups[0]["line_search_fn"] = "backtracking"
    with pytest.raises(RuntimeError, match="only 'strong_wolfe' is supported"):
        opt.step(lambda: torch.zeros(()))
    assert len(opt.state) == 0
