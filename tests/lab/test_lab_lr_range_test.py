"""The learning-rate range test: suggestions in a known good range, exact restoration, any training step."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import optimlab
from optimlab.lab import lr_range_test, smooth_losses, suggest_lr
from optimlab.lab.plots import is_blank

# --------------------------------------------------------------------------------------------- a known problem


def _regression(seed: int = 0) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], float]:
    """Mini-batches of a noisy linear regression and L, the largest curvature of its mean squared error.

    Gradient descent on it converges exactly for lr < 2/L and is fastest around lr = 1/L, so that is the
    known good range a suggestion must fall in (not too timid either: above 1/(30 L)).
    """
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(512, 20, generator=gen, dtype=torch.float64) * torch.linspace(0.3, 1.5, 20, dtype=torch.float64)
    w_true = torch.randn(20, generator=gen, dtype=torch.float64)
    y = x @ w_true + 0.1 * torch.randn(512, generator=gen, dtype=torch.float64)
    hessian = 2 * x.T @ x / len(y)
    curvature = float(torch.linalg.eigvalsh(hessian).max())
    return [(x[i : i + 32], y[i : i + 32]) for i in range(0, 512, 32)], curvature


@pytest.mark.parametrize("mode", ["exp", "linear"])
def test_suggestions_fall_in_the_known_good_range(mode: str) -> None:
    batches, curvature = _regression()
    w = torch.zeros(20, dtype=torch.float64, requires_grad=True)
    opt = optimlab.SGD([w], lr=0.1)
    result = lr_range_test(
        opt,
        lambda b: ((b[0] @ w - b[1]) ** 2).mean(),
        loader=batches,
        start_lr=1e-4 if mode == "exp" else 1e-3,
        end_lr=1.0,
        num_steps=100,
        mode=mode,  # type: ignore[arg-type]
    )
    assert result.stop_reason == "diverged"  # 1.0 is far above the stability limit 2/L ≈ 0.43
    assert result.stop_lr is not None and result.stop_lr > 2 / curvature
    low, high = 1 / (30 * curvature), 2 / curvature
    for rule, lr in result.suggestions.items():
        assert lr is not None and low < lr < high, (rule, lr, (low, high))
    assert result.suggested_lr == result.suggestions["valley"]
    if mode == "exp":
        # The zero-lag smoothing puts the lowest loss near the best step size 1/L, not a decade later.
        assert 0.5 / curvature < result.min_loss_lr < 2 / curvature  # type: ignore[operator]


@pytest.mark.parametrize("name", ["SGD", "Adam"])
def test_suggested_lr_trains_the_digits_mlp(name: str) -> None:
    from optimlab.lab.tasks import load_digits_data, make_model, train

    data = load_digits_data(limit=400)
    net = make_model("mlp")
    hp = {"momentum": 0.9} if name == "SGD" else {}
    opt = optimlab.registry.create(name, net.parameters(), lr=0.01, **hp)
    batches = [(data.x_train[i : i + 32], data.y_train[i : i + 32]) for i in range(0, len(data.y_train), 32)]
    result = lr_range_test(
        opt,
        lambda b: nn.functional.cross_entropy(net(b[0]), b[1]),
        loader=batches,
        model=net,
        start_lr=1e-4,
        end_lr=100.0,
        num_steps=120,
    )
    lr = result.suggested_lr
    assert lr is not None and result.min_loss_lr is not None and 1e-3 < lr < result.min_loss_lr

    def final_val_loss(lr: float) -> float:
        net2 = make_model("mlp")
        history = train(
            net2, optimlab.registry.create(name, net2.parameters(), lr=lr, **hp), data, epochs=4, batch_size=32
        )
        return math.inf if history.diverged else history.val_loss[-1]

    suggested = final_val_loss(lr)
    assert suggested < 0.9 * final_val_loss(lr / 30)  # much better than a timid lr...
    assert suggested < final_val_loss(10 * result.min_loss_lr)  # ...and than one past the curve's bottom


# --------------------------------------------------------------------------------------------- restoring


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().reshape(-1).view(torch.uint8) if t.is_floating_point() else t.detach().reshape(-1)


def _assert_same(a: object, b: object, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(_bits(a), _bits(b)), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, (where, a, b)


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2))
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _setup(opt_name: str) -> tuple[_Net, torch.optim.Optimizer, list[tuple[torch.Tensor, torch.Tensor]]]:
    torch.manual_seed(0)
    net = _Net()
    groups = [
        {"params": net.features.parameters(), "lr": 1e-3},
        {"params": net.head.parameters(), "lr": 1e-2},
    ]
    opt = optimlab.registry.create(opt_name, groups)
    gen = torch.Generator().manual_seed(1)
    data = [(torch.randn(16, 6, generator=gen), torch.randint(0, 3, (16,), generator=gen)) for _ in range(4)]
    for x, y in data[:3]:  # some optimizer state and leftover gradients before the test
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return net, opt, data


@pytest.mark.parametrize("opt_name", ["SGD", "Adam", "RMSprop"])
def test_model_optimizer_and_rng_are_restored_bit_for_bit(opt_name: str) -> None:
    net, opt, data = _setup(opt_name)
    if opt_name == "SGD":
        for g in opt.param_groups:
            g["momentum"] = 0.9
    net.eval()
    net.features[1].train()  # a mixed train/eval state must come back as it was
    twin_net, twin_opt = copy.deepcopy(net), None
    twin_opt = optimlab.registry.create(
        opt_name, [{"params": twin_net.features.parameters()}, {"params": twin_net.head.parameters()}]
    )
    twin_opt.load_state_dict(copy.deepcopy(opt.state_dict()))

    before_params = copy.deepcopy(net.state_dict())
    before_grads = [None if p.grad is None else p.grad.clone() for p in net.parameters()]
    before_opt = copy.deepcopy(opt.state_dict())
    before_modes = [m.training for m in net.modules()]
    groups_before = opt.param_groups
    group_ids = [id(g) for g in opt.param_groups]
    rng = torch.get_rng_state()

    result = lr_range_test(
        opt,
        lambda b: nn.functional.cross_entropy(net.train()(b[0]), b[1]),
        loader=data,
        model=net,
        start_lr=1e-5,
        end_lr=1e3,
        num_steps=40,
        diverge_threshold=None,
    )
    assert len(result.lrs) == 40  # it really trained, at huge lrs at the end

    _assert_same(net.state_dict(), before_params, "model")
    for p, g in zip(net.parameters(), before_grads):
        if g is None:
            assert p.grad is None
        else:
            _assert_same(p.grad, g, "grad")
    _assert_same(opt.state_dict(), before_opt, "optimizer")
    assert [m.training for m in net.modules()] == before_modes
    assert opt.param_groups is groups_before and [id(g) for g in opt.param_groups] == group_ids
    assert torch.equal(torch.get_rng_state(), rng)

    # What follows runs exactly as if no test had happened.
    for model, o in ((net, opt), (twin_net, twin_opt)):
        model.train()
        torch.manual_seed(5)
        o.zero_grad()
        nn.functional.cross_entropy(model(data[3][0]), data[3][1]).backward()
        o.step()
    _assert_same(net.state_dict(), twin_net.state_dict(), "after one more step")
    _assert_same(opt.state_dict()["state"], twin_opt.state_dict()["state"], "optimizer after one more step")


def test_state_is_restored_when_the_step_raises() -> None:
    net, opt, data = _setup("Adam")
    before = copy.deepcopy(net.state_dict())
    before_opt = copy.deepcopy(opt.state_dict())
    calls = []

    def loss_fn(batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        calls.append(1)
        if len(calls) == 5:
            raise RuntimeError("boom")
        return nn.functional.cross_entropy(net(batch[0]), batch[1])

    with pytest.raises(RuntimeError, match="boom"):
        lr_range_test(opt, loss_fn, loader=data, model=net, start_lr=1e-3, end_lr=1.0, num_steps=20)
    _assert_same(net.state_dict(), before, "model")
    _assert_same(opt.state_dict(), before_opt, "optimizer")


def test_tensor_lr_is_filled_in_place_and_restored() -> None:
    w = torch.zeros(3, requires_grad=True)
    lr = torch.tensor(0.05)
    opt = optimlab.Adam([w], lr=lr)
    seen = []

    def step() -> float:
        seen.append(float(opt.param_groups[0]["lr"]))
        opt.zero_grad()
        loss = ((w - 1) ** 2).sum()
        loss.backward()
        opt.step()
        return float(loss.detach())

    lr_range_test(opt, train_step=step, start_lr=1e-3, end_lr=1e-1, num_steps=5)
    assert opt.param_groups[0]["lr"] is lr  # the same tensor, refilled
    assert torch.equal(lr, torch.tensor(0.05))
    assert seen == pytest.approx([1e-3 * 100 ** (i / 4) for i in range(5)])


# --------------------------------------------------------------------------------------------- any step, any data


def test_train_step_with_gradient_accumulation_and_no_loader() -> None:
    w = torch.zeros(4, requires_grad=True)
    opt = optimlab.SGD([w], lr=0.1)
    target = torch.tensor([1.0, -2.0, 3.0, 0.5])
    lrs_seen = []

    def train_step() -> torch.Tensor:
        lrs_seen.append(opt.param_groups[0]["lr"])
        opt.zero_grad()
        total = torch.zeros(())
        for half in (0, 1):  # two accumulated micro-batches
            loss = ((w[2 * half : 2 * half + 2] - target[2 * half : 2 * half + 2]) ** 2).sum() / 2
            loss.backward()
            total = total + loss.detach()
        opt.step()
        return total

    result = lr_range_test(opt, train_step=train_step, start_lr=1e-3, end_lr=1.0, num_steps=30, mode="linear")
    assert len(lrs_seen) == len(result.lrs) and lrs_seen == result.lrs
    assert lrs_seen[0] == pytest.approx(1e-3) and lrs_seen[1] - lrs_seen[0] == pytest.approx((1.0 - 1e-3) / 29)
    assert torch.equal(w, torch.zeros(4)) and opt.param_groups[0]["lr"] == 0.1


def test_loader_is_cycled_and_batches_can_be_anything() -> None:
    w = torch.zeros(2, requires_grad=True)
    opt = optimlab.SGD([w], lr=0.1)
    batches = [{"x": torch.tensor([1.0, 0.0])}, {"x": torch.tensor([0.0, 1.0])}]  # dicts, only 2 of them
    seen = []

    def loss_fn(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        seen.append(int(batch["x"].argmax()))
        return ((w - batch["x"]) ** 2).sum()

    lr_range_test(opt, loss_fn, loader=batches, start_lr=1e-4, end_lr=1e-2, num_steps=7, diverge_threshold=None)
    assert seen == [0, 1, 0, 1, 0, 1, 0]


def test_eval_fn_is_recorded_instead_of_the_training_loss() -> None:
    w = torch.zeros(1, requires_grad=True)
    opt = optimlab.SGD([w], lr=0.1)
    evals = iter(range(100, 200))
    result = lr_range_test(
        opt,
        lambda: (w - 1).pow(2).sum(),
        eval_fn=lambda: float(next(evals)),
        start_lr=1e-3,
        end_lr=1e-2,
        num_steps=5,
        diverge_threshold=None,
    )
    assert result.losses == [100.0, 101.0, 102.0, 103.0, 104.0]


def test_lbfgs_works_through_the_closure() -> None:
    w = torch.tensor([3.0, -1.0], requires_grad=True)
    opt = optimlab.LBFGS([w], lr=1.0, max_iter=3)
    result = lr_range_test(opt, lambda: ((w - 1) ** 2).sum(), start_lr=1e-3, end_lr=1.0, num_steps=12)
    assert len(result.lrs) >= 3
    assert torch.equal(w, torch.tensor([3.0, -1.0]))


def test_works_with_torch_optim_too() -> None:
    batches, curvature = _regression(seed=1)
    w = torch.zeros(20, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([w], lr=0.1, momentum=0.5)
    result = lr_range_test(
        opt, lambda b: ((b[0] @ w - b[1]) ** 2).mean(), loader=batches, start_lr=1e-4, end_lr=10.0, num_steps=60
    )
    assert result.stop_reason == "diverged" and result.suggested_lr is not None
    assert result.suggested_lr < 2 / curvature
    assert torch.equal(w, torch.zeros(20, dtype=torch.float64)) and not opt.state


# --------------------------------------------------------------------------------------------- param groups


def test_param_groups_are_scaled_together_keeping_their_ratio() -> None:
    a, b = torch.zeros(2, requires_grad=True), torch.zeros(2, requires_grad=True)
    opt = optimlab.SGD([{"params": [a], "lr": 0.01}, {"params": [b], "lr": 0.1}], lr=0.01)
    result = lr_range_test(
        opt,
        lambda: ((a - 1) ** 2).sum() + ((b + 1) ** 2).sum(),
        start_lr=1e-4,
        end_lr=1.0,
        num_steps=20,
        diverge_threshold=None,
    )
    assert result.lrs[0] == pytest.approx(1e-4) and result.lrs[-1] == pytest.approx(1.0)
    for g0, g1 in result.group_lrs:
        assert g1 / g0 == pytest.approx(10.0)
    suggested = result.suggested_group_lrs()
    assert suggested is not None and suggested[1] / suggested[0] == pytest.approx(10.0)
    assert [g["lr"] for g in opt.param_groups] == [0.01, 0.1]


def test_param_groups_can_each_have_their_own_range() -> None:
    a, b = torch.zeros(2, requires_grad=True), torch.zeros(2, requires_grad=True)
    opt = optimlab.Adam([{"params": [a]}, {"params": [b]}], lr=1e-3)
    result = lr_range_test(
        opt,
        lambda: ((a - 1) ** 2).sum() + ((b + 1) ** 2).sum(),
        start_lr=[1e-5, 1e-3],
        end_lr=[1e-2, 10.0],
        num_steps=10,
        diverge_threshold=None,
    )
    assert result.group_lrs[0] == pytest.approx([1e-5, 1e-3])
    assert result.group_lrs[-1] == pytest.approx([1e-2, 10.0])


# --------------------------------------------------------------------------------------------- stopping


def test_stops_on_divergence_and_on_non_finite_loss() -> None:
    x = torch.tensor([2.0], dtype=torch.float64, requires_grad=True)
    opt = optimlab.SGD([x], lr=0.01)
    result = lr_range_test(opt, lambda: 4 * (x**2).sum(), start_lr=1e-3, end_lr=10.0, num_steps=100)
    assert result.stop_reason == "diverged"
    assert result.stop_lr is not None and 0.25 < result.stop_lr < 10.0  # beyond 2/f'' = 0.25 it blows up
    assert len(result.lrs) < 100

    calls = []

    def loss_fn() -> torch.Tensor:
        calls.append(1)
        return (x * (math.inf if len(calls) == 6 else 1.0)).sum() ** 2

    result = lr_range_test(opt, loss_fn, start_lr=1e-3, end_lr=1e-2, num_steps=20)
    assert result.stop_reason == "non-finite loss" and len(result.lrs) == 5
    assert all(math.isfinite(v) for v in result.losses + result.smoothed)


# --------------------------------------------------------------------------------------------- the analysis


def test_steepest_rule_uses_log_lr_spacing_in_exponential_mode() -> None:
    # The loss falls fastest per unit of log(lr) at lr0; on an uneven grid only the real spacing finds it.
    lr0 = 3e-3
    # Dense below lr0 (steps of 0.02 in log lr), sparse above (0.2): e.g. a test resumed with a coarser sweep.
    logs = [-3 + 0.02 * i for i in range(150)] + [0.2 * i for i in range(16)]
    lrs = [lr0 * math.exp(v) for v in logs]
    losses = [-math.tanh(v) for v in logs]
    i = suggest_lr(lrs, losses, rule="steepest", mode="exp")
    assert i is not None and abs(math.log(lrs[i] / lr0)) < 0.03
    # Differences taken per index (np.gradient without spacing) land on the sparse side instead.
    by_index = min(range(1, len(lrs) - 1), key=lambda k: losses[k + 1] - losses[k - 1])
    assert abs(math.log(lrs[by_index] / lr0)) > 0.15


def test_steepest_rule_uses_lr_spacing_in_linear_mode() -> None:
    lrs = [0.01 * i for i in range(1, 101)]
    losses = [-math.tanh((lr - 0.42) / 0.1) for lr in lrs]
    i = suggest_lr(lrs, losses, rule="steepest", mode="linear")
    assert i is not None and lrs[i] == pytest.approx(0.42, abs=0.011)


def test_rules_on_a_typical_curve() -> None:
    lrs = [10 ** (-6 + 7 * i / 99) for i in range(100)]
    # Flat, then a descent centred at 1e-2, then divergence after 1e-1.
    losses = [2 - math.tanh(math.log10(lr / 1e-2) * 1.5) + (50 * (lr - 0.1) if lr > 0.1 else 0) for lr in lrs]
    steep = lrs[suggest_lr(lrs, losses, "steepest") or 0]
    valley = lrs[suggest_lr(lrs, losses, "valley") or 0]
    min10 = lrs[suggest_lr(lrs, losses, "min10") or 0]
    best = lrs[min(range(100), key=losses.__getitem__)]
    assert steep == pytest.approx(1e-2, rel=0.2)
    assert 1e-3 < valley < best and 1e-3 < min10 < best
    assert min10 == pytest.approx(best / 10, rel=0.2)


def test_zero_lag_smoothing_keeps_features_in_place() -> None:
    ramp = [float(i) for i in range(100)]
    one_way = smooth_losses(ramp, 0.1, zero_lag=False)
    both_ways = smooth_losses(ramp, 0.1)
    assert one_way[50] < 42  # a one-way average trails a ramp by about (1 - s)/s = 9 steps
    assert both_ways[50] == pytest.approx(50.0, abs=0.2)
    assert smooth_losses([3.0, 1.0, 2.0], 1.0) == [3.0, 1.0, 2.0]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.01, 100.0), min_size=3, max_size=60), st.sampled_from(["steepest", "valley", "min10"]))
def test_suggestion_is_always_a_valid_index(losses: list[float], rule: str) -> None:
    lrs = [10 ** (-5 + i / 10) for i in range(len(losses))]
    i = suggest_lr(lrs, losses, rule, skip_start=2, skip_end=1)  # type: ignore[arg-type]
    assert i is not None and 0 <= i < len(lrs)


# --------------------------------------------------------------------------------------------- bad input, plots


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"train_step": lambda: 0.0}, "exactly one"),
        ({"start_lr": 1.0, "end_lr": 0.1}, "start_lr < end_lr"),
        ({"start_lr": 0.0}, "must be > 0 in exponential mode"),
        ({"mode": "log"}, "mode must be"),
        ({"smoothing": 0.0}, "smoothing"),
        ({"num_steps": 1}, "num_steps"),
        ({"diverge_threshold": 1.0}, "diverge_threshold"),
        ({"rule": "magic"}, "unknown rule"),
        ({"start_lr": [1e-5, 1e-4]}, "parameter groups"),
    ],
)
def test_bad_arguments_raise_and_change_nothing(kwargs: dict, message: str) -> None:
    w = torch.ones(2, requires_grad=True)
    opt = optimlab.SGD([w], lr=0.1)
    loss_fn = lambda: (w**2).sum()
    with pytest.raises(ValueError, match=message):
        lr_range_test(opt, loss_fn, **kwargs)
    assert opt.param_groups[0]["lr"] == 0.1 and torch.equal(w, torch.ones(2)) and not opt.state


def test_plot_and_files(tmp_path) -> None:  # type: ignore[no-untyped-def]
    batches, _ = _regression()
    w = torch.zeros(20, dtype=torch.float64, requires_grad=True)
    opt = optimlab.SGD([w], lr=0.1)
    result = lr_range_test(
        opt, lambda b: ((b[0] @ w - b[1]) ** 2).mean(), loader=batches, start_lr=1e-4, end_lr=1.0, num_steps=60
    )
    path = tmp_path / "lr.png"
    result.plot(path=path)
    assert path.stat().st_size > 10_000 and not is_blank(path)
    csv_path = result.to_csv(tmp_path / "lr.csv")
    lines = csv_path.read_text().splitlines()
    assert lines[0] == "step,lr_group0,loss,smoothed_loss" and len(lines) == len(result.lrs) + 1
    d = result.to_dict()
    assert d["suggested_lr"] == result.suggested_lr and d["lrs"] == result.lrs
