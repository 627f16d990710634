"""Differential-test helpers: run a torch.optim optimizer and its optimlab twin on identical parameters and
gradients, and compare parameters and every state entry after every step."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch


def clone_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Independent copies (Tensor lrs/betas must not be shared between the two optimizers)."""
    return copy.deepcopy(kwargs)


def assert_same(a: Any, b: Any, exact: bool, where: str, rtol: float | None = None, atol: float | None = None) -> None:
    """Recursively compare two state values: tensors by value, dtype and device (bitwise when ``exact``)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), f"{where}: tensor vs {type(b)}"
        assert a.dtype == b.dtype, f"{where}: dtype {a.dtype} vs {b.dtype}"
        assert a.device == b.device, f"{where}: device {a.device} vs {b.device}"
        assert a.shape == b.shape, f"{where}: shape {a.shape} vs {b.shape}"
        if a.is_sparse:
            a, b = a.to_dense(), b.to_dense()
        if exact:
            equal = torch.equal(a, b) or (
                a.is_floating_point() and torch.equal(torch.nan_to_num(a, 7.0), torch.nan_to_num(b, 7.0))
            )
            if not equal:
                diff = (a.double() - b.double()).abs().max().item()
                raise AssertionError(f"{where}: not bitwise equal (max abs diff {diff:.3g})")
        else:
            torch.testing.assert_close(a, b, rtol=rtol, atol=atol, msg=lambda m: f"{where}: {m}", equal_nan=True)
    elif isinstance(a, dict):
        assert isinstance(b, dict), f"{where}: dict vs {type(b)}"
        assert list(a.keys()) == list(b.keys()), f"{where}: keys {list(a)} vs {list(b)}"
        for k in a:
            assert_same(a[k], b[k], exact, f"{where}[{k!r}]", rtol, atol)
    elif isinstance(a, list | tuple):
        assert type(a) is type(b) and len(a) == len(b), f"{where}: {type(a)}[{len(a)}] vs {type(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, exact, f"{where}[{i}]", rtol, atol)
    elif isinstance(a, float) and not exact:
        assert math.isclose(a, b, rel_tol=rtol or 1.3e-6, abs_tol=atol or 1e-5), f"{where}: {a} vs {b}"
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), f"{where}: {a} vs {b}"
    else:
        assert type(a) is type(b) or (isinstance(a, int | float) and isinstance(b, int | float)), (
            f"{where}: {type(a)} vs {type(b)}"
        )
        assert a == b, f"{where}: {a!r} vs {b!r}"


def assert_states_same(
    ref: torch.optim.Optimizer, ours: torch.optim.Optimizer, exact: bool, where: str, **tol: Any
) -> None:
    ref_params = [p for g in ref.param_groups for p in g["params"]]
    our_params = [p for g in ours.param_groups for p in g["params"]]
    assert len(ref.state) == len(ours.state), f"{where}: {len(ref.state)} vs {len(ours.state)} state entries"
    # State insertion order is part of the state_dict format.
    ref_ids = {id(p): i for i, p in enumerate(ref_params)}
    our_ids = {id(p): i for i, p in enumerate(our_params)}
    ref_order = [ref_ids[id(k)] for k in ref.state]
    our_order = [our_ids[id(k)] for k in ours.state]
    assert ref_order == our_order, f"{where}: state order {ref_order} vs {our_order}"
    for i, (pr, po) in enumerate(zip(ref_params, our_params)):
        assert_same(pr.detach(), po.detach(), exact, f"{where} param {i}", **tol)
        if pr in ref.state or po in ours.state:
            assert_same(ref.state[pr], ours.state[po], exact, f"{where} state {i}", **tol)


@dataclass
class Problem:
    """Parameters (as groups), and gradients per step, shared by both optimizers of a differential run."""

    groups: list[dict[str, Any]]
    grads: list[list[torch.Tensor | None]] = field(default_factory=list)

    def instantiate(self, non_leaf: bool = False) -> tuple[list[dict[str, Any]], list[torch.Tensor]]:
        """Fresh copies of the groups; with ``non_leaf`` the params are clones of returned leaves (so that a
        ``differentiable=True`` step can be back-propagated to them)."""
        out, leaves = [], []
        for g in self.groups:
            ng = {k: copy.deepcopy(v) for k, v in g.items() if k != "params"}
            ng["params"] = []
            for p in g["params"]:
                base = p.detach().clone().requires_grad_(True)
                leaves.append(base)
                ng["params"].append(base.clone() if non_leaf else base)
            out.append(ng)
        return out, leaves


def leaf(t: torch.Tensor) -> torch.Tensor:
    return t.detach().requires_grad_(True)


def standard_params(
    dtype: torch.dtype, *, only_2d: bool = False, complex_: bool = False, seed: int = 0
) -> list[torch.Tensor]:
    """A weight, a bias, a 0-dim scalar and a non-contiguous matrix (or four 2-D matrices for Muon)."""
    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape: int) -> torch.Tensor:
        t = torch.randn(shape, generator=gen, dtype=torch.float64)
        if complex_:
            t = torch.complex(t, torch.randn(shape, generator=gen, dtype=torch.float64))
        return t.to(dtype)

    if only_2d:
        return [leaf(rnd(5, 3)), leaf(rnd(3, 4)), leaf(rnd(6, 2)), leaf(rnd(4, 6).t())]
    return [leaf(rnd(5, 3)), leaf(rnd(5)), leaf(rnd()), leaf(rnd(4, 6).t())]


def random_grads(
    params: Sequence[torch.Tensor],
    steps: int,
    seed: int = 1,
    freeze: Callable[[int, int], bool] | None = None,
) -> list[list[torch.Tensor | None]]:
    gen = torch.Generator().manual_seed(seed)
    out = []
    for step in range(steps):
        gs: list[torch.Tensor | None] = []
        for j, p in enumerate(params):
            if freeze is not None and freeze(step, j):
                gs.append(None)
                continue
            real = p.real if p.is_complex() else p
            g = torch.randn(real.shape, generator=gen, dtype=torch.float64)
            if p.is_complex():
                g = torch.complex(g, torch.randn(real.shape, generator=gen, dtype=torch.float64))
            gs.append(g.to(p.dtype))
        out.append(gs)
    return out


def default_freeze(step: int, j: int) -> bool:
    """No gradient at all at step 2; the first parameter frozen at steps 3-4 (as torch's own foreach test)."""
    return step == 2 or (j == 0 and step in (3, 4))


def run_differential(
    ref_cls: type,
    our_cls: type,
    kwargs: dict[str, Any],
    groups: list[dict[str, Any]],
    grads: list[list[torch.Tensor | None]],
    *,
    our_kwargs: dict[str, Any] | None = None,
    exact: bool = True,
    closure_loss: Callable[[list[torch.Tensor]], torch.Tensor] | None = None,
    **tol: Any,
) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    """Step both optimizers through ``grads`` (or ``closure_loss``) and compare after every step."""
    problem = Problem(groups)
    differentiable = bool(kwargs.get("differentiable"))
    ref_groups, ref_leaves = problem.instantiate(differentiable)
    our_groups, our_leaves = problem.instantiate(differentiable)
    ref = ref_cls(ref_groups, **clone_kwargs(kwargs))
    ours = our_cls(our_groups, **clone_kwargs(our_kwargs if our_kwargs is not None else kwargs))
    assert isinstance(ours, torch.optim.Optimizer)
    if our_kwargs is None:
        assert repr(ref) == repr(ours), f"repr differs:\n{ref!r}\n{ours!r}"
    ref_params = [p for g in ref.param_groups for p in g["params"]]
    our_params = [p for g in ours.param_groups for p in g["params"]]
    for step, gs in enumerate(grads):
        if closure_loss is not None:

            def closure(params: list[torch.Tensor], opt: torch.optim.Optimizer) -> Callable[[], torch.Tensor]:
                def fn() -> torch.Tensor:
                    opt.zero_grad()
                    loss = closure_loss(params)
                    loss.backward()
                    return loss

                return fn

            lr_ = ref.step(closure(ref_params, ref))
            lo_ = ours.step(closure(our_params, ours))
            assert_same(lr_, lo_, exact, f"step {step} loss", **tol)
        else:
            for p, g in zip(ref_params, gs):
                p.grad = None if g is None else g.clone()
            for p, g in zip(our_params, gs):
                p.grad = None if g is None else g.clone()
            ref.step()
            ours.step()
        assert_states_same(ref, ours, exact, f"step {step}", **tol)
    if differentiable:
        # The steps are part of the autograd graph: gradients reaching the initial parameters must agree too.
        outcome = []
        for params in (ref_params, our_params):
            try:
                sum((p.abs() if p.is_complex() else p).pow(2).sum() for p in params).backward()
                outcome.append(None)
            except RuntimeError as e:  # e.g. AMSGrad's in-place maximum: torch cannot backprop it either
                outcome.append(type(e))
        assert outcome[0] == outcome[1], f"backward through the steps: torch {outcome[0]}, optimlab {outcome[1]}"
        if outcome[0] is not None:
            return ref, ours
        for i, (a, b) in enumerate(zip(ref_leaves, our_leaves)):
            assert_same(a.grad, b.grad, exact, f"grad of initial param {i} through the steps", **tol)
    return ref, ours


def save_load(state_dict: dict[str, Any]) -> dict[str, Any]:
    """``torch.save`` then ``torch.load(weights_only=True)``: what a checkpoint on disk gives back."""
    import io

    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def run_handover(
    first_cls: type,
    second_cls: type,
    kwargs: dict[str, Any],
    groups: list[dict[str, Any]],
    grads: list[list[torch.Tensor | None]],
    switch_at: int,
    closure_loss: Callable[[list[torch.Tensor]], torch.Tensor] | None = None,
) -> None:
    """Train with ``first_cls`` for ``switch_at`` steps, checkpoint (through torch.save/load weights_only), resume
    the checkpoint with ``second_cls`` on copies of the parameters, and check that the resumed run and the
    uninterrupted one stay bitwise equal to the end."""
    problem = Problem(groups)
    first_groups, _ = problem.instantiate()
    first = first_cls(first_groups, **clone_kwargs(kwargs))
    first_params = [p for g in first.param_groups for p in g["params"]]

    def step(opt: torch.optim.Optimizer, params: list[torch.Tensor], gs: list[torch.Tensor | None]) -> Any:
        if closure_loss is not None:

            def closure() -> torch.Tensor:
                opt.zero_grad()
                loss = closure_loss(params)
                loss.backward()
                return loss

            return opt.step(closure)
        for p, g in zip(params, gs):
            p.grad = None if g is None else g.clone()
        return opt.step()

    for gs in grads[:switch_at]:
        step(first, first_params, gs)
    checkpoint = save_load(first.state_dict())

    second_groups = []
    it = iter(first_params)
    for g in groups:
        ng = {k: copy.deepcopy(v) for k, v in g.items() if k != "params"}
        ng["params"] = [next(it).detach().clone().requires_grad_(True) for _ in g["params"]]
        second_groups.append(ng)
    second = second_cls(second_groups, **clone_kwargs(kwargs))
    second.load_state_dict(checkpoint)
    second_params = [p for g in second.param_groups for p in g["params"]]
    assert_same(first.state_dict()["param_groups"], second.state_dict()["param_groups"], True, "groups after load")
    for i, gs in enumerate(grads[switch_at:], switch_at):
        a = step(first, first_params, gs)
        b = step(second, second_params, gs)
        assert_same(a, b, True, f"step {i} return value")
        assert_states_same(first, second, True, f"resumed, step {i}")
