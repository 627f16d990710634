"""Compiling an algorithm's ``_update`` into one elementwise kernel (TorchInductor), with an eager fallback.

The same ``_update`` that the per-tensor engine runs op by op is traced by ``torch.compile`` over flat 1-D
operands: every op of the update then runs in one pass over memory instead of one pass per op.  Numbers that
change every step (bias corrections, a scheduler's lr) are kernel arguments and sizes are symbolic, so steps
never recompile after warm-up.  Where no compiler works (no C++ toolchain, an unsupported platform) the update
runs eagerly, chunk by chunk so that its intermediate results stay in cache; a warning says so once.
"""

from __future__ import annotations

import contextlib
import operator
import os
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.fx.passes._tensorify_python_scalars as _tensorify
from torch import Tensor
from torch.overrides import TorchFunctionMode

__all__ = ["compile_enabled", "kernel_for", "run_chunked", "warn_once"]

#: elements per chunk of the eager fallback: a handful of fp32 operands of this size fit in a core's L2 cache.
CHUNK = 1 << 15

Update = Callable[[Any, Any, dict[str, Any], Any], None]

_lock = threading.Lock()
_kernels: dict[tuple[Any, ...], Callable[..., None]] = {}
_failed: set[tuple[Any, ...]] = set()
_warned: set[str] = set()


def compile_enabled() -> bool:
    """Whether fused steps compile their update (set ``OPTIMLAB_COMPILE=0`` to run them eagerly)."""
    return os.environ.get("OPTIMLAB_COMPILE", "1").lower() not in ("0", "false", "no", "")


def warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=4)


class _NumbersAsOperands(TorchFunctionMode):
    """While tracing: turn op attributes that are numbers (``value=``, ``alpha=``, a ``lerp_`` weight) into
    multiplications, the form in which Dynamo keeps a changing number symbolic instead of specialising the
    graph on its value (``addcdiv_(a, b, value=s)`` becomes ``add_(a / b * s)``, the same up to rounding)."""

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func in _ADDC and len(args) == 3:
            x, t1, t2 = args
            value = kwargs.get("value", 1)
            term = t1 / t2 if func in (Tensor.addcdiv_, Tensor.addcdiv) else t1 * t2
            term = term if _is_one(value) else term * value
            return x.add_(term) if func in (Tensor.addcdiv_, Tensor.addcmul_) else x + term
        if func in _ALPHA and "alpha" in kwargs and len(args) == 2 and isinstance(args[1], Tensor):
            return func(args[0], args[1] * kwargs["alpha"])
        if func in (Tensor.lerp_, Tensor.lerp) and len(args) + len(kwargs) == 3:
            x, end = args[0], args[1]
            weight = args[2] if len(args) > 2 else kwargs["weight"]
            if not isinstance(weight, Tensor):
                return x.add_((end - x) * weight) if func is Tensor.lerp_ else x + (end - x) * weight
        return func(*args, **kwargs)


_ADDC = (Tensor.addcdiv_, Tensor.addcmul_, Tensor.addcdiv, Tensor.addcmul)
_ALPHA = (Tensor.add_, Tensor.sub_, Tensor.add, Tensor.sub)


@contextlib.contextmanager
def _negation_tensorifiable() -> Iterator[None]:
    """Let Dynamo keep ``-x`` of a number symbolic (``alpha=-lr``).

    Its pass that turns number arithmetic into tensor arithmetic lists +, -, *, / and ** but not unary minus,
    and specialises the graph on any number it meets there; the pass handles a unary minus like the others once
    listed.  Listed only while our kernels are traced."""
    table = _tensorify.SUPPORTED_OPS
    added = operator.neg not in table
    if added:
        table[operator.neg] = torch.ops.aten.neg.default
    try:
        yield
    finally:
        if added:
            table.pop(operator.neg, None)


def _is_one(value: Any) -> bool:
    return type(value) in (int, float) and value == 1


def _is_static(v: Any) -> bool:
    # Zero is static too: updates branch on it (``if weight_decay != 0``).
    return v is None or isinstance(v, bool | str | tuple) or (type(v) in (int, float) and v == 0)


def _signature(h: dict[str, Any], state: dict[str, Tensor]) -> tuple[Any, ...]:
    """What a compiled kernel is specialised on: the branches (bools, strings, None), which scalars are Tensors,
    the state keys; the values of numbers are not part of it."""
    hyper = tuple(
        (k, ("static", v) if _is_static(v) else ("tensor", v.dtype, v.dim()) if isinstance(v, Tensor) else "number")
        for k, v in h.items()
    )
    return hyper, tuple((k, v.dim()) for k, v in state.items())


def _used_keys(update: Update, hyper_type: type, h: dict[str, Any], example: Any) -> set[str]:
    """The entries of ``h`` that ``update`` reads for these branches, found by running it once on tiny operands.

    Only those become kernel arguments: Dynamo specialises a graph on an input number it never uses (Adam's
    ``lr`` without weight decay lives only in the step size), which would recompile whenever it changes."""
    used: set[str] = set()

    class Recording(hyper_type):  # type: ignore[misc, valid-type]
        __slots__ = ()

        def __getattr__(self, name: str) -> Any:
            used.add(name)
            return super().__getattr__(name)

        def __getitem__(self, name: str) -> Any:
            used.add(name)
            return super().__getitem__(name)

    with torch.no_grad():
        update(*_small_like(example, 4), Recording(h))
    return used


def _generate(
    update: Update, hyper_type: type, h: dict[str, Any], state: dict[str, Tensor], used: set[str]
) -> Callable[..., None]:
    """``run(param, grad, *state_tensors, *numbers)``, a function that calls ``update``.

    The branches of ``h`` are constants of its code and every number is a positional argument, so Dynamo makes
    the numbers symbolic instead of specialising on them (it does specialise on numbers inside a dict), and
    each configuration gets a code object, hence a compile cache, of its own.
    """
    # Names unique to this kernel: Dynamo remembers numbers it had to specialise by argument name, across
    # functions, so a shared name would carry one kernel's specialisation into another.
    tag = len(_kernels) + len(_failed)
    state_args = [f"s{i}_{tag}" for i in range(len(state))]
    numbers = [k for k, v in h.items() if not _is_static(v) and k in used]
    number_args = {k: f"{k}_{tag}" for k in numbers}
    state_items = ", ".join(f"{k!r}: {a}" for k, a in zip(state, state_args))
    # Statics become constants of the code; numbers the update does not read are left out (None).
    hyper_items = ", ".join(
        f"{k!r}: {number_args[k] if k in number_args else repr(v) if _is_static(v) else None}" for k, v in h.items()
    )
    source = (
        f"def run(param, grad, {', '.join(state_args + list(number_args.values()))}):\n"
        f"    state = {{{state_items}}}\n"
        f"    with NumbersAsOperands():\n"
        f"        update(param, grad, state, Hyper({{{hyper_items}}}))\n"
        f"    return state\n"  # with the entries the update created (SGD's first momentum buffer)
    )
    namespace: dict[str, Any] = {"update": update, "Hyper": hyper_type, "NumbersAsOperands": _NumbersAsOperands}
    exec(compile(source, f"<optimlab fused {update.__qualname__} #{len(_kernels)}>", "exec"), namespace)
    run = namespace["run"]
    run.numbers = numbers  # type: ignore[attr-defined]
    return run


def kernel_for(
    update: Update, hyper_type: type, h: dict[str, Any], example: tuple[Tensor, Tensor, dict[str, Tensor]]
) -> Callable[..., None] | None:
    """The compiled ``kernel(param, grad, state, h)`` of ``update`` for the branches of ``h`` (traced on small
    operands shaped like ``example``); None if compiling is turned off or failed for this configuration."""
    if not compile_enabled():
        return None
    key = (update, example[0].dtype, example[0].device.type, _signature(h, example[2]))
    kernel = _kernels.get(key)
    if kernel is None and key not in _failed:
        with _lock:
            kernel = _kernels.get(key)
            if kernel is None and key not in _failed:
                kernel = _compile(update, hyper_type, h, key, example)
    return kernel


def _compile(
    update: Update,
    hyper_type: type,
    h: dict[str, Any],
    key: tuple[Any, ...],
    example: tuple[Tensor, Tensor, dict[str, Tensor]],
) -> Callable[..., None] | None:
    try:
        run = _generate(update, hyper_type, h, example[2], _used_keys(update, hyper_type, h, example))
    except Exception as e:
        _failed.add(key)
        warn_once(f"optimlab: the fused step cannot be compiled ({type(e).__name__}: {e}); it runs eagerly instead.")
        return None
    # dynamic=True: sizes are symbolic and numbers become scalar tensors from the first trace (with op
    # attributes rewritten by _NumbersAsOperands, nothing forces Dynamo to specialise on a number's value).
    compiled = torch.compile(run, fullgraph=True, dynamic=True)
    numbers = run.numbers  # type: ignore[attr-defined]

    def kernel(param: Tensor, grad: Tensor, state: dict[str, Tensor], hp: dict[str, Any]) -> None:
        with _negation_tensorifiable():
            out = compiled(param, grad, *state.values(), *(hp[k] for k in numbers))
        for k, v in out.items():
            if k not in state:
                state[k] = v

    try:
        # Trace once on throw-away operands, so that a failure to compile costs no real step.
        kernel(*_small_like(example, 16), h)
    except Exception as e:  # no compiler, an op inductor cannot lower...: the eager engine still works
        _failed.add(key)
        message = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        warn_once(
            f"optimlab: the fused step could not be compiled ({type(e).__name__}: {message}); it runs eagerly in "
            "cache-sized chunks instead (slower). Set OPTIMLAB_COMPILE=0 to skip compiling."
        )
        return None
    _kernels[key] = kernel
    return kernel


def _small_like(example: tuple[Tensor, Tensor, dict[str, Tensor]], n: int) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    param, grad, state = example

    def like(t: Tensor, offset: float) -> Tensor:
        return torch.rand(n, dtype=t.dtype, device=t.device) + offset

    small_state = {k: (v.clone() if v.dim() == 0 else like(v, 0.5)) for k, v in state.items()}
    return like(param, 0.5), like(grad, -0.5), small_state


def run_chunked(update: Update, param: Tensor, grad: Tensor, state: dict[str, Tensor], h: Any) -> None:
    """Eager ``update`` over 1-D operands, one cache-sized chunk at a time (the no-compiler path).

    Entries the update adds to ``state`` (SGD's first momentum buffer) are assembled from the chunks.
    """
    n = param.numel()
    if n <= 2 * CHUNK:
        update(param, grad, state, h)
        return
    sliced = [k for k, v in state.items() if v.dim() == 1 and v.numel() == n]
    created: dict[str, list[Tensor]] = {}
    for start in range(0, n, CHUNK):
        end = min(start + CHUNK, n)
        chunk_state = {k: (v[start:end] if k in sliced else v) for k, v in state.items()}
        update(param[start:end], grad[start:end], chunk_state, h)
        for k, v in chunk_state.items():
            if k not in state:
                created.setdefault(k, []).append(v)
    for k, parts in created.items():
        state[k] = torch.cat(parts)
