"""Weight averaging: stochastic weight averaging (SWA) and exponential moving averages (EMA) of a model.

The same API and results as ``torch.optim.swa_utils`` (torch 2.13): :class:`AveragedModel` keeps a running
average of a model's parameters (and optionally buffers), :func:`update_bn` recomputes BatchNorm statistics for
the averaged weights, :class:`SWALR` anneals the learning rate to a constant SWA value, and the ``get_*_avg_fn``
helpers build the averaging rules.

SWA: Izmailov et al. 2018, "Averaging Weights Leads to Wider Optima and Better Generalization" (arXiv:1803.05407).
EMA of weights: Polyak & Juditsky 1992; as used for e.g. Mean Teacher (Tarvainen & Valpola 2017, arXiv:1703.01780).
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable, Iterable
from copy import deepcopy
from typing import Any, Literal, TypeAlias

import torch
from torch import Tensor
from torch.nn import Module

from optimlab.lr_scheduler import _GET_LR_OUTSIDE_STEP_WARNING, LRScheduler, _format_param
from optimlab.optimizer import _FOREACH_DEVICES, _group_tensors_by_device_and_dtype

__all__ = [
    "SWALR",
    "AveragedModel",
    "get_ema_avg_fn",
    "get_ema_multi_avg_fn",
    "get_swa_avg_fn",
    "get_swa_multi_avg_fn",
    "update_bn",
]

PARAM_LIST: TypeAlias = tuple[Tensor, ...] | list[Tensor]
AvgFn: TypeAlias = Callable[[Tensor, Tensor, Tensor | int], Tensor]
MultiAvgFn: TypeAlias = Callable[[PARAM_LIST, PARAM_LIST, Tensor | int], None]


def _check_decay(decay: float) -> None:
    if decay < 0.0 or decay > 1.0:
        raise ValueError(f"Invalid decay value {decay} provided. Please provide a value in [0,1] range.")


def _lerp_capable(tensor: Tensor) -> bool:
    return torch.is_floating_point(tensor) or torch.is_complex(tensor)


def get_ema_multi_avg_fn(decay: float = 0.999) -> MultiAvgFn:
    """EMA over lists of tensors, in place: ``ema = decay * ema + (1 - decay) * current``.

    Floating/complex tensors use one ``lerp`` towards ``current`` with weight ``1 - decay``.
    """
    _check_decay(decay)

    @torch.no_grad()
    def ema_update(ema_param_list: PARAM_LIST, current_param_list: PARAM_LIST, _: Tensor | int) -> None:
        if _lerp_capable(ema_param_list[0]):
            torch._foreach_lerp_(ema_param_list, current_param_list, 1 - decay)
            return
        for p_ema, p_model in zip(ema_param_list, current_param_list, strict=True):
            p_ema.copy_(p_ema * decay + p_model * (1 - decay))

    return ema_update


def get_swa_multi_avg_fn() -> MultiAvgFn:
    """Equal-weight running mean over lists of tensors, in place: ``avg += (current - avg) / (n + 1)``."""

    @torch.no_grad()
    def swa_update(averaged_param_list: PARAM_LIST, current_param_list: PARAM_LIST, num_averaged: Tensor | int) -> None:
        if _lerp_capable(averaged_param_list[0]):
            torch._foreach_lerp_(averaged_param_list, current_param_list, 1 / (num_averaged + 1))  # type: ignore[arg-type]
            return
        diffs = torch._foreach_sub(current_param_list, averaged_param_list)
        if isinstance(num_averaged, Tensor):
            torch._foreach_addcdiv_(averaged_param_list, diffs, [num_averaged + 1] * len(averaged_param_list))
        else:
            torch._foreach_add_(averaged_param_list, diffs, alpha=1.0 / (num_averaged + 1))

    return swa_update


def get_ema_avg_fn(decay: float = 0.999) -> AvgFn:
    """EMA of one tensor: returns ``decay * ema + (1 - decay) * current``."""
    _check_decay(decay)

    @torch.no_grad()
    def ema_update(ema_param: Tensor, current_param: Tensor, num_averaged: Tensor | int) -> Tensor:
        return decay * ema_param + (1 - decay) * current_param

    return ema_update


def get_swa_avg_fn() -> AvgFn:
    """Running mean of one tensor: returns ``avg + (current - avg) / (num_averaged + 1)``."""

    @torch.no_grad()
    def swa_update(averaged_param: Tensor, current_param: Tensor, num_averaged: Tensor | int) -> Tensor:
        return averaged_param + (current_param - averaged_param) / (num_averaged + 1)

    return swa_update


class AveragedModel(Module):
    """A copy of ``model`` whose parameters are a running average (SWA by default, or EMA) of ``model``'s.

    ``update_parameters(model)`` folds the model's current parameters into the average: the first call copies
    them, later calls apply ``multi_avg_fn`` (to lists of tensors grouped by device and dtype) or ``avg_fn`` (per
    tensor), default: equal-weight mean.  ``n_averaged`` (a buffer, saved in ``state_dict``) counts the calls.

    Args:
        model: the model to average (deep-copied).
        device: where to keep the average (default: where ``model`` is).
        avg_fn: ``avg_fn(averaged, current, n_averaged) -> new averaged`` per tensor.
        multi_avg_fn: ``multi_avg_fn(averaged_list, current_list, n_averaged)`` updating in place.
        use_buffers: average buffers too (e.g. BatchNorm statistics) instead of copying them from ``model``.

    Example (EMA)::

        ema_model = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.999), use_buffers=True)
        ...
        ema_model.update_parameters(model)
    """

    n_averaged: Tensor

    def __init__(
        self,
        model: Module,
        device: int | torch.device | None = None,
        avg_fn: AvgFn | None = None,
        multi_avg_fn: MultiAvgFn | None = None,
        use_buffers: bool = False,
    ) -> None:
        super().__init__()
        if avg_fn is not None and multi_avg_fn is not None:
            raise AssertionError("Only one of avg_fn and multi_avg_fn should be provided")
        self.module = deepcopy(model)
        if device is not None:
            self.module = self.module.to(device)
        self.register_buffer("n_averaged", torch.tensor(0, dtype=torch.long, device=device))
        self.avg_fn = avg_fn
        self.multi_avg_fn = multi_avg_fn
        self.use_buffers = use_buffers

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Run the averaged copy of the model."""
        return self.module(*args, **kwargs)

    def _tensor_pairs(self, model: Module) -> Iterable[tuple[Tensor, Tensor]]:
        if self.use_buffers:
            mine = itertools.chain(self.module.parameters(), self.module.buffers())
            theirs = itertools.chain(model.parameters(), model.buffers())
        else:
            mine, theirs = self.parameters(), model.parameters()
        # Not strict, as torch: extra tensors on either side are ignored.
        return zip(mine, theirs, strict=False)

    def update_parameters(self, model: Module) -> None:
        """Fold ``model``'s current parameters (and buffers with ``use_buffers``) into the average."""
        averaged: list[Tensor] = []
        current: list[Tensor] = []
        first = bool(self.n_averaged == 0)
        for p_averaged, p_model in self._tensor_pairs(model):
            p_model_ = p_model.detach().to(p_averaged.device)
            averaged.append(p_averaged.detach())
            current.append(p_model_)
            if first:
                p_averaged.detach().copy_(p_model_)

        if self.n_averaged > 0:
            if self.multi_avg_fn is not None or self.avg_fn is None:
                self._update_grouped(averaged, current)
            else:
                for p_averaged, p_model in zip(averaged, current, strict=True):
                    n_averaged = self.n_averaged.to(p_averaged.device)
                    p_averaged.detach().copy_(self.avg_fn(p_averaged.detach(), p_model, n_averaged))

        if not self.use_buffers:
            # Buffers are not averaged: keep the model's (e.g. BatchNorm statistics, see update_bn).
            for b_averaged, b_model in zip(self.module.buffers(), model.buffers(), strict=True):
                b_averaged.detach().copy_(b_model.detach().to(b_averaged.device))
        self.n_averaged += 1

    def _update_grouped(self, averaged: list[Tensor], current: list[Tensor]) -> None:
        grouped = _group_tensors_by_device_and_dtype([averaged, current])  # type: ignore[list-item]
        for (device, _), ([averaged_group, current_group], _) in grouped.items():
            n_averaged = self.n_averaged.to(device)
            if self.multi_avg_fn:
                self.multi_avg_fn(averaged_group, current_group, n_averaged)  # type: ignore[arg-type]
            elif device is not None and device.type in _FOREACH_DEVICES:
                get_swa_multi_avg_fn()(averaged_group, current_group, n_averaged)  # type: ignore[arg-type]
            else:
                # No multi-tensor kernels here (CPU): the per-tensor rule, which rounds like torch does.
                swa = get_swa_avg_fn()
                for p_averaged, p_model in zip(averaged_group, current_group, strict=True):
                    p_averaged.copy_(swa(p_averaged, p_model, n_averaged))  # type: ignore[arg-type]


@torch.no_grad()
def update_bn(loader: Iterable[Any], model: Module, device: int | torch.device | None = None) -> None:
    """Recompute the BatchNorm running statistics of ``model`` with one pass over ``loader``.

    Averaged weights need statistics of their own.  Each BatchNorm's statistics are reset and accumulated as an
    equal-weight average over the batches (``momentum=None``); momenta and the train/eval mode are restored.

    Args:
        loader: batches; a list/tuple batch contributes its first element.
        model: the model (e.g. an :class:`AveragedModel`).
        device: if given, each batch is moved there first.
    """
    momenta: dict[Module, Any] = {}
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            momenta[module] = module.momentum
    if not momenta:
        return

    was_training = model.training
    model.train()
    for module in momenta:
        module.momentum = None  # type: ignore[assignment]
    for batch in loader:
        if isinstance(batch, (list, tuple)):
            batch = batch[0]
        if device is not None:
            batch = batch.to(device)
        model(batch)
    for module, momentum in momenta.items():
        module.momentum = momentum
    model.train(was_training)


class SWALR(LRScheduler):
    """Anneal each group's lr to ``swa_lr`` over ``anneal_epochs`` epochs, then hold it (the SWA phase).

    With ``alpha(t) = (1 - cos(pi * t)) / 2`` ("cos") or ``t`` ("linear") and
    ``t = clamp(step / max(1, anneal_epochs), 0, 1)``::

        lr = swa_lr * alpha(t) + lr_0 * (1 - alpha(t))

    where ``lr_0`` is recovered from the current lr and the previous ``alpha`` (so the schedule is chainable).

    Args:
        optimizer: the optimizer.
        swa_lr: the SWA learning rate, or one per param group.
        anneal_epochs: epochs of annealing (0: jump to ``swa_lr``).
        anneal_strategy: ``"cos"`` or ``"linear"``.
        last_epoch: see :class:`~optimlab.lr_scheduler.LRScheduler`.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        swa_lr: float | list[float],
        anneal_epochs: int = 10,
        anneal_strategy: Literal["cos", "linear"] = "cos",
        last_epoch: int = -1,
    ) -> None:
        swa_lrs = _format_param("swa_lr", optimizer, swa_lr)
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"anneal_strategy must be one of 'cos' or 'linear', instead got {anneal_strategy}")
        if not isinstance(anneal_epochs, int) or anneal_epochs < 0:
            raise ValueError(f"anneal_epochs must be equal or greater than 0, got {anneal_epochs}")
        # Everything is validated: now write into the param groups.
        for group_swa_lr, group in zip(swa_lrs, optimizer.param_groups, strict=True):
            group["swa_lr"] = group_swa_lr
        self._set_anneal_func(anneal_strategy)
        self.anneal_epochs = anneal_epochs
        super().__init__(optimizer, last_epoch)

    @staticmethod
    def _linear_anneal(t: float) -> float:
        return t

    @staticmethod
    def _cosine_anneal(t: float) -> float:
        return (1 - math.cos(math.pi * t)) / 2

    @staticmethod
    def _get_initial_lr(lr: Any, swa_lr: Any, alpha: float) -> Any:
        """The lr that annealing by ``alpha`` towards ``swa_lr`` turned into ``lr``."""
        if alpha == 1:
            return swa_lr
        return (lr - alpha * swa_lr) / (1 - alpha)

    def _progress(self, step: int) -> float:
        return max(0, min(1, step / max(1, self.anneal_epochs)))

    def get_lr(self) -> list[float | Tensor]:
        if not self._get_lr_called_within_step:
            warnings.warn(_GET_LR_OUTSIDE_STEP_WARNING, UserWarning, stacklevel=2)
        step = self._step_count - 1
        if self.anneal_epochs == 0:
            step = max(1, step)
        groups = self.optimizer.param_groups
        prev_alpha = self.anneal_func(self._progress(step - 1))
        start_lrs = [self._get_initial_lr(group["lr"], group["swa_lr"], prev_alpha) for group in groups]
        alpha = self.anneal_func(self._progress(step))
        return [group["swa_lr"] * alpha + lr * (1 - alpha) for group, lr in zip(groups, start_lrs, strict=True)]

    def _set_anneal_func(self, anneal_strategy: Literal["cos", "linear"]) -> None:
        self._anneal_strategy = anneal_strategy
        self.anneal_func = self._cosine_anneal if anneal_strategy == "cos" else self._linear_anneal

    def state_dict(self) -> dict[str, Any]:
        """Every attribute except the optimizer and the annealing function (rebuilt from its name)."""
        return {key: value for key, value in self.__dict__.items() if key not in ("optimizer", "anneal_func")}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the saved attributes and the annealing function."""
        self.__dict__.update(state_dict)
        self._set_anneal_func(self._anneal_strategy)
