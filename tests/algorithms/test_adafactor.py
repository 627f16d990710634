"""Adafactor against torch.optim.Adafactor beyond torch's optim_db: scalars, vectors, matrices and 3-D+ tensors
(factored or not), the default eps1 per dtype, weight decay, Tensor lr, foreach against the for-loop, errors,
old-checkpoint upgrades and checkpoints both ways."""

from __future__ import annotations

import copy
import inspect
import io
from typing import Any

import pytest
import torch

import optimlab
from parity import assert_same, assert_states_same, default_freeze, random_grads, run_differential

SHAPES = [(), (5,), (4, 3), (2, 3, 4), (2, 1, 3, 5), (1, 7)]


def _params(dtype: torch.dtype, seed: int = 0, shapes: list[tuple[int, ...]] = SHAPES) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=gen, dtype=torch.float64).to(dtype).requires_grad_() for s in shapes]
    params.append(torch.randn(6, 4, generator=gen, dtype=dtype).t().requires_grad_())  # non-contiguous
    return params


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("foreach", [False, True], ids=["forloop", "foreach"])
@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"weight_decay": 0.1, "lr": 0.05},
        {"weight_decay": 0.2, "maximize": True, "d": 2.0},
        {"eps": (1e-20, 1e-2), "beta2_decay": -0.5},
        {"lr": torch.tensor(0.05), "weight_decay": 0.1},
    ],
    ids=["default", "weight_decay", "maximize_d", "eps_beta2_decay", "tensor_lr"],
)
def test_all_ranks_bitwise(dtype: torch.dtype, foreach: bool, kwargs: dict[str, Any]) -> None:
    """Bitwise equal to torch's for-loop, and with foreach=True to torch's foreach (a different formulation)."""
    params = _params(dtype)
    groups = [{"params": params[:4]}, {"params": params[4:], "lr": 0.02}]
    grads = random_grads(params, 7, freeze=default_freeze)
    run_differential(torch.optim.Adafactor, optimlab.Adafactor, {**kwargs, "foreach": foreach}, groups, grads)


def test_state_layout_factored_over_last_two_dims() -> None:
    params = _params(torch.float32)
    opt = optimlab.Adafactor(params)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    for p in params:
        state = opt.state[p]
        if p.dim() > 1:
            assert list(state) == ["step", "row_var", "col_var"]
            assert state["row_var"].shape == (*p.shape[:-1], 1)
            assert state["col_var"].shape == (*p.shape[:-2], 1, p.shape[-1])
        else:
            assert list(state) == ["step", "variance"]
            assert state["variance"].shape == p.shape
        assert state["step"].dtype == torch.float32 and state["step"].item() == 1.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_default_eps1_is_the_dtype_machine_epsilon(dtype: torch.dtype) -> None:
    """eps=(None, ..) is eps1 = finfo(dtype).eps: the same bits as passing it, unlike another dtype's."""
    other = torch.float64 if dtype == torch.float32 else torch.float32
    results = {}
    for name, eps1 in (("none", None), ("own", torch.finfo(dtype).eps), ("other", torch.finfo(other).eps)):
        params = _params(dtype, seed=2)
        opt = optimlab.Adafactor(params, eps=(eps1, 1e-3))
        gen = torch.Generator().manual_seed(3)
        for _ in range(3):
            for p in params:
                # tiny gradients, so that the eps1 floor of the variance decides the update
                p.grad = (torch.randn(p.shape, generator=gen, dtype=torch.float64) * 1e-9).to(dtype)
            opt.step()
        results[name] = [p.detach().clone() for p in params]
    assert all(torch.equal(a, b) for a, b in zip(results["none"], results["own"]))
    assert not all(torch.equal(a, b) for a, b in zip(results["none"], results["other"]))


@pytest.mark.parametrize("foreach", [False, True], ids=["forloop", "foreach"])
def test_mixed_dtypes_in_one_group_use_the_first_params_eps1(foreach: bool) -> None:
    # torch resolves eps1=None once per group, from the first parameter with a gradient.
    gen = torch.Generator().manual_seed(4)
    params = [
        torch.randn(3, 4, generator=gen).requires_grad_(),
        torch.randn(5, generator=gen, dtype=torch.float64).requires_grad_(),
        torch.randn(2, 3, 4, generator=gen, dtype=torch.float64).requires_grad_(),
    ]
    grads = [[None if g is None else g * 1e-9 for g in gs] for gs in random_grads(params, 5)]
    grads[0][0] = None  # at the first step the float64 vector comes first
    run_differential(torch.optim.Adafactor, optimlab.Adafactor, {"foreach": foreach}, [{"params": params}], grads)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_foreach_close_to_forloop(dtype: torch.dtype) -> None:
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-13}
    params = _params(dtype, seed=7)
    grads = random_grads(params, 8, freeze=default_freeze)
    run_differential(
        optimlab.Adafactor,
        optimlab.Adafactor,
        {"weight_decay": 0.1},
        [{"params": params}],
        grads,
        our_kwargs={"weight_decay": 0.1, "foreach": True},
        exact=False,
        **tol,
    )


def test_update_is_clipped_to_rms_d() -> None:
    """The step is alpha * U / max(1, RMS(U) / d), so its RMS is at most alpha * d (Shazeer & Stern, section 5)."""
    rms = {}
    for d in (1.0, 1.5, 100.0):
        p = torch.full((8, 8), 2.0, requires_grad=True)
        opt = optimlab.Adafactor([p], lr=0.5, d=d)
        p.grad = torch.randn(8, 8, generator=torch.Generator().manual_seed(0))
        opt.step()
        alpha = 2.0 * 0.5  # max(eps2, RMS(p)) * min(lr, 1 / sqrt(1))
        rms[d] = (2.0 - p.detach()).pow(2).mean().sqrt().item()
        assert rms[d] <= alpha * d * (1 + 1e-6)
    # The factored estimate makes RMS(U) slightly above 1 here: clipped at d = 1, not at d = 1.5 or 100.
    assert rms[1.0] == pytest.approx(1.0, rel=1e-6)
    assert 1.0 < rms[1.5] == rms[100.0] < 1.5


def _outcome(fn: Any) -> tuple[str, str]:
    try:
        fn()
    except Exception as e:
        return type(e).__name__, str(e)
    return "ok", ""


@pytest.mark.parametrize(
    "kwargs",
    [
        {"lr": -1.0},
        {"lr": torch.tensor([0.1, 0.2])},
        {"beta2_decay": 0.5},
        {"eps": (-1.0, 1e-3)},
        {"eps": (None, -1e-3)},
        {"d": 0.5},
        {"weight_decay": -0.1},
    ],
    ids=["lr", "tensor_lr", "beta2_decay", "eps1", "eps2", "d", "weight_decay"],
)
def test_construction_errors_match_torch(kwargs: dict[str, Any]) -> None:
    theirs = _outcome(lambda: torch.optim.Adafactor([torch.zeros(2, requires_grad=True)], **kwargs))
    ours = _outcome(lambda: optimlab.Adafactor([torch.zeros(2, requires_grad=True)], **kwargs))
    assert theirs[0] == "ValueError" and ours == theirs


def _complex_second_group(cls: type) -> torch.optim.Optimizer:
    ok = torch.randn(3, 2, requires_grad=True)
    bad = torch.randn(2, 3, dtype=torch.complex64, requires_grad=True)
    return cls([{"params": [ok]}, {"params": [bad]}])


def _sparse_grad(cls: type) -> torch.optim.Optimizer:
    p = torch.randn(4, 2, requires_grad=True)
    opt = cls([p])
    p.grad = torch.randn(4, 2).to_sparse()
    return opt


@pytest.mark.parametrize("make", [_complex_second_group, _sparse_grad], ids=["complex", "sparse"])
def test_step_errors_match_torch_and_change_nothing(make: Any) -> None:
    outcomes = []
    for cls in (torch.optim.Adafactor, optimlab.Adafactor):
        opt = make(cls)
        for g in opt.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    p.grad = torch.ones_like(p)
        before = [p.detach().clone() for g in opt.param_groups for p in g["params"]]
        outcomes.append(_outcome(opt.step))
        if cls is optimlab.Adafactor:
            # torch would already have stepped the first group; optimlab checks everything first.
            assert all(torch.equal(a, p) for a, p in zip(before, (p for g in opt.param_groups for p in g["params"])))
            assert all(len(s) == 0 for s in opt.state.values())
    assert outcomes[0][0] == "RuntimeError" and outcomes[1] == outcomes[0]


def test_signature_group_keys_and_defaults_match_torch() -> None:
    def shape(cls: type) -> list[tuple[str, Any, Any]]:
        return [(p.name, p.kind, p.default) for p in inspect.signature(cls.__init__).parameters.values()]

    assert shape(optimlab.Adafactor) == shape(torch.optim.Adafactor)
    ours = optimlab.Adafactor([torch.zeros(2, requires_grad=True)])
    theirs = torch.optim.Adafactor([torch.zeros(2, requires_grad=True)])
    assert list(ours.param_groups[0]) == list(theirs.param_groups[0])
    assert ours.defaults == theirs.defaults
    assert repr(ours) == repr(theirs)


def test_old_checkpoint_is_upgraded_like_torch() -> None:
    """A state_dict from before ``foreach`` existed, with Python-number steps: both load it the same way."""
    params = _params(torch.float32, seed=8)
    source = torch.optim.Adafactor([{"params": params[:3]}, {"params": params[3:]}])
    for p, g in zip(params, random_grads(params, 1)[0]):
        p.grad = g
    source.step()
    old = copy.deepcopy(source.state_dict())
    for group in old["param_groups"]:
        del group["foreach"]
    for state in old["state"].values():
        state["step"] = int(state["step"].item())
    loaded = []
    for cls in (torch.optim.Adafactor, optimlab.Adafactor):
        ps = [p.detach().clone().requires_grad_() for p in params]
        opt = cls([{"params": ps[:3]}, {"params": ps[3:]}])
        opt.load_state_dict(copy.deepcopy(old))
        assert all(g["foreach"] is None for g in opt.param_groups)
        assert all(isinstance(s["step"], torch.Tensor) for s in opt.state.values())
        for p, g in zip(ps, random_grads(ps, 1, seed=9)[0]):
            p.grad = g
        opt.step()
        loaded.append(opt)
    assert_states_same(loaded[0], loaded[1], True, "after upgrade")
    assert repr(loaded[0]) == repr(loaded[1])


def _roundtrip(state_dict: dict[str, Any]) -> dict[str, Any]:
    buf = io.BytesIO()
    torch.save(state_dict, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("source, target", [("torch", "optimlab"), ("optimlab", "torch"), ("optimlab", "optimlab")])
@pytest.mark.parametrize("foreach", [False, True], ids=["forloop", "foreach"])
@pytest.mark.parametrize("lr", [0.02, torch.tensor(0.02)], ids=["float_lr", "tensor_lr"])
def test_state_dict_handover_mid_run(source: str, target: str, foreach: bool, lr: Any) -> None:
    classes = {"torch": torch.optim.Adafactor, "optimlab": optimlab.Adafactor}
    params = _params(torch.float32, seed=5)
    grads = random_grads(params, 7, seed=6, freeze=default_freeze)
    ref_params = [p.detach().clone().requires_grad_() for p in params]
    run_params = [p.detach().clone().requires_grad_() for p in params]

    def groups(ps: list[torch.Tensor]) -> list[dict[str, Any]]:
        return [{"params": ps[:3]}, {"params": ps[3:], "weight_decay": 0.1, "eps": (1e-25, 1e-3)}]

    ref = torch.optim.Adafactor(groups(ref_params), lr=copy.deepcopy(lr), foreach=foreach)
    opt = classes[source](groups(run_params), lr=copy.deepcopy(lr), foreach=foreach)
    for step, gs in enumerate(grads):
        if step == 4:
            saved = _roundtrip(opt.state_dict())
            assert_same(saved, opt.state_dict(), True, "saved state_dict")
            # hyperparameters, foreach included, come from the checkpoint
            opt = classes[target](groups(run_params), lr=0.5, d=3.0, foreach=not foreach)
            opt.load_state_dict(saved)
        for ps in (ref_params, run_params):
            for p, g in zip(ps, gs):
                p.grad = None if g is None else g.clone()
        ref.step()
        opt.step()
        assert_states_same(ref, opt, True, f"step {step}")
