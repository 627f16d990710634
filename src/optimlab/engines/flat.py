"""The fused engine (``fused=True``): an algorithm's ``_update`` over flat contiguous buffers, compiled.

A step is memory-bound: the floor is the bytes it must move (AdamW fp32: 28 per parameter) over the memory
bandwidth.  Running an update op by op crosses memory once per op; per tensor, it pays Python and dispatch per
tensor.  This engine removes both:

* small parameters (fewer than ``SMALL`` elements: biases, norms, small layers) of one group, device and dtype
  are packed into one flat buffer: each parameter's ``.data`` becomes a view of it, and its state tensors views
  of flat state buffers of the same layout, so thousands of tensors share one set of scalar bookkeeping;
* large parameters stay where they are and are updated on their own storage;
* the algorithm's own ``_update`` is compiled into one elementwise kernel (``optimlab.engines.compiled``), and
  one call of the launch driver (``optimlab.engines.launch``) runs it over every small parameter and every chunk
  of the large ones, reading the gradients where they are.  Where no launcher exists (no compiler: the eager
  chunked update; a non-contiguous gradient), the small parameters' gradients are gathered into a flat buffer
  with one ``torch.cat`` and the update runs over it.

What the user sees stays torch's: ``optimizer.state[p]`` holds per-parameter tensors with the usual keys
(views), ``state_dict()`` has torch's layout and loads into torch.optim, ``step`` counters are per parameter.
Parameters without a gradient in a step are skipped, exactly as on the default path: the flat buffers are cut
into segments of parameters that have a gradient and equal scalar state (``step``...), one call per segment.

Falls back to the per-tensor engine, saying so once, for what it cannot pack: sparse gradients, parameters that
are not plain dense tensors (DTensor, other subclasses), non-contiguous or overlapping parameters, gradients of
another dtype or layout.
"""

from __future__ import annotations

import ctypes
import functools
import itertools
import operator
import struct
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from optimlab.engines.compiled import Bound, hyper_signature, runner, start_compiles, warn_once
from optimlab.engines.launch import (
    BROADCAST,
    BUMP,
    CHECK,
    LAUNCH,
    PLANNED,
    bump,
    fast_function,
    fast_spec,
    grad_pointers,
)
from optimlab.optimizer import ScalarSlot, _device_dtype_check_for_fused

__all__ = ["SMALL", "FlatEngine"]

#: parameters with fewer elements than this are packed into flat buffers.
SMALL = 1 << 16

_PLAIN_TYPES = (Tensor, torch.nn.Parameter)
_GRAD = operator.attrgetter("grad")
_IS_SPARSE = operator.attrgetter("is_sparse")
_DTYPE = operator.attrgetter("dtype")
_NOT_NONE = functools.partial(operator.is_not, None)


try:  # a dict's version tag changes with every change of its contents (CPython's ma_version_tag)
    from torch._C._dynamo.guards import dict_version as _dict_version
except ImportError:  # pragma: no cover
    _dict_version = None


#: packing at least this many bytes of parameters returns the heap's free memory to the OS afterwards.
_TRIM_BYTES = 1 << 20


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:  # glibc's; absent from other C libraries
        fn = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn


def _release_freed_memory() -> None:
    """Give the C heap's free pages back to the OS (glibc's ``malloc_trim``).

    Packing frees each small parameter's old storage: thousands of blocks below malloc's mmap threshold, which
    glibc keeps for reuse however long the process runs, so the packed parameters would hold the resident memory
    of two copies of themselves."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _real_flat(t: Tensor) -> Tensor:
    """A contiguous tensor as a 1-D real tensor (complex numbers as pairs of reals)."""
    return torch.view_as_real(t).view(-1) if t.is_complex() else t.view(-1)


class _Recorder(dict):
    """The state handed to ``_update``: remembers entries the update creates (SGD's first momentum buffer)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.created: list[str] = []

    def __setitem__(self, key: str, value: Any) -> None:
        if key not in self:
            self.created.append(key)
        super().__setitem__(key, value)


class _Stateless(dict):
    """Stands for ``optimizer.state`` when the algorithm keeps none: hands out throw-away empty dicts."""

    def __contains__(self, key: object) -> bool:
        return True

    def __getitem__(self, key: Any) -> dict[str, Any]:
        return {}

    def get(self, key: Any, default: Any = None) -> dict[str, Any]:
        return {}


class _Packed:
    """The small parameters of one (group, device, dtype), packed into flat buffers."""

    def __init__(self, params: list[Tensor], scalar_keys: tuple[str, ...]) -> None:
        self.params = params
        self.scalar_keys = scalar_keys
        self.numels = [p.numel() for p in params]
        self.offsets = [0]
        for n in self.numels:
            self.offsets.append(self.offsets[-1] + n)
        first = params[0]
        self.flat = torch.empty(self.offsets[-1], dtype=first.dtype, device=first.device)
        with torch.no_grad():
            for p, a, b in zip(params, self.offsets, self.offsets[1:]):
                self.flat[a:b].copy_(p.detach().reshape(-1))
                p.data = self.flat[a:b].view_as(p)
        if self.offsets[-1] * first.element_size() >= _TRIM_BYTES:
            _release_freed_memory()
        self.ptrs = torch.tensor([p.data_ptr() for p in params], dtype=torch.int64)
        self.versions: list[int] | None = None  # the state dicts' versions after our last step
        self.real_flat = _real_flat(self.flat)
        self._grad: Tensor | None = None  # the gradients, gathered where no launcher reads them in place
        self.grad_views: list[Tensor | None] = [None] * len(params)
        self.tables: dict[tuple[Any, ...], tuple[int, Tensor, Tensor]] = {}  # launch tables, see table()
        self.generation = 0  # bumped whenever a state buffer or view changes (tables keep raw pointers)
        self.all_1d = all(p.dim() == 1 for p in params)
        self.whole = False  # whether these are all of the group's parameters, in order
        self.last_grads: list[Tensor | None] = [None] * len(params)
        self.dtype = first.dtype
        self.factor = 2 if first.is_complex() else 1  # real elements per element
        self.tensor_state: dict[str, Tensor] = {}  # key -> flat buffer shaped like self.flat
        self.scalar_state: dict[str, Tensor] = {}  # key -> 1-D buffer, one entry per parameter
        self.packed_states: list[dict[str, Any] | None] = [None] * len(params)  # the dicts our views live in
        self.views: list[tuple[Any, ...]] = [()] * len(params)  # the values we put in them
        self._flat_views: list[Any] | None = None
        self.layout: list[tuple[str, ...] | None] = [None] * len(params)
        self._one_layout: tuple[int, bool] | None = None

    # ------------------------------------------------------------------ state packing

    def adopt(self, i: int, state: dict[str, Any]) -> None:
        """Move the state of parameter ``i`` into the flat buffers (its entries become views of them)."""
        p = self.params[i]
        a, b = self.offsets[i], self.offsets[i + 1]
        for key, value in list(state.items()):
            if not isinstance(value, Tensor):
                continue
            if key in self.scalar_keys:
                buf = self.scalar_state.get(key)
                if buf is None or buf.dtype != value.dtype or buf.device != value.device:
                    buf = self._new_scalar_buffer(key, value)
                buf[i].copy_(value.detach())
                state[key] = buf[i]
            elif value.shape == p.shape and value.dtype == p.dtype and value.device == p.device:
                buf = self.tensor_state.get(key)
                if buf is None:
                    buf = self.tensor_state[key] = torch.zeros_like(self.flat)
                buf[a:b].copy_(value.detach().reshape(-1))
                state[key] = buf[a:b].view_as(p)
        self._remember(i, state)

    @property
    def grad(self) -> Tensor:
        """The flat gradient buffer, made the first time gradients have to be gathered."""
        if self._grad is None:
            self._grad = torch.zeros_like(self.flat)
            bounds = zip(self.params, self.offsets, self.offsets[1:])
            self.grad_views = [self._grad[a:b].view_as(p) for p, a, b in bounds]
        return self._grad

    @property
    def real_grad(self) -> Tensor:
        return _real_flat(self.grad)

    def table(self, launcher: Any, a: int, b: int, operands: list[Any]) -> tuple[Tensor, Tensor]:
        """The launch table of parameters a..b-1 (one item each; ``operands``: the segment's flat operands),
        kept while the buffers and views stay as they were."""
        key = (launcher, a, b)
        kept = self.tables.get(key)
        if kept is not None and kept[0] == self.generation:
            return kept[1], kept[2]
        base = self.offsets[a]
        items = [
            (0, (self.offsets[i] - base) * self.factor, self.numels[i] * self.factor, i - a, 0) for i in range(a, b)
        ]
        table, owners = launcher.table([operands], items)
        if len(self.tables) >= 64:  # segments that keep changing (gradients present one step, not the next)
            self.tables.clear()
        self.tables[key] = (self.generation, table, owners)
        return table, owners

    def _remember(self, i: int, state: dict[str, Any]) -> None:
        self.generation += 1
        self.packed_states[i] = state
        self.views[i] = tuple(state.values())
        self.layout[i] = tuple(state)
        self._flat_views = None

    def one_layout(self) -> bool:
        """Whether every parameter's state has the same keys (the usual case), remembered until a state changes."""
        if self._one_layout is None or self._one_layout[0] != self.generation:
            self._one_layout = (self.generation, self.layout.count(self.layout[0]) == len(self.layout))
        return self._one_layout[1]

    def unchanged(self) -> bool:
        """Whether the state dicts still hold what we left in them: by their version tags (one C-level pass),
        else by the identity of every value."""
        if _dict_version is not None and self.versions is not None:
            return list(map(_dict_version, self.packed_states)) == self.versions
        return sum(map(len, self.packed_states)) == len(self.flat_views) and all(  # type: ignore[arg-type]
            map(operator.is_, itertools.chain.from_iterable(map(dict.values, self.packed_states)), self.flat_views)  # type: ignore[arg-type]
        )

    def remember_versions(self) -> None:
        if _dict_version is not None and self.complete:
            self.versions = list(map(_dict_version, self.packed_states))

    @property
    def complete(self) -> bool:
        """Whether every parameter's state is packed (then one identity pass checks them all)."""
        return None not in self.packed_states

    @property
    def flat_views(self) -> list[Any]:
        """Every state value we handed out, in parameter order (for one C-level identity check per step)."""
        if self._flat_views is None:
            self._flat_views = list(itertools.chain.from_iterable(self.views))
        return self._flat_views

    def owns_grads(self) -> bool:
        """Whether every parameter's ``.grad`` is a view of our flat gradient buffer (one lazy pass)."""
        return self._grad is not None and all(map(operator.is_, map(_GRAD, self.params), self.grad_views))

    def _new_scalar_buffer(self, key: str, like: Tensor) -> Tensor:
        old = self.scalar_state.get(key)
        buf = torch.zeros(len(self.params), dtype=like.dtype, device=like.device)
        if old is not None:  # re-home the views already handed out
            buf.copy_(old.to(buf.dtype))
            for j, st in enumerate(self.packed_states):
                if st is not None and key in st:
                    st[key] = buf[j]
                    self._remember(j, st)
        self.scalar_state[key] = buf
        return buf

    def is_packed(self, i: int, state: dict[str, Any]) -> bool:
        """Whether parameter ``i``'s state is still made of our views (load_state_dict replaces them)."""
        views = self.views[i]
        return (
            state is self.packed_states[i]
            and len(state) == len(views)
            and all(map(operator.is_, state.values(), views))
        )

    def segment_state(self, a: int, b: int, rep: int) -> _Recorder:
        """The state of parameters a..b-1 as one: flat slices, and parameter ``rep``'s scalars."""
        lo, hi = self.offsets[a] * self.factor, self.offsets[b] * self.factor
        seg = _Recorder()
        for key in self.layout[rep] or ():
            if key in self.scalar_state:
                seg[key] = self.scalar_state[key][rep]
            elif key in self.tensor_state:
                seg[key] = _real_flat(self.tensor_state[key])[lo:hi]
        seg.created.clear()
        return seg


class FlatEngine:
    """The fused engine of one optimizer: a plan per parameter group, rebuilt when the group changes."""

    def __init__(self) -> None:
        self.plans: dict[int, FlatPlan] = {}

    def prepare(self, rule: Any, group: dict[str, Any]) -> FlatPlan:
        """The plan of ``group``, (re)built if the group is new or its parameter list changed."""
        plan = self.plans.get(id(group))
        params = group["params"]
        if (
            plan is None
            or plan.group is not group
            or len(plan.group_params) != len(params)
            or not all(map(operator.is_, plan.group_params, params))
        ):
            for p in params:
                if not p.is_complex():
                    _device_dtype_check_for_fused(p)
            live = {id(g) for g in rule.param_groups}
            self.plans = {k: v for k, v in self.plans.items() if k in live}
            plan = self.plans[id(group)] = FlatPlan(rule._scalar_state, group)
        return plan

    def _with_fast(self, group: dict[str, Any]) -> FlatPlan | None:
        """The plan of ``group`` if it has a steady path."""
        plan = self.plans.get(id(group))
        return plan if plan is not None and plan.fast is not None and plan.group is group else None

    def steady_plan(self, rule: Any, group: dict[str, Any], do_bump: bool) -> FlatPlan | None:
        """The plan of ``group`` if its steady path (``_Fast``) holds for this step, having checked the
        gradients (and bumped the parameters' version counters if ``do_bump``); else None: prepare and check the
        slow way."""
        plan = self._with_fast(group)
        if plan is None:
            return None
        assert plan.fast is not None
        if plan.fast.check(rule, group, do_bump):
            plan.fast_ready = True
            plan.fast_bumped = do_bump
            return plan
        plan.fast = None
        return None

    def step_alone(self, rule: Any, group: dict[str, Any]) -> bool:
        """The step of a one-group optimizer on its group's steady path, in one builtin call, if that path holds
        (True); else nothing is changed (False)."""
        plan = self._with_fast(group)
        return plan is not None and plan.fast.alone(rule, group)  # type: ignore[union-attr]

    def zero_grads(self) -> set[int]:
        """Zero, with one call per flat buffer, the gradients that live in our buffers; their ids."""
        done: set[int] = set()
        for plan in self.plans.values():
            for pk in plan.packed:
                if pk.owns_grads():
                    pk.grad.zero_()
                    done.update(map(id, pk.params))
        return done


class FlatPlan:
    """How one parameter group is laid out for the fused engine: packed buckets, large parameters, fallbacks."""

    def __init__(self, scalar_keys: tuple[str, ...], group: dict[str, Any]) -> None:
        self.group = group
        self.scalar_keys = scalar_keys
        self.group_params = list(group["params"])
        self.packed: list[_Packed] = []
        self.large: list[Tensor] = []
        self.fallback: set[Tensor] = set()
        small: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}
        seen: set[Tensor] = set()
        for p in _without_overlaps(self.group_params, self.fallback):
            if p in seen:
                continue
            seen.add(p)
            reason = _unsupported(p)
            if reason is not None:
                warn_once(f"optimlab: fused=True cannot pack a parameter ({reason}); it is updated tensor by tensor.")
                self.fallback.add(p)
            elif p.numel() < SMALL:
                small.setdefault((p.device, p.dtype), []).append(p)
            else:
                self.large.append(p)
        self.packed = [_Packed(ps, scalar_keys) for ps in small.values()]
        self.seen_states: list[dict[str, Any]] = []
        # This step's gradients, read by check_grads: their addresses (0: none, -1: not readable in place) and the
        # parameters' (to notice a rebinding); the tensors themselves only where a slower path needs them.
        self.grad_ptrs = torch.zeros(0, dtype=torch.int64)
        self.param_ptrs = torch.zeros(0, dtype=torch.int64)
        self.missing = 0
        self._grads: list[Tensor | None] | None = None
        self.plain = True  # whether they are all dense and of their parameter's dtype
        dtypes = {p.dtype for p in self.group_params}
        self.dtypes = itertools.repeat(dtypes.pop()) if len(dtypes) == 1 else None
        self.operands: dict[Tensor, tuple[Tensor, tuple[Any, ...], _Recorder]] = {}  # see _large_operands
        self.tables: dict[tuple[Any, ...], tuple[list[Tensor], Tensor, Tensor]] = {}  # see _large_table
        # where each bucket's parameters sit in group["params"]
        position = {id(p): i for i, p in reversed(list(enumerate(self.group_params)))}
        self.slices = [[position[id(p)] for p in pk.params] for pk in self.packed]
        self.slice_index = [torch.tensor(where, dtype=torch.int64) for where in self.slices]
        self.large_index = torch.tensor([position[id(p)] for p in self.large], dtype=torch.int64)
        for pk, where in zip(self.packed, self.slices):
            pk.whole = where == list(range(len(self.group_params)))
        self.fast: _Fast | None = None  # the steady path, once a step showed it applies
        self.fast_ready = False  # its check passed for this step
        self.fast_bumped = False
        # set by a step of the general path that could have been a steady one: each segment's range and makings
        self._fast_candidate: list[Any] | None = None
        self._large_candidate: tuple[Bound, Any] | None = None  # likewise, from the large parameters' one batch
        self.large_scalar: dict[str, Tensor] = {}  # the large parameters' scalar state, once a steady path has it

    @property
    def grads(self) -> list[Tensor | None]:
        """This step's gradients (fetched on first use)."""
        if self._grads is None:
            self._grads = list(map(_GRAD, self.group_params))
        return self._grads

    def check_grads(self, rule: Any, group: dict[str, Any]) -> None:
        """Read the gradients' addresses (once per step, in bulk), raise the algorithm's error for one it cannot
        take (sparse) before anything changes, and note whether all are dense tensors of the parameters' dtype."""
        self._grads = None
        self.grad_ptrs, self.param_ptrs, self.missing, unusable = grad_pointers(self.group_params)
        self.plain = True
        if not unusable:
            return  # every gradient is a dense tensor of its parameter's dtype, size and layout
        grads = self.grads
        present = list(filter(_NOT_NONE, grads))
        self.plain = not any(map(_IS_SPARSE, present))
        if not self.plain:
            for p in self.group_params:
                if p.grad is not None:
                    rule._check_grad(group, p)
        elif self.dtypes is not None:
            self.plain = not any(map(operator.ne, map(_DTYPE, filter(_NOT_NONE, grads)), self.dtypes))

    def run(self, rule: Any, h: Any) -> None:
        from optimlab.engines import run_per_tensor

        if self.fast_ready:
            self.fast_ready = False
            assert self.fast is not None
            if self.fast.run(rule, h, self.fast_bumped):
                return
            self.fast = None  # the kernel changed (a static hyperparameter): done the general way; rebuild
            return
        self._fast_candidate = self._large_candidate = None
        params = [p for p in self.group_params if p.grad is not None] if self.fallback or self.large else []
        # Stateless configurations (SGD without momentum) keep no state entries at all, as on the default path.
        stateful = rule._has_state(self.group)
        state = rule.state if stateful else _Stateless()
        # Steady state: the state mapping holds exactly the dicts it held after our last step (load_state_dict,
        # a new parameter or a replaced dict all change that). One C-level pass, no tensor hashing.
        steady = (
            stateful
            and 0 < len(state) == len(self.seen_states)
            and all(map(operator.is_, state.values(), self.seen_states))
        )
        if stateful and not steady:
            for p in self.group_params:  # state entries appear in parameter order, as on the other paths
                if p.grad is not None:
                    state[p]
        leftovers = [p for p in params if p in self.fallback] if self.fallback else []
        for pk, where, index in zip(self.packed, self.slices, self.slice_index):
            leftovers.extend(self._run_packed(rule, h, pk, state, steady, where, index))
        if self.large:
            leftovers.extend(self._run_large(rule, h, state))
        if leftovers:
            states = [state[p] for p in leftovers]
            for p, st in zip(leftovers, states):
                if len(st) == 0:
                    rule._init_state(self.group, p, st)
            run_per_tensor(rule, h, leftovers, states)
        if stateful and not (steady and len(state) == len(self.seen_states)):  # else it holds these very dicts
            self.seen_states = list(state.values())
        self._grads = None
        candidate, self._fast_candidate = self._fast_candidate, None
        large, self._large_candidate = self._large_candidate, None
        self.fast = None
        if (
            stateful
            and not leftovers
            and not self.fallback
            and len(self.packed) <= 1
            and (candidate is not None) == bool(self.packed)
            and (large is not None) == bool(self.large)
            and len(self.packed[0].params if self.packed else ()) + len(self.large) == len(self.group_params)
        ):
            self.fast = _Fast.make(self, rule, h, candidate or [], large)
        start_compiles()

    # ------------------------------------------------------------------ large parameters: in place

    def _run_large(self, rule: Any, h: Any, all_state: Any) -> list[Tensor]:
        """Update the large parameters on their own storage, one kernel call each; those with equal scalar state
        (the usual case: the same ``step``) share one ``_scalars`` and one kernel set-up.  Returns those it
        cannot update in place."""
        keys = self.scalar_keys
        leftovers: list[Tensor] = []
        batches: dict[tuple[Any, ...], list[tuple[Tensor, Tensor, dict[str, Any]]]] = {}
        for p in self.large:
            g = p.grad
            if g is None:
                continue
            if g.is_sparse or g.dtype != p.dtype or g.shape != p.shape:
                warn_once(
                    "optimlab: fused=True met a gradient it cannot use in place (sparse, other dtype or shape); "
                    "those parameters are updated tensor by tensor."
                )
                leftovers.append(p)
                continue
            st = all_state[p]
            if len(st) == 0:
                rule._init_state(self.group, p, st)
            scalars = tuple(st[k].item() if isinstance(st.get(k), Tensor) else st.get(k) for k in keys)
            batches.setdefault((tuple(st), scalars), []).append((p, g, st))
        tables, self.tables = self.tables, {}
        for members in batches.values():
            operands = [self._large_operands(p, st) for p, _, st in members]
            hp = rule._scalars(h, operands[0][1])  # advances the first member's scalar state
            run = self._apply_batch(rule, hp, members, operands, tables)
            if len(batches) == 1 and not leftovers and len(members) == len(self.large) and run is not None:
                self._large_candidate = (run, hp)  # the makings of a steady path
        return leftovers

    def _apply_batch(
        self,
        rule: Any,
        hp: Any,
        members: list[tuple[Tensor, Tensor, dict[str, Any]]],
        operands: list[tuple[Tensor, _Recorder]],
        tables: dict[tuple[Any, ...], Any],
    ) -> Bound | None:
        """Update a batch of large parameters of equal scalar state, once its scalars ``hp`` are worked out (from
        the first member's, which ``_finish`` then advances and the others copy).  Returns the bound kernel if it
        ran through a launcher with nothing created."""
        keys = self.scalar_keys
        rep = members[0][2]
        run = runner(rule._update, hp, (operands[0][0], _real_flat(members[0][1]), dict(operands[0][1])))
        launcher = getattr(run, "launcher", None)
        used = None
        if launcher is not None:  # the whole batch, cut in cache-sized items, in one call
            table, owners = self._large_table(launcher, operands, tables)
            grads = [g if g.is_contiguous() else g.contiguous() for _, g, _ in members]
            run.many(table, owners, operands[0][1], grads)
            bump([p for p, _, _ in members])
            used = None if operands[0][1].created else run
        else:
            for (p, g, st), (flat_p, seg) in zip(members, operands):
                run(flat_p, _real_flat(g.contiguous()), seg)
                for key in seg.created:  # entries the update made (SGD's first momentum buffer)
                    st[key] = _unflat(seg[key], p)
                    seg.created = []
        if rule._finish is not None:
            rule._finish(hp, operands[0][1])
        if len(members) > 1:  # the others advance alike
            for k in keys:
                if isinstance(rep.get(k), Tensor):
                    others = [st[k] for _, _, st in members[1:]]
                    torch._foreach_copy_(others, [rep[k]] * len(others))
        return used

    def large_part(self, rule: Any) -> _Part | None:
        """The large parameters as one part of a steady path (None if their state is not laid out alike).  Their
        scalar state moves into flat buffers, an entry per parameter in order, each dict's entry a view of it (as
        the packed parameters' is), so that ``_scalars`` on the first entry and one copy advance them all."""
        states = [rule.state[p] for p in self.large]
        rep = states[0]
        keys = [k for k in self.scalar_keys if isinstance(rep.get(k), Tensor)]
        for st in states:
            if list(st) != list(rep):
                return None
            for k in keys:
                v = st[k]
                if not isinstance(v, Tensor) or v.dim() != 0 or v.dtype != rep[k].dtype or v.device != rep[k].device:
                    return None
        for k in keys:
            buf = self.large_scalar.get(k)
            if (
                buf is None
                or buf.numel() != len(states)
                or buf.dtype != rep[k].dtype
                or buf.device != rep[k].device
                or any(st[k].data_ptr() != buf.data_ptr() + j * buf.element_size() for j, st in enumerate(states))
            ):
                buf = self.large_scalar[k] = torch.stack([st[k].detach() for st in states])
                for j, st in enumerate(states):
                    st[k] = buf[j]
        operands = [self._large_operands(p, st) for p, st in zip(self.large, states)]
        part = _Part(0, len(states), operands[0][1], keys, [self.large_scalar[k] for k in keys], operands[0][0])
        part.members = states
        part.table = functools.partial(self._steady_large_table, operands)
        return part

    def _steady_large_table(
        self, operands: list[tuple[Tensor, _Recorder]], launcher: Any, seg: _Recorder
    ) -> tuple[Tensor, Tensor]:
        table, owners = self._large_table(launcher, operands, self.tables)
        return table, self.large_index[owners].contiguous()

    def _large_table(
        self, launcher: Any, operands: list[tuple[Tensor, _Recorder]], previous: dict[tuple[Any, ...], Any]
    ) -> tuple[Tensor, Tensor]:
        """The launch table of a batch of large parameters, kept while their operands are the kept ones (it
        holds raw pointers: the operands it was built from are held with it)."""
        flats = [flat_p for flat_p, _ in operands]
        key = (launcher, *map(id, flats))
        kept = previous.get(key)
        if kept is None or not all(map(operator.is_, kept[0], flats)):
            sets = [[flat_p, None, *seg.values()] for flat_p, seg in operands]
            kept = (flats, *launcher.table(sets, launcher.chunks(sets)))
        self.tables[key] = kept
        return kept[1], kept[2]

    def _large_operands(self, p: Tensor, state: dict[str, Any]) -> tuple[Tensor, _Recorder]:
        """``p`` and its state as the kernel takes them (1-D, real), kept from step to step while the state dict
        holds the same tensors and ``p`` the same storage."""
        kept = self.operands.get(p)
        if (
            kept is not None
            and kept[0].data_ptr() == p.data_ptr()
            and len(kept[1]) == len(state)
            and all(map(operator.is_, state.values(), kept[1]))
        ):
            return kept[0], kept[2]
        seg = self._flat_view(p, state)
        # detach(), not .data: the kernel's writes then count as in-place changes of p for autograd
        flat_p = _real_flat(p.detach())
        self.operands[p] = (flat_p, tuple(state.values()), seg)
        return flat_p, seg

    def _flat_view(self, p: Tensor, state: dict[str, Any]) -> _Recorder:
        seg = _Recorder()
        for key, value in state.items():
            if isinstance(value, Tensor) and key not in self.scalar_keys:
                if not value.is_contiguous():
                    value = state[key] = value.contiguous()
                value = _real_flat(value)
            seg[key] = value
        seg.created.clear()
        return seg

    # ------------------------------------------------------------------ small parameters: packed

    def _run_packed(
        self, rule: Any, h: Any, pk: _Packed, all_state: Any, steady: bool, where: list[int], index: Tensor
    ) -> list[Tensor]:
        # Every check below is one C-level pass (or one tensor op) over the parameters: at a thousand small
        # tensors, a Python loop per parameter would cost more than the update itself.
        params = pk.params
        grad_ptrs = self.grad_ptrs if pk.whole else self.grad_ptrs[index]
        param_ptrs = self.param_ptrs if pk.whole else self.param_ptrs[index]
        if not torch.equal(param_ptrs, pk.ptrs):
            # Something rebound a parameter (p.data = ..., module.to(...)): pack again from the live tensors.
            self._repack(pk, all_state)
            steady = False

        def grads_of() -> list[Tensor | None]:
            return self.grads if pk.whole else [self.grads[i] for i in where]

        complete = self.missing == 0 or not bool((grad_ptrs == 0).any())
        owned = pk.owns_grads()  # the gradients live in our flat buffer (adopted by an earlier gathering step)
        if not owned and not self.plain:
            grads = grads_of()
            present = grads if complete else [g for g in grads if g is not None]
            if any(map(_IS_SPARSE, present)) or any(map(operator.ne, map(_DTYPE, present), itertools.repeat(pk.dtype))):
                warn_once(
                    "optimlab: fused=True met a sparse gradient or one of another dtype; those parameters are "
                    "updated tensor by tensor."
                )
                return [p for p, g in zip(params, grads) if g is not None]

        stateful = not isinstance(all_state, _Stateless)
        mask = None if complete else (grad_ptrs != 0).tolist()
        fresh = not (steady and complete and pk.complete and pk.unchanged())
        if stateful and fresh:
            for i, p in enumerate(params):
                if mask is None or mask[i]:
                    st = all_state[p]
                    if len(st) == 0:
                        rule._init_state(self.group, p, st)
                    if not pk.is_packed(i, st):
                        pk.adopt(i, st)

        generation = pk.generation  # changes if a segment creates a state entry (our views, in the dicts)
        runs = [(0, len(params))] if complete else _runs(mask)  # type: ignore[arg-type]
        for a, b in runs:
            part = grad_ptrs[a:b]
            # A launcher reads the gradients where they are: no gather, unless one is not laid out like its
            # parameter.
            in_place = owned or not bool((part < 0).any())
            gathered = [owned]

            def gather(a: int = a, b: int = b, gathered: list[bool] = gathered) -> None:
                if not gathered[0]:
                    self._gather(pk, grads_of(), a, b)
                    gathered[0] = True

            used = []
            for sa, sb in self._segments(pk, a, b):
                made = self._run_segment(rule, h, pk, sa, sb, grad_ptrs[sa:sb] if in_place else None, gather)
                used.append(None if made is None else (sa, sb, *made))
            if runs == [(0, len(params))] and None not in used:
                self._fast_candidate = used
            # The kernels wrote the flat buffer, whose version counter is not the parameters': tell autograd.
            bump(params[a:b])
        if stateful and (fresh or pk.versions is None or pk.generation != generation):
            pk.remember_versions()
        return []

    def _gather(self, pk: _Packed, grads: list[Tensor | None], a: int, b: int) -> None:
        """Copy the gradients of parameters a..b-1 into the flat gradient buffer.

        When the same gradient tensors come back step after step (``zero_grad(set_to_none=False)``, gradient
        accumulation), the buffer's views become the parameters' ``.grad``: backward then accumulates straight
        into it and later steps copy nothing.  Fresh tensors every step (the default ``set_to_none=True``) are
        only copied."""
        part = grads[a:b]
        flat = pk.grad  # made on first use, with its views
        if pk.all_1d:
            torch.cat(part, out=flat[pk.offsets[a] : pk.offsets[b]])  # type: ignore[arg-type]
        else:
            torch._foreach_copy_(pk.grad_views[a:b], part)  # type: ignore[arg-type]
        previous, pk.last_grads[a:b] = pk.last_grads[a:b], part
        if all(map(operator.is_, part, previous)):
            for p, g, view in zip(pk.params[a:b], part, pk.grad_views[a:b]):
                # Not a view of someone else's buffer (DDP's gradient buckets): ours to replace.
                if g._base is None and not g.requires_grad:  # type: ignore[union-attr]
                    p.grad = view

    def _segments(self, pk: _Packed, a: int, b: int) -> list[tuple[int, int]]:
        """Cut a..b-1 where the state layout or a scalar state entry changes."""
        cuts = {a, b}
        if not pk.one_layout():
            layouts = pk.layout[a:b]
            cuts.update(i for i in range(a + 1, b) if layouts[i - a] != layouts[i - a - 1])
        for buf in pk.scalar_state.values():
            part = buf[a:b]
            if b - a > 1 and bool((part != part[0]).any()):
                cuts.update(int(j) + a + 1 for j in (part[1:] != part[:-1]).nonzero().flatten().tolist())
        edges = sorted(cuts)
        return list(itertools.pairwise(edges))

    def _run_segment(
        self,
        rule: Any,
        h: Any,
        pk: _Packed,
        a: int,
        b: int,
        grad_ptrs: Tensor | None,
        gather: Callable[[], None],
    ) -> tuple[Bound, _Recorder, Any] | None:
        """Update parameters a..b-1 (equal scalar state): through a launcher, reading the gradients in place at
        ``grad_ptrs``, where there is one and they are given; else over the gathered flat gradient.  Returns the
        bound kernel, the segment's state and scalars if it went through the launcher with nothing created (the makings
        of a steady path), else None."""
        seg = pk.segment_state(a, b, rep=a)
        hp = rule._scalars(h, seg)
        return self._apply_segment(rule, pk, a, b, seg, hp, grad_ptrs, gather)

    def _apply_segment(
        self,
        rule: Any,
        pk: _Packed,
        a: int,
        b: int,
        seg: _Recorder,
        hp: Any,
        grad_ptrs: Tensor | None,
        gather: Callable[[], None],
    ) -> tuple[Bound, _Recorder, Any] | None:
        """``_run_segment`` once the segment's scalars ``hp`` are worked out (the steady path comes here too, when
        a hyperparameter changed its kernel)."""
        lo, hi = pk.offsets[a] * pk.factor, pk.offsets[b] * pk.factor
        param = pk.real_flat[lo:hi]
        run = runner(rule._update, hp, (param, param, dict(seg)))
        launcher = getattr(run, "launcher", None)
        used = None
        if launcher is not None and grad_ptrs is not None:
            table, owners = pk.table(launcher, a, b, [param, None, *seg.values()])
            run.many(table, owners, seg, grad_ptrs)
            used = None if seg.created else (run, seg, hp)  # a launcher means a Bound kernel
        else:
            gather()
            run(param, pk.real_grad[lo:hi], seg)
        for key in seg.created:  # e.g. SGD's momentum buffer, made on its first step: give it a flat home
            buf = pk.tensor_state.get(key)
            if buf is None:
                buf = pk.tensor_state[key] = torch.zeros_like(pk.flat)
            _real_flat(buf)[lo:hi].copy_(seg[key])
            for i in range(a, b):
                st = pk.packed_states[i]
                assert st is not None
                st[key] = buf[pk.offsets[i] : pk.offsets[i + 1]].view_as(pk.params[i])
                pk._remember(i, st)
        if rule._finish is not None:
            rule._finish(hp, seg)
        # The segment shared parameter a's scalars: every member advanced alike.
        for key, buf in pk.scalar_state.items():
            if b - a > 1 and key in (pk.layout[a] or ()):
                buf[a + 1 : b].copy_(buf[a].expand(b - a - 1))
        return used

    def _repack(self, pk: _Packed, all_state: Any) -> None:
        """Pack ``pk``'s parameters again from the live tensors, in place: ``pk`` stays the bucket's object."""
        fresh = _Packed(pk.params, pk.scalar_keys)
        fresh.whole = pk.whole
        pk.__dict__.update(fresh.__dict__)
        for i, p in enumerate(pk.params):
            st = all_state.get(p)
            if st:
                pk.adopt(i, st)


_CELLS = {torch.float32: ctypes.c_float, torch.float64: ctypes.c_double}


def _same_number(a: Any, b: Any) -> bool:
    """Equal values of the same type (numbers bitwise, NaN equal to NaN), and no tensors."""
    if type(a) is not type(b) or isinstance(a, Tensor):
        return False
    return a == b or (isinstance(a, float) and a != a and b != b)


class _Fast:
    """The steady step of a group whose parameters are all packed in one bucket (a model of many small tensors)
    and/or large parameters of one batch (equal scalar state): what a step of the general path works out again
    every time, kept.

    The general path's per-step checks and set-up cost ~1 ms of Python on 1000 small tensors, about as much as the
    update itself, and ~1.5-2 ms on ResNet-50's 161 (7-10% of its step): right after a step (caches streamed away)
    each Python call and each torch op is slow.  Here one call of a C++ builtin (``launch.fast_function``) checks
    what the general path checks — the same parameter objects, unmoved, each with a gradient the kernel can read
    in place, each state dict unchanged (its version tag) — bumps the parameters' version counters, runs the
    kernels over kept tables and copies the advanced scalar state to every parameter; the optimizer's state
    mapping, the bucket and the scalar buffers are checked in O(1) beforehand (a dict version tag, a generation,
    tensor version counters).  What remains in Python is the algorithm's ``_hyper`` and ``_scalars`` (on
    ``ScalarSlot``s over flat scalar buffers: raw memory, where a torch op on a 0-dim tensor costs ~100 µs after
    a step) and writing the kernels' numbers.  The large parameters' scalar state moves into a flat buffer of its
    own (``FlatPlan.large_scalar``) for that, as the packed parameters' already is.

    Anything else (a new parameter, a replaced state entry, a gradient missing or not readable in place, a
    rebinding, ``load_state_dict``) fails the check, and that step takes the general path, which builds the
    steady path again when it applies.  Packed parameters whose scalar state differs (one skipped a step) are
    parts of their own (up to ``MAX_PARTS``): each its own ``_scalars`` and driver call, within the one builtin
    call; the large parameters are one more part."""

    #: at most this many parts (runs of parameters with equal scalar state) on the steady path
    MAX_PARTS = 8

    def __init__(self, plan: FlatPlan, rule: Any, h: Any, parts: list[_Part]) -> None:
        self.plan = plan
        self.pk = plan.packed[0] if plan.packed else None
        self.fn = fast_function()
        self.state_map = rule.state
        self.generation = self.pk.generation if self.pk is not None else 0
        # Everything per parameter is in the group's order: the builtin walks group["params"] against it.
        self.expected = list(plan.group_params)
        self.dicts = [rule.state[p] for p in self.expected]
        n = len(self.expected)
        self.versions = torch.tensor(list(map(_dict_version, self.dicts)), dtype=torch.int64)
        self.param_ptrs = torch.tensor([p.data_ptr() for p in self.expected], dtype=torch.int64)
        self.grad_ptrs = torch.zeros(n, dtype=torch.int64)
        self.scratch = torch.zeros(2 * n, dtype=torch.int64)
        self.parts = parts
        self.broadcasts = [(buf, part.a, part.b) for part in parts for buf in part.buffers]
        self.base = fast_spec(self.versions, self.param_ptrs, self.grad_ptrs, self.scratch, broadcasts=self.broadcasts)
        self.base_address = self.base.data_ptr()
        self.specs: dict[tuple[Any, ...], tuple[Tensor, int]] = {}  # by the parts' signatures
        for part in parts:
            # a part without scalar state (SGD) has nothing to put on slots: its own entries serve
            part.slot_seg = self._slots(rule, h, part.seg, part.keys) if part.keys else part.seg
            part.slots = [part.slot_seg[k] for k in part.keys] if part.slot_seg is not None else []
        self.all_slots = all(part.slot_seg is not None for part in parts)
        self.remember(rule)
        self.ahead: Tensor | None = None  # steps worked out ahead (plan_ahead), while the group stays the same
        self.ahead_address = 0
        self.group_version = -1  # the group's version tag and values (but its parameters) at the last steady step
        self.group_values: dict[str, Any] = {}

    @staticmethod
    def _slots(rule: Any, h: Any, seg: _Recorder, keys: list[str]) -> _Recorder | None:
        """``seg`` with ``ScalarSlot``s over the rep's scalar entries ``keys``, if running ``_scalars`` and
        ``_finish`` on slots gives bitwise the tensors' results for this algorithm and configuration (checked over
        a few steps on copies); else None (tensors it is)."""
        if any(seg[k].dtype not in _CELLS for k in keys):
            return None

        def slot(t: Tensor) -> ScalarSlot:
            cell_type = _CELLS[t.dtype]
            return ScalarSlot(cell_type.from_address(t.data_ptr()), lambda x, c=cell_type: c(x).value)

        scratch = {k: seg[k].detach().clone().reshape(1) for k in keys}
        as_tensors = _Recorder({k: (seg[k].detach().clone() if k in keys else v) for k, v in seg.items()})
        as_slots = _Recorder({k: (slot(scratch[k]) if k in keys else v) for k, v in seg.items()})
        try:
            for _ in range(3):
                hp_t, hp_s = rule._scalars(h, as_tensors), rule._scalars(h, as_slots)
                if rule._finish is not None:
                    rule._finish(hp_t, as_tensors)
                    rule._finish(hp_s, as_slots)
                if list(hp_t) != list(hp_s) or not all(map(_same_number, hp_t.values(), hp_s.values())):
                    return None
                if not all(torch.equal(as_tensors[k].reshape(1), scratch[k]) for k in keys):
                    return None
        except Exception:
            return None
        return _Recorder({k: (slot(v) if k in keys else v) for k, v in seg.items()})  # the rep's entries

    @classmethod
    def make(
        cls,
        plan: FlatPlan,
        rule: Any,
        h: Any,
        used: list[tuple[int, int, Bound, _Recorder, Any]],
        large: tuple[Bound, Any] | None,
    ) -> _Fast | None:
        """The steady path of ``plan`` from the step just run (``used``: each packed segment's range, kernel,
        state and scalars; ``large``: the large parameters' kernel and scalars), or None where it does not apply."""
        if fast_function() is None or _dict_version is None:
            return None
        pk = plan.packed[0] if plan.packed else None
        if pk is not None and (not pk.complete or not pk.one_layout()):
            return None
        if len(used) + (large is not None) > cls.MAX_PARTS:
            return None
        parts = []
        if pk is not None:
            keys = [k for k in pk.scalar_state if k in (pk.layout[0] or ())]
            position = plan.slice_index[0]
            for a, b, _, seg, _ in used:
                lo, hi = pk.offsets[a] * pk.factor, pk.offsets[b] * pk.factor
                part = _Part(a, b, seg, keys, [pk.scalar_state[k] for k in keys], pk.real_flat[lo:hi])
                part.table = functools.partial(_packed_table, pk, position, a, b, part.example)
                parts.append(part)
        if large is not None:
            part = plan.large_part(rule)
            if part is None:
                return None
            parts.append(part)
        fast = cls(plan, rule, h, parts)
        runs = [run for _, _, run, _, _ in used] + ([large[0]] if large is not None else [])
        hps = [hp for _, _, _, _, hp in used] + ([large[1]] if large is not None else [])
        for part, run, hp in zip(fast.parts, runs, hps):
            entry = part.entries[hyper_signature(hp)] = fast.add(part, run)
            if entry is None:
                return None
        return fast

    def remember(self, rule: Any) -> None:
        """Note what the step left: the state mapping's version, the scalar buffers' version counters."""
        self.state_version = _dict_version(rule.state)
        self.scalar_versions = [(buf, buf._version) for part in self.parts for buf in part.buffers]

    def add(self, part: _Part, run: Bound) -> tuple[list[int], Any, list[str], Any] | None:
        """The driver call of ``run``'s kernel over ``part``, its numbers in a buffer of ours: the launch fields,
        the numbers' memory, their keys, and what the fields point to."""
        kernel = run.kernel
        launcher = run.launcher
        if launcher is None or kernel.tensors:
            return None
        seg = part.seg
        numbers = torch.zeros(max(len(kernel.numbers), 1), dtype=torch.float64)
        table, owners = part.table(launcher, seg)  # owners: the rows' parameters, as positions in the group
        shared = launcher.shared([None, None, *seg.values(), numbers])
        values = (ctypes.c_double * numbers.numel()).from_address(numbers.data_ptr())
        return launcher.launch_fields(table, owners, shared), values, kernel.numbers, (numbers, table, owners, shared)

    def _spec(self, sigs: tuple[Any, ...], entries: list[Any]) -> int:
        """The address of the spec running ``entries`` (one per part), kept by their signatures."""
        kept = self.specs.get(sigs)
        if kept is None:
            launches = [entry[0] for entry in entries]
            spec = fast_spec(self.versions, self.param_ptrs, self.grad_ptrs, self.scratch, launches, self.broadcasts)
            kept = self.specs[sigs] = (spec, spec.data_ptr())
        return kept[1]

    def unchanged(self, rule: Any) -> bool:
        """The O(1) part of the check: the state mapping, the bucket, the scalar buffers."""
        return (
            rule.state is self.state_map
            and _dict_version(self.state_map) == self.state_version
            and (self.pk is None or self.pk.generation == self.generation)
            and all(buf._version == v for buf, v in self.scalar_versions)
        )

    def check(self, rule: Any, group: dict[str, Any], do_bump: bool) -> bool:
        """Check this step's gradients (and bump the versions if ``do_bump``) ahead of ``run``."""
        if not self.unchanged(rule):
            return False
        what = CHECK | BUMP if do_bump else CHECK
        threads = torch.get_num_threads()
        return self.fn(group["params"], self.expected, self.dicts, self.base_address, what, threads) == 0

    def _scalars(self, rule: Any, h: Any, slots: bool) -> tuple[list[Any], list[Any], list[Any]]:
        """Every part's scalars, signature and kept entry (None where a part has no entry for its signature)."""
        hps, sigs, entries = [], [], []
        for part in self.parts:
            hp = rule._scalars(h, part.slot_seg if slots else part.seg)
            sig = hyper_signature(hp)
            hps.append(hp)
            sigs.append(sig)
            entries.append(part.entries.get(sig))
        return hps, sigs, entries

    def alone(self, rule: Any, group: dict[str, Any]) -> bool:
        """The whole step of a one-group optimizer in one builtin call (check, bump, kernels, scalar copies),
        after ``_scalars`` on the slots, or with the scalars worked out ahead (``plan_ahead``); False, with
        nothing changed, where it does not hold (the general path then takes the step)."""
        if self.ahead is not None:
            if rule.state is self.state_map and (self.pk is None or self.pk.generation == self.generation):
                code = self._planned(group, group["params"], PLANNED | CHECK | BUMP)
                if code == 0:
                    return True
                if code > 0:  # the check failed: the general path takes this step and the next steady path
                    self.ahead = None
                    self.plan.fast = None
                    return False
            self.ahead = None  # used up, or the group, the state or a scalar buffer changed: the usual way
        if not self.all_slots or not self.unchanged(rule):
            return False
        saved = [s.item() for part in self.parts for s in part.slots]
        h = rule._hyper(group)
        hps, sigs, entries = self._scalars(rule, h, True)
        finish = rule._finish
        code = -1
        if None not in entries:
            for hp, (_, values, keys, _) in zip(hps, entries):
                values[:] = [float(hp[k]) for k in keys] or [0.0]
            address = self._spec(tuple(sigs), entries)
            what = CHECK | BUMP | LAUNCH if finish is not None else CHECK | BUMP | LAUNCH | BROADCAST
            code = self.fn(group["params"], self.expected, self.dicts, address, what, torch.get_num_threads())
        if code != 0:
            for s, value in zip((s for part in self.parts for s in part.slots), saved):
                s.copy_(value)
            if code > 0:  # the check failed: the general path takes this step and the next steady path
                self.plan.fast = None
            return False
        if finish is not None:
            for part, hp in zip(self.parts, hps):
                finish(hp, part.slot_seg)
            self.fn(self.expected, self.expected, self.dicts, self.base_address, BROADCAST, 1)
        if self._group_settled(group):  # the same hyperparameters two steps running: plan the next ones
            self.plan_ahead(rule, group, h)
        return True

    def _group_settled(self, group: dict[str, Any]) -> bool:
        """Whether the group holds what it held at the last steady step: the same version tag, or the same
        values (a scheduler such as LambdaLR sets an equal ``lr`` every step, a new float object each time)."""
        version = _dict_version(group)
        if version == self.group_version:
            return True
        values = _group_values(group)
        settled = _same_values(values, self.group_values)
        self.group_version, self.group_values = version, values
        return settled

    #: steps whose scalars ``plan_ahead`` works out at a time
    AHEAD = 64

    def plan_ahead(self, rule: Any, group: dict[str, Any], h: Any) -> None:
        """Work out the scalars of the next ``AHEAD`` steps, for a group whose hyperparameters ``h`` stay as they
        are (a constant learning rate, or one a scheduler changes once an epoch).

        Right after a backward pass the caches are cold, and the steady step's Python — ``_hyper``,
        ``_scalars``, writing the kernels' numbers — is ~90 µs of a ~0.6 ms step on 1000 x 1024 parameters,
        ~15 µs warm.  Here it runs ``AHEAD`` times in a row (warm after the first) on copies of the scalar state;
        each planned step then is one builtin call (``PLANNED``) that writes the numbers and the scalar state as
        these runs left them.  Same code, same inputs: the same numbers.  The builtin refuses a planned step if
        the group, the state mapping or a scalar buffer changed since (their version tags and counters), and the
        usual steady step takes it; a group holding anything mutable beyond its parameter list is not planned.
        """
        self.ahead = None
        if not self.all_slots or not all(map(_immutable, self.group_values.values())):  # the group's, as settled
            return
        parts, finish = self.parts, rule._finish
        segs, cells = [], []
        for part in parts:
            seg = _Recorder(part.slot_seg)
            for k, slot in zip(part.keys, part.slots):
                cell_type = type(slot._cell)
                scratch = cell_type(slot._cell.value)
                seg[k] = ScalarSlot(scratch, lambda x, c=cell_type: c(x).value)
                cells.append((slot._cell, scratch))
            segs.append(seg)
        steps: list[tuple[int, list[tuple[int, float]], list[float], list[float]]] = []
        try:
            for _ in range(self.AHEAD):
                hps, sigs, entries = [], [], []
                for part, seg in zip(parts, segs):
                    hp = rule._scalars(h, seg)
                    sig = hyper_signature(hp)
                    hps.append(hp)
                    sigs.append(sig)
                    entries.append(part.entries.get(sig))
                if None in entries:  # a kernel not made yet (RAdam's other regime): plan up to here
                    break
                numbers = [
                    (ctypes.addressof(values) + 8 * i, float(hp[k]))
                    for hp, (_, values, keys, _) in zip(hps, entries)
                    for i, k in enumerate(keys)
                ]
                before = [scratch.value for _, scratch in cells]
                if finish is not None:
                    for hp, seg in zip(hps, segs):
                        finish(hp, seg)
                after = [scratch.value for _, scratch in cells]
                steps.append((self._spec(tuple(sigs), entries), numbers, before, after))
        except Exception:  # an algorithm whose _scalars cannot run ahead on copies: not planned
            return
        if not steps:
            return
        nnum = max(len(numbers) for _, numbers, _, _ in steps)
        nslot = len(cells)
        words = [0, len(steps), 1 + 2 * nnum + 2 * nslot, id(group), _dict_version(group)]
        words += [id(self.state_map), self.state_version, len(self.scalar_versions)]
        for buf, version in self.scalar_versions:
            words += [buf._cdata, version]
        words += [nnum, nslot]
        for cell, _ in cells:
            words += [ctypes.addressof(cell), ctypes.sizeof(cell)]
        for spec, numbers, before, after in steps:
            words.append(spec)
            for address, value in numbers + [(0, 0.0)] * (nnum - len(numbers)):
                words += [address, _bits(value)]
            words += map(_bits, before + after)
        self.ahead = torch.tensor(words, dtype=torch.int64)
        self.ahead_address = self.ahead.data_ptr()
        self.ahead_words = (ctypes.c_int64 * len(words)).from_address(self.ahead_address)

    def _planned(self, group: dict[str, Any], params: list[Tensor], what: int) -> int:
        """The next planned step (``PLANNED`` with ``what``'s other bits), after renewing the plan's version tag
        of the group if it refused only because a scheduler set an equal value; the builtin's code."""
        threads = torch.get_num_threads()
        code = self.fn(params, self.expected, self.dicts, self.ahead_address, what, threads)
        if code == -2 and self._rearm(group):
            code = self.fn(params, self.expected, self.dicts, self.ahead_address, what, threads)
        return code

    def _rearm(self, group: dict[str, Any]) -> bool:
        """After the group's version tag moved: whether it still holds the values the plan was made for (a
        scheduler sets ``lr`` every step, to the same value for epochs at a time); if so, and steps are left, the
        plan takes the new tag."""
        words = self.ahead_words
        if words[0] >= words[1] or not _same_values(_group_values(group), self.group_values):
            return False
        words[4] = self.group_version = _dict_version(group)
        return True

    def run(self, rule: Any, h: Any, bumped: bool) -> bool:
        """The step (after a passing ``check``); False if it had to take the general path for the update (a
        static hyperparameter changed a kernel), which it then did.  Planned steps as in ``alone``: ``check``
        passed already, and bumped if ``bumped``."""
        group = self.plan.group
        if self.ahead is not None:
            if self._planned(group, self.expected, PLANNED if bumped else PLANNED | BUMP) == 0:
                return True
            self.ahead = None
        slots = self.all_slots
        hps, sigs, entries = self._scalars(rule, h, slots)
        for i, (part, hp, sig) in enumerate(zip(self.parts, hps, sigs)):
            if entries[i] is None:
                bound = runner(rule._update, hp, (part.example, part.example, dict(part.seg)))
                entries[i] = self.add(part, bound) if isinstance(bound, Bound) else None
                if entries[i] is not None:
                    part.entries[sig] = entries[i]
        if None in entries:  # a kernel still compiling: every part the general way
            plan, pk = self.plan, self.pk
            plan._grads = None
            grads = [plan.grads[i] for i in plan.slices[0]] if pk is not None else []  # the bucket's, in its order
            for part, hp in zip(self.parts, hps):
                if part.members is not None:  # the large parameters
                    members = [(p, p.grad, st) for p, st in zip(plan.large, part.members)]
                    operands = [plan._large_operands(p, st) for p, _, st in members]
                    plan._apply_batch(rule, hp, members, operands, plan.tables)
                    continue
                assert pk is not None
                a, b = part.a, part.b
                gather = functools.partial(plan._gather, pk, grads, a, b)
                plan._apply_segment(rule, pk, a, b, part.seg, hp, self.grad_ptrs[plan.slice_index[0][a:b]], gather)
            if not bumped:
                bump(self.expected)
            plan._grads = None
            start_compiles()
            return False
        for hp, (_, values, keys, _) in zip(hps, entries):
            values[:] = [float(hp[k]) for k in keys] or [0.0]
        address = self._spec(tuple(sigs), entries)
        what = LAUNCH if bumped else LAUNCH | BUMP
        self.fn(self.expected, self.expected, self.dicts, address, what, torch.get_num_threads())
        if rule._finish is not None:
            for part, hp in zip(self.parts, hps):
                rule._finish(hp, part.slot_seg if slots else part.seg)
        self.fn(self.expected, self.expected, self.dicts, address, BROADCAST, 1)  # every member advanced alike
        if not slots:  # the tensor ops moved the buffers' version counters
            self.remember(rule)
        elif self._group_settled(group):
            self.plan_ahead(rule, group, h)
        return True


def _immutable(v: Any) -> bool:
    """Whether a group value cannot change without the group's version tag changing (a planned step relies on it)."""
    return v is None or type(v) in (float, int, bool, str) or (type(v) is tuple and all(map(_immutable, v)))


def _group_values(group: dict[str, Any]) -> dict[str, Any]:
    """A group's hyperparameters: everything but its parameter list."""
    return {k: v for k, v in group.items() if k != "params"}


def _same_values(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a.keys() == b.keys() and all(_same_number(v, b[k]) for k, v in a.items())


def _bits(value: float) -> int:
    """A double's bits as an int64 (the planned steps' numbers, in an int64 array)."""
    return struct.unpack("<q", struct.pack("<d", value))[0]


def _packed_table(
    pk: _Packed, position: Tensor, a: int, b: int, param: Tensor, launcher: Any, seg: _Recorder
) -> tuple[Tensor, Tensor]:
    """A steady part's launch table over packed parameters a..b-1, its rows' owners as positions in the group."""
    table, owners = pk.table(launcher, a, b, [param, None, *seg.values()])
    return table, position[owners + a].contiguous()


class _Part:
    """One part of a steady path: parameters a..b-1 of its scalar buffers (``buffers``, one per scalar key in
    ``keys``), whose scalar state is equal (one ``_scalars`` call, one driver call); ``seg``: the rep's state
    as the kernel takes it; ``table(launcher, seg)``: its launch table; ``members``: the large parameters' state
    dicts (None for packed ones); ``entries``: its kernels' driver calls, by signature."""

    __slots__ = ("a", "b", "buffers", "entries", "example", "keys", "members", "seg", "slot_seg", "slots", "table")

    def __init__(self, a: int, b: int, seg: _Recorder, keys: list[str], buffers: list[Tensor], example: Tensor) -> None:
        self.a, self.b, self.seg = a, b, seg
        self.keys, self.buffers, self.example = keys, buffers, example
        self.entries: dict[tuple[Any, ...], tuple[list[int], Any, list[str], Any] | None] = {}
        self.slot_seg: _Recorder | None = None
        self.slots: list[ScalarSlot] = []
        self.members: list[dict[str, Any]] | None = None
        self.table: Callable[[Any, _Recorder], tuple[Tensor, Tensor]] | None = None


def _unflat(t: Tensor, like: Tensor) -> Tensor:
    """Inverse of ``_real_flat``: ``t`` (1-D, real) shaped and typed like ``like``."""
    if like.is_complex():
        return torch.view_as_complex(t.view(*like.shape, 2))
    return t.view(like.shape)


def _runs(mask: list[bool]) -> list[tuple[int, int]]:
    out = []
    start = None
    for i, m in enumerate([*mask, False]):
        if m and start is None:
            start = i
        elif not m and start is not None:
            out.append((start, i))
            start = None
    return out


def _unsupported(p: Tensor) -> str | None:
    if type(p) not in _PLAIN_TYPES:
        return f"a {type(p).__name__}, not a plain tensor"
    if p.layout != torch.strided:
        return "not a dense tensor"
    if not p.is_contiguous():
        return "not contiguous"
    if not (p.is_floating_point() or p.is_complex()):
        return f"dtype {p.dtype}"
    return None


def _without_overlaps(params: list[Tensor], fallback: set[Tensor]) -> list[Tensor]:
    """Params whose memory overlaps another's (views of one tensor) cannot be repacked apart: fall back."""
    spans = sorted(
        ((p.untyped_storage().data_ptr(), p.storage_offset() * p.element_size(), p) for p in params),
        key=lambda s: (s[0], s[1]),
    )
    for (s1, o1, p1), (s2, o2, p2) in itertools.pairwise(spans):
        if s1 == s2 and p1 is not p2 and o1 + p1.numel() * p1.element_size() > o2:
            fallback.update((p1, p2))
    if fallback:
        warn_once("optimlab: fused=True found parameters that share memory; they are updated tensor by tensor.")
    return [p for p in params if p not in fallback]
