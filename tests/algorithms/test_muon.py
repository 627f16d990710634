"""Muon against torch.optim.Muon beyond torch's optim_db: tall and wide matrices, nesterov on/off, both
``adjust_lr_fn`` options, Tensor lr, bfloat16 parameters, step-time errors, checkpoints both ways; and the
Newton-Schulz iteration's own property (it orthogonalizes)."""

from __future__ import annotations

import copy
import inspect
import io
import math
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import optimlab
from optimlab.algorithms.muon import DEFAULT_NS_COEFFICIENTS, adjust_lr, zeropower_via_newtonschulz
from parity import assert_same, assert_states_same, default_freeze, random_grads, run_differential


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Any:
    # Small bfloat16 matmuls on a loaded 2-core machine (the suite runs with -n 2) are several times slower
    # multi-threaded; torch and optimlab run under the same setting, so parity is unaffected.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


SHAPES = [(7, 3), (3, 7), (5, 5), (16, 2), (1, 6)]  # tall, wide, square, very tall, a single row


def _params(dtype: torch.dtype, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=gen, dtype=torch.float64).to(dtype).requires_grad_() for s in SHAPES]
    params.append(torch.randn(6, 4, generator=gen, dtype=dtype).t().requires_grad_())  # non-contiguous, wide
    return params


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize(
    "nesterov, adjust_lr_fn",
    [(True, None), (False, "original"), (True, "match_rms_adamw"), (False, "match_rms_adamw")],
    ids=["nesterov-default", "heavy_ball-original", "nesterov-match_rms_adamw", "heavy_ball-match_rms_adamw"],
)
def test_shapes_nesterov_adjust_lr_bitwise(dtype: torch.dtype, nesterov: bool, adjust_lr_fn: str | None) -> None:
    params = _params(dtype)
    groups = [{"params": params[:3]}, {"params": params[3:], "lr": 0.05, "momentum": 0.9}]
    kwargs = {"lr": 0.02, "nesterov": nesterov, "adjust_lr_fn": adjust_lr_fn}
    grads = random_grads(params, 5, freeze=default_freeze)
    run_differential(torch.optim.Muon, optimlab.Muon, kwargs, groups, grads)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("lr", [torch.tensor(0.02), torch.tensor([0.03])], ids=["0dim", "1elem"])
@pytest.mark.parametrize("adjust_lr_fn", ["original", "match_rms_adamw"])
def test_tensor_lr_bitwise(dtype: torch.dtype, lr: torch.Tensor, adjust_lr_fn: str) -> None:
    params = _params(dtype, seed=3)
    kwargs = {"lr": lr, "adjust_lr_fn": adjust_lr_fn, "weight_decay": 0.05, "nesterov": False}
    run_differential(torch.optim.Muon, optimlab.Muon, kwargs, [{"params": params}], random_grads(params, 5))


@pytest.mark.parametrize(
    "shape, fn, expected_ratio",
    [
        ((8, 2), None, 2.0),
        ((8, 2), "original", 2.0),
        ((2, 8), "original", 1.0),
        ((8, 2), "match_rms_adamw", 0.2 * math.sqrt(8)),
        ((3, 12), "match_rms_adamw", 0.2 * math.sqrt(12)),
        ((8, 2), "unknown", 1.0),
    ],
)
def test_adjust_lr(shape: tuple[int, int], fn: str | None, expected_ratio: float) -> None:
    assert adjust_lr(0.5, fn, torch.Size(shape)) == pytest.approx(0.5 * expected_ratio, rel=1e-15)


def _conditioned(rows: int, cols: int, cond: float, scale: float, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    k = min(rows, cols)
    u, _ = torch.linalg.qr(torch.randn(rows, k, generator=gen, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(cols, k, generator=gen, dtype=torch.float64))
    s = torch.linspace(1.0 / cond, 1.0, k, dtype=torch.float64)
    return ((u * s * scale) @ v.T).float()


@settings(max_examples=25, deadline=None)
@given(
    rows=st.integers(1, 40),
    cols=st.integers(1, 40),
    cond=st.floats(1.0, 15.0),
    log_scale=st.floats(-4.0, 4.0),
    seed=st.integers(0, 2**16),
)
def test_newtonschulz_orthogonalizes(rows: int, cols: int, cond: float, log_scale: float, seed: int) -> None:
    """Whatever the matrix's scale and orientation, the singular values land near 1 (Jordan et al.: roughly
    in (0.5, 1.5)) with the singular vectors kept."""
    g = _conditioned(rows, cols, cond, 10.0**log_scale, seed)
    out = zeropower_via_newtonschulz(g, DEFAULT_NS_COEFFICIENTS, 5, 1e-7)
    assert out.dtype == torch.bfloat16 and out.shape == g.shape
    sv = torch.linalg.svdvals(out.double())
    assert sv.min().item() > 0.5 and sv.max().item() < 1.3
    # Same singular vectors: the output is aligned with the input, <O, G> = sum of s_i * s'_i > 0.
    assert (out.double() * g.double()).sum().item() > 0


def test_newtonschulz_bfloat16_input_is_worked_on_in_place() -> None:
    # torch's quirk, kept for bitwise parity: with nesterov=False the bfloat16 momentum buffer is normalized in
    # place by the iteration.
    g = torch.randn(4, 3).bfloat16()
    before = g.clone()
    zeropower_via_newtonschulz(g, DEFAULT_NS_COEFFICIENTS, 5, 1e-7)
    assert not torch.equal(g, before)
    f = torch.randn(4, 3)
    f_before = f.clone()
    zeropower_via_newtonschulz(f, DEFAULT_NS_COEFFICIENTS, 5, 1e-7)
    assert torch.equal(f, f_before)


def _outcome(fn: Any) -> tuple[str, str]:
    try:
        fn()
    except Exception as e:
        return type(e).__name__, str(e)
    return "ok", ""


def _matrix(rows: int = 3, cols: int = 4) -> torch.Tensor:
    p = torch.randn(rows, cols, requires_grad=True)
    p.grad = torch.randn(rows, cols)
    return p


def _vector() -> torch.Tensor:
    p = torch.randn(3, requires_grad=True)
    p.grad = torch.randn(3)
    return p


STEP_ERRORS = {
    "ns_steps_100": lambda cls: cls([_matrix()], ns_steps=100),
    "two_coefficients": lambda cls: cls([_matrix()], ns_coefficients=(1.0, 2.0)),
    "vector_added_later": lambda cls: _with_group(cls([_matrix()]), {"params": [_vector()]}),
    "vector_added_later_and_ns_steps": lambda cls: _with_group(cls([_matrix()], ns_steps=120), {"params": [_vector()]}),
    "complex": lambda cls: cls([torch.randn(2, 3, dtype=torch.complex64, requires_grad=True)]),
    "sparse_grad": lambda cls: cls([_sparse_grad_param()]),
}


def _with_group(opt: torch.optim.Optimizer, group: dict[str, Any]) -> torch.optim.Optimizer:
    opt.add_param_group(group)
    return opt


def _sparse_grad_param() -> torch.Tensor:
    p = torch.randn(3, 4, requires_grad=True)
    p.grad = torch.randn(3, 4).to_sparse()
    return p


@pytest.mark.parametrize("case", list(STEP_ERRORS))
def test_step_errors_match_torch_and_change_nothing(case: str) -> None:
    outcomes = []
    for cls in (torch.optim.Muon, optimlab.Muon):
        torch.manual_seed(0)
        opt = STEP_ERRORS[case](cls)
        for g in opt.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    p.grad = torch.ones_like(p)
        before = [p.detach().clone() for g in opt.param_groups for p in g["params"]]
        outcomes.append(_outcome(opt.step))
        if cls is optimlab.Muon:
            after = [p.detach() for g in opt.param_groups for p in g["params"]]
            assert all(torch.equal(a, b) for a, b in zip(before, after))
            assert all(len(s) == 0 for s in opt.state.values())
    assert outcomes[0][0] != "ok"
    assert outcomes[1] == outcomes[0]


@pytest.mark.parametrize(
    "params, kwargs",
    [
        ([torch.zeros(3, requires_grad=True)], {}),
        ([torch.zeros(2, 2, requires_grad=True), torch.zeros(2, 2, 2, requires_grad=True)], {}),
        ([torch.zeros(2, 2, requires_grad=True)], {"adjust_lr_fn": "sqrt"}),
        ([torch.zeros(2, 2, requires_grad=True)], {"lr": -0.1}),
        ([torch.zeros(2, 2, requires_grad=True)], {"momentum": -0.1}),
        ([torch.zeros(2, 2, requires_grad=True)], {"weight_decay": -0.1}),
    ],
    ids=["vector", "3d_second", "adjust_lr_fn", "lr", "momentum", "weight_decay"],
)
def test_construction_errors_match_torch(params: list[torch.Tensor], kwargs: dict[str, Any]) -> None:
    theirs = _outcome(lambda: torch.optim.Muon(copy.deepcopy(params), **kwargs))
    ours = _outcome(lambda: optimlab.Muon(copy.deepcopy(params), **kwargs))
    assert theirs[0] == "ValueError" and ours == theirs


def test_signature_group_keys_and_setstate_match_torch() -> None:
    def shape(cls: type) -> list[tuple[str, Any, Any]]:
        return [(p.name, p.kind, p.default) for p in inspect.signature(cls.__init__).parameters.values()]

    assert shape(optimlab.Muon) == shape(torch.optim.Muon)
    ours = optimlab.Muon([torch.zeros(2, 2, requires_grad=True)])
    theirs = torch.optim.Muon([torch.zeros(2, 2, requires_grad=True)])
    assert list(ours.param_groups[0]) == list(theirs.param_groups[0])
    assert ours.defaults == theirs.defaults
    ours.load_state_dict(theirs.state_dict())
    theirs.load_state_dict(theirs.state_dict())
    assert ours.defaults == theirs.defaults and "differentiable" in ours.defaults
    assert repr(ours) == repr(theirs)


def test_prefilled_state_without_buffer_gets_one() -> None:
    results = []
    for cls in (torch.optim.Muon, optimlab.Muon):
        p = _matrix()
        torch.manual_seed(0)
        p.data.copy_(torch.randn(3, 4))
        p.grad.copy_(torch.randn(3, 4))  # type: ignore[union-attr]
        opt = cls([p])
        opt.state[p]["note"] = 1
        opt.step()
        results.append((p.detach().clone(), list(opt.state[p]), opt.state[p]["momentum_buffer"]))
    assert_same(results[0], results[1], True, "pre-filled state")


def _roundtrip(state_dict: dict[str, Any]) -> dict[str, Any]:
    buf = io.BytesIO()
    torch.save(state_dict, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("source, target", [("torch", "optimlab"), ("optimlab", "torch"), ("optimlab", "optimlab")])
@pytest.mark.parametrize("lr", [0.02, torch.tensor(0.02)], ids=["float_lr", "tensor_lr"])
def test_state_dict_handover_mid_run(source: str, target: str, lr: Any) -> None:
    classes = {"torch": torch.optim.Muon, "optimlab": optimlab.Muon}
    params = _params(torch.float32, seed=5)
    grads = random_grads(params, 7, seed=6, freeze=default_freeze)
    ref_params = [p.detach().clone().requires_grad_() for p in params]
    run_params = [p.detach().clone().requires_grad_() for p in params]

    def groups(ps: list[torch.Tensor]) -> list[dict[str, Any]]:
        return [{"params": ps[:2]}, {"params": ps[2:], "nesterov": False, "adjust_lr_fn": "match_rms_adamw"}]

    ref = torch.optim.Muon(groups(ref_params), lr=copy.deepcopy(lr))
    opt = classes[source](groups(run_params), lr=copy.deepcopy(lr))
    for step, gs in enumerate(grads):
        if step == 4:
            saved = _roundtrip(opt.state_dict())
            assert_same(saved, opt.state_dict(), True, "saved state_dict")
            opt = classes[target](groups(run_params), lr=0.5, momentum=0.1)  # the checkpoint's values win
            opt.load_state_dict(saved)
        for ps in (ref_params, run_params):
            for p, g in zip(ps, gs):
                p.grad = None if g is None else g.clone()
        ref.step()
        opt.step()
        assert_states_same(ref, opt, True, f"step {step}")
