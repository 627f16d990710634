"""Compiling an algorithm's ``_update`` into one elementwise kernel (TorchInductor), with an eager fallback.

The same ``_update`` that the per-tensor engine runs op by op is traced by ``torch.compile`` over 1-D operands:
every op of the update then runs in one pass over memory instead of one pass per op.

* Numbers that change every step (bias corrections, a scheduler's lr) travel as one float64 tensor, and sizes are
  symbolic: a configuration compiles once and never recompiles.  In the trace a number is a ``Number``: a 0-dim
  tensor whose sign is known, so ``if weight_decay != 0`` still branches in Python; ``_NumbersAsOperands``
  turns op attributes that must be Python numbers (``value=``, ``alpha=``) into multiplications.
* Compiling takes seconds (tens of seconds on a cold cache, most of it the C++ compiler).  It runs in a
  background thread: until a kernel is ready, steps run the same update eagerly, chunk by chunk so that its
  intermediate results stay in cache.  ``OPTIMLAB_COMPILE=sync`` waits for the compiler instead (tests,
  benchmarks), ``OPTIMLAB_COMPILE=0`` never compiles.
* A compiled kernel is called directly: the C++ function Inductor generated, found by watching one call, not
  through Dynamo's frame hooks and guards (about 90 µs a call) nor AOTAutograd's runtime wrappers (about 20 µs).
  The engine guarantees what the guards would check (dtype, 1-D contiguous operands of more than one element)
  and bumps the version counters of what the kernel wrote, as in-place ops do.  Where that cannot be set up, the
  generated module's entry point or the Dynamo-wrapped function is called.
* Where the launch driver builds (``optimlab.engines.launch``), kernels are compiled single-threaded and a
  ``Launcher`` runs one over a table of items (tensors, chunks) in one call, the items spread over the threads.

Where no compiler works (no C++ toolchain, an op Inductor cannot lower) the eager path stays; a warning says so
once.
"""

from __future__ import annotations

import contextlib
import operator
import os
import sys
import threading
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

from optimlab.engines.launch import Launcher, driver, start_helper, wait_for_helper

__all__ = [
    "Kernel",
    "compile_mode",
    "kernel_for",
    "run_chunked",
    "runner",
    "start_compiles",
    "wait_for_compiles",
    "warn_once",
]

#: elements per chunk of the eager path: a handful of fp32 operands of this size fit in a core's L2 cache.
CHUNK = 1 << 15
#: operand size of the trace that compiles a kernel (large enough for Inductor to split the loop over threads;
#: traced with 16 elements, kernels came out single-threaded: 2x slower on 2 cores).
WARM_UP_SIZE = 1 << 18

Update = Callable[[Any, Any, dict[str, Any], Any], None]

_lock = threading.Lock()
_kernels: dict[tuple[Any, ...], Kernel] = {}
_pending: dict[tuple[Any, ...], threading.Thread] = {}
_to_start: list[threading.Thread] = []
_failed: set[tuple[Any, ...]] = set()
_messages: list[str] = []  # warnings raised in compile threads, re-emitted from the caller's thread
_warned: set[str] = set()


def compile_mode() -> str:
    """``"async"`` (default: compile in the background), ``"sync"`` (wait for it) or ``"off"``, from the
    environment variable ``OPTIMLAB_COMPILE`` (``1``/``async``, ``sync``, ``0``/``off``)."""
    value = os.environ.get("OPTIMLAB_COMPILE", "async").strip().lower()
    if value in ("0", "off", "false", "no", ""):
        return "off"
    return "sync" if value == "sync" else "async"


def wait_for_compiles(timeout: float | None = None) -> bool:
    """Block until the kernels being compiled in the background are ready; True if none is left pending."""
    start_compiles()
    for thread in list(_pending.values()):
        thread.join(timeout)
    if _kernels and not _pending:
        wait_for_helper(timeout)
    return not _pending


def warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=4)


# ---------------------------------------------------------------------------------------------- tracing helpers


class Number:
    """A number of an update, traced as a 0-dim tensor whose sign is static (part of the kernel's signature).

    Arithmetic gives tensors; comparing with 0 gives a Python bool, so ``if weight_decay != 0`` still branches.
    """

    __slots__ = ("sign", "t")

    def __init__(self, t: Tensor, sign: int) -> None:
        self.t = t
        self.sign = sign

    def _compare(self, other: Any, op: Callable[[Any, Any], Any]) -> Any:
        if type(other) in (int, float) and other == 0:
            return op(self.sign, 0)
        return op(self.t, _value(other))

    def __eq__(self, other: object) -> Any:  # type: ignore[override]
        return self._compare(other, operator.eq)

    def __ne__(self, other: object) -> Any:  # type: ignore[override]
        return self._compare(other, operator.ne)

    def __gt__(self, other: Any) -> Any:
        return self._compare(other, operator.gt)

    def __ge__(self, other: Any) -> Any:
        return self._compare(other, operator.ge)

    def __lt__(self, other: Any) -> Any:
        return self._compare(other, operator.lt)

    def __le__(self, other: Any) -> Any:
        return self._compare(other, operator.le)

    __hash__ = None  # type: ignore[assignment]

    def __neg__(self) -> Tensor:
        return -self.t

    def __add__(self, o: Any) -> Tensor:
        return self.t + _value(o)

    def __radd__(self, o: Any) -> Tensor:
        return _value(o) + self.t

    def __sub__(self, o: Any) -> Tensor:
        return self.t - _value(o)

    def __rsub__(self, o: Any) -> Tensor:
        return _value(o) - self.t

    def __mul__(self, o: Any) -> Tensor:
        return self.t * _value(o)

    def __rmul__(self, o: Any) -> Tensor:
        return _value(o) * self.t

    def __truediv__(self, o: Any) -> Tensor:
        return self.t / _value(o)

    def __rtruediv__(self, o: Any) -> Tensor:
        return _value(o) / self.t

    def __pow__(self, o: Any) -> Tensor:
        return self.t ** _value(o)

    def __rpow__(self, o: Any) -> Tensor:
        return _value(o) ** self.t


def _value(x: Any) -> Any:
    if isinstance(x, Number):
        return x.t
    if isinstance(x, tuple | list):
        return type(x)(_value(v) for v in x)
    return x


_ADDC = (Tensor.addcdiv_, Tensor.addcmul_, Tensor.addcdiv, Tensor.addcmul)
_ALPHA = (Tensor.add_, Tensor.sub_, Tensor.add, Tensor.sub)


class _NumbersAsOperands(TorchFunctionMode):
    """While tracing: pass ``Number``s to ops as tensors, and turn op attributes that must be Python numbers
    (``value=`` of addcdiv/addcmul, ``alpha=`` of add/sub) into multiplications (the same up to rounding)."""

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None) -> Any:
        args = tuple(_value(a) for a in args)
        kwargs = {k: _value(v) for k, v in (kwargs or {}).items()}
        if func in _ADDC and len(args) == 3:
            x, t1, t2 = args
            value = kwargs.get("value", 1)
            term = t1 / t2 if func in (Tensor.addcdiv_, Tensor.addcdiv) else t1 * t2
            term = term if type(value) in (int, float) and value == 1 else term * value
            return x.add_(term) if func in (Tensor.addcdiv_, Tensor.addcmul_) else x + term
        if func in _ALPHA and "alpha" in kwargs and len(args) == 2 and isinstance(args[1], Tensor):
            return func(args[0], args[1] * kwargs["alpha"])
        return func(*args, **kwargs)


# ---------------------------------------------------------------------------------------------- signatures


def _is_static(v: Any) -> bool:
    """Values a kernel is specialised on: branches (bools, strings, None) and zeros (``if wd != 0``)."""
    return v is None or isinstance(v, bool | str | tuple) or (type(v) in (int, float) and v == 0)


def _sign(v: float) -> int:
    return (v > 0) - (v < 0)


def hyper_signature(h: dict[str, Any]) -> tuple[Any, ...]:
    """What a kernel is specialised on in ``h``: its static values, the signs of its numbers, which entries are
    tensors.  Numbers' values are not part of it."""
    out = []
    append = out.append
    for k, v in h.items():  # _is_static and _sign inlined for the common types: this runs every step
        t = type(v)
        if t is float or t is int:
            append((k, v) if v == 0 else (k, (v > 0) - (v < 0)))
        elif v is None or t is bool or t is str or _is_static(v):
            append((k, v))
        elif isinstance(v, Tensor):
            append((k, "tensor", v.dtype, v.dim(), v.requires_grad))
        else:
            append((k, _sign(v)))
    return tuple(out)


def signature(h: dict[str, Any], state: dict[str, Tensor]) -> tuple[Any, ...]:
    """What a kernel is specialised on: ``hyper_signature(h)`` and the state layout."""
    return hyper_signature(h), tuple((k, v.dim()) for k, v in state.items())


def _used_keys(update: Update, hyper_type: type, h: dict[str, Any], example: Any) -> set[str]:
    """The entries of ``h`` that ``update`` reads for these branches, found by running it once on tiny operands
    (only those become kernel inputs: a graph input that is never used gets specialised on)."""
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
    update: Update, hyper_type: type, h: dict[str, Any], state: dict[str, Tensor], used: set[str], tag: int
) -> tuple[Callable[..., Any], list[str], list[str]]:
    """``run(param, grad, *state_tensors, *tensor_hypers, numbers)`` calling ``update``.

    Statics are constants of its code; numbers come packed in one float64 tensor, tensors (a Tensor lr) as
    arguments of their own; every configuration gets a code object (hence a Dynamo cache) of its own.
    """
    numbers = [k for k, v in h.items() if k in used and not _is_static(v) and not isinstance(v, Tensor)]
    tensors = [k for k, v in h.items() if k in used and isinstance(v, Tensor)]
    state_args = [f"s{i}" for i in range(len(state))]
    tensor_args = [f"t{i}" for i in range(len(tensors))]

    def entry(k: str, v: Any) -> str:
        if k in numbers:
            return f"Number(numbers[{numbers.index(k)}], {_sign(v)})"
        if k in tensors:
            return tensor_args[tensors.index(k)]
        return repr(v) if _is_static(v) else "None"  # not read by the update for these branches

    state_items = ", ".join(f"{k!r}: {a}" for k, a in zip(state, state_args))
    hyper_items = ", ".join(f"{k!r}: {entry(k, v)}" for k, v in h.items())
    source = (
        f"def run(param, grad, {', '.join([*state_args, *tensor_args, 'numbers'])}):\n"
        f"    state = {{{state_items}}}\n"
        f"    with NumbersAsOperands():\n"
        f"        update(param, grad, state, Hyper({{{hyper_items}}}))\n"
        f"    return state\n"  # with the entries the update created (SGD's first momentum buffer)
    )
    namespace: dict[str, Any] = {
        "update": update,
        "Hyper": hyper_type,
        "Number": Number,
        "NumbersAsOperands": _NumbersAsOperands,
    }
    exec(compile(source, f"<optimlab fused {update.__qualname__} #{tag}>", "exec"), namespace)
    return namespace["run"], numbers, tensors


# ---------------------------------------------------------------------------------------------- compiling


def kernel_for(
    update: Update, hyper_type: type, h: dict[str, Any], example: tuple[Tensor, Tensor, dict[str, Tensor]]
) -> Kernel | None:
    """The compiled kernel of ``update`` for the branches of ``h``, or None while it is being compiled (in the
    background), if compiling failed, or if it is off."""
    while _messages:
        warn_once(_messages.pop())
    mode = compile_mode()
    if mode == "off":
        return None
    key = (update, example[0].dtype, example[0].device.type, signature(h, example[2]))
    kernel = _kernels.get(key)
    if kernel is not None or key in _failed:
        return kernel
    with _lock:
        if key not in _kernels and key not in _failed and key not in _pending:
            small = _small_like(example, WARM_UP_SIZE)  # made here: the caller's operands may change meanwhile
            _keep_compile_sessions_to_their_thread()
            thread = threading.Thread(
                target=_compile, args=(update, hyper_type, dict(h), key, small), daemon=True, name="optimlab-compile"
            )
            _pending[key] = thread
            if mode == "sync":
                thread.start()
            else:
                _to_start.append(thread)
    if mode == "sync":
        thread = _pending.get(key)
        if thread is not None:
            thread.join()
        if key in _kernels and _kernels[key].launcher is not None:
            wait_for_helper()
        while _messages:
            warn_once(_messages.pop())
    return _kernels.get(key)


_this_thread = threading.local()  # .compiling: the thread is running one of our compiles


def _keep_compile_sessions_to_their_thread() -> None:
    """Keep ``torch.compiler.is_compiling()`` False in every other thread while one of our background compiles runs.

    For a compile session torch sets a process-wide flag (``torch.compiler._compile_session_context``), so while
    our kernel compiled in its thread, the training thread saw ``is_compiling()`` True for seconds: its own code
    (and this package's ``_get_value``) took compiled-only branches, and torch.optim's ``RAdam(foreach=True)``
    failed (its bias corrections became a list mixing tensors and floats).  Sessions of other threads (the
    user's ``torch.compile``) still set the flag as before; ours, tracing plain tensors through Dynamo, which
    folds ``is_compiling()`` to True itself, do not need it."""
    original = getattr(torch.compiler, "_compile_session_context", None)
    if original is None or getattr(original, "optimlab", False):
        return

    @contextlib.contextmanager
    def session() -> Any:
        if getattr(_this_thread, "compiling", False):
            yield
        else:
            with original():
                yield

    session.optimlab = True  # type: ignore[attr-defined]
    torch.compiler._compile_session_context = session


def start_compiles() -> None:
    """Start the background compiles requested during a step, once the step is done: tracing holds the GIL, and
    the step's own eager work would wait for it."""
    while _to_start:
        _to_start.pop(0).start()


def _compile(
    update: Update,
    hyper_type: type,
    h: dict[str, Any],
    key: tuple[Any, ...],
    example: tuple[Tensor, Tensor, dict[str, Tensor]],
) -> None:
    _this_thread.compiling = True
    try:
        run, numbers, tensors = _generate(
            update, hyper_type, h, example[2], _used_keys(update, hyper_type, h, example), len(_kernels) + len(_failed)
        )
        captured: dict[str, Any] = {}
        # With the launch driver, the kernel is compiled single-threaded: the driver spreads a step's items over
        # the threads in one parallel region (a kernel's own region per call would cost microseconds each).
        serial = driver() is not None
        if serial:
            start_helper()

        def backend(gm: torch.fx.GraphModule, example_inputs: list[Any]) -> Callable[..., Any]:
            from torch._inductor.compile_fx import compile_fx

            compiled_fn = compile_fx(gm, example_inputs, config_patches={"cpp.threads": 1} if serial else None)
            captured.update(gm=gm, inputs=list(example_inputs), fn=compiled_fn)
            return compiled_fn

        wrapped = torch.compile(run, backend=backend, fullgraph=True, dynamic=True)

        def operands(param: Tensor, grad: Tensor, state: dict[str, Tensor], hp: dict[str, Any]) -> list[Any]:
            packed = torch.tensor([float(hp[k]) for k in numbers], dtype=torch.float64)
            return [param, grad, *state.values(), *(hp[k] for k in tensors), packed]

        trace_args = operands(*example, h)
        out = wrapped(*trace_args)
        mutated = [0, *range(2, 2 + len(example[2]))]
        direct, cpp_roles = _direct_caller(captured, trace_args, out, mutated)
        # Without a launcher (an update that creates a state entry: SGD's first momentum step), the serial
        # kernel is called whole, on one thread.
        launcher = _launcher(cpp_roles, trace_args, mutated, direct) if serial else None
        kernel = Kernel(numbers, tensors, wrapped, direct, launcher)
        _kernels[key] = kernel
    except Exception as e:  # no compiler, an op Inductor cannot lower...: the eager path stays
        _failed.add(key)
        message = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        _messages.append(
            f"optimlab: a fused step could not be compiled ({type(e).__name__}: {message}); it runs eagerly in "
            "cache-sized chunks instead (slower). Set OPTIMLAB_COMPILE=0 to skip compiling."
        )
    finally:
        _this_thread.compiling = False
        _pending.pop(key, None)


class Kernel:
    """A compiled update: ``kernel.bind(h)(param, grad, state)`` runs it with the numbers of ``h``."""

    def __init__(
        self,
        numbers: list[str],
        tensors: list[str],
        wrapped: Callable[..., dict[str, Tensor]],
        direct: Callable[[list[Any]], dict[str, Tensor]] | None,
        launcher: Launcher | None = None,
    ) -> None:
        self.numbers = numbers
        self.tensors = tensors
        self.wrapped = wrapped
        self.direct = direct
        self.launcher = launcher

    def bind(self, h: dict[str, Any]) -> Bound:
        """The kernel with the numbers of ``h`` packed once, for any number of operand sets."""
        extra = [*(h[k] for k in self.tensors), torch.tensor([float(h[k]) for k in self.numbers], dtype=torch.float64)]
        return Bound(self, extra)


class Bound:
    """A kernel with its numbers: ``bound(param, grad, state)`` for one operand set; ``bound.many(...)`` (where
    the kernel has a launcher) for a table of them in one call."""

    __slots__ = ("extra", "kernel", "launcher")

    def __init__(self, kernel: Kernel, extra: list[Any]) -> None:
        self.kernel = kernel
        self.extra = extra
        self.launcher = kernel.launcher

    def __call__(self, param: Tensor, grad: Tensor, state: dict[str, Tensor]) -> None:
        args = [param, grad, *state.values(), *self.extra]
        if self.launcher is not None:
            table, owners = self.launcher.table([args], self.launcher.chunks([args]))
            self.launcher(table, owners, self.launcher.shared(args), [grad])
            torch._C._increment_version([args[i] for i in self.launcher.mutated])
            return
        kernel = self.kernel
        new = kernel.direct(args) if kernel.direct is not None else kernel.wrapped(*args)
        for k, v in new.items():
            if k not in state:
                state[k] = v

    def many(self, table: Tensor, owners: Tensor, rep_state: dict[str, Tensor], grads: list[Tensor]) -> None:
        """Run the kernel over every row of ``table`` (from ``launcher.table``); the operands the rows share come
        from ``rep_state`` (0-dim entries) and the numbers; ``grads[s]`` is operand set ``s``'s gradient.  The
        caller bumps the parameters' version counters."""
        launcher = self.launcher
        assert launcher is not None
        args = [None, None, *rep_state.values(), *self.extra]
        launcher(table, owners, launcher.shared(args), grads)


def _direct_caller(
    captured: dict[str, Any], trace_args: list[Any], traced_out: dict[str, Tensor], mutated: list[int]
) -> tuple[Callable[[list[Any]], dict[str, Tensor]] | None, tuple[Any, list[tuple[Any, ...]]] | None]:
    """Call Inductor's compiled function without Dynamo's frame machinery.

    Its inputs are the graph's placeholders: our tensors (found by identity among the traced arguments) and the
    symbolic sizes (found as dimensions of those tensors).  Its outputs are the graph's: the entries the update
    created, in ``traced_out``'s order.  Returns the caller (None: use the Dynamo path, if anything does not
    map) and, when it calls the one C++ kernel itself, that kernel and where each of its arguments comes from:
    ``("arg", j)`` the step's operand ``j``, ``("size", j, d)`` dimension ``d`` of operand ``j``."""
    gm, inputs, fn = captured.get("gm"), captured.get("inputs"), captured.get("fn")
    if gm is None or inputs is None or fn is None:
        return None, None
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != len(inputs):
        return None, None
    tensor_positions = {}
    for i, value in enumerate(inputs):
        if isinstance(value, Tensor):
            matches = [j for j, a in enumerate(trace_args) if a is value]
            if len(matches) != 1:
                return None, None
            tensor_positions[i] = matches[0]
    specs: list[tuple[Any, ...]] = []
    for i, node in enumerate(placeholders):
        if i in tensor_positions:
            specs.append(("arg", tensor_positions[i]))
            continue
        symbol = node.meta.get("example_value")
        if not isinstance(symbol, torch.SymInt):
            return None, None
        where = None
        for k, other in enumerate(placeholders):
            fake = other.meta.get("example_value")
            if k in tensor_positions and isinstance(fake, Tensor):
                for d, size in enumerate(fake.shape):
                    if isinstance(size, torch.SymInt) and str(size.node.expr) == str(symbol.node.expr):
                        where = ("size", tensor_positions[k], d)
                        break
            if where is not None:
                break
        if where is None:
            return None, None
        specs.append(where)
    pickers = [_picker(spec) for spec in specs]
    created = list(traced_out)  # keys the update added to the state dict, in output order
    created = [k for k in created if not any(traced_out[k] is a for a in trace_args)]

    def via(
        callee: Callable[..., Any], picks: list[Callable[[list[Any]], Any]], spread: bool, bump: bool
    ) -> Callable[[list[Any]], dict[str, Tensor]]:
        """``callee`` on the operands ``picks`` take from a step's arguments (as separate arguments if ``spread``,
        else as one list); ``bump``: count the writes as in-place changes for autograd, as in-place ops do."""

        def call(args: list[Any]) -> dict[str, Tensor]:
            inputs = [pick(args) for pick in picks]
            outs = callee(*inputs) if spread else callee(inputs)
            if bump:
                torch._C._increment_version([args[i] for i in mutated])
            if not created:
                return {}
            tensors_out = [o for o in outs if isinstance(o, Tensor)]
            return dict(zip(created, tensors_out[-len(created) :]))

        return call

    through_aot = via(fn, pickers, spread=True, bump=False)  # the AOTAutograd wrapper bumps them itself

    def inputs_of(args: list[Any]) -> list[Any]:
        return [pick(args) for pick in pickers]

    # Faster callers, each used only if it gives the same results as the wrapped call on copies of the traced
    # operands: AOTAutograd's runtime wrappers cost ~20 µs a call, the generated module's entry point (size
    # asserts, argument shuffling) a few µs more than its one C++ kernel.  At GPT-2's and ResNet-50's ~50 large
    # tensors a step, that was a millisecond.
    candidates: list[tuple[Callable[[list[Any]], dict[str, Tensor]], tuple[Any, list[tuple[Any, ...]]] | None]] = []
    entry = _generated_entry(fn, inputs_of(_copies(trace_args)))
    if entry is not None:
        if not created:
            kernel = _single_kernel(entry, inputs_of(_copies(trace_args)))
            if kernel is not None:
                cpp, order = kernel
                call = via(cpp, [pickers[i] for i in order], spread=True, bump=True)
                candidates.append((call, (cpp, [specs[i] for i in order])))
        candidates.append((via(entry, pickers, spread=False, bump=True), None))
    for candidate, found in candidates:
        if _same_results(through_aot, candidate, trace_args):
            return candidate, found
    return through_aot, None


def _picker(spec: tuple[Any, ...]) -> Callable[[list[Any]], Any]:
    if spec[0] == "arg":
        return operator.itemgetter(spec[1])
    _, j, d = spec
    return lambda args: args[j].size(d)


def _copies(args: list[Any]) -> list[Any]:
    return [x.clone() if isinstance(x, Tensor) else x for x in args]


def _same_results(
    reference: Callable[[list[Any]], dict[str, Tensor]], candidate: Callable[[list[Any]], Any], trace_args: list[Any]
) -> bool:
    """Whether ``candidate`` leaves copies of the traced operands (and returns entries) bitwise as ``reference``."""
    try:
        a, b = _copies(trace_args), _copies(trace_args)
        out_a, out_b = reference(a), candidate(b) or {}
        return list(out_a) == list(out_b) and all(
            _identical(x, y) for x, y in zip([*a, *out_a.values()], [*b, *out_b.values()]) if isinstance(x, Tensor)
        )
    except Exception:
        return False


def _launcher(
    found: tuple[Any, list[tuple[Any, ...]]] | None,
    trace_args: list[Any],
    mutated: list[int],
    direct: Callable[[list[Any]], dict[str, Tensor]] | None,
) -> Launcher | None:
    """A launcher for the C++ kernel ``direct`` calls (``found``: it and where its arguments come from), used
    only if running the traced operands through it in several ragged items gives bitwise ``direct``'s results.

    Operands ``[param, grad, *state, *extras]``: the parameter, gradient and 1-dim state entries move with the
    items; extras (the numbers, a tensor lr) and 0-dim state entries the kernel only reads are shared by them."""
    if found is None or direct is None or driver() is None:
        return None
    cpp, roles = found
    n = trace_args[0].numel()
    n_state = len(mutated) - 1
    before = _copies(trace_args)
    after = _copies(trace_args)
    direct(after)
    kinds: list[tuple[str, int]] = []
    for spec in roles:
        if spec[0] == "size":
            if trace_args[spec[1]].size(spec[2]) != n:
                return None
            kinds.append(("size", 0))
            continue
        j = spec[1]
        t = trace_args[j]
        if not isinstance(t, Tensor):
            return None
        if j < 2 + n_state and t.dim() == 1 and t.numel() == n:
            kinds.append(("item", j))
        elif j >= 2 + n_state or (t.dim() == 0 and _identical(before[j], after[j])):
            kinds.append(("shared", j))
        else:
            return None
    try:
        launcher = Launcher(cpp, kinds, mutated)
    except Exception:
        return None

    items = {j for kind, j in kinds if kind == "item"}

    def run(args: list[Any]) -> dict[str, Tensor]:
        # Two operand sets (halves), each in several items, the last one ragged: rows, owners and offsets all
        # take part.
        half = n // 2
        sets = [[a[lo:hi] if j in items else a for j, a in enumerate(args)] for lo, hi in ((0, half), (half, n))]
        table, owners = launcher.table(sets, launcher.chunks(sets, chunk=half // 3 + 5))
        launcher(table, owners, launcher.shared(args), [ops[1] for ops in sets])
        return {}

    return launcher if _same_results(direct, run, trace_args) else None


def _single_kernel(entry: Callable[[list[Any]], Any], inputs: list[Any]) -> tuple[Callable[..., Any], list[int]] | None:
    """The one C++ kernel behind a generated module's ``call`` and, for each of its arguments, the position in
    ``inputs`` it comes from (a tensor by identity, a size by value); None unless ``call`` runs exactly one
    kernel on nothing but its inputs and returns nothing."""
    module = sys.modules.get(type(getattr(entry, "__self__", None)).__module__)
    names = [n for n in vars(module) if n.startswith("cpp_fused_")] if module is not None else []
    if len(names) != 1:
        return None
    cpp = getattr(module, names[0])
    seen: list[tuple[Any, ...]] = []

    def spy(*args: Any) -> Any:
        seen.append(args)
        return cpp(*args)

    with _lock:  # compile threads may share a module (same generated code): one swaps its global at a time
        setattr(module, names[0], spy)
        try:
            outs = entry(list(inputs))
        finally:
            setattr(module, names[0], cpp)
    if len(seen) != 1 or outs:  # another call went through meanwhile, or not one kernel: keep the entry point
        return None
    order = []
    for arg in seen[0]:
        if isinstance(arg, Tensor):
            where = [i for i, x in enumerate(inputs) if x is arg]
        elif type(arg) is int:
            where = [i for i, x in enumerate(inputs) if type(x) is int and x == arg]
        else:
            return None
        if len(where) != 1:
            return None
        order.append(where[0])
    return cpp, order


def _identical(x: Tensor, y: Tensor) -> bool:
    """Bitwise equal, NaN where the other is NaN (the traced operands are random: a sqrt may meet a negative)."""
    return x.shape == y.shape and x.dtype == y.dtype and bool(((x == y) | (x.isnan() & y.isnan())).all())


def _generated_entry(fn: Callable[..., Any], inputs: list[Any]) -> Callable[[list[Any]], Any] | None:
    """The generated module's ``call``, which AOTAutograd's wrappers reach through a ``CompiledFxGraph``: found by
    watching one call of ``fn`` (it is not handed out, and a cache hit builds it without our help)."""
    try:
        from torch._inductor.output_code import CompiledFxGraph
    except ImportError:
        return None
    found: list[Any] = []

    def watch(frame: Any, event: str, arg: Any) -> None:
        if event == "call" and frame.f_code.co_name == "__call__":
            obj = frame.f_locals.get("self")
            if isinstance(obj, CompiledFxGraph):
                found.append(obj)

    previous = sys.getprofile()
    sys.setprofile(watch)
    try:
        fn(*inputs)
    finally:
        sys.setprofile(previous)
    entry = getattr(found[0], "current_callable", None) if len(found) == 1 else None
    return entry if callable(entry) else None


def _small_like(example: tuple[Tensor, Tensor, dict[str, Tensor]], n: int) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    param, grad, state = example

    def like(t: Tensor, offset: float) -> Tensor:
        return torch.rand(n, dtype=t.dtype, device=t.device) + offset

    small_state = {k: (v.clone() if v.dim() == 0 else like(v, 0.5)) for k, v in state.items()}
    return like(param, 0.5), like(grad, -0.5), small_state


def runner(
    update: Update, h: Any, example: tuple[Tensor, Tensor, dict[str, Tensor]]
) -> Callable[[Tensor, Tensor, dict[str, Tensor]], None]:
    """``run(param, grad, state)`` applying ``update`` with the scalars ``h`` to 1-D operands shaped like
    ``example``: the compiled kernel when it is ready, the eager chunked update otherwise (and for 1-element
    operands, on which Dynamo would specialise)."""
    kernel = kernel_for(update, type(h), h, example) if example[0].numel() > 1 else None
    if kernel is not None:
        return kernel.bind(h)
    return lambda param, grad, state: run_chunked(update, param, grad, state, h)


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
