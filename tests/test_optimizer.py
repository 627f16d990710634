"""optimlab.Optimizer's own behaviour, each checked against torch.optim.Optimizer doing the same thing."""

from __future__ import annotations

import copy
import inspect
import pickle
import warnings
from typing import Any

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook as torch_register_pre_hook

import optimlab
from optimlab.optimizer import Optimizer
from parity import assert_same


def _params(n: int = 3, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(4, 3, generator=g).requires_grad_() for _ in range(n)]


def _twins(fn: Any) -> tuple[Any, Any]:
    """Run ``fn(module)`` with torch.optim and with optimlab; return both outcomes (value or exception)."""
    out = []
    for mod in (torch.optim, optimlab):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                value = ("ok", fn(mod))
            except Exception as e:
                value = ("raise", type(e), str(e))
        out.append((value, [(w.category, str(w.message)) for w in caught]))
    return out[0], out[1]


# ------------------------------------------------------------------------------------------------ identity


def test_is_a_torch_optimizer_with_none_of_torchs_methods() -> None:
    opt = optimlab.SGD(_params(), lr=0.1)
    assert isinstance(opt, torch.optim.Optimizer)
    assert isinstance(opt, Optimizer)
    # Every method torch's base defines is redefined by ours: nothing is inherited from torch.optim.
    for name, value in vars(torch.optim.Optimizer).items():
        if inspect.isfunction(value) or isinstance(value, staticmethod | classmethod | property):
            if name in ("__init_subclass__", "__subclasshook__", "__class_getitem__"):
                continue
            assert name in vars(Optimizer), f"optimlab.Optimizer does not define {name}"


@pytest.mark.parametrize(
    "params, kwargs",
    [
        (lambda: torch.randn(3, requires_grad=True), {}),
        (lambda: [], {}),
        (lambda: [1.0], {}),
        (lambda: [torch.randn(3, requires_grad=True) * 2], {}),
        (lambda: [{"params": {torch.randn(3, requires_grad=True)}}], {}),
        (lambda: [("w", torch.randn(3, requires_grad=True)), torch.randn(3, requires_grad=True)], {}),
        (lambda: [{"lr": 0.1}], {}),
        (lambda: ["not a group"], {}),
    ],
    ids=["tensor", "empty", "float", "non-leaf", "set-in-group", "names-missing", "no-params-key", "str"],
)
def test_construction_errors_match_torch(params: Any, kwargs: dict[str, Any]) -> None:
    ref, ours = _twins(lambda m: m.SGD(params(), lr=0.1, **kwargs) and None)
    assert ref == ours


def test_top_level_set_accepted_and_duplicates_warn_as_torch() -> None:
    p = torch.randn(3, requires_grad=True)
    ref, ours = _twins(lambda m: len(m.SGD({p}, lr=0.1).param_groups[0]["params"]))
    assert ref == ours and ref[0] == ("ok", 1)
    ref, ours = _twins(lambda m: m.SGD([p, p], lr=0.1) and None)
    assert ref == ours and ref[1] and "duplicate parameters" in ref[1][0][1]


def test_add_param_group_errors_and_key_order() -> None:
    for mod in (torch.optim, optimlab):
        ps = _params()
        opt = mod.Adam(ps[:1], lr=0.1)
        opt.add_param_group({"params": ps[1], "lr": 0.01})
        assert list(opt.param_groups[1]) == [
            "params",
            "lr",
            "betas",
            "eps",
            "weight_decay",
            "amsgrad",
            "maximize",
            "foreach",
            "capturable",
            "differentiable",
            "fused",
            "decoupled_weight_decay",
        ]
    ps = _params()

    def overlap(m: Any) -> None:
        opt = m.SGD(ps[:2], lr=0.1)
        before = copy.copy(opt.param_groups)
        try:
            opt.add_param_group({"params": [ps[1], ps[2]]})
        finally:
            assert opt.param_groups == before  # unchanged on error

    ref, ours = _twins(overlap)
    assert ref == ours and ref[0][0] == "raise"
    ref, ours = _twins(lambda m: m.SGD(ps[:1], lr=0.1).add_param_group([ps[1]]))
    assert ref == ours
    ref, ours = _twins(lambda m: m.SGD([("a", ps[0])], lr=0.1).add_param_group({"params": [ps[1]]}))
    assert ref == ours and "with/without names" in ref[0][2]


def test_required_hyperparameter() -> None:
    class Custom(Optimizer):
        def __init__(self, params: Any) -> None:
            super().__init__(params, {"lr": optimlab.optimizer.required})

        def step(self, closure: Any = None) -> None:
            return None

    with pytest.raises(ValueError, match="didn't specify a value of required optimization parameter lr"):
        Custom(_params())
    assert repr(optimlab.optimizer.required) == "<required parameter>"


def test_named_parameters_and_state_dict_names() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))
    ref = torch.optim.Adam(model.named_parameters())
    ours = optimlab.Adam(model.named_parameters())
    assert ours.param_groups[0]["param_names"] == ["0.weight", "0.bias", "1.weight", "1.bias"]
    assert repr(ref) == repr(ours)
    assert ref.state_dict()["param_groups"] == ours.state_dict()["param_groups"]


def test_repr_two_groups_tensor_lr() -> None:
    def build(m: Any) -> str:
        ps = _params()
        return repr(m.Adam([{"params": ps[:2]}, {"params": ps[2:], "lr": torch.tensor(0.5)}], lr=0.1))

    ref, ours = _twins(build)
    assert ref == ours


# ------------------------------------------------------------------------------------------------ zero_grad


@pytest.mark.parametrize("set_to_none", [True, False])
@pytest.mark.parametrize("foreach", [None, True])
def test_zero_grad(set_to_none: bool, foreach: bool | None) -> None:
    ps = _params()
    opt = optimlab.SGD(ps, lr=0.1, foreach=foreach)
    for p in ps[:2]:
        p.grad = torch.ones_like(p)
    ps[1].grad.requires_grad_(True)
    opt.zero_grad(set_to_none=set_to_none)
    for p in ps[:2]:
        if set_to_none:
            assert p.grad is None
        else:
            assert p.grad is not None and not p.grad.requires_grad and torch.count_nonzero(p.grad) == 0
    assert ps[2].grad is None


# ------------------------------------------------------------------------------------------------ hooks


def test_step_hooks_order_with_both_global_registries() -> None:
    calls: list[str] = []
    handles = [
        torch_register_pre_hook(lambda *a: calls.append("torch_global_pre")),
        optimlab.register_optimizer_step_pre_hook(lambda *a: calls.append("global_pre")),
        optimlab.register_optimizer_step_post_hook(lambda *a: calls.append("global_post")),
    ]
    try:
        opt = optimlab.SGD(_params(), lr=0.1)
        handles.append(opt.register_step_pre_hook(lambda *a: calls.append("pre")))
        handles.append(opt.register_step_post_hook(lambda *a: calls.append("post")))
        opt.step()
        assert calls == ["torch_global_pre", "global_pre", "pre", "post", "global_post"]
    finally:
        for h in handles:
            h.remove()
    calls.clear()
    opt.step()
    assert calls == []


def test_pre_hook_can_replace_args_and_bad_return_is_an_error() -> None:
    ps = _params()
    opt = optimlab.SGD(ps, lr=0.1)
    seen: list[Any] = []

    def closure() -> torch.Tensor:
        seen.append("closure")
        return torch.tensor(1.0)

    h = opt.register_step_pre_hook(lambda o, args, kwargs: (args, {"closure": closure}))
    assert opt.step().item() == 1.0 and seen == ["closure"]
    h.remove()
    opt.register_step_pre_hook(lambda o, args, kwargs: 3)
    with pytest.raises(RuntimeError, match=r"must return None or a tuple of \(new_args, new_kwargs\), but got 3"):
        opt.step()


def test_state_dict_and_load_hooks_with_prepend() -> None:
    order: list[str] = []
    opt = optimlab.SGD(_params(), lr=0.1, momentum=0.9)
    opt.register_state_dict_pre_hook(lambda o: order.append("pre1"))
    opt.register_state_dict_pre_hook(lambda o: order.append("pre0"), prepend=True)

    def post(o: Any, sd: dict[str, Any]) -> dict[str, Any]:
        order.append("post")
        sd["extra"] = 1
        return sd

    opt.register_state_dict_post_hook(post)
    sd = opt.state_dict()
    assert order == ["pre0", "pre1", "post"] and sd["extra"] == 1

    loaded: list[str] = []

    def load_pre(o: Any, sd: dict[str, Any]) -> dict[str, Any]:
        loaded.append("pre")
        sd = dict(sd)
        sd["param_groups"] = [dict(g, lr=0.5) for g in sd["param_groups"]]
        return sd

    opt.register_load_state_dict_pre_hook(load_pre)
    opt.register_load_state_dict_post_hook(lambda o: loaded.append(f"post lr={o.param_groups[0]['lr']}"))
    opt.load_state_dict(sd)
    assert loaded == ["pre", "post lr=0.5"]


# ------------------------------------------------------------------------------------------------ step count


def test_step_count_counts_completed_steps_once() -> None:
    ps = _params()
    opt = optimlab.Adam(ps)
    assert opt._step_count == 0
    for p in ps:
        p.grad = torch.ones_like(p)
    opt.step()
    opt.step()
    assert opt._step_count == 2

    ps[1].grad = ps[1].grad.to_sparse()
    with pytest.raises(RuntimeError):
        opt.step()
    assert opt._step_count == 2  # a failed step is not a completed one

    class Wrapped(optimlab.SGD):
        def step(self, closure: Any = None) -> Any:  # calls the hooked parent step
            return super().step(closure)

    calls: list[int] = []
    w = Wrapped(_params(), lr=0.1)
    w.register_step_post_hook(lambda *a: calls.append(1))
    w.step()
    assert w._step_count == 1 and calls == [1]
    assert "_step_count" not in str(w.state_dict())


def test_failed_step_changes_nothing() -> None:
    ps = _params()
    opt = optimlab.Adam(ps, lr=0.1)
    for p in ps:
        p.grad = torch.ones_like(p)
    ps[2].grad = ps[2].grad.to_sparse()
    before = [p.detach().clone() for p in ps]
    with pytest.raises(RuntimeError, match="Adam does not support sparse gradients"):
        opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before, ps))
    assert len(opt.state) == 0


# ------------------------------------------------------------------------------------------------ pickling


def test_deepcopy_and_pickle_keep_public_attributes_and_state() -> None:
    ps = _params()
    opt = optimlab.SGD(ps, lr=0.1, momentum=0.9)
    opt.register_step_pre_hook(lambda *a: None)
    for p in ps:
        p.grad = torch.ones_like(p)
    opt.step()
    for clone in (copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))):
        assert {k for k in vars(opt) if not k.startswith("_")} == {k for k in vars(clone) if not k.startswith("_")}
        assert clone._step_count == 1
        assert len(clone._optimizer_step_pre_hooks) == 0
        assert_same(opt.state_dict(), clone.state_dict(), True, "deepcopy")


# ------------------------------------------------------------------------------------------------ state dicts


def _stepped(mod: Any, cls: str = "Adam", steps: int = 2, **kw: Any) -> torch.optim.Optimizer:
    ps = _params()
    opt = getattr(mod, cls)([{"params": ps[:2]}, {"params": ps[2:], "lr": 0.01}], **kw)
    g = torch.Generator().manual_seed(5)
    for _ in range(steps):
        for p in ps:
            p.grad = torch.randn(p.shape, generator=g)
        opt.step()
    return opt


def test_state_dict_format_and_aliasing_match_torch() -> None:
    ref, ours = _stepped(torch.optim), _stepped(optimlab)
    assert_same(ref.state_dict(), ours.state_dict(), True, "state_dict")
    # torch 2.13 returns the live state (no copies); so do we.
    sd = ours.state_dict()
    p0 = ours.param_groups[0]["params"][0]
    assert sd["state"][0] is ours.state[p0]
    assert sd["param_groups"][0]["betas"] is ours.param_groups[0]["betas"]


def test_state_dict_repeated_param_ids() -> None:
    # a parameter seen twice keeps its first id (pytorch issue #36831)
    for mod in (torch.optim, optimlab):
        opt = mod.SGD(_params(), lr=0.1)
        opt.param_groups.extend(opt.param_groups)
        assert opt.state_dict()["param_groups"][-1]["params"] == [0, 1, 2]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda sd: sd["param_groups"].pop(), "different number of parameter groups"),
        (lambda sd: sd["param_groups"][1]["params"].append(9), "doesn't match the size"),
    ],
)
def test_load_state_dict_errors_leave_optimizer_unchanged(mutate: Any, message: str) -> None:
    for mod in (torch.optim, optimlab):
        opt = _stepped(mod)
        sd = copy.deepcopy(opt.state_dict())
        mutate(sd)
        before = copy.deepcopy(opt.state_dict())
        with pytest.raises(ValueError, match=message):
            opt.load_state_dict(sd)
        assert_same(before, opt.state_dict(), True, "after a failed load")


def test_load_state_dict_casts_like_torch() -> None:
    src = _stepped(optimlab, "ASGD").state_dict()

    def load(mod: Any) -> dict[str, Any]:
        ps = [p.detach().double().requires_grad_() for p in _params()]
        opt = mod.ASGD([{"params": ps[:2]}, {"params": ps[2:]}])
        opt.load_state_dict(copy.deepcopy(src))
        opt.state[ps[0]]["note"] = "kept"
        return opt.state_dict()

    assert_same(load(torch.optim), load(optimlab), True, "cast state")
    assert load(optimlab)["state"][0]["ax"].dtype == torch.float64
