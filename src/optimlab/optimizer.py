"""optimlab's ``Optimizer`` base class.

A from-scratch implementation of the behaviour of ``torch.optim.Optimizer`` (torch 2.13): parameter groups,
per-parameter state, step/state-dict hooks, ``state_dict``/``load_state_dict`` in torch's exact format and casting
rules, ``zero_grad``, ``repr``, pickling.  It subclasses ``torch.optim.Optimizer`` only so that
``isinstance(opt, torch.optim.Optimizer)`` holds (torch's schedulers, ``GradScaler``, ``ZeroRedundancyOptimizer`` and
trainers check it); every method torch's class defines is redefined here, none of torch's is called.

This module knows nothing of any algorithm.
"""

from __future__ import annotations

import functools
import warnings
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Hashable, Iterable
from copy import deepcopy
from itertools import chain
from typing import Any, TypeAlias, TypeVar, cast

import torch
import torch.optim.optimizer as _torch_optimizer_module
from torch.utils.hooks import RemovableHandle

_profiler_enabled = torch._C._autograd._profiler_enabled
_set_grad_enabled = torch._C._set_grad_enabled  # the function, not the context-manager class around it

__all__ = [
    "Optimizer",
    "ParamsT",
    "StateDict",
    "register_optimizer_step_post_hook",
    "register_optimizer_step_pre_hook",
    "required",
]

ParamsT: TypeAlias = Iterable[torch.Tensor] | Iterable[dict[str, Any]] | Iterable[tuple[str, torch.Tensor]]
StateDict: TypeAlias = dict[str, Any]
Args: TypeAlias = tuple[Any, ...]
Kwargs: TypeAlias = dict[str, Any]
OptimizerPreHook: TypeAlias = Callable[[Any, Args, Kwargs], "tuple[Args, Kwargs] | None"]
OptimizerPostHook: TypeAlias = Callable[[Any, Args, Kwargs], None]
R = TypeVar("R")


class _RequiredParameter:
    """Singleton marking a hyperparameter that every param group must specify."""

    def __repr__(self) -> str:
        return "<required parameter>"


required = _RequiredParameter()

_global_optimizer_pre_hooks: OrderedDict[int, OptimizerPreHook] = OrderedDict()
_global_optimizer_post_hooks: OrderedDict[int, OptimizerPostHook] = OrderedDict()

# Parameters of these exact types may take the multi-tensor paths (subclasses such as DTensor may not).
_foreach_supported_types = (torch.Tensor, torch.nn.parameter.Parameter)
_FOREACH_DEVICES = ("cuda", "xpu", "mtia", torch._C._get_privateuse1_backend_name())
_FUSED_DEVICES = ("mps", "cuda", "xpu", "hpu", "cpu", "mtia", torch._C._get_privateuse1_backend_name())


def register_optimizer_step_pre_hook(hook: OptimizerPreHook) -> RemovableHandle:
    """Register a pre hook common to all optimlab optimizers: ``hook(optimizer, args, kwargs)``.

    It may return ``(new_args, new_kwargs)``.  Hooks registered with torch's
    ``torch.optim.optimizer.register_optimizer_step_pre_hook`` run for optimlab optimizers as well.
    """
    handle = RemovableHandle(_global_optimizer_pre_hooks)
    _global_optimizer_pre_hooks[handle.id] = hook
    return handle


def register_optimizer_step_post_hook(hook: OptimizerPostHook) -> RemovableHandle:
    """Register a post hook common to all optimlab optimizers: ``hook(optimizer, args, kwargs)``."""
    handle = RemovableHandle(_global_optimizer_post_hooks)
    _global_optimizer_post_hooks[handle.id] = hook
    return handle


def _global_pre_hooks() -> Iterable[OptimizerPreHook]:
    return chain(_torch_optimizer_module._global_optimizer_pre_hooks.values(), _global_optimizer_pre_hooks.values())


def _global_post_hooks() -> Iterable[OptimizerPostHook]:
    return chain(_global_optimizer_post_hooks.values(), _torch_optimizer_module._global_optimizer_post_hooks.values())


# --------------------------------------------------------------------------------------------------------------
# Small helpers shared by the algorithms (the same names torch.optim.optimizer uses, so readers find them).


def _get_value(x: Any) -> Any:
    """A Python number from a 0-dim tensor (outside compilation) or a ``ScalarSlot``; anything else unchanged."""
    if type(x) is ScalarSlot:
        return x.item()
    if not torch.jit.is_scripting() and torch.compiler.is_compiling():
        return x
    return x.item() if isinstance(x, torch.Tensor) else x


class ScalarSlot:
    """A 0-dim scalar-state entry (``step``, NAdam's ``mu_product``...) as the fused engine's steady path hands
    it to an algorithm's ``_scalars``/``_finish``: its value lives in the engine's flat scalar buffer and is read
    and written as raw memory.  Right after a step has streamed the caches away, one torch op on a 0-dim tensor
    costs ~100 µs (the dispatcher's code is out of the cache too); this costs about a microsecond.

    It does what those methods do to such a tensor outside capturable mode — ``+=``, ``*=``, ``item()``,
    ``copy_()``, ``fill_()``, ``_get_value()`` — rounding like the tensor: operands are cast to the buffer's
    dtype first and every result is stored in it.  The engine uses it only after checking, on copies, that it
    gives bitwise the tensors' results for the algorithm at hand."""

    __slots__ = ("_cast", "_cell")

    def __init__(self, cell: Any, cast: Callable[[float], float]) -> None:
        self._cell = cell  # a ctypes c_float/c_double at the entry's address
        self._cast = cast  # rounds a Python float to the buffer's dtype

    def item(self) -> float:
        return self._cell.value

    def __float__(self) -> float:
        return self._cell.value

    def __iadd__(self, other: Any) -> ScalarSlot:
        self._cell.value = self._cell.value + self._cast(float(other))
        return self

    def __imul__(self, other: Any) -> ScalarSlot:
        self._cell.value = self._cell.value * self._cast(float(other))
        return self

    def copy_(self, src: Any) -> ScalarSlot:
        self._cell.value = float(src)
        return self

    fill_ = copy_

    def __repr__(self) -> str:
        return f"ScalarSlot({self._cell.value!r})"


def _to_scalar(x: Any) -> Any:
    """Squeeze a 1-element tensor of any rank to 0-dim (torch keeps Tensor lrs as tensors)."""
    if isinstance(x, torch.Tensor) and x.dim() != 0:
        return x.squeeze()
    return x


def _get_scalar_dtype(is_fused: bool | None = None) -> torch.dtype:
    """dtype of the ``step`` counters: float32, or float64 under ``torch.set_default_dtype(torch.float64)``."""
    if is_fused:
        return torch.float32
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def _get_capturable_supported_devices(supports_xla: bool = True) -> list[str]:
    devices = ["cuda", "xpu", "hpu", torch._C._get_privateuse1_backend_name()]
    if supports_xla:
        devices.append("xla")
    return devices


def _default_to_fused_or_foreach(
    params: list[torch.Tensor], differentiable: bool, use_fused: bool = False
) -> tuple[bool, bool]:
    """torch's default implementation choice: (fused, foreach); on CPU this is always (False, False)."""
    if torch.jit.is_scripting() or differentiable:
        return False, False
    fused = use_fused and all(
        p is None
        or (type(p) in _foreach_supported_types and p.device.type in _FUSED_DEVICES and torch.is_floating_point(p))
        for p in params
    )
    foreach = not fused and all(
        p is None or (type(p) in _foreach_supported_types and p.device.type in _FOREACH_DEVICES) for p in params
    )
    return fused, foreach


def _device_dtype_check_for_fused(p: torch.Tensor, cuda_unsupported: bool = False) -> None:
    devices = list(_FUSED_DEVICES)
    if cuda_unsupported:
        devices.remove("cuda")
    if not (p.device.type in devices and torch.is_floating_point(p)):
        raise RuntimeError(
            "`fused=True` requires all the params to be floating point Tensors of "
            f"supported devices: {devices} but {p.dtype} and {p.device.type}"
        )


def _view_as_real(params: list[torch.Tensor], *state_and_grads: list[torch.Tensor]) -> None:
    """In place on the lists: replace each complex tensor (and its companions) by its real view."""
    for i, p in enumerate(params):
        if torch.is_complex(p):
            params[i] = torch.view_as_real(params[i])
            for s in state_and_grads:
                s[i] = torch.view_as_real(s[i])


def _use_grad_for_differentiable(func: Callable[..., R]) -> Callable[..., R]:
    """Run ``step`` with autograd enabled only when the optimizer was built with ``differentiable=True``."""

    @functools.wraps(func)
    def _use_grad(self: Optimizer, *args: Any, **kwargs: Any) -> R:
        prev_grad = torch.is_grad_enabled()
        try:
            _set_grad_enabled(self.defaults["differentiable"])
            return func(self, *args, **kwargs)
        finally:
            _set_grad_enabled(prev_grad)

    return _use_grad


def _group_tensors_by_device_and_dtype(
    tensorlistlist: list[list[torch.Tensor | None]], with_indices: bool = False
) -> dict[tuple[torch.device, torch.dtype], tuple[list[list[torch.Tensor | None]], list[int]]]:
    """Bucket parallel lists of tensors by the (device, dtype) of the first list, keeping their order."""
    grouped: dict[tuple[torch.device, torch.dtype], tuple[list[list[torch.Tensor | None]], list[int]]] = {}
    for i, t in enumerate(tensorlistlist[0]):
        assert t is not None
        key = (t.device, t.dtype)
        if key not in grouped:
            grouped[key] = ([[] for _ in tensorlistlist], [])
        lists, indices = grouped[key]
        for out, src in zip(lists, tensorlistlist):
            out.append(src[i])
        indices.append(i)
    return grouped


# --------------------------------------------------------------------------------------------------------------


def _hook_step(func: Callable[..., R]) -> Callable[..., R]:
    """Wrap an optimizer's ``step`` with the profiler range, the step hooks and the completed-step counter.

    Order (as torch): global pre hooks, instance pre hooks, step, instance post hooks, global post hooks.
    A ``step`` reached from another hooked ``step`` of the same optimizer (``super().step()`` in a subclass)
    runs without hooks, so hooks fire and ``_step_count`` advances once per user call.
    """

    def hooked(self: Optimizer, args: tuple[Any, ...], kwargs: dict[str, Any]) -> R:
        pre_hooks = (
            chain(_global_pre_hooks(), self._optimizer_step_pre_hooks.values())
            if _global_optimizer_pre_hooks
            or _torch_optimizer_module._global_optimizer_pre_hooks
            or self._optimizer_step_pre_hooks
            else ()
        )
        for pre_hook in pre_hooks:
            result = pre_hook(self, args, kwargs)
            if result is not None:
                if isinstance(result, tuple) and len(result) == 2:
                    args, kwargs = result
                else:
                    raise RuntimeError(
                        f"{func} must return None or a tuple of (new_args, new_kwargs), but got {result}."
                    )
        self.__dict__["_inside_step"] = True
        try:
            out = func(*args, **kwargs)
        finally:
            self.__dict__["_inside_step"] = False
        self._step_count = self.__dict__.get("_step_count", 0) + 1
        self._optimizer_step_code()
        post_hooks = (
            chain(self._optimizer_step_post_hooks.values(), _global_post_hooks())
            if _global_optimizer_post_hooks
            or _torch_optimizer_module._global_optimizer_post_hooks
            or self._optimizer_step_post_hooks
            else ()
        )
        for post_hook in post_hooks:
            post_hook(self, args, kwargs)
        return out

    # ``func.steady(self)``: the whole step without a closure where it can be taken in one call (True), else
    # False with nothing changed; tried first when no step hook is registered (see ElementwiseOptimizer).
    steady = getattr(func, "steady", None)

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> R:
        self = cast(Optimizer, args[0])
        if self.__dict__.get("_inside_step", False):
            return func(*args, **kwargs)
        # The profiler's range only while a profiler runs (entering one costs ~7 µs, a tiny model's whole step).
        if _profiler_enabled():
            with torch.autograd.profiler.record_function(f"Optimizer.step#{type(self).__name__}.step"):
                return hooked(self, args, kwargs)
        if (
            steady is not None
            and len(args) == 1
            and not kwargs
            and not (
                self._optimizer_step_pre_hooks
                or self._optimizer_step_post_hooks
                or _global_optimizer_pre_hooks
                or _global_optimizer_post_hooks
                or _torch_optimizer_module._global_optimizer_pre_hooks
                or _torch_optimizer_module._global_optimizer_post_hooks
            )
            and steady(self)
        ):
            self._step_count = self.__dict__.get("_step_count", 0) + 1
            self._optimizer_step_code()
            return None  # type: ignore[return-value]
        return hooked(self, args, kwargs)

    wrapper.hooked = True  # type: ignore[attr-defined]
    return wrapper


_HOOK_DICTS = (
    "_optimizer_step_pre_hooks",
    "_optimizer_step_post_hooks",
    "_optimizer_state_dict_pre_hooks",
    "_optimizer_state_dict_post_hooks",
    "_optimizer_load_state_dict_pre_hooks",
    "_optimizer_load_state_dict_post_hooks",
)


class Optimizer(torch.optim.Optimizer):
    r"""Base class for all optimlab optimizers, a drop-in for ``torch.optim.Optimizer``.

    Args:
        params: an iterable of tensors, of ``(name, tensor)`` pairs, or of dicts that each define a parameter
            group (``{"params": [...], "lr": 0.1, ...}``).  Use ordered collections: the order of parameters is
            how a state_dict maps its saved state back to them.
        defaults: default values of the hyperparameters, used by every group that does not specify them.

    Beyond torch: ``_step_count`` is the number of completed ``step()`` calls of this instance (it is not part of
    the state_dict, so checkpoints keep torch's format).
    """

    defaults: dict[str, Any]
    state: defaultdict[torch.Tensor, Any]
    param_groups: list[dict[str, Any]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        step = cls.__dict__.get("step")
        if step is not None and not getattr(step, "hooked", False):
            cls.step = _hook_step(step)  # type: ignore[method-assign]

    def __init__(self, params: ParamsT, defaults: dict[str, Any]) -> None:
        self.defaults = defaults
        for name in _HOOK_DICTS:
            setattr(self, name, OrderedDict())
        self._patch_step_function()
        self._step_count = 0

        if isinstance(params, torch.Tensor):
            raise TypeError(
                "params argument given to the optimizer should be "
                "an iterable of Tensors or dicts, but got " + torch.typename(params)
            )

        self.state = defaultdict(dict)
        self.param_groups = []

        param_groups = list(params)
        if len(param_groups) == 0:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(param_groups[0], dict):
            param_groups = [{"params": param_groups}]
        for param_group in param_groups:
            self.add_param_group(cast(dict, param_group))

        self._warned_capturable_if_run_uncaptured = True

    # ------------------------------------------------------------------------------------------------ pickling

    def __getstate__(self) -> dict[str, Any]:
        return {
            "defaults": self.defaults,
            "state": self.state,
            "param_groups": self.param_groups,
            "_step_count": self.__dict__.get("_step_count", 0),
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        for name in _HOOK_DICTS:
            if name not in self.__dict__:
                setattr(self, name, OrderedDict())
        self.__dict__.setdefault("_step_count", 0)
        self._patch_step_function()
        self.defaults.setdefault("differentiable", False)

    def __repr__(self) -> str:
        format_string = self.__class__.__name__ + " ("
        for i, group in enumerate(self.param_groups):
            format_string += "\n"
            format_string += f"Parameter Group {i}\n"
            for key in sorted(group.keys()):
                if key != "params":
                    format_string += f"    {key}: {group[key]}\n"
        format_string += ")"
        return format_string

    # ------------------------------------------------------------------------------------------------ step hooks

    def _accelerator_graph_capture_health_check(self) -> None:
        """Refuse a CUDA/XPU graph capture of ``step()`` unless every group is ``capturable``."""
        if torch.compiler.is_compiling():
            return
        accelerator = torch.accelerator.current_accelerator(check_available=True)
        if accelerator is None or accelerator.type not in {"cuda", "xpu"}:
            return
        capturing = torch.accelerator.current_stream().is_capturing()
        all_capturable = all(group["capturable"] for group in self.param_groups)
        if capturing and not all_capturable:
            raise RuntimeError(
                f"Attempting {accelerator.type.upper()} graph capture of step() for an instance of "
                + self.__class__.__name__
                + " but param_groups' capturable is False."
            )
        if not getattr(self, "_warned_capturable_if_run_uncaptured", False) and all_capturable and not capturing:
            warnings.warn(
                "This instance was constructed with capturable=True or some of all the param_groups came with "
                f"capturable=True, but step() is running without {accelerator.type.upper()} graph capture. If you "
                "never intend to graph-capture this instance, capturable=True can impair performance, and you "
                "should set capturable=False.",
                stacklevel=2,
            )
            self._warned_capturable_if_run_uncaptured = True

    def _cuda_graph_capture_health_check(self) -> None:
        warnings.warn("Use _accelerator_graph_capture_health_check instead", category=FutureWarning, stacklevel=2)
        self._accelerator_graph_capture_health_check()

    def _optimizer_step_code(self) -> None:
        """Called after every ``step()``: the point where a Python-level profiler can inspect the optimizer."""

    @staticmethod
    def profile_hook_step(func: Callable[..., R]) -> Callable[..., R]:
        """Wrap ``func`` (an optimizer's ``step``) with the profiler range and the step hooks."""
        return _hook_step(func)

    @staticmethod
    def _group_tensors_by_device_and_dtype(
        tensorlistlist: list[list[torch.Tensor | None]], with_indices: bool = False
    ) -> dict[tuple[torch.device, torch.dtype], tuple[list[list[torch.Tensor | None]], list[int]]]:
        return _group_tensors_by_device_and_dtype(tensorlistlist, with_indices)

    def _patch_step_function(self) -> None:
        self._zero_grad_profile_name = f"Optimizer.zero_grad#{self.__class__.__name__}.zero_grad"
        # Subclasses are hooked when they are defined (``__init_subclass__``); this catches a ``step`` assigned to
        # the class afterwards.
        if not getattr(self.__class__.step, "hooked", False):
            self.__class__.step = _hook_step(self.__class__.step)  # type: ignore[method-assign]

    def register_step_pre_hook(self, hook: OptimizerPreHook) -> RemovableHandle:
        """Register ``hook(optimizer, args, kwargs) -> None | (new_args, new_kwargs)`` to run before ``step``."""
        handle = RemovableHandle(self._optimizer_step_pre_hooks)
        self._optimizer_step_pre_hooks[handle.id] = hook
        return handle

    def register_step_post_hook(self, hook: OptimizerPostHook) -> RemovableHandle:
        """Register ``hook(optimizer, args, kwargs) -> None`` to run after ``step``."""
        handle = RemovableHandle(self._optimizer_step_post_hooks)
        self._optimizer_step_post_hooks[handle.id] = hook
        return handle

    @staticmethod
    def _register(registry: OrderedDict[int, Any], hook: Callable[..., Any], prepend: bool) -> RemovableHandle:
        handle = RemovableHandle(registry)
        registry[handle.id] = hook
        if prepend:
            registry.move_to_end(handle.id, last=False)
        return handle

    def register_state_dict_pre_hook(self, hook: Callable[[Optimizer], None], prepend: bool = False) -> RemovableHandle:
        """Register ``hook(optimizer) -> None`` to run before :meth:`state_dict` builds the dict."""
        return self._register(self._optimizer_state_dict_pre_hooks, hook, prepend)

    def register_state_dict_post_hook(
        self, hook: Callable[[Optimizer, StateDict], StateDict | None], prepend: bool = False
    ) -> RemovableHandle:
        """Register ``hook(optimizer, state_dict) -> state_dict | None``; a returned dict replaces the result."""
        return self._register(self._optimizer_state_dict_post_hooks, hook, prepend)

    def register_load_state_dict_pre_hook(
        self, hook: Callable[[Optimizer, StateDict], StateDict | None], prepend: bool = False
    ) -> RemovableHandle:
        """Register ``hook(optimizer, state_dict) -> state_dict | None`` to run before loading a state_dict."""
        return self._register(self._optimizer_load_state_dict_pre_hooks, hook, prepend)

    def register_load_state_dict_post_hook(
        self, hook: Callable[[Optimizer], None], prepend: bool = False
    ) -> RemovableHandle:
        """Register ``hook(optimizer) -> None`` to run after a state_dict was loaded."""
        return self._register(self._optimizer_load_state_dict_post_hooks, hook, prepend)

    # ------------------------------------------------------------------------------------------------ state dicts

    @torch._disable_dynamo
    def state_dict(self) -> StateDict:
        """The optimizer's state as ``{"state": {index: {...}}, "param_groups": [...]}``, torch's format.

        Parameters are replaced by integer indices in order of first appearance over the groups.  The returned
        dict shares its tensors and hyperparameter objects with the optimizer (as torch 2.13 does); save it or
        deep-copy it before stepping again if you need a snapshot.
        """
        for pre_hook in self._optimizer_state_dict_pre_hooks.values():
            pre_hook(self)

        param_mappings: dict[int, int] = {}
        start_index = 0

        def pack_group(group: dict[str, Any]) -> dict[str, Any]:
            nonlocal start_index
            packed = {k: v for k, v in group.items() if k != "params"}
            for i, p in enumerate(group["params"], start_index):
                param_mappings.setdefault(id(p), i)
            packed["params"] = [param_mappings[id(p)] for p in group["params"]]
            start_index += len(packed["params"])
            return packed

        param_groups = [pack_group(g) for g in self.param_groups]
        packed_state = {(param_mappings[id(k)] if isinstance(k, torch.Tensor) else k): v for k, v in self.state.items()}
        state_dict: StateDict = {"state": packed_state, "param_groups": param_groups}
        for post_hook in self._optimizer_state_dict_post_hooks.values():
            hook_result = post_hook(self, state_dict)
            if hook_result is not None:
                state_dict = hook_result
        return state_dict

    @staticmethod
    def _process_value_according_to_param_policy(
        param: torch.Tensor,
        value: torch.Tensor,
        param_id: int,
        param_groups: list[dict[Any, Any]],
        key: Hashable = None,
    ) -> torch.Tensor:
        """Cast one loaded state tensor: ``step`` keeps its dtype/device unless the saved group was
        fused/capturable; everything else follows the parameter's dtype (floating params) and device."""
        fused = False
        capturable = False
        for pg in param_groups:
            if param_id in pg["params"]:
                fused = pg.get("fused", False)
                capturable = pg.get("capturable", False)
                break
        if key == "step":
            if capturable or fused:
                return value.to(dtype=torch.float32, device=param.device)
            return value
        if param.is_floating_point():
            return value.to(dtype=param.dtype, device=param.device)
        return value.to(device=param.device)

    @torch._disable_dynamo
    def load_state_dict(self, state_dict: StateDict) -> None:
        """Load a state_dict produced by :meth:`state_dict` (of optimlab or of ``torch.optim``).

        Saved parameters are matched to this optimizer's parameters by position; hyperparameters come from the
        saved groups.  A state_dict whose group count or group sizes differ raises ``ValueError`` and leaves the
        optimizer unchanged.
        """
        state_dict = state_dict.copy()
        for pre_hook in self._optimizer_load_state_dict_pre_hooks.values():
            hook_result = pre_hook(self, state_dict)
            if hook_result is not None:
                state_dict = hook_result

        groups = self.param_groups
        saved_groups = deepcopy(state_dict["param_groups"])
        if len(groups) != len(saved_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        if any(len(g["params"]) != len(s["params"]) for g, s in zip(groups, saved_groups)):
            raise ValueError(
                "loaded state dict contains a parameter group that doesn't match the size of optimizer's group"
            )

        id_map = dict(
            zip(
                chain.from_iterable(g["params"] for g in saved_groups),
                chain.from_iterable(g["params"] for g in groups),
            )
        )
        saved_param_groups = state_dict["param_groups"]

        def _cast(param: torch.Tensor, value: Any, param_id: int, key: Hashable = None) -> Any:
            if isinstance(value, torch.Tensor):
                return self._process_value_according_to_param_policy(param, value, param_id, saved_param_groups, key)
            if isinstance(value, dict):
                return {k: _cast(param, v, param_id, key=k) for k, v in value.items()}
            if isinstance(value, Iterable):
                return type(value)(_cast(param, v, param_id) for v in value)  # type: ignore[call-arg]
            return value

        state: defaultdict[Any, Any] = defaultdict(dict)
        for k, v in state_dict["state"].items():
            if k in id_map:
                param = id_map[k]
                state[param] = _cast(param, v, param_id=k)
            else:
                state[k] = v

        def update_group(group: dict[str, Any], new_group: dict[str, Any]) -> dict[str, Any]:
            new_group["params"] = group["params"]
            if "param_names" in group and "param_names" not in new_group:
                new_group["param_names"] = group["param_names"]
            return new_group

        param_groups = [update_group(g, ng) for g, ng in zip(groups, saved_groups)]
        self.__setstate__({"state": state, "param_groups": param_groups})

        for post_hook in self._optimizer_load_state_dict_post_hooks.values():
            post_hook(self)

    # ------------------------------------------------------------------------------------------------ gradients

    @torch._disable_dynamo
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset the gradients of all optimized tensors.

        Args:
            set_to_none: set ``.grad`` to ``None`` (default) instead of filling it with zeros.  Optimizers skip
                parameters whose grad is ``None`` but do step (moments, momentum) on a zero gradient.
        """
        foreach = self.defaults.get("foreach", False) or self.defaults.get("fused", False)
        if not hasattr(self, "_zero_grad_profile_name"):
            self._patch_step_function()
        buckets: defaultdict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = defaultdict(list)
        with torch.autograd.profiler.record_function(self._zero_grad_profile_name):
            done = set() if set_to_none else self._zero_grad_in_bulk()
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is None or id(p) in done:
                        continue
                    if set_to_none:
                        p.grad = None
                        continue
                    if p.grad.grad_fn is not None:
                        p.grad.detach_()
                    else:
                        p.grad.requires_grad_(False)
                    if not foreach or p.grad.is_sparse:
                        p.grad.zero_()
                    else:
                        buckets[(p.grad.device, p.grad.dtype)].append(p.grad)
            for grads in buckets.values():
                torch._foreach_zero_(grads)

    def _zero_grad_in_bulk(self) -> set[int]:
        """Zero gradients that an engine keeps in flat buffers, one call per buffer; the ids of their params."""
        return set()

    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Perform one optimization step.  ``closure`` re-evaluates the model and returns the loss."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------------ groups

    @torch._disable_dynamo
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a parameter group, e.g. a layer unfrozen during fine-tuning, with its own hyperparameters.

        Missing hyperparameters are taken from ``defaults``.  Raises (leaving the optimizer unchanged) when the
        group is malformed or shares a parameter with an existing group.
        """
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group)}")

        params = param_group["params"]
        if isinstance(params, torch.Tensor):
            param_group["params"] = [params]
        elif isinstance(params, set):
            raise TypeError(
                "optimizer parameters need to be organized in ordered collections, but "
                "the ordering of tensors in sets will change between runs. Please use a list instead."
            )
        else:
            param_group["params"] = list(params)

        extracted_params: list[torch.Tensor] = []
        extracted_names: list[str] = []
        for param in param_group["params"]:
            if isinstance(param, tuple):
                extracted_names.append(param[0])
                extracted_params.append(param[1])
            else:
                extracted_params.append(param)
        if extracted_names and len(extracted_names) != len(extracted_params):
            raise ValueError("all optimizer params should be with/without names. Some param names are missing")
        param_group["params"] = extracted_params
        if extracted_names:
            param_group["param_names"] = extracted_names

        for param in param_group["params"]:
            if not isinstance(param, torch.Tensor):
                raise TypeError(
                    "optimizer can only optimize Tensors, but one of the params is " + torch.typename(param)
                )
            if not self.defaults.get("differentiable", None) and not (param.is_leaf or param.retains_grad):
                raise ValueError("can't optimize a non-leaf Tensor")

        for name, default in self.defaults.items():
            if default is required and name not in param_group:
                raise ValueError(f"parameter group didn't specify a value of required optimization parameter {name}")
            param_group.setdefault(name, default)

        params = param_group["params"]
        if len(params) != len(set(params)):
            warnings.warn(
                "optimizer contains a parameter group with duplicate parameters; "
                "in future, this will cause an error; "
                "see github.com/pytorch/pytorch/issues/40967 for more information",
                stacklevel=3,
            )

        param_set: set[torch.Tensor] = set()
        for group in self.param_groups:
            param_set.update(set(group["params"]))
            if ("param_names" in param_group) != ("param_names" in group):
                current_group_txt = "with names" if "param_names" in param_group else "without names"
                raise ValueError(
                    "all optimizer param groups should be with/without names. "
                    f"cannot add param group {current_group_txt} to the optimizer"
                )
        if not param_set.isdisjoint(set(param_group["params"])):
            raise ValueError("some parameters appear in more than one parameter group")

        self.param_groups.append(param_group)


# ``step`` of the base raises NotImplementedError but is still hooked, as torch's is once patched.
Optimizer.step = _hook_step(Optimizer.__dict__["step"])  # type: ignore[method-assign]
