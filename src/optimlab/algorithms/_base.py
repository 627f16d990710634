"""What every elementwise algorithm shares: validation helpers and the ``step`` that hands its math to an engine."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor

from optimlab.engines import Hyper, run_foreach, run_per_tensor
from optimlab.engines.flat import FlatEngine, FlatPlan
from optimlab.optimizer import (
    Optimizer,
    _default_to_fused_or_foreach,
    _get_capturable_supported_devices,
    _get_scalar_dtype,
    _use_grad_for_differentiable,
)

__all__ = ["ElementwiseOptimizer", "check_betas", "check_lr", "check_non_negative"]

_compiling = torch.compiler.is_compiling
_ACCELERATOR: list[bool] = []


def _accelerator_present() -> bool:
    """Whether a CUDA/XPU accelerator is available (whose graph capture ``step`` must check for); asked once."""
    if not _ACCELERATOR:
        accelerator = torch.accelerator.current_accelerator(check_available=True)
        _ACCELERATOR.append(accelerator is not None and accelerator.type in {"cuda", "xpu"})
    return _ACCELERATOR[0]


# ---------------------------------------------------------------------------------------------- validation
# Messages are torch.optim's, word for word: users grep for them.


def check_lr(lr: float | Tensor) -> None:
    if isinstance(lr, Tensor) and lr.numel() != 1:
        raise ValueError("Tensor lr must be 1-element")
    if not lr >= 0.0:
        raise ValueError(f"Invalid learning rate: {lr}")


def check_non_negative(value: Any, what: str) -> None:
    """``what`` is the message prefix, e.g. ``"Invalid epsilon value"``."""
    if not value >= 0.0:
        raise ValueError(f"{what}: {value}")


def check_betas(betas: tuple[Any, Any]) -> None:
    if not 0.0 <= betas[0] < 1.0:
        raise ValueError(f"Invalid beta parameter at index 0: {betas[0]}")
    if not 0.0 <= betas[1] < 1.0:
        raise ValueError(f"Invalid beta parameter at index 1: {betas[1]}")


def check_fused_flags(fused: bool | None, foreach: bool | None, differentiable: bool) -> None:
    if fused:
        if differentiable:
            raise RuntimeError("`fused` does not support `differentiable`")
        if foreach:
            raise RuntimeError("`fused` and `foreach` cannot be `True` together.")


def new_step(p: Tensor, group: dict[str, Any], fused_or_capturable: bool = False) -> Tensor:
    """A fresh ``step`` counter: a CPU scalar unless the group is capturable/fused (then on the param's device)."""
    if fused_or_capturable:
        return torch.zeros((), dtype=_get_scalar_dtype(is_fused=group.get("fused")), device=p.device)
    return torch.tensor(0.0, dtype=_get_scalar_dtype())


def setdefault_flags(optimizer: Optimizer, **flags: Any) -> None:
    """Fill flags missing from old checkpoints' groups (torch's ``__setstate__`` upgrade path)."""
    for group in optimizer.param_groups:
        for k, v in flags.items():
            group.setdefault(k, v)


def tensor_steps(optimizer: Optimizer, *keys: str, device_if: Callable[[dict[str, Any]], bool] | None = None) -> None:
    """Turn Python-number ``step`` (and other ``keys``) of old checkpoints into 0-dim tensors."""
    for group in optimizer.param_groups:
        on_device = device_if is not None and device_if(group)
        for p in group["params"]:
            p_state = optimizer.state.get(p, [])
            if len(p_state) == 0:
                continue
            for key in ("step", *keys):
                if key in p_state and not torch.is_tensor(p_state[key]):
                    value = float(p_state[key])
                    p_state[key] = (
                        torch.tensor(value, dtype=_get_scalar_dtype(is_fused=group.get("fused")), device=p.device)
                        if on_device
                        else torch.tensor(value, dtype=_get_scalar_dtype())
                    )


def check_step_not_requires_grad(optimizer: Optimizer, group: dict[str, Any], params: list[Tensor]) -> None:
    if group["differentiable"]:
        for p in params:
            step = optimizer.state.get(p, {}).get("step")
            if isinstance(step, Tensor) and step.requires_grad:
                raise RuntimeError("`requires_grad` is not supported for `step` in differentiable mode")


def check_capturable_devices(
    optimizer: ElementwiseOptimizer,
    group: dict[str, Any],
    params: list[Tensor],
    scalar_keys: tuple[str, ...] = ("step",),
    what: tuple[str, str] = ("params and state_steps", "params and state_steps"),
) -> None:
    """capturable=True needs params and their scalar state (``step``...) on a graph-capturable device.

    ``what`` names them in the message of the (single-tensor, foreach) path, as torch words each.
    """
    if not group.get("capturable") or torch.compiler.is_compiling():
        return
    foreach = optimizer._uses_foreach(group, params)
    devices = _get_capturable_supported_devices(supports_xla=optimizer._capturable_xla[foreach])
    for p in params:
        state = optimizer.state.get(p, {})
        # Scalar state not created yet will be created on the param's device.
        scalar_devices = {
            state[k].device.type if isinstance(state.get(k), Tensor) else p.device.type for k in scalar_keys
        }
        if scalar_devices != {p.device.type} or p.device.type not in devices:
            raise AssertionError(f"If capturable=True, {what[foreach]} must be on supported devices: {devices}.")


# ---------------------------------------------------------------------------------------------- the base


class ElementwiseOptimizer(Optimizer):
    """Base of the algorithms whose update is elementwise over each parameter.

    A subclass defines its hyperparameters (``__init__``), the state it keeps (``_init_state``), the scalars of a
    step (``_scalars``) and the tensor math (``_update``); ``step`` is written here once, and the engine chosen by
    the group's ``foreach``/``fused`` flags runs the math.
    """

    #: message of the RuntimeError raised for a sparse gradient, or None if sparse gradients are supported.
    _sparse_error: ClassVar[str | None] = None
    #: whether ``step`` checks for CUDA graph capture first (torch does for most algorithms).
    _graph_check: ClassVar[bool] = True
    #: whether the capturable device list names "xla" (torch's single-tensor, foreach paths) in its message.
    _capturable_xla: ClassVar[tuple[bool, bool]] = (True, False)
    #: the scalar state entries that capturable=True needs on the parameter's device, and how torch's message
    #: names them on its (single-tensor, foreach) paths.
    _capturable_scalars: ClassVar[tuple[str, ...]] = ("step",)
    _capturable_what: ClassVar[tuple[str, str]] = ("params and state_steps", "params and state_steps")
    #: the 0-dim state entries of a parameter (counters and running scalars); the others are shaped like it.
    _scalar_state: ClassVar[tuple[str, ...]] = ("step",)
    _finish: Callable[[Hyper, dict[str, Any]], None] | None = None

    def _init_optional_fused(self, params: Any, defaults: dict[str, Any], fused: bool | None) -> None:
        """``Optimizer.__init__`` for an algorithm torch has no fused kernel for: ``fused`` is optimlab's extension,
        so the group key exists only when asked for and default groups and state_dicts stay torch's."""
        if fused:
            defaults["fused"] = fused
        Optimizer.__init__(self, params, defaults)
        check_fused_flags(fused, defaults.get("foreach"), defaults.get("differentiable", False))

    # ------------------------------------------------------------------ to be defined by an algorithm

    def _init_state(self, group: dict[str, Any], p: Tensor, state: dict[str, Any]) -> None:
        """Create the state of ``p`` (called once, when its state is empty), in torch's key order."""

    def _hyper(self, group: dict[str, Any]) -> Hyper:
        """The group-level scalars of this step."""
        raise NotImplementedError

    def _scalars(self, h: Hyper, state: dict[str, Any]) -> Hyper:
        """Advance the per-parameter scalar state (``step``) and return the scalars of its update."""
        return h

    @staticmethod
    def _update(param: Any, grad: Any, state: dict[str, Any], h: Hyper) -> None:
        raise NotImplementedError

    def _check_group(self, group: dict[str, Any], params: list[Tensor]) -> None:
        """Raise for a group that cannot be stepped (before anything is changed)."""
        check_capturable_devices(self, group, params, self._capturable_scalars, self._capturable_what)

    def _has_state(self, group: dict[str, Any]) -> bool:
        return True

    # ------------------------------------------------------------------ shared machinery

    def _check_grad(self, group: dict[str, Any], p: Tensor) -> None:
        if p.grad.is_sparse and self._sparse_error is not None:  # type: ignore[union-attr]
            raise RuntimeError(self._sparse_error)

    def _uses_foreach(self, group: dict[str, Any], params: list[Tensor]) -> bool:
        foreach = group.get("foreach")
        if foreach is None and not group.get("fused"):
            _, foreach = _default_to_fused_or_foreach(params, group.get("differentiable", False), use_fused=False)
        return bool(foreach)

    def _engine(self, group: dict[str, Any], params: list[Tensor]) -> Callable[..., None]:
        if self._uses_foreach(group, params):
            if group.get("differentiable", False):
                raise AssertionError("_foreach ops don't support autograd")
            if any(p.grad.is_sparse for p in params):  # type: ignore[union-attr]
                return run_per_tensor
            return run_foreach
        return run_per_tensor

    def _flat_engine(self) -> FlatEngine:
        engine = self.__dict__.get("_flat")
        if engine is None:
            engine = self.__dict__["_flat"] = FlatEngine()
        return engine

    def _zero_grad_in_bulk(self) -> set[int]:
        engine = self.__dict__.get("_flat")
        return engine.zero_grads() if engine is not None else set()

    def _steady_step(self) -> bool:
        """A whole ``step()`` without a closure on the fused engine's steady path, if that path holds for this
        one-group optimizer (True); else nothing changed (False).  ``Optimizer``'s step wrapper calls it when no
        step hooks are registered, before the usual chain of calls: right after a training step's backward the
        caches are cold, and each Python frame of that chain costs microseconds (~40 µs of a ~0.6 ms step on
        1000 small tensors).  It decides as ``_eager_step``'s own steady branch does."""
        if _compiling() or (self._graph_check and _accelerator_present()):
            return False  # the usual path runs the graph-capture check first
        group = self._alone_group()
        if group is None:
            return False
        self._check_group(group, [])
        return self.__dict__["_flat"].step_alone(self, group)

    def _alone_group(self) -> dict[str, Any] | None:
        """The group of a one-group optimizer whose step the fused engine may take whole (fused, not capturable,
        the engine made by an earlier step), else None."""
        groups = self.param_groups
        if len(groups) != 1 or "_flat" not in self.__dict__:
            return None
        group = groups[0]
        return group if group.get("fused") and not group.get("capturable") else None

    @_use_grad_for_differentiable
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """Perform one optimization step.

        Args:
            closure: re-evaluates the model and returns the loss (optional for this optimizer).

        Every gradient is checked before anything changes: a step that raises leaves parameters and state as
        they were.
        """
        return self._step(closure)

    step.steady = _steady_step  # type: ignore[attr-defined]

    def _step(self, closure: Callable[[], Any] | None = None) -> Any:
        """The body of ``step``, without its grad-mode wrapper (for subclasses that run under ``no_grad``)."""
        if _compiling() and any(g.get("fused") for g in self.param_groups):
            # The fused engine is opaque to Dynamo (C++ kernels called on raw pointers): a compiled training step
            # breaks its graph here and runs the optimizer step eagerly, in one piece, instead of tracing (and
            # recompiling) the engine's bookkeeping.
            return torch.compiler.disable(type(self)._eager_step, recursive=True)(self, closure)
        return self._eager_step(closure)

    def _eager_step(self, closure: Callable[[], Any] | None = None) -> Any:
        if self._graph_check:
            self._accelerator_graph_capture_health_check()
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        checked = self._alone_group()  # a group _check_group has passed already
        if checked is not None:
            self._check_group(checked, [])
            if self.__dict__["_flat"].step_alone(self, checked):  # the steady path, whole, in one call
                return loss

        work = []
        for group in self.param_groups:
            if group.get("fused"):
                # The fused engine reads the gradients itself, in bulk: no per-parameter Python work here.
                engine = self._flat_engine()
                needs_params = group.get("capturable") or group.get("differentiable")
                params = [p for p in group["params"] if p.grad is not None] if needs_params else []
                if group is not checked:
                    self._check_group(group, params)
                # A group's steady path checks every gradient in one C++ pass; with one group nothing can
                # raise after it, so the same pass also counts the update as an in-place change for autograd.
                plan = None if needs_params else engine.steady_plan(self, group, len(self.param_groups) == 1)
                if plan is None:
                    plan = engine.prepare(self, group)
                    plan.check_grads(self, group)
                work.append((group, params, plan))
                continue
            params = [p for p in group["params"] if p.grad is not None]
            for p in params:
                self._check_grad(group, p)
            self._check_group(group, params)
            work.append((group, params, self._engine(group, params) if params else None))

        for group, params, engine in work:
            if isinstance(engine, FlatPlan):
                engine.run(self, self._hyper(group))
                continue
            if not params:
                continue
            if self._has_state(group):
                states = [self.state[p] for p in params]
                for p, state in zip(params, states):
                    if len(state) == 0:
                        self._init_state(group, p, state)
            else:
                states = [{} for _ in params]
            engine(self, self._hyper(group), params, states)
        return loss
