"""optimlab.swa_utils against torch.optim.swa_utils: averaged weights, BatchNorm statistics and SWALR, bit for bit."""

from __future__ import annotations

import copy
import pickle
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.optim.swa_utils as TS
from torch import nn

import optimlab
import optimlab.lr_scheduler as OL
import optimlab.swa_utils as OS
from test_lr_scheduler import Config, check_config, make_optimizer, per_group_values


def test_module_surface() -> None:
    assert set(TS.__all__) == set(OS.__all__)
    assert issubclass(OS.SWALR, OL.LRScheduler)


# ------------------------------------------------------------------------------------------------------------
# The averaging functions


def tensors(dtype: torch.dtype, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    shapes = [(3, 4), (5,), ()]
    if dtype.is_floating_point or dtype.is_complex:
        return [torch.randn(s, generator=gen, dtype=dtype) for s in shapes]
    return [torch.randint(-50, 50, s, generator=gen, dtype=dtype) for s in shapes]


DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.complex64, torch.int64]


def apply_multi(make: Callable[[], Any], dtype: torch.dtype, n: Any) -> Any:
    """The averaged tensors, or the type of the error (the libraries must agree on failures too)."""
    averaged, current = tensors(dtype, 0), tensors(dtype, 1)
    try:
        make()(averaged, current, n)
    except RuntimeError as error:
        return type(error)
    return averaged


def same(ours: Any, theirs: Any) -> bool:
    if isinstance(theirs, type):
        return ours is theirs
    return all(torch.equal(a, b) and a.dtype == b.dtype for a, b in zip(ours, theirs, strict=True))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("decay", [0.0, 0.5, 0.999, 1.0])
def test_ema_multi_avg_fn(dtype: torch.dtype, decay: float) -> None:
    ours = apply_multi(lambda: OS.get_ema_multi_avg_fn(decay), dtype, 3)
    theirs = apply_multi(lambda: TS.get_ema_multi_avg_fn(decay), dtype, 3)
    assert not isinstance(theirs, type) and same(ours, theirs)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [0, 1, 7, torch.tensor(0), torch.tensor(4)])
def test_swa_multi_avg_fn(dtype: torch.dtype, n: Any) -> None:
    ours = apply_multi(OS.get_swa_multi_avg_fn, dtype, n)
    theirs = apply_multi(TS.get_swa_multi_avg_fn, dtype, n)
    assert same(ours, theirs)
    # Only integer tensors fail (torch refuses integer addcdiv / a float alpha on integers), in both.
    assert isinstance(theirs, type) == (dtype == torch.int64)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int64])
@pytest.mark.parametrize("n", [0, 5, torch.tensor(3)])
def test_single_tensor_avg_fns(dtype: torch.dtype, n: Any) -> None:
    (a,), (b,) = tensors(dtype, 2)[:1], tensors(dtype, 3)[:1]
    for ours, theirs in ((OS.get_swa_avg_fn(), TS.get_swa_avg_fn()), (OS.get_ema_avg_fn(0.9), TS.get_ema_avg_fn(0.9))):
        x, y = ours(a, b, n), theirs(a, b, n)
        assert torch.equal(x, y) and x.dtype == y.dtype


@pytest.mark.parametrize("make", [OS.get_ema_multi_avg_fn, OS.get_ema_avg_fn])
@pytest.mark.parametrize("decay", [-0.1, 1.5])
def test_decay_validation(make: Callable[[float], Any], decay: float) -> None:
    with pytest.raises(ValueError) as ours:
        make(decay)
    with pytest.raises(ValueError) as theirs:
        getattr(TS, make.__name__)(decay)
    assert str(ours.value) == str(theirs.value)


# ------------------------------------------------------------------------------------------------------------
# AveragedModel


def make_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 2, bias=False))


def perturb(model: nn.Module, seed: int) -> None:
    """New weights and BatchNorm statistics, as training would produce."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen))
        for b in model.buffers():
            if b.is_floating_point():
                b.add_(torch.rand(b.shape, generator=gen))
            else:
                b.add_(seed)


AVERAGING: dict[str, Callable[[Any], dict[str, Any]]] = {
    "swa": lambda lib: {},
    "swa-buffers": lambda lib: {"use_buffers": True},
    "ema-multi": lambda lib: {"multi_avg_fn": lib.get_ema_multi_avg_fn(0.9)},
    "ema-multi-buffers": lambda lib: {"multi_avg_fn": lib.get_ema_multi_avg_fn(0.75), "use_buffers": True},
    "ema-single": lambda lib: {"avg_fn": lib.get_ema_avg_fn(0.95)},
    "custom-avg-fn": lambda lib: {"avg_fn": lambda avg, cur, n: avg * 0.5 + cur * 0.5 + n},
    "swa-multi-explicit": lambda lib: {"multi_avg_fn": lib.get_swa_multi_avg_fn()},
    "device": lambda lib: {"device": torch.device("cpu")},
}


@pytest.mark.parametrize("name", list(AVERAGING))
def test_averaged_model_matches_torch(name: str) -> None:
    model = make_model()
    ours = OS.AveragedModel(model, **AVERAGING[name](OS))
    theirs = TS.AveragedModel(model, **AVERAGING[name](TS))
    for step in range(6):
        perturb(model, step + 1)
        ours.update_parameters(model)
        theirs.update_parameters(model)
        ours_state, theirs_state = ours.state_dict(), theirs.state_dict()
        assert list(ours_state) == list(theirs_state)
        for key in theirs_state:
            assert torch.equal(ours_state[key], theirs_state[key]), (name, step, key)
            assert ours_state[key].dtype == theirs_state[key].dtype
    x = torch.randn(5, 4)
    ours.eval(), theirs.eval()
    assert torch.equal(ours(x), theirs(x))
    assert int(ours.n_averaged) == 6


def test_averaged_model_is_an_average() -> None:
    """SWA is the plain mean of the models it saw; EMA the exponential average."""
    model = make_model()
    swa = OS.AveragedModel(model)
    ema = OS.AveragedModel(model, multi_avg_fn=OS.get_ema_multi_avg_fn(0.8))
    seen = []
    for step in range(4):
        perturb(model, step + 1)
        swa.update_parameters(model)
        ema.update_parameters(model)
        seen.append([p.detach().clone() for p in model.parameters()])
    for i, p in enumerate(swa.module.parameters()):
        torch.testing.assert_close(p, sum(s[i] for s in seen) / len(seen))
    for i, p in enumerate(ema.module.parameters()):
        expected = seen[0][i]
        for s in seen[1:]:
            expected = 0.8 * expected + 0.2 * s[i]
        torch.testing.assert_close(p, expected)
    # Without use_buffers the buffers are copied from the model, not averaged.
    for mine, theirs in zip(swa.module.buffers(), model.buffers()):
        assert torch.equal(mine, theirs)


def test_averaged_model_errors_and_pickling() -> None:
    for lib in (OS, TS):
        with pytest.raises(AssertionError, match="Only one of avg_fn and multi_avg_fn should be provided"):
            lib.AveragedModel(make_model(), avg_fn=lib.get_swa_avg_fn(), multi_avg_fn=lib.get_swa_multi_avg_fn())
    averaged = OS.AveragedModel(make_model())
    averaged.update_parameters(make_model(1))
    clone = pickle.loads(pickle.dumps(averaged))
    assert torch.equal(clone.module[0].weight, averaged.module[0].weight)
    assert "n_averaged" in averaged.state_dict()


def test_averaged_model_does_not_touch_the_model() -> None:
    model = make_model()
    before = copy.deepcopy(model.state_dict())
    averaged = OS.AveragedModel(model, use_buffers=True)
    averaged.update_parameters(model)
    averaged.update_parameters(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert averaged.module is not model


# ------------------------------------------------------------------------------------------------------------
# update_bn


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3)
        self.bn2d = nn.BatchNorm2d(3, momentum=0.3)
        self.fc = nn.Linear(3 * 4 * 4, 5)
        self.bn1d = nn.BatchNorm1d(5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn2d(self.conv(x)).relu()
        return self.bn1d(self.fc(x.flatten(1)))


def batches(kind: str) -> list[Any]:
    gen = torch.Generator().manual_seed(7)
    xs = [torch.randn(8, 1, 6, 6, generator=gen) * (i + 1) for i in range(5)]
    if kind == "pairs":
        return [(x, torch.zeros(8)) for x in xs]
    if kind == "lists":
        return [[x] for x in xs]
    return xs


@pytest.mark.parametrize("kind", ["tensors", "pairs", "lists"])
@pytest.mark.parametrize("training", [True, False])
def test_update_bn_matches_torch(kind: str, training: bool) -> None:
    torch.manual_seed(0)
    model = Net()
    ours, theirs = copy.deepcopy(model), copy.deepcopy(model)
    ours.train(training), theirs.train(training)
    OS.update_bn(batches(kind), ours)
    TS.update_bn(batches(kind), theirs, device=None)
    for (k, a), (_, b) in zip(ours.state_dict().items(), theirs.state_dict().items()):
        assert torch.equal(a, b), k
    assert ours.training == training and ours.bn2d.momentum == 0.3 and ours.bn1d.momentum == 0.1
    # The statistics are the equal-weight average over the batches, not an exponential one.
    inputs = [b[0] if isinstance(b, (list, tuple)) else b for b in batches(kind)]
    with torch.no_grad():
        per_batch = torch.stack([ours.conv(x).mean(dim=(0, 2, 3)) for x in inputs])
    torch.testing.assert_close(ours.bn2d.running_mean, per_batch.mean(0))


def test_update_bn_device_and_no_batchnorm() -> None:
    model = Net()
    OS.update_bn(batches("tensors"), model, device=torch.device("cpu"))
    assert int(model.bn1d.num_batches_tracked) == 5
    plain = nn.Linear(3, 3)
    before = copy.deepcopy(plain.state_dict())
    OS.update_bn([torch.randn(2, 3)], plain)  # no BatchNorm: nothing happens (the loader is not even read)
    assert all(torch.equal(before[k], v) for k, v in plain.state_dict().items())


def test_update_bn_on_averaged_model() -> None:
    """The documented SWA recipe: average, then recompute BatchNorm statistics for the averaged weights."""
    results = []
    for lib in (OS, TS):
        torch.manual_seed(0)
        model = Net()
        averaged = lib.AveragedModel(model)
        for step in range(3):
            perturb(model, step + 1)
            averaged.update_parameters(model)
        lib.update_bn(batches("pairs"), averaged)
        results.append(averaged.state_dict())
    assert all(torch.equal(results[0][k], results[1][k]) for k in results[1])


# ------------------------------------------------------------------------------------------------------------
# SWALR, through the differential harness of test_lr_scheduler.py


class ThenSWA:
    """Run ``before`` until ``swa_start``, then SWALR (the SWA recipe); saves and loads both."""

    def __init__(self, before: Any, swa: Any, swa_start: int) -> None:
        self.before, self.swa, self.swa_start, self.steps = before, swa, swa_start, 0
        self.optimizer = swa.optimizer

    def step(self) -> None:
        self.steps += 1
        (self.swa if self.steps > self.swa_start else self.before).step()

    def get_last_lr(self) -> list[Any]:
        return (self.swa if self.steps > self.swa_start else self.before).get_last_lr()

    def state_dict(self) -> dict[str, Any]:
        return {"before": self.before.state_dict(), "swa": self.swa.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.before.load_state_dict(state["before"])
        self.swa.load_state_dict(state["swa"])
        self.steps = state["steps"]


def swa_module(lib: Any) -> Any:
    return OS if lib is OL else TS


SWALR_CONFIGS = [
    Config("swalr-cos", lambda L, o: swa_module(L).SWALR(o, swa_lr=0.01)),
    Config("swalr-linear", lambda L, o: swa_module(L).SWALR(o, 0.02, anneal_epochs=4, anneal_strategy="linear")),
    Config("swalr-no-anneal", lambda L, o: swa_module(L).SWALR(o, 0.01, anneal_epochs=0)),
    Config("swalr-one", lambda L, o: swa_module(L).SWALR(o, 0.3, anneal_epochs=1)),
    Config("swalr-per-group", lambda L, o: swa_module(L).SWALR(o, per_group_values(0.01, 0.02)(o), anneal_epochs=5)),
    Config(
        "swalr-after-multiplicative",
        lambda L, o: ThenSWA(
            L.MultiplicativeLR(o, lambda e: 0.9), swa_module(L).SWALR(o, anneal_epochs=5, swa_lr=0.01), 5
        ),
    ),
    Config(
        "swalr-after-cosine-linear",
        lambda L, o: ThenSWA(
            L.CosineAnnealingLR(o, 20),
            swa_module(L).SWALR(o, per_group_values(0.01, 0.02)(o), 4, "linear"),
            8,
        ),
    ),
    Config("swalr-epoch", lambda L, o: swa_module(L).SWALR(o, 0.05, 6), step=lambda s, i: s.step(i // 2)),
]


@pytest.mark.parametrize("cfg", SWALR_CONFIGS, ids=[c.name for c in SWALR_CONFIGS])
def test_swalr_differential(cfg: Config) -> None:
    check_config(cfg)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda lib, o: lib.SWALR(o, [0.1, 0.2]), "swa_lr must have the same length as optimizer.param_groups"),
        (lambda lib, o: lib.SWALR(o, 0.1, anneal_strategy="exp"), "anneal_strategy must be one of"),
        (lambda lib, o: lib.SWALR(o, 0.1, anneal_epochs=-1), "anneal_epochs must be equal or greater than 0"),
        (lambda lib, o: lib.SWALR(o, 0.1, anneal_epochs=2.5), "anneal_epochs must be equal or greater than 0"),
    ],
)
def test_swalr_errors(build: Callable[[Any, Any], Any], message: str) -> None:
    theirs_opt, ours_opt = make_optimizer("torch.SGD", "float"), make_optimizer("optimlab.SGD", "float")
    with pytest.raises(ValueError, match=message) as theirs:
        build(TS, theirs_opt)
    before = repr(ours_opt.param_groups)
    with pytest.raises(ValueError, match=message) as ours:
        build(OS, ours_opt)
    assert str(ours.value) == str(theirs.value)
    assert repr(ours_opt.param_groups) == before, "a failed constructor changed the optimizer"


def test_swalr_state_dict() -> None:
    theirs = TS.SWALR(make_optimizer("torch.SGD", "two_groups"), 0.01).state_dict()
    ours = OS.SWALR(make_optimizer("optimlab.SGD", "two_groups"), 0.01, anneal_strategy="linear")
    state = ours.state_dict()
    assert set(state) == set(theirs) and "anneal_func" not in state
    other = OS.SWALR(make_optimizer("optimlab.SGD", "two_groups"), 0.01)
    other.load_state_dict(state)
    assert other.anneal_func is OS.SWALR._linear_anneal
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        other.get_lr()
    assert [str(w.message) for w in caught] == [
        "To get the last learning rate computed by the scheduler, please use `get_last_lr()`."
    ]


def test_swa_training_recipe_with_optimlab() -> None:
    """An end-to-end SWA run with optimlab.SGD equals the same run with torch's SGD and swa_utils."""
    results = []
    for lib, sgd in ((OS, optimlab.SGD), (TS, torch.optim.SGD)):
        torch.manual_seed(0)
        model = Net()
        opt = sgd(model.parameters(), lr=0.1, momentum=0.9)
        swa_model = lib.AveragedModel(model)
        cosine = (OL if lib is OS else torch.optim.lr_scheduler).CosineAnnealingLR(opt, T_max=10)
        swa_scheduler = lib.SWALR(opt, swa_lr=0.05, anneal_epochs=2)
        for epoch in range(8):
            for x in batches("tensors"):
                opt.zero_grad()
                model(x).square().mean().backward()
                opt.step()
            if epoch >= 4:
                swa_model.update_parameters(model)
                swa_scheduler.step()
            else:
                cosine.step()
        lib.update_bn(batches("tensors"), swa_model)
        results.append((swa_model.state_dict(), [g["lr"] for g in opt.param_groups]))
    assert results[0][1] == results[1][1]
    for key, value in results[1][0].items():
        assert torch.equal(results[0][0][key], value), key
