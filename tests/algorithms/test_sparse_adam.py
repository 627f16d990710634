"""SparseAdam against torch.optim.SparseAdam beyond torch's optim_db: uncoalesced and empty sparse gradients,
maximize, Tensor lr, an ``nn.Embedding(sparse=True)`` training loop, errors, and checkpoints both ways."""

from __future__ import annotations

import copy
import io
import warnings
from typing import Any

import pytest
import torch

import optimlab
from parity import assert_same, assert_states_same, run_differential

DTYPES = [torch.float32, torch.float64]


@pytest.fixture(autouse=True)
def _quiet_sparse_invariants() -> Any:
    # torch warns once per process that it does not check sparse invariants; irrelevant here.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse invariant checks")
        yield


def _params(dtype: torch.dtype, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    shapes = [(6, 3), (5,), (4, 2, 3)]
    params = [torch.randn(s, generator=gen, dtype=torch.float64).to(dtype).requires_grad_() for s in shapes]
    params.append(torch.randn(3, 6, generator=gen, dtype=dtype).t().requires_grad_())  # non-contiguous
    return params


def _sparse_grad(p: torch.Tensor, rows: list[int], gen: torch.Generator) -> torch.Tensor:
    """A COO gradient over dimension 0 with the given rows, repeats allowed (so uncoalesced)."""
    values = torch.randn((len(rows), *p.shape[1:]), generator=gen, dtype=torch.float64).to(p.dtype)
    return torch.sparse_coo_tensor(torch.tensor([rows], dtype=torch.long), values, p.shape)


def _grads(params: list[torch.Tensor], steps: int, seed: int = 1) -> list[list[torch.Tensor | None]]:
    gen = torch.Generator().manual_seed(seed)
    out: list[list[torch.Tensor | None]] = []
    for step in range(steps):
        gs: list[torch.Tensor | None] = []
        for j, p in enumerate(params):
            n = p.shape[0]
            if (step + j) % 5 == 4:
                gs.append(None)  # no gradient at all: no step for this parameter
            elif (step + j) % 5 == 2:
                gs.append(_sparse_grad(p, [], gen))  # an empty sparse gradient: the step count still advances
            else:
                # duplicate rows (summed by coalesce) and unsorted order
                gs.append(_sparse_grad(p, [n - 1, 0, n - 1, step % n, 0], gen))
        out.append(gs)
    return out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"maximize": True},
        {"lr": 0.05, "betas": (0.8, 0.9), "eps": 1e-6},
        {"lr": torch.tensor(0.01)},
        {"lr": torch.tensor([[0.02]]), "maximize": True},
    ],
    ids=["default", "maximize", "hyperparameters", "tensor_lr", "tensor_lr_2d_maximize"],
)
def test_uncoalesced_and_empty_grads_bitwise(dtype: torch.dtype, kwargs: dict[str, Any]) -> None:
    params = _params(dtype)
    grads = _grads(params, 9)
    assert any(g is not None and not g.is_coalesced() for gs in grads for g in gs)
    assert any(g is not None and g._nnz() == 0 for gs in grads for g in gs)
    groups = [{"params": params[:2]}, {"params": params[2:], "lr": 0.03}]
    run_differential(torch.optim.SparseAdam, optimlab.SparseAdam, kwargs, groups, grads)


def test_empty_grad_advances_step_only() -> None:
    p = torch.randn(4, 3, requires_grad=True)
    opt = optimlab.SparseAdam([p], lr=0.1)
    gen = torch.Generator().manual_seed(0)
    p.grad = _sparse_grad(p, [1], gen)
    opt.step()
    before = p.detach().clone()
    state_before = copy.deepcopy(opt.state[p])
    p.grad = _sparse_grad(p, [], gen)
    opt.step()
    assert opt.state[p]["step"] == 2 and isinstance(opt.state[p]["step"], int)
    assert torch.equal(p.detach(), before)
    assert torch.equal(opt.state[p]["exp_avg"], state_before["exp_avg"])
    assert torch.equal(opt.state[p]["exp_avg_sq"], state_before["exp_avg_sq"])


def test_only_touched_rows_change() -> None:
    p = torch.randn(6, 2, requires_grad=True)
    start = p.detach().clone()
    opt = optimlab.SparseAdam([p], lr=0.1)
    p.grad = _sparse_grad(p, [4, 1, 4], torch.Generator().manual_seed(0))
    opt.step()
    changed = (p.detach() != start).any(dim=1)
    assert changed.tolist() == [False, True, False, False, True, False]
    assert (opt.state[p]["exp_avg"].abs().sum(dim=1) != 0).tolist() == changed.tolist()


def test_maximize_moves_uphill() -> None:
    results = []
    for maximize in (False, True):
        p = torch.zeros(3, 1, requires_grad=True)
        opt = optimlab.SparseAdam([p], lr=0.1, maximize=maximize)
        p.grad = torch.sparse_coo_tensor(torch.tensor([[0, 2]]), torch.tensor([[1.0], [-1.0]]), (3, 1))
        opt.step()
        results.append(p.detach().flatten())
    assert results[0][0] < 0 < results[0][2]
    assert torch.equal(results[1], -results[0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_embedding_training_loop_matches_torch(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(0)
    indices = torch.randint(0, 30, (12, 5, 4), generator=gen)
    targets = torch.randn(12, 5, generator=gen, dtype=dtype)
    losses: dict[str, list[torch.Tensor]] = {}
    weights = {}
    for name, cls in (("torch", torch.optim.SparseAdam), ("optimlab", optimlab.SparseAdam)):
        torch.manual_seed(1)
        emb = torch.nn.Embedding(30, 8, sparse=True).to(dtype)
        opt = cls(emb.parameters(), lr=0.05)
        losses[name] = []
        for x, y in zip(indices, targets):
            opt.zero_grad()
            loss = (emb(x).sum(dim=(1, 2)) - y).pow(2).mean()
            loss.backward()
            assert emb.weight.grad is not None and emb.weight.grad.is_sparse
            opt.step()
            losses[name].append(loss.detach())
        weights[name] = emb.weight.detach()
    assert_same(losses["torch"], losses["optimlab"], True, "losses")
    assert_same(weights["torch"], weights["optimlab"], True, "embedding weights")
    assert losses["optimlab"][-1] < losses["optimlab"][0]


def test_dense_grad_raises_and_changes_nothing() -> None:
    a = torch.randn(4, 2, requires_grad=True)
    b = torch.randn(3, requires_grad=True)
    opt = optimlab.SparseAdam([{"params": [a]}, {"params": [b]}])
    a.grad = _sparse_grad(a, [0], torch.Generator().manual_seed(0))
    b.grad = torch.ones(3)
    before = (a.detach().clone(), b.detach().clone())
    with pytest.raises(RuntimeError) as ours:
        opt.step()
    ref = torch.optim.SparseAdam([torch.zeros(2, requires_grad=True)])
    ref.param_groups[0]["params"][0].grad = torch.ones(2)
    with pytest.raises(RuntimeError) as theirs:
        ref.step()
    assert str(ours.value) == str(theirs.value)
    # torch would already have updated the first group; optimlab checks every gradient first.
    assert torch.equal(a.detach(), before[0]) and torch.equal(b.detach(), before[1])
    assert all(len(s) == 0 for s in opt.state.values())


def _construction_outcome(cls: type, params: Any, **kwargs: Any) -> tuple[type, str]:
    with pytest.raises(Exception) as info:
        cls(params, **kwargs)
    return type(info.value), str(info.value)


def test_sparse_and_complex_params_listed_by_index() -> None:
    def groups() -> list[dict[str, Any]]:
        return [
            {"params": [torch.zeros(2, requires_grad=True), torch.zeros(3, layout=torch.sparse_coo)]},
            {"params": [torch.zeros(3, dtype=torch.complex64), torch.zeros(2, layout=torch.sparse_coo)]},
        ]

    ours = _construction_outcome(optimlab.SparseAdam, groups())
    theirs = _construction_outcome(torch.optim.SparseAdam, groups())
    assert ours == theirs
    assert ours[1].startswith("Sparse params at indices [[0, 1], [1, 1]]")
    complex_only = [[torch.zeros(2)], [torch.zeros(2, dtype=torch.complex128)]]
    ours = _construction_outcome(optimlab.SparseAdam, [{"params": g} for g in complex_only])
    theirs = _construction_outcome(torch.optim.SparseAdam, [{"params": g} for g in complex_only])
    assert (
        ours
        == theirs
        == (ValueError, f"Complex params at indices {[[1, 0]]}: SparseAdam does not support complex parameters")
    )


@pytest.mark.parametrize(
    "kwargs",
    [{"lr": 0.0}, {"lr": -1.0}, {"eps": 0.0}, {"betas": (0.9, 1.0)}, {"lr": torch.tensor([1e-3, 1e-3])}],
    ids=["lr_zero", "lr_negative", "eps_zero", "beta2_one", "tensor_lr_two_elements"],
)
def test_invalid_hyperparameters_match_torch(kwargs: dict[str, Any]) -> None:
    ours = _construction_outcome(optimlab.SparseAdam, [torch.zeros(2, requires_grad=True)], **kwargs)
    theirs = _construction_outcome(torch.optim.SparseAdam, [torch.zeros(2, requires_grad=True)], **kwargs)
    assert ours == theirs


def test_group_keys_and_setstate_match_torch() -> None:
    ours = optimlab.SparseAdam([torch.zeros(2, requires_grad=True)])
    theirs = torch.optim.SparseAdam([torch.zeros(2, requires_grad=True)])
    assert list(ours.param_groups[0]) == list(theirs.param_groups[0]) == ["params", "lr", "betas", "eps", "maximize"]
    assert ours.defaults == theirs.defaults
    # Loading a state dict runs __setstate__, which adds ``differentiable`` to the defaults (torch's base does).
    ours.load_state_dict(theirs.state_dict())
    theirs.load_state_dict(theirs.state_dict())
    assert ours.defaults == theirs.defaults and "differentiable" in ours.defaults
    assert repr(ours) == repr(theirs)


def _roundtrip(state_dict: dict[str, Any]) -> dict[str, Any]:
    buf = io.BytesIO()
    torch.save(state_dict, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize(
    "source, target",
    [("torch", "optimlab"), ("optimlab", "torch"), ("optimlab", "optimlab")],
)
@pytest.mark.parametrize("lr", [0.02, torch.tensor(0.02)], ids=["float_lr", "tensor_lr"])
def test_state_dict_handover_mid_run(source: str, target: str, lr: Any) -> None:
    classes = {"torch": torch.optim.SparseAdam, "optimlab": optimlab.SparseAdam}
    params = _params(torch.float32, seed=5)
    grads = _grads(params, 8, seed=6)
    ref_params = [p.detach().clone().requires_grad_() for p in params]
    run_params = [p.detach().clone().requires_grad_() for p in params]

    def groups(ps: list[torch.Tensor]) -> list[dict[str, Any]]:
        return [{"params": ps[:3]}, {"params": ps[3:], "betas": (0.5, 0.6)}]

    ref = torch.optim.SparseAdam(groups(ref_params), lr=copy.deepcopy(lr))
    opt = classes[source](groups(run_params), lr=copy.deepcopy(lr))
    for step, gs in enumerate(grads):
        if step == 4:
            saved = _roundtrip(opt.state_dict())
            assert_same(saved["state"], opt.state_dict()["state"], True, "saved state")
            assert all(isinstance(s["step"], int) for s in saved["state"].values())
            opt = classes[target](groups(run_params), lr=0.5)  # hyperparameters come from the checkpoint
            opt.load_state_dict(saved)
        for ps in (ref_params, run_params):
            for p, g in zip(ps, gs):
                p.grad = None if g is None else g.clone()
        ref.step()
        opt.step()
        assert_states_same(ref, opt, True, f"step {step}")
    assert_same(ref.state_dict()["param_groups"], opt.state_dict()["param_groups"], True, "groups")
