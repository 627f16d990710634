"""A real small task that needs no download: classifying scikit-learn's bundled 8x8 digit images.

``load_digits()`` ships inside scikit-learn (1,797 images of the digits 0-9, 8x8 pixels, 16 grey levels), so the
lab's comparisons run offline in seconds on a CPU.  The models are split into ``features`` and ``classifier``
so that per-group learning rates have an obvious meaning.

Reference: Alpaydin & Kaynak, "Optical Recognition of Handwritten Digits" (UCI, 1998), the source of the images.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from optimlab.optimizer import Optimizer

__all__ = [
    "MODELS",
    "DigitsCNN",
    "DigitsData",
    "DigitsMLP",
    "TrainHistory",
    "evaluate",
    "load_digits_data",
    "make_model",
    "train",
]


@dataclass
class DigitsData:
    """Train/validation tensors: images ``(N, 1, 8, 8)`` scaled to [0, 1], labels ``(N,)`` in 0..9."""

    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor

    @property
    def sizes(self) -> tuple[int, int]:
        return len(self.y_train), len(self.y_val)


def load_digits_data(val_fraction: float = 0.2, seed: int = 0, limit: int | None = None) -> DigitsData:
    """Load the bundled digits and split them, stratified by class, into train and validation sets.

    Args:
        val_fraction: share of the images held out for validation.
        seed: seed of the split.
        limit: use only the first ``limit`` images (after a seeded shuffle), for quick runs.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    if limit is not None:
        if limit < 20:
            raise ValueError(f"limit must be at least 20 images, got {limit}")
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:limit]
        x, y = x[order], y[order]
    idx_train, idx_val = train_test_split(range(len(y)), test_size=val_fraction, random_state=seed, stratify=y.numpy())
    return DigitsData(x[idx_train], y[idx_train], x[idx_val], y[idx_val])


class DigitsCNN(nn.Module):
    """Two 3x3 convolutions with max-pooling (the ``features``) and one linear layer (the ``classifier``)."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 8x8 -> 4x4
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 4x4 -> 2x2
            nn.Flatten(),
        )
        self.classifier = nn.Linear(2 * width * 4, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


class DigitsMLP(nn.Module):
    """Two hidden layers of ReLU units (the ``features``) and one linear layer (the ``classifier``)."""

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU())
        self.classifier = nn.Linear(width, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


MODELS: dict[str, Callable[[], nn.Module]] = {"cnn": DigitsCNN, "mlp": DigitsMLP}


def make_model(kind: str = "cnn", seed: int = 0) -> nn.Module:
    """A freshly initialised model; the same ``seed`` gives bit-identical weights, so comparisons are fair."""
    if kind not in MODELS:
        raise ValueError(f"unknown model {kind!r}; choose from {', '.join(MODELS)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MODELS[kind]()


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``(x, y)``, in eval mode."""
    was_training = model.training
    model.eval()
    logits = model(x)
    loss = float(nn.functional.cross_entropy(logits, y))
    acc = float((logits.argmax(1) == y).float().mean())
    model.train(was_training)
    return loss, acc


@dataclass
class TrainHistory:
    """Per-epoch curves (index 0 is before training) and per-step training losses of one run."""

    label: str
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    step_loss: list[float] = field(default_factory=list)
    group_lrs: list[list[float]] = field(default_factory=list)
    seconds: float = 0.0
    diverged: bool = False

    def record(self, model: nn.Module, data: DigitsData) -> None:
        tl, ta = evaluate(model, data.x_train, data.y_train)
        vl, va = evaluate(model, data.x_val, data.y_val)
        self.train_loss.append(tl)
        self.train_acc.append(ta)
        self.val_loss.append(vl)
        self.val_acc.append(va)

    def final(self) -> dict[str, float]:
        """The last epoch's numbers and the best validation accuracy."""
        return {
            "train_loss": self.train_loss[-1],
            "val_loss": self.val_loss[-1],
            "train_acc": self.train_acc[-1],
            "val_acc": self.val_acc[-1],
            "best_val_acc": max(self.val_acc),
            "best_epoch": self.val_acc.index(max(self.val_acc)),
            "seconds": self.seconds,
        }


def train(
    model: nn.Module,
    optimizer: Optimizer,
    data: DigitsData,
    epochs: int,
    batch_size: int = 64,
    seed: int = 0,
    label: str = "",
    on_epoch: Callable[[int], None] | None = None,
    on_step: Callable[[nn.Module], None] | None = None,
) -> TrainHistory:
    """Train with cross-entropy for ``epochs`` epochs of shuffled mini-batches; evaluate after every epoch.

    The shuffling uses its own generator seeded with ``seed``, so every optimizer sees the same batches in the
    same order.  A run whose loss becomes non-finite is stopped and marked ``diverged`` (its curves then end
    early).
    """
    history = TrainHistory(label=label)
    history.record(model, data)
    gen = torch.Generator().manual_seed(seed)
    n = len(data.y_train)
    start = time.perf_counter()
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(n, generator=gen)
        for i in range(0, n, batch_size):
            idx = order[i : i + batch_size]
            xb, yb = data.x_train[idx], data.y_train[idx]

            def closure(xb: Tensor = xb, yb: Tensor = yb) -> Tensor:
                optimizer.zero_grad()
                loss = nn.functional.cross_entropy(model(xb), yb)
                loss.backward()
                return loss

            loss = optimizer.step(closure)
            value = float(loss.detach()) if isinstance(loss, Tensor) else math.nan if loss is None else float(loss)
            history.step_loss.append(value)
            if on_step is not None:
                on_step(model)
            if not math.isfinite(value):
                history.diverged = True
                break
        history.group_lrs.append([float(g["lr"]) for g in optimizer.param_groups])
        history.record(model, data)
        if on_epoch is not None:
            on_epoch(epoch)
        if history.diverged:
            break
    history.seconds = time.perf_counter() - start
    return history
