"""optimlab optimizers where torch expects a torch.optim.Optimizer: torch's LR schedulers, GradScaler,
ZeroRedundancyOptimizer, DistributedDataParallel.  Each run is compared with the same run using torch.optim."""

from __future__ import annotations

import copy
import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest
import torch
import torch.distributed as dist
from torch import nn

import optimlab


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 2))


def _batches(n: int = 12) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(4, 8, generator=g), torch.randn(4, 2, generator=g)) for _ in range(n)]


def _assert_models_equal(a: nn.Module, b: nn.Module) -> None:
    for (name, x), y in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(x, y), name


@pytest.mark.parametrize(
    "make_scheduler",
    [
        lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5),
        lambda opt: torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=12),
        lambda opt: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=4),
        lambda opt: torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=1),
    ],
    ids=["StepLR", "OneCycleLR", "CosineAnnealingWarmRestarts", "ReduceLROnPlateau"],
)
def test_torch_schedulers_drive_optimlab_optimizers(make_scheduler: Any) -> None:
    runs = []
    for mod in (torch.optim, optimlab):
        model = _model()
        opt = mod.SGD(model.parameters(), lr=0.05, momentum=0.9)
        sched = make_scheduler(opt)
        lrs = []
        for x, y in _batches():
            opt.zero_grad()
            loss = nn.functional.mse_loss(model(x), y)
            loss.backward()
            opt.step()
            if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
                sched.step(loss.item())
            else:
                sched.step()
            lrs.append(opt.param_groups[0]["lr"])
        runs.append((lrs, model))
    assert runs[0][0] == runs[1][0]
    _assert_models_equal(runs[0][1], runs[1][1])


def test_grad_scaler_unscales_and_skips_inf_steps_as_for_torch() -> None:
    runs = []
    for mod in (torch.optim, optimlab):
        model = _model()
        opt = mod.Adam(model.parameters(), lr=1e-2)
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=2)
        scales = []
        for i, (x, y) in enumerate(_batches()):
            opt.zero_grad()
            loss = nn.functional.mse_loss(model(x), y)
            scaler.scale(loss).backward()
            if i == 5:  # an overflow: the step must be skipped and the scale backed off
                next(model.parameters()).grad[0, 0] = float("inf")
            scaler.step(opt)
            scaler.update()
            scales.append(scaler.get_scale())
        runs.append((scales, model, opt))
    assert runs[0][0] == runs[1][0]
    _assert_models_equal(runs[0][1], runs[1][1])
    p_ref, p_our = next(runs[0][1].parameters()), next(runs[1][1].parameters())
    assert torch.equal(runs[0][2].state[p_ref]["step"], runs[1][2].state[p_our]["step"])  # one step skipped


@pytest.fixture(scope="module")
def process_group() -> Iterator[None]:
    """A single-process gloo group on loopback (ZeRO and DDP need one)."""
    if dist.is_initialized():
        yield
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize("name", ["Adam", "SGD", "RMSprop"])
def test_zero_redundancy_optimizer_wraps_optimlab(process_group: None, name: str) -> None:
    from torch.distributed.optim import ZeroRedundancyOptimizer

    runs = []
    for mod in (torch.optim, optimlab):
        model = _model()
        opt = ZeroRedundancyOptimizer(model.parameters(), optimizer_class=getattr(mod, name), lr=1e-2)
        for x, y in _batches(6):
            opt.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            opt.step()
        opt.consolidate_state_dict(to=0)
        runs.append((model, opt.state_dict()))
    _assert_models_equal(runs[0][0], runs[1][0])
    assert isinstance(runs[1][1], dict) and "state" in runs[1][1]


def test_ddp_training_with_optimlab(process_group: None) -> None:
    from torch.nn.parallel import DistributedDataParallel

    models = []
    for mod in (torch.optim, optimlab):
        model = DistributedDataParallel(copy.deepcopy(_model()))
        opt = mod.AdamW(model.parameters(), lr=1e-2)
        for x, y in _batches(6):
            opt.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            opt.step()
        models.append(model)
    _assert_models_equal(models[0], models[1])
