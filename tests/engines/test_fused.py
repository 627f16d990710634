"""The fused engine (``fused=True``) against the default path of the same algorithm.

The math is the same ``_update``; what differs is where it runs: packed flat buffers, one call per segment,
compiled.  So every algorithm is checked over several steps with parameters of every kind the engine handles
(small packed ones, large ones updated in place, a 0-dim one, complex ones) and every kind it must fall back on
(non-contiguous, sparse grads), with a step where nothing has a gradient and a parameter frozen for two steps;
its state_dict must load into the default path and into torch.optim, and back.
"""

from __future__ import annotations

import copy
import itertools
import warnings
from typing import Any

import pytest
import torch
import torch.optim.optimizer as torch_optimizer_module

import optimlab
from optimlab.algorithms._base import ElementwiseOptimizer
from optimlab.engines import flat
from parity import (
    assert_states_same,
    default_freeze,
    random_grads,
    run_differential,
    save_load,
    standard_params,
)

ELEMENTWISE: list[tuple[str, dict[str, Any]]] = [
    ("SGD", {"lr": 0.01}),
    ("SGD", {"lr": 0.01, "momentum": 0.9, "nesterov": True, "weight_decay": 0.1}),
    ("SGD", {"lr": 0.01, "momentum": 0.9, "dampening": 0.3, "maximize": True}),
    ("Adam", {"lr": 0.01}),
    ("Adam", {"lr": 0.01, "amsgrad": True, "weight_decay": 0.1, "maximize": True}),
    ("AdamW", {"lr": torch.tensor(0.01)}),
    ("Adamax", {"lr": 0.01, "weight_decay": 0.1}),
    ("NAdam", {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True}),
    ("RAdam", {"lr": 0.01}),
    ("Adagrad", {"lr": 0.05, "lr_decay": 0.1, "initial_accumulator_value": 0.1}),
    ("Adadelta", {"lr": 1.0, "weight_decay": 0.1}),
    ("RMSprop", {"lr": 0.01, "centered": True, "momentum": 0.5}),
    ("RMSprop", {"lr": 0.01}),
    ("Rprop", {"lr": 0.01}),
    ("ASGD", {"lr": 0.01, "t0": 2}),
]
IDS = [f"{n}-{i}" for i, (n, _) in enumerate(ELEMENTWISE)]


def _groups(dtype: torch.dtype = torch.float32, complex_: bool = False) -> list[dict[str, Any]]:
    """Small packed params, a large one (past flat.SMALL), a 0-dim one and a non-contiguous one, in two groups."""
    params = standard_params(dtype, complex_=complex_)
    gen = torch.Generator().manual_seed(7)
    big = torch.randn(flat.SMALL + 10, generator=gen, dtype=torch.float64)
    if complex_:
        big = torch.complex(big, torch.randn(flat.SMALL + 10, generator=gen, dtype=torch.float64))
    params.append(big.to(dtype).requires_grad_())
    return [{"params": params[:2]}, {"params": params[2:], "lr": 0.005}]


def _fused_vs_default(name: str, kwargs: dict[str, Any], groups: list[dict[str, Any]], steps: int = 6) -> Any:
    params = [p for g in groups for p in g["params"]]
    grads = random_grads(params, steps, freeze=default_freeze)
    cls = getattr(optimlab, name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the non-contiguous param's fallback notice
        return run_differential(
            cls, cls, kwargs, groups, grads, our_kwargs={**kwargs, "fused": True}, exact=False, rtol=1e-4, atol=1e-5
        )


@pytest.fixture
def compile_sync(monkeypatch: pytest.MonkeyPatch) -> None:
    """Wait for kernels to compile instead of running eagerly until they are ready in the background."""
    monkeypatch.setenv("OPTIMLAB_COMPILE", "sync")


@pytest.mark.parametrize("name, kwargs", ELEMENTWISE, ids=IDS)
def test_fused_compiled_matches_default_path(name: str, kwargs: dict[str, Any], compile_sync: None) -> None:
    _fused_vs_default(name, kwargs, _groups())


@pytest.mark.parametrize("name, kwargs", ELEMENTWISE, ids=IDS)
def test_fused_eager_matches_default_path(name: str, kwargs: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """The no-compiler path: same engine, the update run eagerly in cache-sized chunks."""
    monkeypatch.setenv("OPTIMLAB_COMPILE", "0")
    monkeypatch.setattr("optimlab.engines.compiled.CHUNK", 1 << 10)  # so the large param spans many chunks
    _fused_vs_default(name, kwargs, _groups(torch.float64))


@pytest.mark.parametrize(
    "name, mode",
    [(n, "0") for n in ("Adam", "SGD", "RMSprop", "Adadelta", "Rprop")] + [("Adam", "sync"), ("RMSprop", "sync")],
)
def test_fused_complex_params(name: str, mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Complex parameters run as pairs of reals: eagerly, and compiled through the launch driver (rows of real
    elements, gradients read in place as complex tensors)."""
    monkeypatch.setenv("OPTIMLAB_COMPILE", mode)
    kwargs = {"lr": 0.01, "momentum": 0.9} if name == "SGD" else {"lr": 0.01}
    _fused_vs_default(name, kwargs, _groups(torch.complex64))


def test_fused_packs_small_params_and_leaves_large_ones(compile_sync: None) -> None:
    small = [torch.randn(10, 10, requires_grad=True) for _ in range(5)]
    large = torch.randn(flat.SMALL * 2, requires_grad=True)
    values = [p.detach().clone() for p in [*small, large]]
    large_ptr = large.data_ptr()
    opt = optimlab.Adam([*small, large], lr=0.1, fused=True)
    for p in [*small, large]:
        p.grad = torch.ones_like(p)
    opt.step()
    storages = {p.untyped_storage().data_ptr() for p in small}
    assert len(storages) == 1, "small params share one flat buffer"
    assert large.data_ptr() == large_ptr, "a large param keeps its own storage"
    # The model sees its parameters with the values an ordinary step gives.
    ref = torch.optim.Adam([v.clone().requires_grad_() for v in values], lr=0.1)
    for p in ref.param_groups[0]["params"]:
        p.grad = torch.ones_like(p)
    ref.step()
    for a, b in zip(ref.param_groups[0]["params"], [*small, large]):
        torch.testing.assert_close(a, b)
    # Per-parameter state keeps torch's layout (views of the flat state, per-param step counters).
    st = opt.state[small[0]]
    assert list(st) == ["step", "exp_avg", "exp_avg_sq"] and st["exp_avg"].shape == (10, 10)
    assert st["step"].dim() == 0 and st["step"].dtype == torch.float32


def test_fused_state_dict_round_trips_through_default_and_torch(compile_sync: None) -> None:
    """fused optimlab -> default optimlab -> torch.optim -> fused optimlab, continuing each time."""
    groups = _groups()
    params = [p for g in groups for p in g["params"]]
    grads = random_grads(params, 12, freeze=default_freeze)
    kwargs = {"lr": 0.01, "weight_decay": 0.1}

    def fresh(cls: type, sd: dict[str, Any] | None, live: list[torch.Tensor], **extra: Any) -> Any:
        it = iter(live)
        gs = [
            {
                **{k: v for k, v in g.items() if k != "params"},
                "params": [next(it).detach().clone().requires_grad_() for _ in g["params"]],
            }
            for g in groups
        ]
        opt = cls(gs, **kwargs, **extra)
        if sd is not None:
            opt.load_state_dict(sd)
        return opt

    def run(opt: Any, gs_list: list[list[torch.Tensor | None]]) -> None:
        ps = [p for g in opt.param_groups for p in g["params"]]
        for gs in gs_list:
            for p, g in zip(ps, gs):
                p.grad = None if g is None else g.clone()
            opt.step()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        reference = fresh(optimlab.AdamW, None, params)
        run(reference, grads)

        chain = fresh(optimlab.AdamW, None, params, fused=True)
        run(chain, grads[:3])
        for cls, extra in ((optimlab.AdamW, {}), (torch.optim.AdamW, {}), (optimlab.AdamW, {"fused": True})):
            live = [p for g in chain.param_groups for p in g["params"]]
            sd = save_load(chain.state_dict())
            # Hyperparameters come from the checkpoint: choose the path explicitly (torch 2.13's own fused CPU
            # kernel is wrong on the non-contiguous parameter, see tests/test_parity_optim_db.py).
            for g in sd["param_groups"]:
                g["fused"] = extra.get("fused")
            chain = fresh(cls, sd, live, **extra)
            start = {optimlab.AdamW: 3, torch.optim.AdamW: 6}.get(cls, 9) if not extra else 9
            run(chain, grads[start : start + 3])
    assert_states_same(reference, chain, False, "after three hand-overs", rtol=1e-5, atol=1e-6)


def test_fused_reacts_to_load_state_dict_and_rebinding(compile_sync: None) -> None:
    """Replacing the state (load_state_dict) or a parameter's data (p.data = ...) between steps is honoured, for
    packed parameters and for large ones (whose flat operands the engine keeps from step to step)."""
    ps = [torch.randn(4, 4, requires_grad=True) for _ in range(3)] + [torch.randn(flat.SMALL + 5, requires_grad=True)]
    opt = optimlab.Adam(ps, lr=0.1, fused=True)
    ref = optimlab.Adam([p.detach().clone().requires_grad_() for p in ps], lr=0.1)
    pairs = list(zip(ref.param_groups[0]["params"], ps))

    def step(g_seed: int) -> None:
        g = torch.Generator().manual_seed(g_seed)
        for a, b in pairs:
            grad = torch.randn(a.shape, generator=g)
            a.grad, b.grad = grad.clone(), grad.clone()
        ref.step()
        opt.step()

    step(0)
    opt.load_state_dict(copy.deepcopy(ref.state_dict()))
    step(1)
    with torch.no_grad():
        for i in (1, 3):
            new = torch.randn(pairs[i][0].shape)
            pairs[i][0].data = new.clone()
            pairs[i][1].data = new.clone()
    step(2)
    step(3)
    assert_states_same(ref, opt, False, "after load and rebinding", rtol=1e-5, atol=1e-6)
    for a, b in pairs:
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_fused_sparse_grads_fall_back_with_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    from optimlab.engines import compiled

    monkeypatch.setattr(compiled, "_warned", set())  # the notice is given once per process
    emb = [torch.randn(20, 4, requires_grad=True)]
    opt = optimlab.SGD(emb, lr=0.1, momentum=0.9, fused=True)
    ref = optimlab.SGD([emb[0].detach().clone().requires_grad_()], lr=0.1, momentum=0.9)
    grad = torch.sparse_coo_tensor([[1, 3]], torch.ones(2, 4), (20, 4))
    emb[0].grad = grad.clone()
    ref.param_groups[0]["params"][0].grad = grad.clone()
    with pytest.warns(RuntimeWarning, match="sparse"):
        opt.step()
    ref.step()
    assert torch.equal(emb[0], ref.param_groups[0]["params"][0])


@pytest.mark.parametrize(
    "name, kwargs, message",
    [
        ("Adam", {"fused": True, "differentiable": True}, "`fused` does not support `differentiable`"),
        ("NAdam", {"fused": True, "foreach": True}, "`fused` and `foreach` cannot be `True` together."),
    ],
)
def test_fused_flag_conflicts(name: str, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(RuntimeError, match=message):
        getattr(optimlab, name)([torch.randn(2, requires_grad=True)], **kwargs)


def test_fused_rejects_integer_params_like_torch() -> None:
    p = torch.zeros(3, dtype=torch.int64)
    for mod in (torch.optim, optimlab):
        opt = mod.SGD([p], lr=0.1, fused=True)
        p.grad = torch.ones(3, dtype=torch.int64)
        with pytest.raises(RuntimeError, match="`fused=True` requires all the params to be floating point"):
            opt.step()


def test_groups_without_fused_stay_torchs() -> None:
    """The fused keyword added to algorithms torch has no fused for changes nothing unless it is used."""
    p = torch.randn(3, requires_grad=True)
    assert optimlab.NAdam([p]).state_dict()["param_groups"] == torch.optim.NAdam([p]).state_dict()["param_groups"]
    assert "fused" in optimlab.NAdam([p], fused=True).param_groups[0]


@pytest.mark.parametrize(
    "name, kwargs",
    [("AdamW", {}), ("SGD", {"momentum": 0.9}), ("ASGD", {"t0": 3}), ("NAdam", {}), ("RAdam", {}), ("Adagrad", {})],
)
def test_recompiles_do_not_happen_per_step(name: str, kwargs: dict[str, Any], compile_sync: None) -> None:
    """A scheduler changing lr every step, and segments changing size, must not recompile the kernels."""
    counters = torch._dynamo.utils.counters
    ps = [torch.randn(n, requires_grad=True) for n in (10, 20, 30)]
    opt = getattr(optimlab, name)(ps, lr=0.1, fused=True, **kwargs)
    sched = optimlab.lr_scheduler.LambdaLR(opt, lambda e: 1 / (1 + e))
    for _ in range(8):  # past RAdam's rectification threshold and ASGD's t0: every branch has been taken
        for p in ps:
            p.grad = torch.randn_like(p)
        opt.step()
        sched.step()
    before = counters["stats"]["unique_graphs"]
    for i in range(6):
        for j, p in enumerate(ps):
            p.grad = None if (i + j) % 3 == 0 else torch.randn_like(p)  # varying segments and steps
        opt.step()
        sched.step()
    assert counters["stats"]["unique_graphs"] == before


def test_background_compile_runs_eagerly_until_ready(monkeypatch: pytest.MonkeyPatch) -> None:
    """By default the first steps do not wait for the compiler: they run the eager update, then the kernel."""
    from optimlab.engines import compiled

    monkeypatch.setenv("OPTIMLAB_COMPILE", "async")
    used: list[str] = []
    real_chunked = compiled.run_chunked

    def spy(*args: Any) -> None:
        used.append("eager")
        real_chunked(*args)

    monkeypatch.setattr(compiled, "run_chunked", spy)
    # a configuration no other test compiles (kernels are specialised on dtype and branches)
    ps = [torch.randn(100, dtype=torch.float64, requires_grad=True)]
    opt = optimlab.Adamax(ps, lr=0.01, fused=True, weight_decay=0.25, maximize=True)
    ref = optimlab.Adamax([ps[0].detach().clone().requires_grad_()], lr=0.01, weight_decay=0.25, maximize=True)
    for step in range(3):
        grad = torch.randn(100, dtype=torch.float64)
        ps[0].grad, ref.param_groups[0]["params"][0].grad = grad.clone(), grad.clone()
        opt.step()
        ref.step()
        if step == 0:
            assert used == ["eager"]  # did not wait
            assert not compiled._to_start  # the compile was queued during the step and started at its end
            assert compiled.wait_for_compiles(timeout=600)
    assert used == ["eager"]  # the later steps ran the compiled kernel
    torch.testing.assert_close(ps[0], ref.param_groups[0]["params"][0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["sync", "0"])
@pytest.mark.parametrize("set_to_none", [True, False])
def test_fused_training_loop_with_either_zero_grad(
    set_to_none: bool, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real loop (backward, step, zero_grad), matching the default path either way.  Compiled, the kernels read
    the gradients where they are: none is copied or replaced.  Eager (no launcher), gradients are gathered into
    a flat buffer, and with set_to_none=False adopted into it (backward accumulates there; zeroed in bulk)."""
    monkeypatch.setenv("OPTIMLAB_COMPILE", mode)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4))
    twin = copy.deepcopy(model)
    fused = optimlab.Adam(model.parameters(), lr=0.01, fused=True)
    plain = optimlab.Adam(twin.parameters(), lr=0.01)
    gen = torch.Generator().manual_seed(1)
    seen: list[list[int]] = []
    for _ in range(6):
        x, y = torch.randn(5, 8, generator=gen), torch.randn(5, 4, generator=gen)
        for m, opt in ((model, fused), (twin, plain)):
            opt.zero_grad(set_to_none=set_to_none)
            torch.nn.functional.mse_loss(m(x), y).backward()
            opt.step()
        seen.append([id(p.grad) for p in model.parameters()])
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    pk = fused._flat.plans[id(fused.param_groups[0])].packed[0]
    if mode == "sync":
        assert not pk.owns_grads() and pk._grad is None  # no flat gradient buffer at all
        if not set_to_none:
            assert all(ids == seen[0] for ids in seen)  # the user's gradient tensors stay theirs
    else:
        assert pk.owns_grads() == (not set_to_none)  # gradients adopted only when they persist across steps


@pytest.mark.parametrize("mode", ["sync", "0"])
def test_fused_step_is_seen_by_autograd(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A step between forward and backward changes a parameter autograd saved: backward must refuse, as it does
    after torch's for-loop and foreach steps.  (torch 2.13's fused step does not bump the version counters and
    lets backward use the new values silently; the kernels here write the flat buffers and ``detach()``ed views,
    so the engine bumps the parameters' counters itself.)"""
    monkeypatch.setenv("OPTIMLAB_COMPILE", mode)
    big = torch.randn(flat.SMALL + 3, requires_grad=True)  # updated in place by a kernel call of its own
    small = torch.randn(7, requires_grad=True)  # packed
    opt = optimlab.AdamW([big, small], lr=0.1, fused=True)
    for _ in range(2):  # the second step runs the compiled kernel
        (big.square().sum() + small.square().sum()).backward()
        opt.step()
        opt.zero_grad()
    for p in (big, small):
        loss = (p * p).sum()  # saves p for backward
        p.grad = torch.ones_like(p)
        opt.step()
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            loss.backward()
        opt.zero_grad()


def test_compiled_kernels_are_called_without_aotautograd_wrappers(compile_sync: None) -> None:
    """The per-call wrappers cost 20-40 µs; the engine calls the C++ kernel itself, or the generated module's entry
    point where the update creates tensors (SGD's first momentum buffer)."""
    from optimlab.engines import compiled

    ps = [torch.randn(flat.SMALL + 5, requires_grad=True)]
    opt = optimlab.RMSprop(ps, lr=0.01, fused=True, alpha=0.95)
    for _ in range(2):
        ps[0].grad = torch.randn_like(ps[0])
        opt.step()

    def callees(kernel: compiled.Kernel) -> list[str]:
        assert kernel.direct is not None
        return [
            getattr(c.cell_contents, "__name__", "")
            for c in kernel.direct.__closure__ or ()
            if callable(c.cell_contents)
        ]

    key = next(k for k in compiled._kernels if k[0] is optimlab.RMSprop._update)
    assert callees(compiled._kernels[key]) == ["kernel"]  # the C++ function
    for kernel in compiled._kernels.values():  # and every kernel earlier tests compiled
        assert callees(kernel) in (["kernel"], ["call"])


def test_launcher_reads_gradients_in_place(compile_sync: None) -> None:
    """With the launch driver, one call runs the kernel over every small parameter and over every chunk of the
    large ones, reading the gradients where they are: no flat gradient buffer is made, the user's gradient
    tensors are left alone, results match the default path.  A gradient that cannot be read in place (not
    contiguous) sends its run through the gathering path, with the same results."""
    from optimlab.engines import compiled, launch

    torch.manual_seed(0)
    shapes = [(3, 5), (7,), (1,), (40, 30), (2 * launch.CHUNK_ITEMS + 123,), (flat.SMALL + 1,)]
    base = [torch.randn(s) for s in shapes]
    fused_params = [b.clone().requires_grad_() for b in base]
    plain_params = [b.clone().requires_grad_() for b in base]
    fused = optimlab.Adam(fused_params, lr=0.01, weight_decay=0.1, fused=True)
    plain = optimlab.Adam(plain_params, lr=0.01, weight_decay=0.1)
    for step in range(5):
        grads = [torch.randn(s) for s in shapes]
        if step == 3:  # a non-contiguous gradient of a packed parameter: laid out transposed
            grads[3] = torch.randn(30, 40).t()
        for p, q, g in zip(fused_params, plain_params, grads):
            p.grad, q.grad = g, g.clone()
        fused.step()
        plain.step()
        assert all(p.grad is g for p, g in zip(fused_params, grads))
        for p, q in zip(fused_params, plain_params):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert_states_same(plain, fused, exact=False, where="after 5 steps", rtol=1e-5, atol=1e-6)
    key = next(k for k in compiled._kernels if k[0] is optimlab.Adam._update)
    assert compiled._kernels[key].launcher is not None
    plan = fused._flat.plans[id(fused.param_groups[0])]
    assert len(plan.large) == 2
    # only the step with the transposed gradient gathered (one copy of the packed gradients)
    assert plan.packed[0]._grad is not None


def test_launcher_without_non_contiguous_grads_makes_no_gradient_buffer(compile_sync: None) -> None:
    torch.manual_seed(0)
    params = [torch.randn(50, requires_grad=True) for _ in range(20)]
    opt = optimlab.AdamW(params, lr=0.01, fused=True)
    for _ in range(3):
        for p in params:
            p.grad = torch.randn_like(p)
        opt.step()
    assert opt._flat.plans[id(opt.param_groups[0])].packed[0]._grad is None


def test_grad_pointers_in_cpp_and_python_agree() -> None:
    """The C++ helper and its Python stand-in read the same addresses and refuse the same gradients."""
    from optimlab.engines import launch

    launch.wait_for_helper()
    assert launch._helper and launch._helper[0] is not None, "the C++ helper did not build"
    params = [torch.nn.Parameter(torch.randn(4, 3)) for _ in range(6)]
    params[0].grad = torch.randn(4, 3)
    params[1].grad = torch.randn(3, 4).t()  # not contiguous
    params[2].grad = torch.randn(4, 3)[:, :].contiguous()
    params[3].grad = torch.sparse_coo_tensor([[0, 2]], torch.ones(2, 3), (4, 3))  # sparse
    params[5].grad = torch.randn(12)[None].view(4, 3)  # a view: fine
    in_cpp = launch.grad_pointers(params)
    helper = launch._helper[0]
    try:
        launch._helper[0] = None
        in_python = launch.grad_pointers(params)
    finally:
        launch._helper[0] = helper
    assert in_cpp[2:] == in_python[2:] == (1, 2)
    assert torch.equal(in_cpp[0], in_python[0]) and torch.equal(in_cpp[1], in_python[1])
    assert in_cpp[0].tolist() == [
        params[0].grad.data_ptr(),
        -1,
        params[2].grad.data_ptr(),
        -1,
        0,
        params[5].grad.data_ptr(),
    ]
    assert in_cpp[1].tolist() == [p.data_ptr() for p in params]
    before = [p._version for p in params]
    launch.bump(params)
    assert [p._version for p in params] == [v + 1 for v in before]


# ---------------------------------------------------------------------------------------------- the steady path


def _small_params(seed: int = 0, large: bool = False) -> list[torch.Tensor]:
    """Small parameters, one group: a configuration whose steps take the steady path (``flat._Fast``); with
    ``large``, two large parameters (updated in place, not packed) between them, as in a real model."""
    gen = torch.Generator().manual_seed(seed)
    shapes = [(3, 5), (7,), (1,), (40, 30), (6, 2, 2), (11,), (2, 3), (64,), (5, 5), (9,), (3,), (8, 4)]
    if large:
        shapes[1:1] = [(flat.SMALL + 7,)]
        shapes[8:8] = [(300, 260)]
    return [torch.randn(s, generator=gen).requires_grad_() for s in shapes]


class _Counting:
    """Counts the steady path's steps (patched over ``_Fast.run`` and ``_Fast.alone``)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        self.groups: list[int] = []  # id() of the group of each call
        original_run, original_alone = flat._Fast.run, flat._Fast.alone

        def run(fast: Any, *args: Any) -> bool:
            self.calls += 1
            self.groups.append(id(fast.plan.group))
            return original_run(fast, *args)

        def alone(fast: Any, *args: Any) -> bool:  # a one-group optimizer's whole step, when it holds
            done = original_alone(fast, *args)
            if done:
                self.calls += 1
                self.groups.append(id(fast.plan.group))
                self.alone += 1
            return done

        self.alone = 0
        monkeypatch.setattr(flat._Fast, "alone", alone)

        monkeypatch.setattr(flat._Fast, "run", run)


def _steady_expected(name: str, kwargs: dict[str, Any]) -> bool:
    stateless = name == "SGD" and not kwargs.get("momentum")  # no state at all: the general path is as cheap
    return not stateless and not isinstance(kwargs.get("lr"), torch.Tensor)  # a tensor lr is a kernel operand


@pytest.mark.parametrize("large", [False, True], ids=["small", "with-large"])
@pytest.mark.parametrize("name, kwargs", ELEMENTWISE, ids=IDS)
def test_steady_path_matches_default_path(
    name: str, kwargs: dict[str, Any], large: bool, compile_sync: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every algorithm, step by step against the default path, through steady steps, a step where one parameter
    has no gradient (the general path), the step after it (the general path again, which builds the steady path
    anew: that parameter's step counter now differs, so it is a segment of its own) and steady steps after; with
    and without large parameters in the group (one more part of the steady path, their scalar state moved into
    a flat buffer)."""
    counting = _Counting(monkeypatch)
    cls = getattr(optimlab, name)
    base = _small_params(large=large)
    fused_params = [b.detach().clone().requires_grad_() for b in base]
    plain_params = [b.detach().clone().requires_grad_() for b in base]
    fused = cls(fused_params, **{**copy.deepcopy(kwargs), "fused": True})
    plain = cls(plain_params, **copy.deepcopy(kwargs))
    gen = torch.Generator().manual_seed(1)
    skipped = 4 if large else 3  # the small (40, 30) parameter
    for step in range(10):
        for j, (p, q) in enumerate(zip(fused_params, plain_params)):
            g = None if step == 5 and j == skipped else torch.randn(p.shape, generator=gen)
            p.grad, q.grad = g, None if g is None else g.clone()
        fused.step()
        plain.step()
        for p, q in zip(fused_params, plain_params):
            torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)
        assert_states_same(plain, fused, exact=False, where=f"step {step}", rtol=1e-4, atol=1e-5)
    if _steady_expected(name, kwargs):
        # steps 1-4 and 7-9 (SGD: 2-4 and 7-9, its first step creates the momentum buffers)
        assert counting.calls == (6 if name == "SGD" else 7)
        fast = fused._flat.plans[id(fused.param_groups[0])].fast
        # packed 0-2, 3 (one step behind), 4-11; the large ones
        assert fast is not None and len(fast.parts) == (1 if name == "SGD" else 3) + large
        if large and name != "SGD":
            big = [p for p in fused_params if p.numel() >= flat.SMALL]
            steps = [fused.state[p]["step"] for p in big]
            assert all(s.untyped_storage().data_ptr() == steps[0].untyped_storage().data_ptr() for s in steps)
    else:
        assert counting.calls == 0


@pytest.mark.parametrize("large", [False, True], ids=["small", "with-large"])
def test_steady_path_notices_every_change(large: bool, compile_sync: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the steady path keeps must not outlive a change: a replaced state entry, a step counter changed in
    place, a rebound parameter, a static hyperparameter (lr 0, weight decay switched on), a non-contiguous
    gradient, ``load_state_dict``, a second parameter group.  Each is made alike on both optimizers, and results
    must stay the default path's.  With ``large``, the replaced entry and the rebound parameter are large ones."""
    counting = _Counting(monkeypatch)
    base = _small_params(large=large)
    replaced, rebound, odd = (1, 8, 4) if large else (2, 6, 3)
    fused_params = [b.detach().clone().requires_grad_() for b in base]
    plain_params = [b.detach().clone().requires_grad_() for b in base]
    fused = optimlab.NAdam(fused_params, lr=0.01, fused=True)
    plain = optimlab.NAdam(plain_params, lr=0.01)
    extra = [torch.randn(4, requires_grad=True) for _ in range(2)]

    def replace_entry(opt: Any, params: list[torch.Tensor]) -> None:
        opt.state[params[replaced]]["exp_avg"] = torch.full_like(params[replaced], 0.5)

    def step_in_place(opt: Any, params: list[torch.Tensor]) -> None:
        for p in params:
            opt.state[p]["step"].fill_(2.0)

    def rebind(opt: Any, params: list[torch.Tensor]) -> None:
        with torch.no_grad():
            params[rebound].data = params[rebound].data.clone() * 0.5

    def lr_zero(opt: Any, params: list[torch.Tensor]) -> None:
        opt.param_groups[0]["lr"] = 0.0

    def lr_back(opt: Any, params: list[torch.Tensor]) -> None:
        opt.param_groups[0]["lr"] = 0.01
        opt.param_groups[0]["weight_decay"] = 0.1

    def reload(opt: Any, params: list[torch.Tensor]) -> None:
        opt.load_state_dict(save_load(opt.state_dict()))  # its own: the fused flag stays

    def add_group(opt: Any, params: list[torch.Tensor]) -> None:
        opt.add_param_group({"params": [e.detach().clone().requires_grad_() for e in extra], "lr": 0.02})

    events = {3: replace_entry, 5: step_in_place, 7: rebind, 9: lr_zero, 11: lr_back, 13: reload, 15: add_group}
    gen = torch.Generator().manual_seed(2)
    for step in range(20):
        if step in events:
            events[step](fused, fused_params)
            events[step](plain, plain_params)
        all_fused = [p for g in fused.param_groups for p in g["params"]]
        all_plain = [p for g in plain.param_groups for p in g["params"]]
        for j, (p, q) in enumerate(zip(all_fused, all_plain)):
            g = torch.randn(p.shape, generator=gen)
            if step == 17 and j == odd:
                g = torch.randn(tuple(reversed(p.shape)), generator=gen).t()  # not contiguous
            p.grad, q.grad = g, g.clone()
        calls = counting.calls
        fused.step()
        plain.step()
        first = counting.groups[calls:].count(id(fused.param_groups[0]))
        for p, q in zip(all_fused, all_plain):
            torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5, msg=lambda m, step=step: f"step {step}: {m}")
        assert_states_same(plain, fused, exact=False, where=f"step {step}", rtol=1e-4, atol=1e-5)
        # the first group: a step after a change takes the general path (and builds the steady path again); lr 0
        # and weight decay switched on are other kernels, kept beside the first
        # (16: the new group added state; 18: after a step that gathered, not read in place)
        assert first == (0 if step in (0, 3, 5, 7, 13, 16, 17, 18) else 1), step
        if step == 19:
            assert counting.calls == calls + 2, step  # the second group's too


@pytest.mark.parametrize("groups", [1, 2])
def test_steady_path_is_seen_by_autograd(groups: int, compile_sync: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A steady step counts as an in-place change of every parameter (bumped in the C++ pass with one group,
    after the kernel with more), so a backward through a graph saved before it raises, as after torch's
    for-loop and foreach steps."""
    counting = _Counting(monkeypatch)
    params = _small_params()
    split = [params] if groups == 1 else [params[:6], params[6:]]
    opt = optimlab.Adam([{"params": ps} for ps in split], lr=0.01, fused=True)
    for _ in range(4):
        for p in params:
            p.grad = torch.randn_like(p)
        opt.step()
    assert counting.calls >= 2 * groups
    versions = [p._version for p in params]
    loss = sum((p * p).sum() for p in params)
    for p in params:
        p.grad = torch.randn_like(p)
    calls = counting.calls
    opt.step()
    assert counting.calls == calls + groups
    assert all(p._version > v for p, v in zip(params, versions))
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_steady_step_shortcut_keeps_hooks_closures_overrides_and_the_profiler(
    compile_sync: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no step hook registered, ``step()`` of a one-group fused optimizer goes from the step wrapper straight
    to the steady path (``ElementwiseOptimizer._steady_step``), without the usual chain of calls.  Everything
    that chain does must still happen where it matters: hooks (the optimizer's, optimlab's and torch's global
    ones) fire, a closure runs, a subclass's own ``step`` runs, the profiler sees the step's range,
    ``_step_count`` counts; and the numbers are the default path's throughout."""
    counting = _Counting(monkeypatch)
    chain: list[int] = []
    original = ElementwiseOptimizer._eager_step
    monkeypatch.setattr(
        ElementwiseOptimizer,
        "_eager_step",
        lambda self, closure=None: chain.append(1) or original(self, closure),
    )

    class Mine(optimlab.AdamW):
        seen = 0

        def step(self, closure: Any = None) -> Any:
            Mine.seen += 1
            return super().step(closure)

    base = _small_params()
    made = {name: [b.detach().clone().requires_grad_() for b in base] for name in ("fused", "mine", "plain")}
    fused = optimlab.AdamW(made["fused"], lr=0.01, fused=True)
    mine = Mine(made["mine"], lr=0.01, fused=True)
    plain = optimlab.AdamW(made["plain"], lr=0.01)
    gen = torch.Generator().manual_seed(5)
    fired: list[str] = []

    def step_all(closure: bool = False) -> None:
        for ps in zip(*made.values()):
            g = torch.randn(ps[0].shape, generator=gen)
            for p in ps:
                p.grad = g.clone()
        if closure:
            assert fused.step(lambda: fired.append("closure") or 1.5) == 1.5
        else:
            assert fused.step() is None
        mine.step()
        plain.step()
        for p, q, r in zip(*made.values()):
            torch.testing.assert_close(p, r, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(q, r, rtol=1e-4, atol=1e-5)

    for _ in range(3):  # the first step builds the steady path
        step_all()
    chain.clear()
    calls, mine_seen = counting.alone, Mine.seen
    step_all()
    assert counting.alone == calls + 2 and Mine.seen == mine_seen + 1
    assert len(chain) == 2  # Mine's (its own step runs, and from there the usual chain) and plain's, not fused's
    assert fused._step_count == 4

    hooks = [
        fused.register_step_pre_hook(lambda *a: fired.append("pre")),
        fused.register_step_post_hook(lambda *a: fired.append("post")),
    ]
    step_all()
    assert fired == ["pre", "post"]
    for h in hooks:
        h.remove()
    for register in (
        optimlab.optimizer.register_optimizer_step_pre_hook,
        optimlab.optimizer.register_optimizer_step_post_hook,
        torch_optimizer_module.register_optimizer_step_pre_hook,
        torch_optimizer_module.register_optimizer_step_post_hook,
    ):
        fired.clear()
        handle = register(lambda *a: fired.append("global"))
        try:
            step_all()
        finally:
            handle.remove()
        assert fired == ["global"] * 3  # each of the three optimizers
    fired.clear()
    step_all(closure=True)
    assert fired == ["closure"]
    with torch.profiler.profile() as prof:
        step_all()
    assert "Optimizer.step#AdamW.step" in {e.name for e in prof.events()}

    chain.clear()
    calls = counting.alone
    step_all()
    assert counting.alone == calls + 2 and len(chain) == 2
    assert fused._step_count == 12


class _Planned:
    """Counts the steps taken from a plan worked out ahead (``_Fast.plan_ahead``): its cursor advanced, in a
    one-group optimizer's whole step (``_Fast.alone``) or in a group's step after every group's check
    (``_Fast.run``)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.steps = 0
        for name in ("alone", "run"):
            monkeypatch.setattr(flat._Fast, name, self._counting(getattr(flat._Fast, name)))

    def _counting(self, original: Any) -> Any:
        def counted(fast: Any, *args: Any) -> bool:
            ahead = fast.ahead
            cursor = int(ahead[0]) if ahead is not None else None
            done = original(fast, *args)
            if ahead is not None and int(ahead[0]) == cursor + 1:  # type: ignore[operator]
                assert done
                self.steps += 1
            return done

        return counted


def _run_recorded(
    name: str, kwargs: dict[str, Any], steps: int, change: Any = None, large: bool = False, groups: int = 1
) -> list[Any]:
    """Parameters and state after each of ``steps`` fused steps (``change(opt, params, step)`` before each); with
    two groups, the second at half the first's learning rate."""
    cls = getattr(optimlab, name)
    params = _small_params(seed=2, large=large)
    kw = {**copy.deepcopy(kwargs), "fused": True}
    if groups == 1:
        opt = cls(params, **kw)
    else:
        opt = cls([{"params": params[:5]}, {"params": params[5:], "lr": kw.get("lr", 0.01) * 0.5}], **kw)
    gen = torch.Generator().manual_seed(4)
    out = []
    for step in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen)
        if change is not None:
            change(opt, params, step)
        opt.step()
        out.append(([p.detach().clone() for p in params], copy.deepcopy(opt.state_dict()["state"])))
    return out


def _assert_bitwise(a: list[Any], b: list[Any]) -> None:
    for step, ((pa, sa), (pb, sb)) in enumerate(zip(a, b)):
        for x, y in zip(pa, pb):
            assert torch.equal(x, y), step
        assert sa.keys() == sb.keys()
        for i in sa:
            for k, v in sa[i].items():
                assert torch.equal(torch.as_tensor(v), torch.as_tensor(sb[i][k])), (step, i, k)


@pytest.mark.parametrize("large, groups", [(False, 1), (True, 1), (True, 2)], ids=["small", "with-large", "two-groups"])
@pytest.mark.parametrize("name, kwargs", ELEMENTWISE, ids=IDS)
def test_planned_steps_match_the_usual_steady_path_bitwise(
    name: str, kwargs: dict[str, Any], large: bool, groups: int, compile_sync: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Steps whose scalars were worked out ahead give bitwise the parameters and state of the usual steady steps,
    through plans used up and made again (4 steps each here), RAdam's change of regime at step 6, ASGD's
    ``_finish``, and a learning-rate change half-way (the plan made before it is not used after it); with and
    without large parameters (their own part, their scalar state in a flat buffer of its own), and with two
    groups (each planned on its own, run after every group's check)."""

    def new_lr(opt: Any, params: Any, step: int) -> None:
        if step == 9:
            opt.param_groups[0]["lr"] *= 0.5

    with monkeypatch.context() as m:
        m.setattr(flat._Fast, "plan_ahead", lambda *args: None)
        usual = _run_recorded(name, kwargs, 16, new_lr, large, groups)
    monkeypatch.setattr(flat._Fast, "AHEAD", 4)
    planned = _Planned(monkeypatch)
    ahead = _run_recorded(name, kwargs, 16, new_lr, large, groups)
    _assert_bitwise(usual, ahead)
    if _steady_expected(name, kwargs):
        assert planned.steps >= 6
    else:
        assert planned.steps == 0


def test_planned_steps_notice_every_change(compile_sync: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A plan is made after two steady steps with the same hyperparameters and used while nothing changes (a
    hyperparameter set again to the value it had included); a change of the group, of a step counter in place,
    or of a gradient (missing) stops it, and the usual path takes the step with the new values.  Results follow
    the default path throughout."""
    planned = _Planned(monkeypatch)
    base = _small_params(seed=3)
    fused_params = [b.detach().clone().requires_grad_() for b in base]
    plain_params = [b.detach().clone().requires_grad_() for b in base]
    fused = optimlab.Adam(fused_params, lr=0.01, fused=True)
    plain = optimlab.Adam(plain_params, lr=0.01)
    gen = torch.Generator().manual_seed(6)

    def step(expect_planned: bool, grads: bool = True) -> None:
        for j, (p, q) in enumerate(zip(fused_params, plain_params)):
            g = None if not grads and j == 2 else torch.randn(p.shape, generator=gen)
            p.grad, q.grad = g, None if g is None else g.clone()
        before = planned.steps
        fused.step()
        plain.step()
        assert planned.steps == before + expect_planned
        for p, q in zip(fused_params, plain_params):
            torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)
        assert_states_same(plain, fused, exact=False, where="planned", rtol=1e-4, atol=1e-5)

    for expect in (False, False, False, True, True):  # 1: general; 2, 3: steady (3 plans); 4, 5: planned
        step(expect)
    for opt in (fused, plain):
        opt.param_groups[0]["lr"] = 0.02
    step(False)  # the group changed: the usual steady step, with the new lr
    step(False)  # a second step with the same group: plans again
    step(True)
    for opt in (fused, plain):
        opt.param_groups[0]["lr"] = 0.02  # the same value again, as a scheduler sets it every step
    step(True)  # the group's version tag moved, its values did not: the plan goes on
    for opt, params in ((fused, fused_params), (plain, plain_params)):
        opt.state[params[0]]["step"].fill_(2.0)  # in place: a view of the flat scalar buffer (its counter moves)
    step(False)  # the general path (the state changed), then steady steps, then planned ones
    step(False)
    step(False)
    step(True)
    step(False, grads=False)  # a missing gradient: the check fails, the general path takes the step


@pytest.mark.parametrize("scheduler", ["torch-StepLR", "optimlab-StepLR", "torch-LambdaLR"])
def test_plans_go_on_under_a_scheduler_that_keeps_lr(
    scheduler: str, compile_sync: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scheduler stepped every iteration sets ``lr`` every step, to a new value every 6 steps (StepLR: the
    same float object in between; LambdaLR: an equal new one): planned steps in between, the usual steady path
    at each change; the same numbers as the default path."""
    planned = _Planned(monkeypatch)
    package, kind = scheduler.split("-")
    module = (torch.optim if package == "torch" else optimlab).lr_scheduler

    def step_lr(opt: Any, step_size: int, gamma: float) -> Any:
        if kind == "StepLR":
            return module.StepLR(opt, step_size=step_size, gamma=gamma)
        return module.LambdaLR(opt, lambda epoch: gamma ** (epoch // step_size))

    base = _small_params(seed=8)
    fused_params = [b.detach().clone().requires_grad_() for b in base]
    plain_params = [b.detach().clone().requires_grad_() for b in base]
    fused = optimlab.AdamW(fused_params, lr=0.01, fused=True)
    plain = optimlab.AdamW(plain_params, lr=0.01)
    schedulers = [step_lr(opt, step_size=6, gamma=0.5) for opt in (fused, plain)]
    gen = torch.Generator().manual_seed(9)
    for _ in range(24):
        for p, q in zip(fused_params, plain_params):
            p.grad = torch.randn(p.shape, generator=gen)
            q.grad = p.grad.clone()
        fused.step()
        plain.step()
        for s in schedulers:
            s.step()
        for p, q in zip(fused_params, plain_params):
            torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)
    assert_states_same(plain, fused, exact=False, where="after 24 steps", rtol=1e-4, atol=1e-5)
    assert fused.param_groups[0]["lr"] == 0.01 * 0.5**4
    assert planned.steps >= 10  # of 24: not the first three, nor two steps at each of the 3 changes


def test_a_group_with_a_mutable_value_is_not_planned(compile_sync: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """betas as a list could change in place without the group's version tag moving: steady steps, never
    planned ones."""
    counting = _Counting(monkeypatch)
    planned = _Planned(monkeypatch)
    params = _small_params(seed=5)
    opt = optimlab.Adam(params, lr=0.01, fused=True)
    opt.param_groups[0]["betas"] = [0.8, 0.99]  # the constructor makes it a tuple, as torch's does
    for _ in range(8):
        for p in params:
            p.grad = torch.randn_like(p)
        opt.step()
    assert counting.alone == 7 and planned.steps == 0


@pytest.mark.parametrize("name", ["Adam", "NAdam", "ASGD", "Adagrad"])
def test_steady_path_over_many_parameters(name: str, compile_sync: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """600 parameters: the C++ check runs on every thread (from 512 up), each through its own share; a gradient
    missing or not readable in place in the second share is found, and nothing is changed before the general
    path takes the step."""
    counting = _Counting(monkeypatch)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        _many_parameters(name, counting)
    finally:
        torch.set_num_threads(threads)


def _many_parameters(name: str, counting: _Counting) -> None:
    gen = torch.Generator().manual_seed(3)
    base = [torch.randn(5 + i % 7, generator=gen) for i in range(600)]
    fused_params = [b.clone().requires_grad_() for b in base]
    plain_params = [b.clone().requires_grad_() for b in base]
    fused = getattr(optimlab, name)(fused_params, lr=0.01, fused=True)
    plain = getattr(optimlab, name)(plain_params, lr=0.01)
    for step in range(8):
        for j, (p, q) in enumerate(zip(fused_params, plain_params)):
            g = torch.randn(p.shape, generator=gen)
            if step == 4 and j == 550:
                g = torch.randn(2 * p.numel(), generator=gen)[::2]  # not contiguous
            p.grad, q.grad = g, g.clone()
        calls = counting.alone
        fused.step()
        plain.step()
        assert counting.alone == calls + (0 if step in (0, 4, 5) else 1), step  # 5: builds it again
        for p, q in zip(fused_params, plain_params):
            torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)
        assert_states_same(plain, fused, exact=False, where=f"step {step}", rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_scalar_slots_round_like_tensors(dtype: torch.dtype) -> None:
    """``ScalarSlot`` arithmetic (what ``_scalars`` does to ``step``, ``mu_product``...) against the same ops on
    a 0-dim tensor of the buffer's dtype, bitwise."""
    import ctypes

    from optimlab.optimizer import ScalarSlot, _get_value

    cell_type = ctypes.c_float if dtype == torch.float32 else ctypes.c_double
    buf = torch.tensor([0.3, 7.0], dtype=dtype)
    slot = ScalarSlot(cell_type.from_address(buf.data_ptr()), lambda x: cell_type(x).value)
    ref = torch.tensor(0.3, dtype=dtype)
    gen = torch.Generator().manual_seed(4)
    for k in range(200):
        factor = float(torch.rand((), generator=gen, dtype=torch.float64)) * 0.2 + 0.9
        slot *= factor
        ref *= factor
        slot += 1 if k % 2 else factor
        ref += 1 if k % 2 else factor
        assert buf[0].item() == ref.item() == _get_value(slot) == float(slot)
    slot.copy_(torch.tensor(0.125, dtype=dtype))
    assert buf.tolist() == [0.125, 7.0]


@pytest.mark.parametrize("name", ["Adam", "RMSprop", "NAdam"])
def test_steady_path_complex_params(name: str, compile_sync: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Complex small parameters on the steady path: rows of real elements, gradients read in place as complex."""
    counting = _Counting(monkeypatch)
    gen = torch.Generator().manual_seed(5)
    base = [torch.randn(5 + i, dtype=torch.complex64, generator=gen) for i in range(10)]
    fused_params = [b.clone().requires_grad_() for b in base]
    plain_params = [b.clone().requires_grad_() for b in base]
    fused = getattr(optimlab, name)(fused_params, lr=0.01, fused=True)
    plain = getattr(optimlab, name)(plain_params, lr=0.01)
    for _ in range(6):
        for p, q in zip(fused_params, plain_params):
            g = torch.randn(p.shape, dtype=p.dtype, generator=gen)
            p.grad, q.grad = g, g.clone()
        fused.step()
        plain.step()
        for p, q in zip(fused_params, plain_params):
            torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)
    assert counting.alone == 5
    assert_states_same(plain, fused, exact=False, where="after 6 steps", rtol=1e-4, atol=1e-5)


def test_compiled_step_runs_the_fused_engine_eagerly(tmp_path: Any) -> None:
    """``torch.compile`` of code that calls a fused ``step()``: Dynamo breaks the graph at the step and runs it
    eagerly in one piece (the engine's C++ calls are opaque to it), without tracing warnings, on the steady path,
    with the default path's results.  In a fresh process: Dynamo's state outlives a test."""
    import subprocess
    import sys

    script = tmp_path / "compiled_step.py"
    script.write_text(
        """
import os, warnings
os.environ["OPTIMLAB_COMPILE"] = "sync"
import torch, optimlab
from optimlab.engines import flat
calls = []
original = flat._Fast.alone
flat._Fast.alone = lambda fast, *a: calls.append(1) or original(fast, *a)
gen = torch.Generator().manual_seed(6)
base = [torch.randn(5 + i, generator=gen) for i in range(12)]
fused_params = [b.clone().requires_grad_() for b in base]
plain_params = [b.clone().requires_grad_() for b in base]
fused = optimlab.Adam(fused_params, lr=0.01, fused=True)
plain = optimlab.Adam(plain_params, lr=0.01)

@torch.compile(backend="eager")
def step():
    fused.step()

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    for _ in range(4):
        for p, q in zip(fused_params, plain_params):
            g = torch.randn(p.shape, generator=gen)
            p.grad, q.grad = g, g.clone()
        step()
        plain.step()
assert not [w for w in caught if "Dynamo" in str(w.message)], [str(w.message)[:200] for w in caught]
assert len(calls) == 3, calls  # the steady path, as without torch.compile
for p, q in zip(fused_params, plain_params):
    torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)
print("ok")
"""
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


def test_packing_returns_the_old_storages_to_the_os(monkeypatch: pytest.MonkeyPatch) -> None:
    """Packing frees every small parameter's old storage; a megabyte or more of them is handed back to the OS
    (glibc keeps freed small blocks otherwise, and the process would hold two copies of those parameters)."""
    import platform

    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert flat._malloc_trim() is not None
    calls: list[int] = []
    monkeypatch.setattr(flat, "_release_freed_memory", lambda: calls.append(1))
    few = [torch.zeros(16, requires_grad=True) for _ in range(4)]
    many = [torch.zeros(1024, requires_grad=True) for _ in range(300)]  # 1.2 MB
    for ps, expected in ((few, 0), (many, 1)):
        calls.clear()
        for p in ps:
            p.grad = torch.ones_like(p)
        optimlab.SGD(ps, lr=0.1, fused=True).step()
        assert len(calls) == expected
        assert all(p.untyped_storage().data_ptr() == ps[0].untyped_storage().data_ptr() for p in ps)


@pytest.mark.parametrize("name", ["Adam", "ASGD", "SGD"])
def test_steady_path_while_a_new_kernel_is_not_ready(
    name: str, compile_sync: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two groups, the first with large parameters, on their steady paths; then a static hyperparameter
    changes (lr 0) while no kernel can be compiled for it: each part of the steady step runs the general way
    with the scalars it has already worked out (no part advances twice), and results stay the default path's."""
    kwargs: dict[str, Any] = {"lr": 0.01, "momentum": 0.9} if name == "SGD" else {"lr": 0.01}
    cls = getattr(optimlab, name)
    counting = _Counting(monkeypatch)
    base = [_small_params(0, large=True), _small_params(1)[:4]]
    fused_groups = [[b.detach().clone().requires_grad_() for b in g] for g in base]
    plain_groups = [[b.detach().clone().requires_grad_() for b in g] for g in base]
    fused = cls([{"params": g} for g in fused_groups], fused=True, **kwargs)
    plain = cls([{"params": g} for g in plain_groups], **kwargs)
    batches: list[int] = []
    apply_batch = flat.FlatPlan._apply_batch
    monkeypatch.setattr(flat.FlatPlan, "_apply_batch", lambda *a: batches.append(1) or apply_batch(*a))
    gen = torch.Generator().manual_seed(3)
    for step in range(6):
        if step == 3:
            monkeypatch.setenv("OPTIMLAB_COMPILE", "0")
            for opt in (fused, plain):
                opt.param_groups[0]["lr"] = 0.0
        for p, q in zip(itertools.chain(*fused_groups), itertools.chain(*plain_groups)):
            g = torch.randn(p.shape, generator=gen)
            p.grad, q.grad = g, g.clone()
        calls = counting.calls
        batches.clear()
        fused.step()
        plain.step()
        for p, q in zip(itertools.chain(*fused_groups), itertools.chain(*plain_groups)):
            torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5, msg=lambda m, step=step: f"step {step}: {m}")
        assert_states_same(plain, fused, exact=False, where=f"step {step}", rtol=1e-4, atol=1e-5)
        if step == 2:
            assert counting.calls == calls + 2 and not batches  # both groups steady
        if step == 3:
            assert counting.calls == calls + 2  # both tried; the first ran its parts the general way
            assert len(batches) == 1  # its large part too, with the scalars the steady step worked out
            assert fused._flat.plans[id(fused.param_groups[0])].fast is None


@pytest.mark.parametrize("only_large", [False, True], ids=["mixed", "only-large"])
def test_steady_state_with_large_params_hands_over(
    only_large: bool, compile_sync: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A group with large parameters on the steady path (their ``step`` entries views of one flat buffer): its
    state_dict, through a checkpoint, continues in torch.optim and on the default path exactly as the fused
    optimizer continues itself."""
    counting = _Counting(monkeypatch)
    params = _small_params(large=True)
    if only_large:
        params = [p for p in params if p.numel() >= flat.SMALL]
    fused = optimlab.Adam(params, lr=0.01, fused=True)
    gen = torch.Generator().manual_seed(4)

    def grads() -> list[torch.Tensor]:
        return [torch.randn(p.shape, generator=gen) for p in params]

    for _ in range(4):
        for p, g in zip(params, grads()):
            p.grad = g
        fused.step()
    assert counting.alone == 3
    saved = save_load(fused.state_dict())
    others = []
    for cls in (torch.optim.Adam, optimlab.Adam):
        copies = [p.detach().clone().requires_grad_() for p in params]
        opt = cls(copies, lr=0.01)
        opt.load_state_dict(copy.deepcopy(saved))
        opt.param_groups[0]["fused"] = None  # the saved group says fused: continue on the default path
        others.append((opt, copies))
    for _ in range(3):
        gs = grads()
        for p, g in zip(params, gs):
            p.grad = g.clone()
        fused.step()
        for opt, copies in others:
            for p, g in zip(copies, gs):
                p.grad = g.clone()
            opt.step()
    assert counting.alone == 6
    for opt, copies in others:
        for p, q in zip(params, copies):
            torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)
        assert_states_same(opt, fused, exact=False, where=type(opt).__module__, rtol=1e-4, atol=1e-5)


def test_a_background_compile_leaves_other_threads_not_compiling(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch sets ``is_compiling()`` process-wide for a compile session.  Ours run in a thread of their own while
    training goes on: the training thread must not see it (its code, and torch.optim's, branch on it: RAdam with
    foreach=True failed with a list mixing tensors and floats)."""
    import threading
    import time

    from torch._dynamo.callback import callback_handler

    from optimlab.engines import compiled

    monkeypatch.setenv("OPTIMLAB_COMPILE", "async")
    monkeypatch.setattr(compiled, "_kernels", {})  # compile afresh (Inductor's disk cache keeps it quick)
    monkeypatch.setattr(compiled, "_failed", set())
    in_session = threading.Event()

    def started(args: Any) -> None:
        if threading.current_thread() is not threading.main_thread():
            in_session.set()

    def ended(args: Any) -> None:
        in_session.clear()

    callback_handler.register_start_callback(started)
    callback_handler.register_end_callback(ended)
    try:
        p = torch.randn(64, requires_grad=True)
        p.grad = torch.randn(64)
        optimlab.RAdam([p], fused=True).step()  # queues the compile and starts it at the step's end
        seen_in_session = []
        deadline = time.monotonic() + 600
        while compiled._pending and time.monotonic() < deadline:
            if in_session.is_set():
                seen_in_session.append(torch.compiler.is_compiling())
            time.sleep(0.0005)
        assert compiled.wait_for_compiles(timeout=600)
    finally:
        callback_handler.remove_start_callback(started)
        callback_handler.remove_end_callback(ended)
    assert seen_in_session, "never looked while the compile session ran"
    assert not any(seen_in_session)
    assert not torch.compiler.is_compiling()
    # a session of any other thread (the user's torch.compile) still sets it, as torch does
    flags: list[bool] = []

    def backend(gm: torch.fx.GraphModule, inputs: list[Any]) -> Any:
        flags.append(torch.compiler.is_compiling())  # real Python inside the session, not traced
        return gm

    torch.compile(lambda x: x + 1, backend=backend)(torch.zeros(1))
    assert flags == [True]
