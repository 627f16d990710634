"""Learning-rate schedulers: all of torch 2.13's, float-for-float, and the schedules torch lacks.

The torch schedulers (``LambdaLR`` ... ``ReduceLROnPlateau``) have torch's signatures, defaults, warnings, error
messages and ``state_dict`` keys, and set the same learning rate (and momentum / ``betas[0]`` where torch cycles
them) at every step, bit for bit; a state dict saved by torch's scheduler loads into ours and the other way round.
They drive optimlab optimizers and ``torch.optim`` optimizers alike (``isinstance(opt, torch.optim.Optimizer)``
holds for both), and a Tensor learning rate is updated in place (``fill_``), never replaced or aliased.

``LRScheduler`` subclasses ``torch.optim.lr_scheduler.LRScheduler`` (and ``ReduceLROnPlateau`` torch's
``ReduceLROnPlateau``) only so that trainers that check ``isinstance`` accept ours; every method is defined here and
none of torch's runs.

Beyond torch (see ``docs/schedulers.md``):

* :class:`LinearWarmupCosineAnnealingLR` and :class:`LinearWarmupLR` (warmup, then any scheduler),
* :class:`WarmupStableDecayLR` (WSD),
* :class:`HyperparameterScheduler`: schedules any hyperparameter of the param groups (``momentum``,
  ``weight_decay``, ``betas[0]``, ``betas[1]``, ...),
* :class:`SequentialLR` resumes correctly with ``last_epoch`` (pytorch issue #162591); fresh runs are unchanged.
"""

from __future__ import annotations

import math
import re
import types
import warnings
import weakref
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from functools import partial, wraps
from typing import Any, Literal, SupportsFloat, TypedDict

import torch
import torch.optim.lr_scheduler as _torch_lr_scheduler
from torch import Tensor

from optimlab import schedules
from optimlab.optimizer import _to_scalar

__all__ = [
    "ChainedScheduler",
    "ConstantLR",
    "CosineAnnealingLR",
    "CosineAnnealingWarmRestarts",
    "CyclicLR",
    "ExponentialLR",
    "HyperparameterScheduler",
    "LRScheduler",
    "LambdaLR",
    "LinearLR",
    "LinearWarmupCosineAnnealingLR",
    "LinearWarmupLR",
    "MultiStepLR",
    "MultiplicativeLR",
    "OneCycleLR",
    "PolynomialLR",
    "ReduceLROnPlateau",
    "SequentialLR",
    "StepLR",
    "WarmupStableDecayLR",
]

EPOCH_DEPRECATION_WARNING = (
    "The epoch parameter in `scheduler.step()` was not necessary and is being deprecated where possible. "
    "Please use `scheduler.step()` to step the scheduler. During the deprecation, if epoch is different from "
    "None, the closed form is used instead of the new chainable form, where available. Please open an issue if "
    "you are unable to replicate your use case: https://github.com/pytorch/pytorch/issues/new/choose."
)

_HOW_TO_ADJUST = "See more details at https://pytorch.org/docs/stable/optim.html#how-to-adjust-learning-rate"
_STEP_OVERRIDDEN_WARNING = (
    "Seems like `optimizer.step()` has been overridden after learning rate scheduler initialization. Please, "
    "make sure to call `optimizer.step()` before `lr_scheduler.step()`. " + _HOW_TO_ADJUST
)
_STEP_ORDER_WARNING = (
    "Detected call of `lr_scheduler.step()` before `optimizer.step()`. In PyTorch 1.1.0 and later, you should "
    "call them in the opposite order: `optimizer.step()` before `lr_scheduler.step()`.  Failure to do this will "
    "result in PyTorch skipping the first value of the learning rate schedule. " + _HOW_TO_ADJUST
)
_GET_LR_OUTSIDE_STEP_WARNING = "To get the last learning rate computed by the scheduler, please use `get_last_lr()`."

# Private marker attributes shared with torch's schedulers, so that ours and theirs can wrap the same optimizer.
_STEP_WRAPPED = "_wrapped_by_lr_sched"
_OPT_CALLED = "_opt_called"


# --------------------------------------------------------------------------------------------------------------
# Reading and writing param-group values.  Tensors are cloned on the way out and filled in place on the way in,
# so a scheduler never holds an alias of a live hyperparameter and never replaces a Tensor by a float.


def _copy_value(value: Any) -> Any:
    return value.clone() if isinstance(value, Tensor) else value


def _format_param(name: str, optimizer: torch.optim.Optimizer, param: Any) -> list[Any]:
    """One value per param group: a list/tuple must match the groups, a scalar is repeated; Tensors cloned."""
    n_groups = len(optimizer.param_groups)
    if isinstance(param, (list, tuple)):
        if len(param) != n_groups:
            raise ValueError(
                f"{name} must have the same length as optimizer.param_groups. "
                f"{name} has {len(param)} values, param_groups has {n_groups}."
            )
        values = list(param)
    else:
        values = [param] * n_groups
    return [_copy_value(v) for v in values]


def _param_groups_val_list(optimizer: torch.optim.Optimizer, key: str) -> list[Any]:
    """``group[key]`` of every param group (Tensors cloned)."""
    return [_copy_value(group[key]) for group in optimizer.param_groups]


def _update_param_group_val(param_group: dict[str, Any], key: str, val: Any) -> None:
    """Set ``param_group[key] = val``, in place (keeping object and dtype) when the current value is a Tensor."""
    current = param_group[key]
    if isinstance(current, Tensor):
        current.fill_(_to_scalar(val))
    else:
        param_group[key] = val


def _set_momentum(param_group: dict[str, Any], momentum: Any, use_beta1: bool) -> None:
    # As torch: betas[0] is replaced by rebuilding the tuple, momentum by assignment.
    if use_beta1:
        param_group["betas"] = (momentum, *param_group["betas"][1:])
    else:
        param_group["momentum"] = momentum


def _check_optimizer(optimizer: Any) -> None:
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")


def _is_plateau_scheduler(scheduler: Any) -> bool:
    return isinstance(scheduler, _torch_lr_scheduler.ReduceLROnPlateau)


# --------------------------------------------------------------------------------------------------------------
# The base class


def _track_optimizer_step(optimizer: torch.optim.Optimizer) -> None:
    """Make ``optimizer.step()`` record that it ran (``optimizer._opt_called``), for the call-order warning.

    The wrapper is set on the instance and reaches the optimizer through a weak reference: neither the optimizer
    nor the scheduler is kept alive by it (an optimizer must be collectable once its scheduler is gone).
    """
    current_step = optimizer.step
    if hasattr(current_step, _STEP_WRAPPED):
        return
    opt_ref = weakref.ref(optimizer)
    plain_function = getattr(current_step, "__func__", None)

    if plain_function is not None:

        @wraps(plain_function)
        def step_and_mark(*args: Any, **kwargs: Any) -> Any:
            opt = opt_ref()
            setattr(opt, _OPT_CALLED, True)
            return plain_function.__get__(opt, type(opt))(*args, **kwargs)

    else:  # ``step`` is some other callable (a partial, a lambda): call it as it is.

        @wraps(current_step)
        def step_and_mark(*args: Any, **kwargs: Any) -> Any:
            setattr(opt_ref(), _OPT_CALLED, True)
            return current_step(*args, **kwargs)

    setattr(step_and_mark, _STEP_WRAPPED, True)
    optimizer.step = step_and_mark  # type: ignore[method-assign]


class LRScheduler(_torch_lr_scheduler.LRScheduler):
    """Base class of the learning-rate schedulers (torch's ``LRScheduler`` contract).

    Construction records ``initial_lr`` in every param group (when ``last_epoch == -1``), takes ``base_lrs`` from
    it and performs a first ``step()``, so a fresh scheduler has ``last_epoch == 0``.  ``step()`` advances
    ``last_epoch`` and writes ``get_lr()`` into the groups; ``step(epoch)`` (deprecated, warns) jumps to ``epoch``
    and uses the closed form ``_get_closed_form_lr()`` where a scheduler has one.

    Args:
        optimizer: an optimlab or ``torch.optim`` optimizer.
        last_epoch: index of the last epoch; ``-1`` starts fresh, ``>= 0`` resumes and needs ``initial_lr`` in
            every param group (load the optimizer's state first).
    """

    _get_lr_called_within_step: bool = False
    _is_initial: bool = False

    def __init__(self, optimizer: torch.optim.Optimizer, last_epoch: int = -1) -> None:
        _check_optimizer(optimizer)
        self.optimizer = optimizer
        if last_epoch == -1:
            for group in optimizer.param_groups:
                if "initial_lr" not in group:
                    group["initial_lr"] = _copy_value(group["lr"])
        else:
            for i, group in enumerate(optimizer.param_groups):
                if "initial_lr" not in group:
                    raise KeyError(
                        f"param 'initial_lr' is not specified in param_groups[{i}] when resuming scheduler with "
                        "last_epoch >= 0.\n"
                        "This typically happens when:\n"
                        "1. You're trying to resume training from a checkpoint but haven't properly loaded the "
                        "optimizer state\n"
                        "2. You're using last_epoch >= 0 for a fresh training run (not recommended)"
                    )
        self.base_lrs: list[float | Tensor] = _param_groups_val_list(optimizer, "initial_lr")
        self.last_epoch = last_epoch
        _track_optimizer_step(optimizer)
        self._initial_step()

    def _initial_step(self) -> None:
        """The step performed by the constructor (``_is_initial`` is True while it runs)."""
        self._step_count = 0
        self._is_initial = True
        try:
            self.step()
        finally:
            self._is_initial = False

    def state_dict(self) -> dict[str, Any]:
        """Every attribute except the optimizer."""
        return {key: value for key, value in self.__dict__.items() if key != "optimizer"}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the attributes saved by :meth:`state_dict`."""
        self.__dict__.update(state_dict)

    def get_last_lr(self) -> list[float | Tensor]:
        """The learning rates the last ``step()`` set, one per param group."""
        return self._last_lr

    def get_lr(self) -> list[float | Tensor]:
        """The learning rates of the current ``last_epoch`` (called by ``step()``)."""
        raise NotImplementedError

    def step(self, epoch: int | None = None) -> None:
        """Advance one epoch (or jump to ``epoch``, deprecated) and set the new learning rates."""
        if self._step_count == 1:
            if not hasattr(self.optimizer.step, _STEP_WRAPPED):
                warnings.warn(_STEP_OVERRIDDEN_WARNING, UserWarning, stacklevel=2)
            elif not getattr(self.optimizer, _OPT_CALLED, False):
                warnings.warn(_STEP_ORDER_WARNING, UserWarning, stacklevel=2)
        self._step_count += 1
        if epoch is not None:
            warnings.warn(EPOCH_DEPRECATION_WARNING, UserWarning, stacklevel=2)
        self._update_lr(epoch)

    def _compute_lrs(self, epoch: int | None) -> list[Any]:
        self._get_lr_called_within_step = True
        try:
            if epoch is None:
                self.last_epoch += 1
                return self.get_lr()
            self.last_epoch = epoch
            closed_form = getattr(self, "_get_closed_form_lr", None)
            return closed_form() if closed_form is not None else self.get_lr()
        finally:
            self._get_lr_called_within_step = False

    def _update_lr(self, epoch: int | None = None) -> None:
        values = self._compute_lrs(epoch)
        for group, lr in zip(self.optimizer.param_groups, values, strict=True):
            _update_param_group_val(group, "lr", lr)
        self._last_lr: list[float | Tensor] = _param_groups_val_list(self.optimizer, "lr")

    def _current_lrs(self) -> list[Any]:
        return _param_groups_val_list(self.optimizer, "lr")


def _warn_get_lr_called_within_step(lr_scheduler: Any) -> None:
    if not lr_scheduler._get_lr_called_within_step:
        warnings.warn(_GET_LR_OUTSIDE_STEP_WARNING, UserWarning, stacklevel=2)


class _LRScheduler(LRScheduler):
    """Old name of :class:`LRScheduler`, kept for code that subclasses it."""


# --------------------------------------------------------------------------------------------------------------
# Schedulers driven by a user function


def _lr_lambdas(optimizer: Any, lr_lambda: Any) -> list[Callable[[int], float]]:
    n_groups = len(optimizer.param_groups)
    if isinstance(lr_lambda, (list, tuple)):
        if len(lr_lambda) != n_groups:
            raise ValueError(f"Expected {n_groups} lr_lambdas, but got {len(lr_lambda)}")
        return list(lr_lambda)
    return [lr_lambda] * n_groups


def _callables_state(fns: Sequence[Callable[..., Any]]) -> list[dict[str, Any] | None]:
    # A plain function is code, not state (None); a callable object's attributes are its state.
    return [None if isinstance(fn, types.FunctionType) else fn.__dict__.copy() for fn in fns]


def _load_callables_state(fns: Sequence[Callable[..., Any]], saved: Sequence[dict[str, Any] | None]) -> None:
    for fn, fn_state in zip(fns, saved):
        if fn_state is not None:
            fn.__dict__.update(fn_state)


class _LambdaStateMixin:
    """``state_dict`` that saves the attributes of callable-object lambdas (functions themselves are not saved)."""

    lr_lambdas: list[Callable[[int], float]]

    def state_dict(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "lr_lambdas")}
        state["lr_lambdas"] = _callables_state(self.lr_lambdas)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict["lr_lambdas"]
        self.__dict__.update({k: v for k, v in state_dict.items() if k != "lr_lambdas"})
        _load_callables_state(self.lr_lambdas, saved)


class LambdaLR(_LambdaStateMixin, LRScheduler):
    """``lr = base_lr * lr_lambda(epoch)``.

    Args:
        optimizer: the optimizer.
        lr_lambda: a function of the epoch, or one per param group.
        last_epoch: see :class:`LRScheduler`.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        lr_lambda: Callable[[int], float] | list[Callable[[int], float]],
        last_epoch: int = -1,
    ) -> None:
        self.optimizer = optimizer
        self.lr_lambdas = _lr_lambdas(optimizer, lr_lambda)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float | Tensor]:
        _warn_get_lr_called_within_step(self)
        return [base_lr * fn(self.last_epoch) for fn, base_lr in zip(self.lr_lambdas, self.base_lrs, strict=True)]


class MultiplicativeLR(_LambdaStateMixin, LRScheduler):
    """``lr = lr * lr_lambda(epoch)`` at every step after the first (chainable).

    Args:
        optimizer: the optimizer.
        lr_lambda: a function of the epoch, or one per param group.
        last_epoch: see :class:`LRScheduler`.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        lr_lambda: Callable[[int], float] | list[Callable[[int], float]],
        last_epoch: int = -1,
    ) -> None:
        self.optimizer = optimizer
        self.lr_lambdas = _lr_lambdas(optimizer, lr_lambda)
        for fn in self.lr_lambdas:
            if not callable(fn):
                raise TypeError(f"lr_lambda should be a function, but got {type(fn).__name__}")
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float | Tensor]:
        _warn_get_lr_called_within_step(self)
        if self._is_initial:
            return self._current_lrs()
        return [
            group["lr"] * fn(self.last_epoch)
            for fn, group in zip(self.lr_lambdas, self.optimizer.param_groups, strict=True)
        ]


# --------------------------------------------------------------------------------------------------------------
# Decays.  ``get_lr`` is chainable (it multiplies the current group lr, so hand edits and other schedulers
# compose); ``_get_closed_form_lr`` computes the value from ``base_lrs`` and is used by ``step(epoch)``.


class StepLR(LRScheduler):
    """Multiply the lr by ``gamma`` every ``step_size`` epochs.

    Closed form: ``lr = base_lr * gamma ** (epoch // step_size)``.
    """

    def __init__(
        self, optimizer: torch.optim.Optimizer, step_size: int, gamma: float = 0.1, last_epoch: int = -1
    ) -> None:
        self.step_size = step_size
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float | Tensor]:
        _warn_get_lr_called_within_step(self)
        epoch = self.last_epoch
        if epoch == 0 or epoch % self.step_size != 0:
            return self._current_lrs()
        return [group["lr"] * self.gamma for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list[float | Tensor]:
        decays = self.last_epoch // self.step_size
        return [base_lr * self.gamma**decays for base_lr in self.base_lrs]


class MultiStepLR(LRScheduler):
    """Multiply the lr by ``gamma`` at each milestone (a milestone listed k times multiplies by ``gamma ** k``).

    Closed form: ``lr = base_lr * gamma ** (number of milestones <= epoch)``.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        milestones: Iterable[int],
        gamma: float = 0.1,
        last_epoch: int = -1,
    ) -> None:
        self.milestones = Counter(milestones)
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float | Tensor]:
        _warn_get_lr_called_within_step(self)
        if self.last_epoch not in self.milestones:
            return self._current_lrs()
        hits = self.milestones[self.last_epoch]
        return [group["lr"] * self.gamma**hits for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list[float | Tensor]:
        passed = bisect_right(sorted(self.milestones.elements()), self.last_epoch)
        return [base_lr * self.gamma**passed for base_lr in self.base_lrs]


class ConstantLR(LRScheduler):
    """Multiply the lr by ``factor`` until epoch ``total_iters``, then restore it.

    Closed form: ``lr = base_lr * (factor if epoch < total_iters else 1)``.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        factor: float = 1.0 / 3,
        total_iters: int = 5,
        last_epoch: int = -1,
    ) -> None:
        if factor > 1.0 or factor < 0:
            raise ValueError("Constant multiplicative factor expected to be between 0 and 1.")
        self.factor = factor
        self.total_iters = total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float | Tensor]:
        _warn_get_lr_called_within_step(self)
        epoch = self.last_epoch
        if epoch == 0:
            return [group["lr"] * self.factor for group in self.optimizer.param_groups]
        if epoch == self.total_iters:
            return [group["lr"] * (1.0 / self.factor) for group in self.optimizer.param_groups]
        return self._current_lrs()

    def _get_closed_form_lr(self) -> list[float | Tensor]:
        done = self.last_epoch >= self.total_iters
        return [base_lr * (self.factor + done * (1 - self.factor)) for base_lr in self.base_lrs]


class LinearLR(LRScheduler):
    """Scale the lr by a factor going linearly from ``start_factor`` to ``end_factor`` over ``total_iters``.

    Closed form: ``lr = base_lr * (start + (end - start) * min(total_iters, epoch) / total_iters)``.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        start_factor: float = 1.0 / 3,
        end_factor: float = 1.0,
        total_iters: int = 5,
        last_epoch: int = -1,
    ) -> None:
        if start_factor > 1.0 or start_factor <= 0:
            raise ValueError("Starting multiplicative factor expected to be greater than 0 and less or equal to 1.")
        if end_factor > 1.0 or end_factor < 0:
            raise ValueError("Ending multiplicative factor expected to be between 0 and 1.")
        self.start_factor = start_factor
        self.end_factor = end_factor
        self.total_iters = total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float | Tensor]:
        _warn_get_lr_called_within_step(self)
        epoch = self.last_epoch
        if epoch == 0:
            return [group["lr"] * self.start_factor for group in self.optimizer.param_groups]
        if self._is_initial or epoch > self.total_iters:
            return self._current_lrs()
        span = self.end_factor - self.start_factor
        # Ratio of consecutive factors, start + span * e / n over start + span * (e - 1) / n, times n.
        ratio = 1.0 + span / (self.total_iters * self.start_factor + (epoch - 1) * span)
        return [group["lr"] * ratio for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list[float | Tensor]:
        span = self.end_factor - self.start_factor
        factor = self.start_factor + span * min(self.total_iters, self.last_epoch) / self.total_iters
        return [base_lr * factor for base_lr in self.base_lrs]


class ExponentialLR(LRScheduler):
    """Multiply the lr by ``gamma`` every epoch.  Closed form: ``lr = base_lr * gamma ** epoch``."""

    def __init__(self, optimizer: torch.optim.Optimizer, gamma: float, last_epoch: int = -1) -> None:
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float | Tensor]:
        _warn_get_lr_called_within_step(self)
        if self._is_initial:
            return self._current_lrs()
        return [group["lr"] * self.gamma for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list[float | Tensor]:
        return [base_lr * self.gamma**self.last_epoch for base_lr in self.base_lrs]


class PolynomialLR(LRScheduler):
    """Polynomial decay to 0 over ``total_iters``.

    Closed form: ``lr = base_lr * (1 - min(total_iters, epoch) / total_iters) ** power``.
    """

    def __init__(
        self, optimizer: torch.optim.Optimizer, total_iters: int = 5, power: float = 1.0, last_epoch: int = -1
    ) -> None:
        self.total_iters = total_iters
        self.power = power
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float | Tensor]:
        _warn_get_lr_called_within_step(self)
        epoch, total = self.last_epoch, self.total_iters
        if self._is_initial or epoch > total:
            return self._current_lrs()
        ratio = ((1.0 - epoch / total) / (1.0 - (epoch - 1) / total)) ** self.power
        return [group["lr"] * ratio for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list[float | Tensor]:
        factor = (1.0 - min(self.total_iters, self.last_epoch) / self.total_iters) ** self.power
        return [base_lr * factor for base_lr in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
    """Cosine annealing from ``base_lr`` to ``eta_min`` over ``T_max`` epochs (and back up, periodically).

    Closed form: ``lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2`` (Loshchilov & Hutter
    2017, "SGDR", arXiv:1608.03983, without restarts).  The chainable ``get_lr`` applies the ratio of consecutive
    cosine values to the current lr, as torch does.
    """

    def __init__(
        self, optimizer: torch.optim.Optimizer, T_max: int, eta_min: float = 0.0, last_epoch: int = -1
    ) -> None:
        self.T_max = T_max
        self.eta_min = eta_min
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float | Tensor]:
        _warn_get_lr_called_within_step(self)
        epoch, t_max, eta_min = self.last_epoch, self.T_max, self.eta_min
        groups = self.optimizer.param_groups
        if self._is_initial:
            return self._current_lrs()
        if self._step_count == 1 and epoch > 0:
            # First step after resuming with last_epoch > 0: the value at that epoch.
            cos_term = 1 + math.cos(epoch * math.pi / t_max)
            return [eta_min + (base_lr - eta_min) * cos_term / 2 for base_lr in self.base_lrs]
        if (epoch - 1 - t_max) % (2 * t_max) == 0:
            # Leaving the minimum: the ratio below would divide by zero.
            rise = 1 - math.cos(math.pi / t_max)
            return [
                group["lr"] + (base_lr - eta_min) * rise / 2
                for base_lr, group in zip(self.base_lrs, groups, strict=True)
            ]
        ratio = (1 + math.cos(math.pi * epoch / t_max)) / (1 + math.cos(math.pi * (epoch - 1) / t_max))
        return [ratio * (group["lr"] - eta_min) + eta_min for group in groups]

    def _get_closed_form_lr(self) -> list[float | Tensor]:
        cos_term = 1 + math.cos(math.pi * self.last_epoch / self.T_max)
        return [self.eta_min + (base_lr - self.eta_min) * cos_term / 2 for base_lr in self.base_lrs]


class CosineAnnealingWarmRestarts(LRScheduler):
    """SGDR: cosine annealing restarted every ``T_i`` epochs, with ``T_i`` growing by ``T_mult`` after each restart.

    ``lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * T_cur / T_i)) / 2`` (Loshchilov & Hutter 2017,
    arXiv:1608.03983).  ``step(epoch)`` accepts fractional epochs and does not warn.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        T_0: int,
        T_mult: int = 1,
        eta_min: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        if T_0 <= 0 or not isinstance(T_0, int):
            raise ValueError(f"Expected positive integer T_0, but got {T_0}")
        if T_mult < 1 or not isinstance(T_mult, int):
            raise ValueError(f"Expected integer T_mult >= 1, but got {T_mult}")
        if not isinstance(eta_min, (float, int)):
            raise ValueError(f"Expected float or int eta_min, but got {eta_min} of type {type(eta_min)}")
        self.T_0 = T_0
        self.T_i = T_0
        self.T_mult = T_mult
        self.eta_min = eta_min
        self.T_cur = last_epoch
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float | Tensor]:
        _warn_get_lr_called_within_step(self)
        cos_term = 1 + math.cos(math.pi * self.T_cur / self.T_i)
        return [self.eta_min + (base_lr - self.eta_min) * cos_term / 2 for base_lr in self.base_lrs]

    def _locate(self, epoch: float) -> None:
        """Set ``T_i`` and ``T_cur`` for an absolute (possibly fractional) epoch."""
        if epoch < 0:
            raise ValueError(f"Expected non-negative epoch, but got {epoch}")
        t_0, t_mult = self.T_0, self.T_mult
        if epoch < t_0:
            self.T_i = t_0
            self.T_cur = epoch
        elif t_mult == 1:
            self.T_cur = epoch % t_0
        else:
            # Restarts so far n solves T_0 * (T_mult**n - 1) / (T_mult - 1) <= epoch.
            n = int(math.log(epoch / t_0 * (t_mult - 1) + 1, t_mult))
            self.T_cur = epoch - t_0 * (t_mult**n - 1) / (t_mult - 1)
            self.T_i = t_0 * t_mult**n

    def step(self, epoch: float | None = None) -> None:  # type: ignore[override]
        """Advance one epoch, or go to ``epoch`` (fractional epochs allowed, e.g. ``epoch + i / iters``)."""
        if epoch is None and self.last_epoch < 0:
            epoch = 0
        if epoch is None:
            epoch = self.last_epoch + 1
            self.T_cur = self.T_cur + 1
            if self.T_cur >= self.T_i:
                self.T_cur = self.T_cur % self.T_i
                self.T_i = self.T_i * self.T_mult
        else:
            self._locate(epoch)
        self.last_epoch = math.floor(epoch)
        self._get_lr_called_within_step = True
        try:
            values = self.get_lr()
        finally:
            self._get_lr_called_within_step = False
        for group, lr in zip(self.optimizer.param_groups, values, strict=True):
            _update_param_group_val(group, "lr", lr)
        self._last_lr = _param_groups_val_list(self.optimizer, "lr")


# --------------------------------------------------------------------------------------------------------------
# Cyclical schedules (they also cycle momentum, or betas[0] for Adam-like optimizers)


def _momentum_setup(
    scheduler: Any, optimizer: torch.optim.Optimizer, base_momentum: Any, max_momentum: Any, max_first: bool
) -> tuple[list[Any], list[Any]] | None:
    """Validate the momentum arguments of CyclicLR/OneCycleLR; nothing is written yet.

    Returns ``(base_momentums, max_momentums)``; ``max_first`` checks ``max_momentum`` first (OneCycleLR's order).
    """
    if not scheduler.cycle_momentum:
        return None
    if "momentum" not in optimizer.defaults and "betas" not in optimizer.defaults:
        raise ValueError("optimizer must support momentum or beta1 with `cycle_momentum` option enabled")
    scheduler.use_beta1 = "betas" in optimizer.defaults
    if max_first:
        max_momentums = _format_param("max_momentum", optimizer, max_momentum)
        return _format_param("base_momentum", optimizer, base_momentum), max_momentums
    base_momentums = _format_param("base_momentum", optimizer, base_momentum)
    return base_momentums, _format_param("max_momentum", optimizer, max_momentum)


def _write_initial_momenta(
    optimizer: torch.optim.Optimizer, base_momentums: list[Any], max_momentums: list[Any], use_beta1: bool
) -> None:
    for base_m, max_m, group in zip(base_momentums, max_momentums, optimizer.param_groups, strict=True):
        _set_momentum(group, max_m, use_beta1)
        group["max_momentum"] = max_m
        group["base_momentum"] = base_m


class CyclicLR(LRScheduler):
    """Cyclical learning rate between ``base_lr`` and ``max_lr`` (Smith 2017, "Cyclical Learning Rates for Training
    Neural Networks", arXiv:1506.01186); momentum cycles inversely between ``max_momentum`` and ``base_momentum``.

    With ``cycle = floor(1 + epoch / total)``, ``x = 1 + epoch / total - cycle`` and ``s = x / ratio`` on the way up
    (``(x - 1) / (ratio - 1)`` on the way down)::

        lr = base_lr + (max_lr - base_lr) * s * scale_fn(cycle or epoch)
        momentum = max_momentum - (max_momentum - base_momentum) * s * scale_fn(cycle or epoch)

    Modes: ``"triangular"`` (scale 1), ``"triangular2"`` (halves each cycle), ``"exp_range"`` (``gamma ** epoch``),
    or a custom ``scale_fn`` with ``scale_mode``.  Call ``step()`` after every batch.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        base_lr: float | list[float],
        max_lr: float | list[float],
        step_size_up: int = 2000,
        step_size_down: int | None = None,
        mode: Literal["triangular", "triangular2", "exp_range"] = "triangular",
        gamma: float = 1.0,
        scale_fn: Callable[[float], float] | None = None,
        scale_mode: Literal["cycle", "iterations"] = "cycle",
        cycle_momentum: bool = True,
        base_momentum: float = 0.8,
        max_momentum: float = 0.9,
        last_epoch: int = -1,
    ) -> None:
        _check_optimizer(optimizer)
        self.optimizer = optimizer
        base_lrs = _format_param("base_lr", optimizer, base_lr)
        self.max_lrs = _format_param("max_lr", optimizer, max_lr)
        up = float(step_size_up)
        down = float(step_size_down) if step_size_down is not None else up
        self.total_size = up + down
        self.step_ratio = up / self.total_size
        if mode not in ("triangular", "triangular2", "exp_range") and scale_fn is None:
            raise ValueError("mode is invalid and scale_fn is None")
        self.mode = mode
        self.gamma = gamma
        self._scale_fn_ref: Callable[[float], float]
        self._scale_fn_custom = scale_fn
        self.scale_mode = scale_mode
        self._init_scale_fn()
        self.cycle_momentum = cycle_momentum
        momenta = _momentum_setup(self, optimizer, base_momentum, max_momentum, max_first=False)
        # Everything is validated: now write into the param groups.
        if last_epoch == -1:
            for lr, group in zip(base_lrs, optimizer.param_groups, strict=True):
                _update_param_group_val(group, "lr", lr)
        if momenta is not None:
            self.base_momentums, self.max_momentums = momenta
            if last_epoch == -1:
                _write_initial_momenta(optimizer, self.base_momentums, self.max_momentums, self.use_beta1)
        super().__init__(optimizer, last_epoch)
        self.base_lrs = base_lrs

    def _init_scale_fn(self) -> None:
        if self._scale_fn_custom is not None:
            return
        if self.mode == "triangular":
            self._scale_fn_ref = self._triangular_scale_fn
            self.scale_mode = "cycle"
        elif self.mode == "triangular2":
            self._scale_fn_ref = self._triangular2_scale_fn
            self.scale_mode = "cycle"
        elif self.mode == "exp_range":
            self._scale_fn_ref = partial(self._exp_range_scale_fn, self.gamma)
            self.scale_mode = "iterations"

    def scale_fn(self, x: Any) -> float:
        """The amplitude scale at ``x`` (the cycle number or the iteration, per ``scale_mode``)."""
        if self._scale_fn_custom is not None:
            return self._scale_fn_custom(x)
        return self._scale_fn_ref(x)

    @staticmethod
    def _triangular_scale_fn(x: float) -> float:
        return 1.0

    @staticmethod
    def _triangular2_scale_fn(x: float) -> float:
        return 1 / (2.0 ** (x - 1))

    @staticmethod
    def _exp_range_scale_fn(gamma: float, x: float) -> float:
        return gamma**x

    def get_lr(self) -> list[float | Tensor]:
        _warn_get_lr_called_within_step(self)
        epoch = self.last_epoch
        cycle = math.floor(1 + epoch / self.total_size)
        x = 1.0 + epoch / self.total_size - cycle
        if x <= self.step_ratio:
            position = x / self.step_ratio
        else:
            position = (x - 1) / (self.step_ratio - 1)
        scale_at = cycle if self.scale_mode == "cycle" else epoch
        # scale_fn is called once per value, as torch does (a custom scale_fn may count its calls).
        lrs = [
            base_lr + (max_lr - base_lr) * position * self.scale_fn(scale_at)
            for base_lr, max_lr in zip(self.base_lrs, self.max_lrs, strict=True)
        ]
        if self.cycle_momentum:
            momenta = [
                max_m - (max_m - base_m) * position * self.scale_fn(scale_at)
                for base_m, max_m in zip(self.base_momentums, self.max_momentums, strict=True)
            ]
            for group, momentum in zip(self.optimizer.param_groups, momenta, strict=True):
                _set_momentum(group, momentum, self.use_beta1)
        return lrs

    def state_dict(self) -> dict[str, Any]:
        """As the base, without the bound scale function; a custom callable object's attributes are saved."""
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "_scale_fn_ref")}
        custom = state.pop("_scale_fn_custom")
        state["_scale_fn_custom"] = _callables_state([custom])[0] if custom is not None else None
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        custom_state = state_dict.get("_scale_fn_custom")
        self.__dict__.update({k: v for k, v in state_dict.items() if k != "_scale_fn_custom"})
        if custom_state is not None:
            self._scale_fn_custom.__dict__.update(custom_state)  # type: ignore[union-attr]
        self._init_scale_fn()


class _SchedulePhase(TypedDict):
    end_step: float
    start_lr: str
    end_lr: str
    start_momentum: str
    end_momentum: str


class OneCycleLR(LRScheduler):
    """The 1cycle policy (Smith & Topin 2017, "Super-Convergence", arXiv:1708.07120).

    The lr rises from ``max_lr / div_factor`` to ``max_lr`` over ``pct_start`` of ``total_steps``, then anneals to
    ``max_lr / div_factor / final_div_factor`` (with ``three_phase``, it first comes back down to the initial lr);
    momentum moves inversely.  Each phase anneals with ``anneal(start, end, pct)``: ``"cos"`` is
    ``end + (start - end) / 2 * (cos(pi * pct) + 1)``, ``"linear"`` is ``(end - start) * pct + start``.
    Call ``step()`` after every batch; stepping past ``total_steps`` raises.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        max_lr: float | list[float],
        total_steps: int | None = None,
        epochs: int | None = None,
        steps_per_epoch: int | None = None,
        pct_start: float = 0.3,
        anneal_strategy: Literal["cos", "linear"] = "cos",
        cycle_momentum: bool = True,
        base_momentum: float | list[float] = 0.85,
        max_momentum: float | list[float] = 0.95,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        three_phase: bool = False,
        last_epoch: int = -1,
    ) -> None:
        _check_optimizer(optimizer)
        self.optimizer = optimizer
        if total_steps is not None:
            if total_steps <= 0 or not isinstance(total_steps, int):
                raise ValueError(f"Expected positive integer total_steps, but got {total_steps}")
            self.total_steps = total_steps
        elif epochs is not None and steps_per_epoch is not None:
            if not isinstance(epochs, int) or epochs <= 0:
                raise ValueError(f"Expected positive integer epochs, but got {epochs}")
            if not isinstance(steps_per_epoch, int) or steps_per_epoch <= 0:
                raise ValueError(f"Expected positive integer steps_per_epoch, but got {steps_per_epoch}")
            self.total_steps = epochs * steps_per_epoch
        else:
            raise ValueError("You must define either total_steps OR (epochs AND steps_per_epoch)")

        self._schedule_phases: list[_SchedulePhase] = self._phases(pct_start, three_phase)
        if pct_start < 0 or pct_start > 1 or not isinstance(pct_start, float):
            raise ValueError(f"Expected float between 0 and 1 pct_start, but got {pct_start}")
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"anneal_strategy must be one of 'cos' or 'linear', instead got {anneal_strategy}")
        self._anneal_func_type = anneal_strategy
        max_lrs = _format_param("max_lr", optimizer, max_lr)
        self.cycle_momentum = cycle_momentum
        momenta = _momentum_setup(self, optimizer, base_momentum, max_momentum, max_first=True)
        # Everything is validated: now write into the param groups.
        if last_epoch == -1:
            for group, group_max_lr in zip(optimizer.param_groups, max_lrs, strict=True):
                group["initial_lr"] = group_max_lr / div_factor
                group["max_lr"] = group_max_lr
                group["min_lr"] = group["initial_lr"] / final_div_factor
            if momenta is not None:
                _write_initial_momenta(optimizer, momenta[0], momenta[1], self.use_beta1)
        super().__init__(optimizer, last_epoch)

    def _phases(self, pct_start: float, three_phase: bool) -> list[_SchedulePhase]:
        total = self.total_steps
        warmup_end = float(pct_start * total) - 1

        def phase(end_step: float, lr: tuple[str, str], momentum: tuple[str, str]) -> _SchedulePhase:
            return {
                "end_step": end_step,
                "start_lr": lr[0],
                "end_lr": lr[1],
                "start_momentum": momentum[0],
                "end_momentum": momentum[1],
            }

        if three_phase:
            return [
                phase(warmup_end, ("initial_lr", "max_lr"), ("max_momentum", "base_momentum")),
                phase(float(2 * pct_start * total) - 2, ("max_lr", "initial_lr"), ("base_momentum", "max_momentum")),
                phase(total - 1, ("initial_lr", "min_lr"), ("max_momentum", "max_momentum")),
            ]
        return [
            phase(warmup_end, ("initial_lr", "max_lr"), ("max_momentum", "base_momentum")),
            phase(total - 1, ("max_lr", "min_lr"), ("base_momentum", "max_momentum")),
        ]

    def _anneal_func(self, *args: Any, **kwargs: Any) -> Any:
        kind = getattr(self, "_anneal_func_type", None)
        if kind is None:  # a scheduler pickled before ``_anneal_func_type`` existed
            return self.anneal_func(*args, **kwargs)  # type: ignore[attr-defined]
        if kind == "cos":
            return self._annealing_cos(*args, **kwargs)
        if kind == "linear":
            return self._annealing_linear(*args, **kwargs)
        raise ValueError(f"Unknown _anneal_func_type: {kind}")

    @staticmethod
    def _annealing_cos(start: Any, end: Any, pct: float) -> Any:
        """Cosine from ``start`` (pct 0) to ``end`` (pct 1)."""
        cos_out = math.cos(math.pi * pct) + 1
        return end + (start - end) / 2.0 * cos_out

    @staticmethod
    def _annealing_linear(start: Any, end: Any, pct: float) -> Any:
        """Straight line from ``start`` (pct 0) to ``end`` (pct 1)."""
        return (end - start) * pct + start

    def get_lr(self) -> list[float | Tensor]:
        _warn_get_lr_called_within_step(self)
        step_num = self.last_epoch
        if step_num > self.total_steps:
            raise ValueError(
                f"Tried to step {step_num} times. The specified number of total steps is {self.total_steps}"
            )
        phases = self._schedule_phases
        lrs = []
        for group in self.optimizer.param_groups:
            phase_start = 0.0
            for index, phase in enumerate(phases):
                phase_end = phase["end_step"]
                if step_num <= phase_end or index == len(phases) - 1:
                    pct = (step_num - phase_start) / (phase_end - phase_start)
                    break
                phase_start = phase_end
            lrs.append(self._anneal_func(group[phase["start_lr"]], group[phase["end_lr"]], pct))
            if self.cycle_momentum:
                momentum = self._anneal_func(group[phase["start_momentum"]], group[phase["end_momentum"]], pct)
                _set_momentum(group, momentum, self.use_beta1)
        return lrs


# --------------------------------------------------------------------------------------------------------------
# ReduceLROnPlateau


class ReduceLROnPlateau(LRScheduler, _torch_lr_scheduler.ReduceLROnPlateau):
    """Multiply the lr by ``factor`` when ``metrics`` (passed to ``step``) stopped improving for ``patience`` epochs.

    Improvement is ``a < best * (1 - threshold)`` (mode "min", threshold_mode "rel"), ``a < best - threshold``
    ("min", "abs"), ``a > best * (1 + threshold)`` ("max", "rel") or ``a > best + threshold`` ("max", "abs").
    After a reduction, ``cooldown`` epochs pass before bad epochs count again; lrs never go below ``min_lr`` and
    changes smaller than ``eps`` are skipped.  It subclasses torch's ``ReduceLROnPlateau`` too, so trainers
    recognise it; like torch's, it does not run the :class:`LRScheduler` constructor.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        mode: Literal["min", "max"] = "min",
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: Literal["rel", "abs"] = "rel",
        cooldown: int = 0,
        min_lr: list[float] | float = 0,
        eps: float = 1e-8,
    ) -> None:
        if factor >= 1.0:
            raise ValueError("Factor should be < 1.0.")
        _check_optimizer(optimizer)
        n_groups = len(optimizer.param_groups)
        if isinstance(min_lr, (list, tuple)):
            if len(min_lr) != n_groups:
                raise ValueError(f"expected {n_groups} min_lrs, got {len(min_lr)}")
            default_min_lr = None
            min_lrs = list(min_lr)
        else:
            default_min_lr = min_lr
            min_lrs = [min_lr] * n_groups
        self._check_modes(mode, threshold_mode)
        self.factor = factor
        self.optimizer = optimizer
        self.default_min_lr = default_min_lr
        self.min_lrs = min_lrs
        self.patience = patience
        self.cooldown = cooldown
        self.eps = eps
        self.last_epoch = 0
        self._last_lr = _param_groups_val_list(optimizer, "lr")
        self._init_is_better(mode=mode, threshold=threshold, threshold_mode=threshold_mode)
        self._reset()

    def _reset(self) -> None:
        self.best = self.mode_worse
        self.cooldown_counter = 0
        self.num_bad_epochs = 0

    def step(self, metrics: SupportsFloat, epoch: int | None = None) -> None:  # type: ignore[override]
        """Record this epoch's metric and reduce the lr if it has plateaued."""
        current = float(metrics)
        if epoch is None:
            epoch = self.last_epoch + 1
        else:
            warnings.warn(EPOCH_DEPRECATION_WARNING, UserWarning, stacklevel=2)
        self.last_epoch = epoch

        if self._is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.in_cooldown:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0  # bad epochs during cooldown do not count
        if self.num_bad_epochs > self.patience:
            self._reduce_lr(epoch)
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = _param_groups_val_list(self.optimizer, "lr")

    def _reduce_lr(self, epoch: int) -> None:
        groups = self.optimizer.param_groups
        if len(groups) != len(self.min_lrs):
            if self.default_min_lr is None:
                raise RuntimeError(
                    f"The number of param groups in the `optimizer` ({len(groups)}) differs from when "
                    f"`ReduceLROnPlateau` was initialized ({len(self.min_lrs)}), usually due to a new param group "
                    "being added to the optimizer. Please modify the `min_lrs` field to match the length of the "
                    "`optimizer` param groups."
                )
            self.min_lrs = [self.default_min_lr] * len(groups)
        for group, min_lr in zip(groups, self.min_lrs):
            old_lr = float(group["lr"])
            new_lr = max(old_lr * self.factor, min_lr)
            if old_lr - new_lr > self.eps:
                _update_param_group_val(group, "lr", new_lr)

    @property
    def in_cooldown(self) -> bool:
        """True while the cooldown after a reduction lasts."""
        return self.cooldown_counter > 0

    def _is_better(self, a: float, best: float) -> bool:
        if self.mode == "min":
            if self.threshold_mode == "rel":
                return a < best * (1.0 - self.threshold)
            return a < best - self.threshold
        if self.threshold_mode == "rel":
            return a > best * (self.threshold + 1.0)
        return a > best + self.threshold

    @staticmethod
    def _check_modes(mode: str, threshold_mode: str) -> None:
        if mode not in {"min", "max"}:
            raise ValueError("mode " + mode + " is unknown!")
        if threshold_mode not in {"rel", "abs"}:
            raise ValueError("threshold mode " + threshold_mode + " is unknown!")

    def _init_is_better(self, mode: str, threshold: float, threshold_mode: str) -> None:
        self._check_modes(mode, threshold_mode)
        self.mode_worse = math.inf if mode == "min" else -math.inf
        self.mode = mode
        self.threshold = threshold
        self.threshold_mode = threshold_mode

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the saved attributes (and re-derive the comparison)."""
        self.__dict__.update(state_dict)
        self._init_is_better(mode=self.mode, threshold=self.threshold, threshold_mode=self.threshold_mode)


# --------------------------------------------------------------------------------------------------------------
# Composites


def _check_children(owner: Any, optimizer: Any, schedulers: Sequence[Any]) -> None:
    """The checks SequentialLR and ChainedScheduler make on each child, with torch's messages."""
    name = type(owner).__name__
    for index, scheduler in enumerate(schedulers):
        if not hasattr(scheduler, "optimizer"):
            raise TypeError(f"{name} at index {index} should have `optimizer` as its attribute.")
        if _is_plateau_scheduler(scheduler):
            raise ValueError(
                f"{name} does not support `ReduceLROnPlateau` scheduler as it requires additional kwargs to be "
                f"specified when calling `step`, but got one at index {index} in the given schedulers sequence."
            )
        if optimizer != scheduler.optimizer:
            raise ValueError(
                f"{name} expects all schedulers to belong to the same optimizer, but got scheduler "
                f"{type(scheduler).__name__} at index {index} has {scheduler.optimizer}, which is different from "
                f"{type(optimizer).__name__}."
            )


def _composite_state_dict(scheduler: Any) -> dict[str, Any]:
    state = {k: v for k, v in scheduler.__dict__.items() if k not in ("optimizer", "_schedulers")}
    state["_schedulers"] = [child.state_dict() for child in scheduler._schedulers]
    return state


def _composite_load_state_dict(scheduler: Any, state_dict: dict[str, Any]) -> None:
    # The caller's dict is left as it was.
    scheduler.__dict__.update({k: v for k, v in state_dict.items() if k != "_schedulers"})
    for child, child_state in zip(scheduler._schedulers, state_dict["_schedulers"]):
        child.load_state_dict(child_state)


def _undo_one_epoch(scheduler: Any) -> None:
    """Step every leaf scheduler back by one epoch (their constructors already took the first step)."""
    children = getattr(scheduler, "_schedulers", None)
    if children is not None:
        for child in children:
            _undo_one_epoch(child)
    elif hasattr(scheduler, "last_epoch"):
        scheduler.last_epoch -= 1


def _start_sequence(sequence: Any) -> None:
    """What a fresh SequentialLR does once its children exist (torch's order, for parity on fresh runs)."""
    for group in sequence.optimizer.param_groups:
        _update_param_group_val(group, "lr", group["initial_lr"])
    for child in sequence._schedulers:
        _undo_one_epoch(child)
    first = sequence._schedulers[bisect_right(sequence._milestones, 0)]
    first._initial_step()
    sequence._last_lr = first.get_last_lr()


def _rewind_to_fresh(scheduler: Any) -> None:
    """Put a scheduler into the state its constructor leaves with ``last_epoch=-1``.

    A leaf scheduler's position is ``last_epoch`` and ``_step_count`` (plus ``T_cur``/``T_i`` for warm
    restarts, and the momentum a momentum-cycling scheduler writes at epoch 0); composites are rebuilt from their
    rewound children, in order.  Used by :class:`SequentialLR` to replay a
    run when it resumes with ``last_epoch >= 0``.
    """
    children = getattr(scheduler, "_schedulers", None)
    if children is not None:
        for child in children:
            _rewind_to_fresh(child)
        if hasattr(scheduler, "_milestones"):
            scheduler.last_epoch = 0
            _start_sequence(scheduler)
        else:
            scheduler._last_lr = _param_groups_val_list(scheduler.optimizer, "lr")
        return
    scheduler.last_epoch = 0
    scheduler._is_initial = False
    if isinstance(scheduler, (CosineAnnealingWarmRestarts, _torch_lr_scheduler.CosineAnnealingWarmRestarts)):
        # Its step() does not count steps, and its position lives in T_cur/T_i.
        scheduler._step_count = 0
        scheduler.T_cur = 0
        scheduler.T_i = scheduler.T_0
    else:
        scheduler._step_count = 1
    if getattr(scheduler, "cycle_momentum", False):
        # A fresh CyclicLR/OneCycleLR also left its epoch-0 momentum (or betas[0]) in the param groups.
        scheduler._get_lr_called_within_step = True
        try:
            scheduler.get_lr()
        finally:
            scheduler._get_lr_called_within_step = False


class SequentialLR(LRScheduler):
    """Run ``schedulers`` one after the other, switching at each of ``milestones``.

    Scheduler ``i`` takes over at epoch ``milestones[i - 1]``, starting from its own epoch 0 (the closed form
    where it has one).  Fresh runs are identical to torch's, float for float.

    **Resume fix** (pytorch issue #162591): ``SequentialLR(..., last_epoch=M)``, built on an optimizer whose
    state was loaded, is in exactly the state of a fresh run stepped ``M + 1`` times: same lr (and momentum), same
    children, same next values, ``self.last_epoch == M + 1``.  That is the meaning ``last_epoch`` has for every
    torch scheduler (the index of the last finished epoch; e.g. ``LambdaLR(..., last_epoch=M)`` sets
    ``lr_lambda(M + 1)``): after ``N`` steps, resume with ``last_epoch=N - 1``.  Torch instead resets the lr to
    ``initial_lr`` and restarts the *first* scheduler whatever ``M`` is.  The children may be built with
    ``last_epoch=-1`` or with ``M``: they are rewound and the run is replayed (``M + 1`` cheap steps, bit-exact
    whatever the children are).  Resuming from ``state_dict`` (build, then load the optimizer's and the
    scheduler's state) needs none of this and works as in torch.

    Args:
        optimizer: the optimizer all ``schedulers`` belong to.
        schedulers: the schedulers, in order (no ``ReduceLROnPlateau``).
        milestones: ``len(schedulers) - 1`` increasing epochs.
        last_epoch: ``-1`` for a fresh run; ``M >= 0`` to resume after ``M + 1`` steps.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        schedulers: list[LRScheduler],
        milestones: list[int],
        last_epoch: int = -1,
    ) -> None:
        if len(schedulers) < 1:
            raise ValueError(f"{type(self).__name__} expects at least one scheduler, but got no scheduler.")
        _check_children(self, optimizer, schedulers)
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(
                "Sequential Schedulers expects number of schedulers provided to be one more than the number of "
                f"milestone points, but got number of schedulers {len(schedulers)} and the number of milestones "
                f"to be equal to {len(milestones)}"
            )
        self._schedulers = schedulers
        self._milestones = milestones
        self.optimizer = optimizer
        resume = last_epoch >= 0
        if resume:
            for child in schedulers:
                _rewind_to_fresh(child)
            self.last_epoch = 0
        else:
            self.last_epoch = last_epoch + 1
        _start_sequence(self)
        if resume:
            self._replay(last_epoch + 1)

    def _replay(self, steps: int) -> None:
        # The optimizer has not stepped in this process; the call-order warning would be noise here.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in range(steps):
                self.step()

    def recursive_undo(self, sched: Any = None) -> None:
        """Step every leaf scheduler (of ``sched``, default ``self``) back by one epoch."""
        _undo_one_epoch(self if sched is None else sched)

    def step(self) -> None:  # type: ignore[override]
        """Advance one epoch; at a milestone, the next scheduler starts at its epoch 0."""
        self.last_epoch += 1
        index = bisect_right(self._milestones, self.last_epoch)
        scheduler = self._schedulers[index]
        if index > 0 and self._milestones[index - 1] == self.last_epoch:
            scheduler._update_lr(0)
        else:
            scheduler.step()
        self._last_lr = scheduler.get_last_lr()

    def state_dict(self) -> dict[str, Any]:
        """Own attributes, and ``_schedulers``: the children's state dicts."""
        return _composite_state_dict(self)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore own attributes and every child's state."""
        _composite_load_state_dict(self, state_dict)


class ChainedScheduler(LRScheduler):
    """Step several schedulers together at every ``step()``; their (chainable) effects compose.

    Args:
        schedulers: the schedulers, stepped in this order (no ``ReduceLROnPlateau``).
        optimizer: the optimizer they all belong to (default: the first one's).
    """

    def __init__(self, schedulers: Sequence[LRScheduler], optimizer: torch.optim.Optimizer | None = None) -> None:
        if len(schedulers) < 1:
            raise ValueError(
                f"{type(self).__name__} expects at least one scheduler to be chained, but got no scheduler."
            )
        optimizer = optimizer or schedulers[0].optimizer
        _check_children(self, optimizer, schedulers)
        self._schedulers = schedulers
        self.optimizer = optimizer
        self._last_lr = _param_groups_val_list(schedulers[-1].optimizer, "lr")

    def step(self) -> None:  # type: ignore[override]
        """Step every scheduler once."""
        for scheduler in self._schedulers:
            scheduler.step()
        self._last_lr = _param_groups_val_list(self._schedulers[-1].optimizer, "lr")

    def state_dict(self) -> dict[str, Any]:
        """Own attributes, and ``_schedulers``: the children's state dicts."""
        return _composite_state_dict(self)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore own attributes and every child's state."""
        _composite_load_state_dict(self, state_dict)


# --------------------------------------------------------------------------------------------------------------
# Beyond torch: warmup + decay, WSD, schedules for any hyperparameter


def _check_factor(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")


class LinearWarmupCosineAnnealingLR(LRScheduler):
    """Linear warmup to ``base_lr`` over ``warmup_steps``, then cosine annealing to ``eta_min`` at ``total_steps``.

    Closed form, per param group (``W = warmup_steps``, ``T = total_steps``, ``s = warmup_start_factor``)::

        lr(t) = base_lr * s + (base_lr - base_lr * s) * t / W                        for t < W
              = eta_min + (base_lr - eta_min) * (1 + cos(pi * (t - W) / (T - W))) / 2   for W <= t < T
              = eta_min                                                             for t >= T

    Linear warmup: Goyal et al. 2017, "Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour"
    (arXiv:1706.02677); cosine annealing: Loshchilov & Hutter 2017, "SGDR" (arXiv:1608.03983).  The value
    depends only on the step, so hand edits of ``lr`` last one step and any resume is exact.  Computed by
    :class:`optimlab.schedules.WarmupCosine`.

    Args:
        optimizer: the optimizer.
        warmup_steps: steps of linear warmup (0 for none).
        total_steps: the step at which ``eta_min`` is reached (> ``warmup_steps``).
        warmup_start_factor: lr at step 0, as a fraction of ``base_lr`` (default 0).
        eta_min: final lr (absolute, as in :class:`CosineAnnealingLR`).
        last_epoch: see :class:`LRScheduler`.

    Example::

        scheduler = LinearWarmupCosineAnnealingLR(optimizer, warmup_steps=500, total_steps=10_000)
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        warmup_steps: int,
        total_steps: int,
        warmup_start_factor: float = 0.0,
        eta_min: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        _check_factor("warmup_start_factor", warmup_start_factor)
        schedules.WarmupCosine(1.0, warmup_steps, total_steps)  # validates the step counts
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.warmup_start_factor = warmup_start_factor
        self.eta_min = eta_min
        super().__init__(optimizer, last_epoch)

    def _get_closed_form_lr(self) -> list[float | Tensor]:
        return [
            schedules.WarmupCosine(
                peak=base_lr,
                warmup_steps=self.warmup_steps,
                total_steps=self.total_steps,
                start=base_lr * self.warmup_start_factor,
                end=self.eta_min,
            )(self.last_epoch)
            for base_lr in self.base_lrs
        ]

    def get_lr(self) -> list[float | Tensor]:
        _warn_get_lr_called_within_step(self)
        return self._get_closed_form_lr()


class WarmupStableDecayLR(LRScheduler):
    """Warmup-stable-decay (WSD): linear warmup, constant ``base_lr``, then a short decay to ``eta_min``.

    Closed form, per param group (``W, S, D`` = warmup, stable and decay steps, ``p = (t - W - S) / D``)::

        lr(t) = base_lr * s + (base_lr - base_lr * s) * t / W     for t < W
              = base_lr                                         for W <= t < W + S
              = decay(p)                                        for W + S <= t < W + S + D
              = eta_min                                         for t >= W + S + D

    with ``decay`` one of ``"linear"`` (``eta_min + (base_lr - eta_min) * (1 - p)``), ``"cosine"``
    (``eta_min + (base_lr - eta_min) * (1 + cos(pi * p)) / 2``), ``"1-sqrt"``
    (``eta_min + (base_lr - eta_min) * (1 - sqrt(p))``, Hägele et al. 2024, arXiv:2405.18392) or ``"exp"``
    (``base_lr * (eta_min / base_lr) ** p``, needs ``eta_min > 0``).

    Source: Hu et al. 2024, "MiniCPM: Unveiling the Potential of Small Language Models with Scalable Training
    Strategies" (arXiv:2404.06395).  The stable phase does not depend on the run's length, so a run can be
    extended by raising ``stable_steps`` (load the state dict, then set ``scheduler.stable_steps``) and a decay
    branched off any checkpoint.  Computed by :class:`optimlab.schedules.WarmupStableDecay`.

    Args:
        optimizer: the optimizer.
        warmup_steps: steps of linear warmup (0 for none).
        stable_steps: steps at ``base_lr`` after the warmup.
        decay_steps: steps of the final decay (> 0).
        warmup_start_factor: lr at step 0, as a fraction of ``base_lr`` (default 0).
        eta_min: final lr (absolute).
        decay: shape of the decay: ``"linear"`` (default), ``"cosine"``, ``"1-sqrt"``, ``"exp"``.
        last_epoch: see :class:`LRScheduler`.

    Example::

        scheduler = WarmupStableDecayLR(optimizer, warmup_steps=1000, stable_steps=80_000, decay_steps=9000)
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        warmup_steps: int,
        stable_steps: int,
        decay_steps: int,
        warmup_start_factor: float = 0.0,
        eta_min: float = 0.0,
        decay: Literal["linear", "cosine", "1-sqrt", "exp"] = "linear",
        last_epoch: int = -1,
    ) -> None:
        _check_factor("warmup_start_factor", warmup_start_factor)
        if decay == "exp" and not eta_min > 0:
            raise ValueError(f"decay='exp' needs eta_min > 0, got {eta_min!r}")
        # Validates the step counts and the shape (a positive peak stands in for the base lrs).
        schedules.WarmupStableDecay(1.0, warmup_steps, stable_steps, decay_steps, end=eta_min, decay=decay)
        self.warmup_steps = warmup_steps
        self.stable_steps = stable_steps
        self.decay_steps = decay_steps
        self.warmup_start_factor = warmup_start_factor
        self.eta_min = eta_min
        self.decay = decay
        super().__init__(optimizer, last_epoch)

    def _get_closed_form_lr(self) -> list[float | Tensor]:
        return [
            schedules.WarmupStableDecay(
                peak=base_lr,
                warmup_steps=self.warmup_steps,
                stable_steps=self.stable_steps,
                decay_steps=self.decay_steps,
                start=base_lr * self.warmup_start_factor,
                end=self.eta_min,
                decay=self.decay,
            )(self.last_epoch)
            for base_lr in self.base_lrs
        ]

    def get_lr(self) -> list[float | Tensor]:
        _warn_get_lr_called_within_step(self)
        return self._get_closed_form_lr()


class _LinearWarmupPhase(LRScheduler):
    """The warmup part of :class:`LinearWarmupLR`: ``base_lr * s + (base_lr - base_lr * s) * t / W``, then base_lr."""

    def __init__(
        self, optimizer: torch.optim.Optimizer, warmup_steps: int, start_factor: float, last_epoch: int = -1
    ) -> None:
        self.warmup_steps = warmup_steps
        self.start_factor = start_factor
        super().__init__(optimizer, last_epoch)

    def _get_closed_form_lr(self) -> list[float | Tensor]:
        return [
            schedules.Linear(base_lr * self.start_factor, base_lr, self.warmup_steps)(self.last_epoch)
            for base_lr in self.base_lrs
        ]

    def get_lr(self) -> list[float | Tensor]:
        _warn_get_lr_called_within_step(self)
        return self._get_closed_form_lr()


class LinearWarmupLR(SequentialLR):
    """Linear warmup over ``warmup_steps``, then hand over to any scheduler ``after`` (or keep ``base_lr``).

    ``lr(t) = base_lr * s + (base_lr - base_lr * s) * t / W`` for ``t < W``; from step ``W`` on the lr is
    ``after``'s: at step ``W + k`` it is, float for float, what ``after`` alone sets at its epoch ``k``.
    ``after`` is built by the caller on the same optimizer (with ``last_epoch=-1``), e.g.
    ``CosineAnnealingLR(opt, T_max=total - W)``, ``StepLR``, ``ExponentialLR``, ``CyclicLR``, a torch scheduler...
    It is a :class:`SequentialLR` of the warmup and ``after``, so it saves, loads and resumes (``last_epoch=M``)
    like one.

    Warmup: Goyal et al. 2017, "Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour" (arXiv:1706.02677).

    Args:
        optimizer: the optimizer.
        warmup_steps: steps of linear warmup (> 0).
        after: the scheduler that follows the warmup (``None``: constant ``base_lr``).
        warmup_start_factor: lr at step 0, as a fraction of ``base_lr`` (default 0).
        last_epoch: ``-1`` for a fresh run, ``M >= 0`` to resume after ``M + 1`` steps (see :class:`SequentialLR`).

    Example::

        decay = CosineAnnealingLR(optimizer, T_max=9_500)
        scheduler = LinearWarmupLR(optimizer, warmup_steps=500, after=decay)
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        warmup_steps: int,
        after: Any = None,
        warmup_start_factor: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        _check_optimizer(optimizer)
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps <= 0:
            raise ValueError(f"warmup_steps must be a positive integer, got {warmup_steps!r}")
        _check_factor("warmup_start_factor", warmup_start_factor)
        if after is not None:
            _check_children(self, optimizer, [after])
        warmup = _LinearWarmupPhase(optimizer, warmup_steps, warmup_start_factor, -1 if last_epoch == -1 else 0)
        children = [warmup] if after is None else [warmup, after]
        super().__init__(optimizer, children, [warmup_steps] if after is not None else [], last_epoch)

    def step(self) -> None:  # type: ignore[override]
        """Advance one step; at the end of the warmup, ``after`` starts as if it had just been created."""
        if not self._milestones or self.last_epoch + 1 != self._milestones[0]:
            super().step()
            return
        # The handover: from base_lr, through ``after``'s own first step (SequentialLR's closed form at epoch 0
        # would differ for chainable schedulers such as MultiplicativeLR).
        self.last_epoch += 1
        for group in self.optimizer.param_groups:
            _update_param_group_val(group, "lr", group["initial_lr"])
        after = self._schedulers[1]
        after._initial_step()
        self._last_lr = after.get_last_lr()


_HYPERPARAMETER_NAME = re.compile(r"^([A-Za-z_]\w*)(?:\[(\d+)\])?$")


class HyperparameterScheduler:
    """Schedule any numeric hyperparameter of the param groups: ``momentum``, ``weight_decay``, ``eps``, ``lr``,
    or one element of a tuple such as ``betas[0]`` / ``betas[1]``.

    At epoch ``t`` (``last_epoch``; construction performs step 0, as for the lr schedulers)::

        value(t) = schedule(t)                          (relative=False, the default)
        value(t) = initial_value * schedule(t)          (relative=True, as LambdaLR does for lr)

    ``initial_value`` is the group's value when the scheduler is created, stored in the group as
    ``"initial_<name>"`` (e.g. ``initial_momentum``, ``initial_betas[1]``) so that resuming with
    ``last_epoch >= 0`` after loading the optimizer's state finds it, just as ``initial_lr`` works for lr.
    A Tensor value is updated in place; a tuple element is replaced by rebuilding the tuple (a Tensor element is
    filled in place).  The value depends only on the step, so any resume (``state_dict`` or ``last_epoch``) is
    exact.  Any callable works as ``schedule``; :mod:`optimlab.schedules` has picklable ones whose parameters are
    saved in ``state_dict``.  It composes with lr schedulers through :class:`ChainedScheduler`.

    Scheduling hyperparameters other than lr follows optax's ``inject_hyperparams``; typical uses: momentum warmup
    for Muon (0.85 -> 0.95), Adam's ``beta2`` warmup, weight-decay schedules.

    Args:
        optimizer: the optimizer.
        hyperparameter: the param-group key, optionally indexed: ``"momentum"``, ``"betas[1]"``.
        schedule: a function of the step, or one per param group.
        relative: multiply the initial value by ``schedule(t)`` instead of using ``schedule(t)`` itself.
        last_epoch: ``-1`` for a fresh run; ``N >= 0`` to resume (needs ``initial_<name>`` in every group).

    Example::

        from optimlab import schedules
        beta2 = HyperparameterScheduler(opt, "betas[1]", schedules.Linear(0.95, 0.999, steps=1000))
        momentum = HyperparameterScheduler(opt, "momentum", schedules.Cosine(0.85, 0.95, steps=300))
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        hyperparameter: str,
        schedule: Callable[[int], Any] | Sequence[Callable[[int], Any]],
        *,
        relative: bool = False,
        last_epoch: int = -1,
    ) -> None:
        _check_optimizer(optimizer)
        match = _HYPERPARAMETER_NAME.match(hyperparameter) if isinstance(hyperparameter, str) else None
        if match is None:
            raise ValueError(
                f"hyperparameter must be a param-group key such as 'momentum' or 'betas[1]', got {hyperparameter!r}"
            )
        key, index = match.group(1), None if match.group(2) is None else int(match.group(2))
        groups = optimizer.param_groups
        for i, group in enumerate(groups):
            _check_schedulable(group, i, key, index, hyperparameter)
        n_groups = len(groups)
        if isinstance(schedule, (list, tuple)):
            if len(schedule) != n_groups:
                raise ValueError(f"Expected {n_groups} schedules, but got {len(schedule)}")
            fns = list(schedule)
        else:
            fns = [schedule] * n_groups
        for fn in fns:
            if not callable(fn):
                raise TypeError(f"schedule should be a function of the step, but got {type(fn).__name__}")
        initial_key = f"initial_{hyperparameter}"
        if last_epoch != -1:
            for i, group in enumerate(groups):
                if initial_key not in group:
                    raise KeyError(
                        f"param {initial_key!r} is not specified in param_groups[{i}] when resuming scheduler "
                        "with last_epoch >= 0. Load the optimizer's state before creating the scheduler."
                    )

        self.optimizer = optimizer
        self.hyperparameter = hyperparameter
        self.relative = relative
        self.schedules = fns
        self._key = key
        self._index = index
        if last_epoch == -1:
            for group in groups:
                if initial_key not in group:
                    group[initial_key] = _copy_value(_read_hyperparameter(group, key, index))
        self.base_values = [_copy_value(group[initial_key]) for group in groups]
        self.last_epoch = last_epoch
        self.step()

    def value_at(self, step: int) -> list[Any]:
        """The values of every group at ``step`` (nothing is written)."""
        if self.relative:
            return [base * fn(step) for fn, base in zip(self.schedules, self.base_values, strict=True)]
        return [fn(step) for fn in self.schedules]

    def step(self) -> None:
        """Advance one step and write the new values into the param groups."""
        self.last_epoch += 1
        values = self.value_at(self.last_epoch)
        for group, value in zip(self.optimizer.param_groups, values, strict=True):
            _write_hyperparameter(group, self._key, self._index, value)
        self._last_values = self._read_all()

    def _read_all(self) -> list[Any]:
        return [_copy_value(_read_hyperparameter(g, self._key, self._index)) for g in self.optimizer.param_groups]

    def get_last_value(self) -> list[Any]:
        """The values the last ``step()`` set, one per param group."""
        return self._last_values

    def state_dict(self) -> dict[str, Any]:
        """Every attribute except the optimizer; schedules that are callable objects save their attributes."""
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "schedules")}
        state["schedules"] = _callables_state(self.schedules)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the attributes (and the schedules' attributes) saved by :meth:`state_dict`."""
        saved = state_dict["schedules"]
        self.__dict__.update({k: v for k, v in state_dict.items() if k != "schedules"})
        _load_callables_state(self.schedules, saved)


def _check_schedulable(group: dict[str, Any], i: int, key: str, index: int | None, name: str) -> None:
    if key not in group:
        known = sorted(k for k in group if k != "params")
        raise ValueError(f"param_groups[{i}] has no hyperparameter {key!r} (it has {known})")
    value = group[key]
    if index is not None:
        if not isinstance(value, (tuple, list)) or index >= len(value):
            raise ValueError(f"param_groups[{i}][{key!r}] = {value!r} has no element {index} ({name!r})")
        value = value[index]
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not numeric and not (isinstance(value, Tensor) and value.numel() == 1):
        raise ValueError(f"param_groups[{i}] {name!r} is {value!r}, not a number: it cannot be scheduled")


def _read_hyperparameter(group: dict[str, Any], key: str, index: int | None) -> Any:
    value = group[key]
    return value if index is None else value[index]


def _write_hyperparameter(group: dict[str, Any], key: str, index: int | None, value: Any) -> None:
    if index is None:
        _update_param_group_val(group, key, value)
        return
    current = group[key]
    element = current[index]
    if isinstance(element, Tensor):
        element.fill_(_to_scalar(value))
        return
    replaced = [*current[:index], value, *current[index + 1 :]]
    group[key] = tuple(replaced) if isinstance(current, tuple) else replaced
