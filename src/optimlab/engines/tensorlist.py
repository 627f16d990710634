"""``TensorList``: a list of tensors that answers the Tensor API, so one update function serves many tensors.

An algorithm's update is written once, against ``torch.Tensor`` methods (``m.lerp_(g, 1 - beta1)``).  Called with
tensors it updates one parameter; called with ``TensorList``s it updates a whole bucket, each method running as a
single ``torch._foreach_*`` call where torch has one, and as a loop over the elements otherwise.  Values that
differ per tensor (a bias correction that depends on each parameter's own step) travel as a ``ScalarList``.

On CPU ``torch._foreach_*`` ops run the same per-tensor kernels, so results are bitwise those of the per-tensor
path.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import Tensor

__all__ = ["ScalarList", "TensorList", "as_real"]


class ScalarList(list):
    """Per-tensor Python scalars (or 0-dim tensors) of a ``TensorList`` operation, element ``i`` for tensor ``i``.

    Arithmetic maps over the elements, so scalar formulas written for one tensor also hold for many.
    """

    def _map(self, fn: Callable[[Any], Any]) -> ScalarList:
        return ScalarList(fn(x) for x in self)

    def _zip(self, other: Any, fn: Callable[[Any, Any], Any]) -> ScalarList:
        if isinstance(other, ScalarList):
            return ScalarList(fn(a, b) for a, b in zip(self, other, strict=True))
        return ScalarList(fn(a, other) for a in self)

    def __neg__(self) -> ScalarList:
        return self._map(operator.neg)

    def __add__(self, o: Any) -> ScalarList:  # type: ignore[override]
        return self._zip(o, operator.add)

    def __radd__(self, o: Any) -> ScalarList:
        return self._zip(o, lambda a, b: b + a)

    def __sub__(self, o: Any) -> ScalarList:
        return self._zip(o, operator.sub)

    def __rsub__(self, o: Any) -> ScalarList:
        return self._zip(o, lambda a, b: b - a)

    def __mul__(self, o: Any) -> ScalarList:  # type: ignore[override]
        return self._zip(o, operator.mul)

    def __rmul__(self, o: Any) -> ScalarList:  # type: ignore[override]
        return self._zip(o, lambda a, b: b * a)

    def __truediv__(self, o: Any) -> ScalarList:
        return self._zip(o, operator.truediv)

    def __rtruediv__(self, o: Any) -> ScalarList:
        return self._zip(o, lambda a, b: b / a)

    def __pow__(self, o: Any) -> ScalarList:
        return self._zip(o, operator.pow)

    def __rpow__(self, o: Any) -> ScalarList:
        return self._zip(o, lambda a, b: b**a)


def _is_number_list(x: Any) -> bool:
    return isinstance(x, ScalarList) and not any(isinstance(v, Tensor) for v in x)


def _pick(x: Any, i: int) -> Any:
    if isinstance(x, TensorList):
        return x.tensors[i]
    if isinstance(x, ScalarList):
        return x[i]
    if isinstance(x, tuple | list):
        return type(x)(_pick(v, i) for v in x)
    return x


def _in_place(method: str) -> bool:
    return method.endswith("_") and not method.endswith("__")


# method name -> (foreach op, whether the op exists in place)  for ops of the form op(self, other[, alpha|value])
_BINARY = {
    "add": torch._foreach_add,
    "add_": torch._foreach_add_,
    "sub": torch._foreach_sub,
    "sub_": torch._foreach_sub_,
    "mul": torch._foreach_mul,
    "mul_": torch._foreach_mul_,
    "div": torch._foreach_div,
    "div_": torch._foreach_div_,
    "maximum": torch._foreach_maximum,
    "maximum_": torch._foreach_maximum_,
    "minimum": torch._foreach_minimum,
    "clamp_min": torch._foreach_clamp_min,
    "clamp_min_": torch._foreach_clamp_min_,
    "clamp_max": torch._foreach_clamp_max,
    "clamp_max_": torch._foreach_clamp_max_,
}
_UNARY = {
    name: getattr(torch, f"_foreach_{name}")
    for name in (
        "sqrt",
        "sqrt_",
        "rsqrt",
        "rsqrt_",
        "neg",
        "neg_",
        "abs",
        "abs_",
        "sign",
        "sign_",
        "reciprocal",
        "reciprocal_",
        "exp",
        "exp_",
        "log",
        "log_",
        "zero_",
    )
}
_TERNARY = {
    "addcmul": torch._foreach_addcmul,
    "addcmul_": torch._foreach_addcmul_,
    "addcdiv": torch._foreach_addcdiv,
    "addcdiv_": torch._foreach_addcdiv_,
}


class TensorList:
    """A list of same-device, same-dtype tensors that behaves like one tensor (see the module docstring)."""

    __slots__ = ("tensors",)

    def __init__(self, tensors: Iterable[Tensor]) -> None:
        self.tensors: list[Tensor] = list(tensors)

    def __len__(self) -> int:
        return len(self.tensors)

    def __iter__(self) -> Iterator[Tensor]:
        return iter(self.tensors)

    def __getitem__(self, i: int) -> Tensor:
        return self.tensors[i]

    def __repr__(self) -> str:
        return f"TensorList({len(self.tensors)} tensors)"

    # ---------------------------------------------------------------- generic element-by-element fallback

    def _loop(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        out = [
            getattr(t, name)(*(_pick(a, i) for a in args), **{k: _pick(v, i) for k, v in kwargs.items()})
            for i, t in enumerate(self.tensors)
        ]
        if _in_place(name):
            return self
        if out and not isinstance(out[0], Tensor):
            return ScalarList(out)
        return TensorList(out)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("__"):
            raise AttributeError(name)
        if not callable(getattr(Tensor, name, None)):
            raise AttributeError(f"TensorList has no attribute {name!r}")
        return lambda *args, **kwargs: self._dispatch(name, args, kwargs)

    def _dispatch(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        fast = self._foreach(name, args, kwargs)
        if fast is not NotImplemented:
            return fast
        return self._loop(name, args, kwargs)

    def _foreach(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """One ``torch._foreach_*`` call when the arguments map onto one of its overloads, else NotImplemented."""
        if not self.tensors:
            return self if _in_place(name) else TensorList([])
        if name in _UNARY and not args and not kwargs:
            out = _UNARY[name](self.tensors)
        elif name in _BINARY and len(args) == 1 and set(kwargs) <= {"alpha"}:
            other = args[0]
            if isinstance(other, TensorList):
                other = other.tensors
            elif isinstance(other, ScalarList):
                if not _is_number_list(other) or kwargs:
                    return NotImplemented
                other = list(other)
            elif isinstance(other, Tensor):
                if kwargs or name.startswith(("maximum", "minimum", "clamp")):
                    return NotImplemented
            elif isinstance(other, ScalarList | list | tuple):
                return NotImplemented
            if kwargs and (not isinstance(args[0], TensorList) or isinstance(kwargs["alpha"], Tensor | ScalarList)):
                return NotImplemented
            out = _BINARY[name](self.tensors, other, **kwargs)
        elif name in _TERNARY and len(args) == 2 and set(kwargs) <= {"value"}:
            t1, t2 = args
            if not (isinstance(t1, TensorList) and isinstance(t2, TensorList)):
                return NotImplemented
            value = kwargs.get("value", 1)
            if isinstance(value, ScalarList):
                if not _is_number_list(value):
                    return NotImplemented
                value = list(value)
            elif isinstance(value, Tensor):
                return NotImplemented
            out = _TERNARY[name](self.tensors, t1.tensors, t2.tensors, value)
        elif name in ("lerp_", "lerp") and len(args) + len(kwargs) == 2:
            end = args[0]
            weight = args[1] if len(args) > 1 else kwargs.get("weight")
            if not isinstance(end, TensorList):
                return NotImplemented
            if isinstance(weight, ScalarList):
                if not _is_number_list(weight):
                    return NotImplemented
                weight = list(weight)
            elif isinstance(weight, Tensor):
                return NotImplemented
            op = torch._foreach_lerp_ if name == "lerp_" else torch._foreach_lerp
            out = op(self.tensors, end.tensors, weight.tensors if isinstance(weight, TensorList) else weight)
        elif name == "copy_" and len(args) == 1 and not kwargs and isinstance(args[0], TensorList):
            torch._foreach_copy_(self.tensors, args[0].tensors)
            return self
        elif name == "clone" and not args and not kwargs:
            return TensorList([t.clone() for t in self.tensors])
        else:
            return NotImplemented
        return self if _in_place(name) else TensorList(out)

    # ---------------------------------------------------------------- torch functions: torch.maximum(a, b, out=a)

    @classmethod
    def __torch_function__(cls, func: Callable[..., Any], types: Any, args: tuple = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        n = next(
            len(x)
            for x in (*args, *kwargs.values())
            if isinstance(x, TensorList) or (isinstance(x, tuple | list) and x and isinstance(x[0], TensorList))
        )
        out = [func(*(_pick(a, i) for a in args), **{k: _pick(v, i) for k, v in kwargs.items()}) for i in range(n)]
        if "out" in kwargs:
            return kwargs["out"]
        if out and isinstance(out[0], tuple):
            return tuple(TensorList(parts) for parts in zip(*out))
        if out and not isinstance(out[0], Tensor):
            return ScalarList(out)
        return TensorList(out)

    # ---------------------------------------------------------------- operators (Tensor semantics, per element)

    def __neg__(self) -> TensorList:
        return self._dispatch("neg", (), {})

    def __add__(self, o: Any) -> TensorList:
        return self._dispatch("add", (o,), {})

    def __radd__(self, o: Any) -> TensorList:
        return self._dispatch("add", (o,), {})

    def __sub__(self, o: Any) -> TensorList:
        return self._dispatch("sub", (o,), {})

    def __rsub__(self, o: Any) -> TensorList:
        return self._loop("__rsub__", (o,), {})

    def __mul__(self, o: Any) -> TensorList:
        return self._dispatch("mul", (o,), {})

    def __rmul__(self, o: Any) -> TensorList:
        return self._dispatch("mul", (o,), {})

    def __truediv__(self, o: Any) -> TensorList:
        return self._dispatch("div", (o,), {})

    def __rtruediv__(self, o: Any) -> TensorList:
        # Tensor semantics: ``x / t`` is ``t.reciprocal() * x``.
        return self._loop("__rtruediv__", (o,), {})

    def __pow__(self, o: Any) -> TensorList:
        return self._loop("__pow__", (o,), {})

    def __getstate__(self) -> Any:
        return self.tensors

    def __setstate__(self, state: Any) -> None:
        self.tensors = state


def as_real(x: Any) -> Any:
    """The real view of a complex tensor (``torch.view_as_real``), the tensor itself otherwise; maps over lists."""
    if isinstance(x, TensorList):
        return TensorList(as_real(t) for t in x.tensors)
    if isinstance(x, Tensor) and torch.is_complex(x):
        return torch.view_as_real(x)
    return x
