"""End-to-end: a LeNet-style CNN trained with each algorithm, optimlab against torch.optim.

Same initial weights, same fixed random data, same number of steps: the loss curves and the final weights must be
bitwise equal (the default CPU path of every algorithm reproduces torch's arithmetic exactly).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import nn

import optimlab

STEPS = 24


class LeNet(nn.Module):
    """Conv2d 3→6→16 (5×5), max-pooling, Linear 400→120→84→10: the classic CIFAR-sized LeNet."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2)
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(16, 3, 32, 32, generator=g), torch.randint(0, 10, (16,), generator=g)


CONFIGS: list[tuple[str, dict[str, Any]]] = [
    ("SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-4}),
    ("Adam", {"lr": 1e-3, "amsgrad": True}),
    ("AdamW", {"lr": 1e-3}),
    ("Adamax", {"lr": 2e-3}),
    ("NAdam", {"lr": 2e-3, "decoupled_weight_decay": True, "weight_decay": 1e-2}),
    ("RAdam", {"lr": 1e-3}),
    ("Adagrad", {"lr": 1e-2, "lr_decay": 1e-3}),
    ("Adadelta", {"lr": 1.0}),
    ("RMSprop", {"lr": 1e-3, "momentum": 0.5, "centered": True}),
    ("Rprop", {"lr": 1e-3}),
    ("ASGD", {"lr": 1e-2, "t0": 10}),
    ("Adafactor", {"lr": 1e-2}),
    ("LBFGS", {"lr": 0.5, "max_iter": 4, "history_size": 5, "line_search_fn": "strong_wolfe"}),
    ("Muon", {"lr": 0.02}),
]


def _train(mod: Any, name: str, kwargs: dict[str, Any], model: nn.Module) -> tuple[list[float], nn.Module]:
    x, y = _data()
    loss_fn = nn.CrossEntropyLoss()
    if name == "Muon":
        # Muon takes the 2-D hidden matrices; the rest trains with SGD (the usual split).
        matrices = [p for p in model.parameters() if p.ndim == 2]
        others = [p for p in model.parameters() if p.ndim != 2]
        opts = [mod.Muon(matrices, **kwargs), mod.SGD(others, lr=0.01, momentum=0.9)]
    else:
        opts = [getattr(mod, name)(model.parameters(), **kwargs)]
    losses = []
    for _ in range(STEPS):

        def closure() -> torch.Tensor:
            for o in opts:
                o.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            return loss

        if name == "LBFGS":
            loss = opts[0].step(closure)
        else:
            loss = closure()
            for o in opts:
                o.step()
        losses.append(float(loss))
    return losses, model


@pytest.mark.parametrize("name, kwargs", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_lenet_training_matches_torch(name: str, kwargs: dict[str, Any]) -> None:
    torch.manual_seed(0)
    model = LeNet()
    ref_losses, ref_model = _train(torch.optim, name, kwargs, copy.deepcopy(model))
    our_losses, our_model = _train(optimlab, name, kwargs, copy.deepcopy(model))
    assert our_losses == ref_losses
    for (n, a), b in zip(ref_model.named_parameters(), our_model.parameters()):
        assert torch.equal(a, b), n
    if name not in ("ASGD", "Rprop", "Adadelta"):  # slow starters on random labels
        assert our_losses[-1] < our_losses[0], "training did not reduce the loss"
