"""Running one compiled elementwise kernel over many tensors in one call (a CPU "multi-tensor apply").

Inductor's kernel for an update is a C function of raw pointers and a length: ``kernel(in_ptr0, ..., out_ptr0, ...,
ks0)``.  Called once per tensor from Python it costs microseconds a call; on a thousand small tensors that is
more than the update itself, which is why the engine used to gather the small parameters' gradients into one
flat buffer (a copy of every gradient, every step) and call the kernel once over it.  The driver below takes
a table with one row per *item* (a tensor, or a cache-sized chunk of a large one) holding that item's
pointers and length, and calls the kernel on every row, the rows spread over OpenMP threads.  The kernel is
compiled single-threaded for it (Inductor's ``cpp.threads=1``): the threads come from the driver, so one
parallel region serves a whole step.

Gradients are the one operand that is new every step: a row holds its gradient's offset and the driver adds the
step's gradient pointer, so the table itself is built once and kept while the parameters and state stay put.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "CHUNK_ITEMS",
    "Launcher",
    "bump",
    "driver",
    "fast_function",
    "fast_spec",
    "grad_pointers",
    "start_helper",
    "wait_for_helper",
]

#: elements per item when a large tensor is cut into rows: large enough that a row's call costs nothing next to
#: its work, small enough that two threads share the step evenly.
CHUNK_ITEMS = 1 << 15
_MAX_ARGS = 32

# One ``case`` per kernel arity: every argument of an Inductor CPU kernel is a pointer or an int64 size, which the
# x86-64 and AArch64 calling conventions pass alike, so a kernel can be called through a type of int64 arguments.
_CASES = "\n".join(
    f"        case {n}: reinterpret_cast<void (*)({', '.join(['I'] * n)})>(fn)"
    f"({', '.join(f'a[{k}]' for k in range(n))}); break;"
    for n in range(1, _MAX_ARGS + 1)
)
_SOURCE = r"""
#include <cstdint>
#include <cstring>
#include <omp.h>
typedef int64_t I;

// Copy a buffer's first element over the rest (the steady path's per-parameter scalar state, advanced once).
extern "C" void optimlab_broadcast(char* buf, I n, I elsize) {
    for (I i = 1; i < n; ++i) memcpy(buf + i * elsize, buf, elsize);
}

// Call fn on every row of table (nitems x nargs).  An argument is the row's entry plus shared[k]; the gradient
// argument (grad_slot) also gets the pointer of its item's gradient, grad_ptrs[item_set[i]].  Each thread takes
// one contiguous run of rows holding its share of the elements (a row's length is its entry at size_slot): like
// an OpenMP static schedule of one loop over all the elements, which kept the memory streams fastest here
// (rows dealt out one at a time were up to 2x slower on GPT-2 shapes when another process had just churned
// through memory).
static void run_row(void* fn, I nargs, const I* row, const I* shared, I grad_slot, I grad) {
    I a[MAX_ARGS];
    for (I k = 0; k < nargs; ++k) a[k] = row[k] + shared[k];
    if (grad_slot >= 0) a[grad_slot] += grad;
    switch (nargs) {
CASES
    }
}

extern "C" void optimlab_launch(void* fn, I nargs, I nitems, const I* table, const I* shared, I grad_slot,
                                const I* item_set, const I* grad_ptrs, I threads, I size_slot) {
    if (nitems <= 1 || threads <= 1) {
        for (I i = 0; i < nitems; ++i)
            run_row(fn, nargs, table + i * nargs, shared, grad_slot, grad_slot >= 0 ? grad_ptrs[item_set[i]] : 0);
        return;
    }
    // A kernel that opens a parallel region of its own runs it with one thread inside ours, not a new team.
    int levels = omp_get_max_active_levels();
    omp_set_max_active_levels(1);
    #pragma omp parallel num_threads(threads)
    {
        I t = omp_get_thread_num(), n = omp_get_num_threads(), total = 0;
        for (I i = 0; i < nitems; ++i) total += size_slot >= 0 ? table[i * nargs + size_slot] : 1;
        I lo = total * t / n, hi = total * (t + 1) / n, at = 0;
        for (I i = 0; i < nitems; ++i) {
            I w = size_slot >= 0 ? table[i * nargs + size_slot] : 1;
            I mid = at + w / 2;  // a row goes to the thread whose share holds its middle
            at += w;
            if (mid >= lo && mid < hi)
                run_row(fn, nargs, table + i * nargs, shared, grad_slot, grad_slot >= 0 ? grad_ptrs[item_set[i]] : 0);
        }
    }
    omp_set_max_active_levels(levels);
}
""".replace("MAX_ARGS", str(_MAX_ARGS)).replace("CASES", _CASES)

# Per-step bookkeeping over a group's parameters, in C++ (against libtorch): a Python pass over a thousand
# tensors costs ~130 µs per attribute read (gradient, its pointer, dtype, contiguity, size, version bump), about
# as much as a step's whole update on 1000 x 1024 parameters; this does all of it in ~30 µs.
_HELPER_SOURCE = r"""
#include <Python.h>
#include <atomic>
#include <cstring>
#include <omp.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/autograd/variable.h>

// For each parameter of the list: its data pointer (param_ptrs) and its gradient's (grad_ptrs), 0 for a missing
// gradient, -1 for one the kernels cannot read in place (not dense, another dtype or size, not contiguous).
// Returns (missing, unusable).
// Whether the kernels can read gradient g of parameter p in place: dense, p's dtype, device and size, contiguous.
static bool readable_in_place(const c10::TensorImpl* g, const c10::TensorImpl* p) {
    return g->has_storage() && g->layout() == c10::kStrided && g->dtype() == p->dtype() && g->device() == p->device()
        && g->numel() == p->numel() && g->is_contiguous() && !g->is_neg() && !g->is_conj();
}

extern "C" PyObject* optimlab_grad_pointers(PyObject* params, int64_t* grad_ptrs, int64_t* param_ptrs) {
    Py_ssize_t n = PyList_GET_SIZE(params);
    long missing = 0, unusable = 0;
    for (Py_ssize_t i = 0; i < n; ++i) {
        PyObject* obj = PyList_GET_ITEM(params, i);
        if (!THPVariable_Check(obj)) return nullptr;
        const at::Tensor& p = THPVariable_Unpack(obj);
        param_ptrs[i] = reinterpret_cast<int64_t>(p.data_ptr());
        const at::Tensor& g = p.grad();
        if (!g.defined()) {
            grad_ptrs[i] = 0;
            ++missing;
        } else if (!readable_in_place(g.unsafeGetTensorImpl(), p.unsafeGetTensorImpl())) {
            grad_ptrs[i] = -1;
            ++unusable;
        } else {
            grad_ptrs[i] = reinterpret_cast<int64_t>(g.data_ptr());
        }
    }
    return Py_BuildValue("(ll)", missing, unusable);
}

// The steady path of a packed group's step (flat._Fast), as one Python builtin: ctypes costs tens of
// microseconds a call once a step has streamed the caches away, a METH_FASTCALL function a few.
//
// fast(params, expected, dicts, spec, what, threads) -> 0, or why not.  spec: the address of an int64 array
//   [0] versions*  [1] param_ptrs*  [2] grad_ptrs*  [3] impls*  [4] grads* (n entries each; the last two scratch)
//   [5] L, then L launches of 9: launch fn, kernel, nargs, nitems, table*, shared*, grad_slot, item_set*,
//   size_slot; then the broadcast fn, k, and k triples (buffer*, n, element size).
// what: CHECK (1), BUMP (2), LAUNCH (4), BROADCAST (8); or PLANNED (16), alone (below).
//
// CHECK: the group still lists the same parameter objects (expected), each still has its data where it had
// (param_ptrs) and a gradient the kernel can read in place, each state dict is unchanged since the last step
// (its version tag); writes the gradients' addresses to grad_ptrs.  If it fails, the call returns its reason and
// does nothing else: 1 other parameters, 2 a state dict changed, 3 a parameter moved, 4 a gradient missing, 5
// one not readable in place, -1 not on this Python.  BUMP counts the update as an in-place change of every
// parameter, for autograd; LAUNCH runs the kernel over the table through the launch driver; BROADCAST copies
// each scalar buffer's first entry over the rest (every parameter advanced alike).
//
// Right after a step every object here is out of the cache, and each parameter is a chain of dependent loads
// (Python object, tensor, its autograd meta, the gradient, its storage).  So the check goes link by link, one
// pass per link with prefetching, each thread through its own share: the loads of a pass are independent and the
// memory system serves many at once, instead of one chain at a time.
typedef int64_t I;
typedef void (*launch_t)(void*, I, I, const I*, const I*, I, const I*, const I*, I, I);
typedef void (*broadcast_t)(char*, I, I);

static I check(PyObject* params, PyObject* expected, PyObject* dicts, const I* spec, I threads) {
#if PY_VERSION_HEX >= 0x030C0000
    return -1;  // ma_version_tag is only read on 3.11 (deprecated in 3.12, gone later)
#else
    if (!PyList_Check(params) || !PyList_Check(expected) || !PyList_Check(dicts)) return 1;
    const Py_ssize_t n = PyList_GET_SIZE(expected);
    if (PyList_GET_SIZE(params) != n || PyList_GET_SIZE(dicts) != n) return 1;
    PyObject** items = &PyList_GET_ITEM(params, 0);
    PyObject** want = &PyList_GET_ITEM(expected, 0);
    PyObject** ds = &PyList_GET_ITEM(dicts, 0);
    const uint64_t* versions = reinterpret_cast<const uint64_t*>(spec[0]);
    const I* param_ptrs = reinterpret_cast<const I*>(spec[1]);
    I* grad_ptrs = reinterpret_cast<I*>(spec[2]);
    c10::TensorImpl** impls = reinterpret_cast<c10::TensorImpl**>(spec[3]);
    c10::TensorImpl** grads = reinterpret_cast<c10::TensorImpl**>(spec[4]);
    std::atomic<I> failed{0};
    // Only reads, while the caller holds the GIL (no Python thread runs meanwhile).
    #pragma omp parallel num_threads(threads > 1 && n >= 512 ? threads : 1)
    {
        const Py_ssize_t t = omp_get_thread_num(), T = omp_get_num_threads();
        const Py_ssize_t lo = n * t / T, hi = n * (t + 1) / T;
        constexpr Py_ssize_t D = 8;  // prefetch distance
        I code = 0;
        for (Py_ssize_t i = lo; i < hi && !code; ++i) {
            if (i + D < hi) {
                __builtin_prefetch(items[i + D]);
                __builtin_prefetch(ds[i + D]);
            }
            if (items[i] != want[i]) code = 1;
            else impls[i] = THPVariable_Unpack(items[i]).unsafeGetTensorImpl();
        }
        for (Py_ssize_t i = lo; i < lo + D && i < hi && !code; ++i) __builtin_prefetch(impls[i]);
        for (Py_ssize_t i = lo; i < hi && !code; ++i) {
            if (i + D < hi) __builtin_prefetch(impls[i + D]);
            c10::AutogradMetaInterface* meta = impls[i]->autograd_meta();
            if (reinterpret_cast<PyDictObject*>(ds[i])->ma_version_tag != versions[i]) code = 2;
            else if (!impls[i]->has_storage()) code = 3;
            else if (meta == nullptr) code = 4;
            else __builtin_prefetch(meta);
        }
        for (Py_ssize_t i = lo; i < hi && !code; ++i) {
            c10::TensorImpl* p = impls[i];
            const at::Tensor& g = p->autograd_meta()->grad();
            if (reinterpret_cast<I>(p->data()) != param_ptrs[i]) code = 3;
            else if (!g.defined()) code = 4;
            else {
                grads[i] = g.unsafeGetTensorImpl();
                __builtin_prefetch(grads[i]);
            }
        }
        for (Py_ssize_t i = lo; i < hi && !code; ++i) {
            if (i + D < hi && grads[i + D]->has_storage())
                __builtin_prefetch(grads[i + D]->storage().unsafeGetStorageImpl());
            if (!readable_in_place(grads[i], impls[i])) code = 5;
        }
        if (code) {
            I none = 0;
            failed.compare_exchange_strong(none, code);
        } else {
            for (Py_ssize_t i = lo; i < hi; ++i) grad_ptrs[i] = reinterpret_cast<I>(grads[i]->data());
        }
    }
    return failed.load();
#endif
}

// BUMP: count the update as an in-place change of each parameter of expected (whose objects the caller keeps
// alive), through the tensors this step's check found (impls) or, without one, through the objects.
static void bump_all(PyObject* expected, c10::TensorImpl* const* impls) {
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(expected); ++i)
        (impls ? impls[i] : THPVariable_Unpack(PyList_GET_ITEM(expected, i)).unsafeGetTensorImpl())->bump_version();
}

// LAUNCH: each launch of the spec through the driver; BROADCAST: each scalar buffer's first entry over the rest.
static void launch_all(const I* spec, I threads) {
    for (I j = 0; j < spec[5]; ++j) {
        const I* l = spec + 6 + 9 * j;
        if (l[0])
            reinterpret_cast<launch_t>(l[0])(
                reinterpret_cast<void*>(l[1]), l[2], l[3], reinterpret_cast<const I*>(l[4]),
                reinterpret_cast<const I*>(l[5]), l[6], reinterpret_cast<const I*>(l[7]),
                reinterpret_cast<const I*>(spec[2]), threads, l[8]);
    }
}

static void broadcast_all(const I* spec) {
    const I* b = spec + 6 + 9 * spec[5];
    if (b[0])
        for (I k = 0; k < b[1]; ++k)
            reinterpret_cast<broadcast_t>(b[0])(reinterpret_cast<char*>(b[2 + 3 * k]), b[3 + 3 * k], b[4 + 3 * k]);
}

// PLANNED (16): a step whose scalars were worked out ahead (flat._Fast.plan_ahead: the group's hyperparameters
// have stayed the same).  spec is then a plan, int64 words (doubles stored bitwise):
//   [0] cursor (advanced here)  [1] count  [2] stride  [3] the group (PyDictObject*)  [4] its version tag
//   [5] the state map (PyDictObject*)  [6] its version tag  [7] nbuf, then nbuf pairs (TensorImpl* of a scalar
//   buffer, its version);  then nnum, nslot, and nslot slot (address, element size) pairs;  then count steps of
//   stride words: the step's spec, nnum (address, number) pairs (address 0: none), nslot slot values before the
//   kernels (after the algorithm's _scalars) and nslot after them (after its _finish).
// If the plan is used up, or the group, the state map or a scalar buffer changed since it was made, returns -2
// having done nothing.  Else writes the numbers, then CHECK (returning its reason, slots untouched, if it fails)
// and BUMP if asked (with several groups, every group's check ran before any update, in calls of their own),
// writes the slots, LAUNCH, writes the slots' values after, BROADCAST: what the steady path's Python and its
// builtin calls do, in that order, with the numbers worked out ahead.
static I fast_planned(PyObject* const* args, I* plan, I what, I threads) {
    const I cursor = plan[0], count = plan[1], stride = plan[2];
    if (cursor >= count) return -2;
#if PY_VERSION_HEX >= 0x030C0000
    return -2;
#else
    for (I k = 3; k <= 5; k += 2)
        if (reinterpret_cast<PyDictObject*>(plan[k])->ma_version_tag != static_cast<uint64_t>(plan[k + 1])) return -2;
#endif
    const I nbuf = plan[7];
    for (I k = 0; k < nbuf; ++k)
        if (static_cast<I>(reinterpret_cast<c10::TensorImpl*>(plan[8 + 2 * k])->version_counter().current_version())
            != plan[9 + 2 * k])
            return -2;
    const I* at = plan + 8 + 2 * nbuf;
    const I nnum = at[0], nslot = at[1];
    const I* slots = at + 2;
    const I* step = slots + 2 * nslot + cursor * stride;
    const I* spec = reinterpret_cast<const I*>(step[0]);
    for (I k = 0; k < nnum; ++k)
        if (step[1 + 2 * k]) memcpy(reinterpret_cast<void*>(step[1 + 2 * k]), step + 2 + 2 * k, sizeof(double));
    if (what & 1) {
        const I code = check(args[0], args[1], args[2], spec, threads);
        if (code) return code;
    }
    // with the parameter tensors this step's check found (in this call or an earlier one)
    if (what & 2) bump_all(args[1], reinterpret_cast<c10::TensorImpl**>(spec[3]));
    auto write_slots = [&](const I* values) {
        for (I k = 0; k < nslot; ++k) {
            double v;
            memcpy(&v, values + k, sizeof(double));
            if (slots[2 * k + 1] == 4) *reinterpret_cast<float*>(slots[2 * k]) = static_cast<float>(v);
            else *reinterpret_cast<double*>(slots[2 * k]) = v;
        }
    };
    write_slots(step + 1 + 2 * nnum);
    launch_all(spec, threads);
    write_slots(step + 1 + 2 * nnum + nslot);
    broadcast_all(spec);
    plan[0] = cursor + 1;
    return 0;
}

static PyObject* fast(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "fast(params, expected, dicts, spec, what, threads)");
        return nullptr;
    }
    const I* spec = reinterpret_cast<const I*>(PyLong_AsVoidPtr(args[3]));
    const I what = PyLong_AsLongLong(args[4]), threads = PyLong_AsLongLong(args[5]);
    if (PyErr_Occurred()) return nullptr;
    if (what & 16) return PyLong_FromLongLong(fast_planned(args, const_cast<I*>(spec), what, threads));
    if (what & 1) {
        I code = check(args[0], args[1], args[2], spec, threads);
        if (code) return PyLong_FromLongLong(code);
    }
    if (what & 2) bump_all(args[1], what & 1 ? reinterpret_cast<c10::TensorImpl**>(spec[3]) : nullptr);
    if (what & 4) launch_all(spec, threads);
    if (what & 8) broadcast_all(spec);
    return PyLong_FromLongLong(0);
}

static PyMethodDef fast_def = {"optimlab_fast", (PyCFunction)(void (*)(void))fast, METH_FASTCALL, nullptr};

extern "C" PyObject* optimlab_fast_function() { return PyCFunction_NewEx(&fast_def, nullptr, nullptr); }

// Count the kernels' writes as in-place changes of these parameters, for autograd (as in-place ops do).
extern "C" PyObject* optimlab_bump(PyObject* params) {
    Py_ssize_t n = PyList_GET_SIZE(params);
    for (Py_ssize_t i = 0; i < n; ++i) {
        PyObject* obj = PyList_GET_ITEM(params, i);
        if (!THPVariable_Check(obj)) return nullptr;
        torch::autograd::impl::bump_version(THPVariable_Unpack(obj));
    }
    Py_RETURN_NONE;
}
"""

_lock = threading.Lock()
_driver: list[Any] = []  # [the loaded function] once built, [None] if building failed
_broadcast: list[Any] = []  # [optimlab_broadcast] once the driver is built
_helper: list[Any] = []  # [(grad_pointers, bump, the steady path's builtin or None)] once built, [None] if not
_helper_thread: list[threading.Thread] = []


def driver() -> Any:
    """The driver's C function (compiled once; Inductor's compile cache keeps it on disk), or None where no C++
    compiler works."""
    if not _driver:
        with _lock:
            if not _driver:
                try:
                    from torch._inductor.codecache import CppCodeCache

                    # Called holding the GIL (PyDLL), as Inductor's own kernel bindings are: the rows point at
                    # gradients the step does not hold references to, which no other thread may drop meanwhile.
                    library = ctypes.PyDLL(CppCodeCache.load(_SOURCE)._name)
                    fn = library.optimlab_launch
                    fn.restype = None
                    pointer, integer = ctypes.c_void_p, ctypes.c_int64
                    # fn, nargs, nitems, table, shared, grad_slot, item_set, grad_ptrs, threads, size_slot
                    fn.argtypes = [pointer, integer, integer, pointer, pointer, integer, pointer, pointer]
                    fn.argtypes += [integer, integer]
                    spread = library.optimlab_broadcast
                    spread.restype = None
                    spread.argtypes = [pointer, integer, integer]
                    _broadcast.append(spread)
                    _driver.append(fn)
                except Exception:
                    _driver.append(None)
    return _driver[0]


def start_helper() -> None:
    """Build the C++ helper in the background (about 30 s with an empty compile cache: it includes libtorch's
    headers); until it is ready, ``grad_pointers`` and ``bump`` do the same work in Python."""
    with _lock:
        if not _helper_thread:
            _helper_thread.append(threading.Thread(target=_build_helper, daemon=True, name="optimlab-compile"))
            _helper_thread[0].start()


def wait_for_helper(timeout: float | None = None) -> None:
    start_helper()
    _helper_thread[0].join(timeout)


def _build_helper() -> None:
    try:
        from torch._inductor.codecache import CppCodeCache

        class _WithLibtorch(CppCodeCache):
            cache: dict[str, Any] = {}
            cpp_compile_command_flags = {"include_pytorch": True, "shared": True}

        library = ctypes.PyDLL(_WithLibtorch.load(_HELPER_SOURCE)._name)
        pointers, bump = library.optimlab_grad_pointers, library.optimlab_bump
        pointers.restype = bump.restype = ctypes.py_object
        pointers.argtypes = [ctypes.py_object, ctypes.c_void_p, ctypes.c_void_p]
        bump.argtypes = [ctypes.py_object]
        make_fast = library.optimlab_fast_function
        make_fast.restype = ctypes.py_object
        make_fast.argtypes = []
        fast = make_fast()
        probe = [torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2))]
        probe[0].grad = torch.ones(3)
        g, p = torch.empty(2, dtype=torch.int64), torch.empty(2, dtype=torch.int64)
        result = pointers(probe, g.data_ptr(), p.data_ptr())
        bump(probe)
        ok = (
            result == (1, 0)
            and g.tolist() == [probe[0].grad.data_ptr(), 0]
            and p.tolist() == [q.data_ptr() for q in probe]
            and probe[1]._version == 1
        )
        _helper.append((pointers, bump, fast if ok and _probe_fast(fast) else None) if ok else None)
    except Exception:
        _helper.append(None)


#: what a call of the steady path's builtin (``fast_function()``) does; see ``fast`` in ``_HELPER_SOURCE``.
CHECK, BUMP, LAUNCH, BROADCAST, PLANNED = 1, 2, 4, 8, 16


def fast_spec(
    versions: Tensor,
    param_ptrs: Tensor,
    grad_ptrs: Tensor,
    scratch: Tensor,
    launches: Sequence[list[int]] = (),
    broadcasts: Sequence[tuple[Tensor, int, int]] = (),
) -> Tensor:
    """The int64 array a call of the steady path's builtin reads (its layout: ``fast`` in ``_HELPER_SOURCE``).
    ``scratch``: int64, two entries per parameter; ``launches``: ``Launcher.launch_fields(...)`` of each driver
    call; ``broadcasts``: ``(buffer, a, b)``, 1-D contiguous buffers whose entry ``a`` ``BROADCAST`` copies over
    entries a+1..b-1.  The caller keeps every tensor alive while the array is used."""
    n = param_ptrs.numel()
    spec = [versions.data_ptr(), param_ptrs.data_ptr(), grad_ptrs.data_ptr(), scratch.data_ptr()]
    spec += [scratch.data_ptr() + 8 * n, len(launches)]
    for fields in launches:
        spec += fields
    spec += [ctypes.cast(_broadcast[0], ctypes.c_void_p).value or 0 if _broadcast else 0, len(broadcasts)]
    for buf, a, b in broadcasts:
        assert buf.dim() == 1 and buf.is_contiguous() and 0 <= a < b <= buf.numel()
        spec += [buf.data_ptr() + a * buf.element_size(), b - a, buf.element_size()]
    return torch.tensor(spec, dtype=torch.int64)


def _probe_fast(fast: Any) -> bool:
    """Whether the steady path's builtin reads this Python's dict version tags as ``dict_version`` does, and
    answers as documented."""
    try:
        from torch._C._dynamo.guards import dict_version
    except ImportError:
        return False
    if driver() is None:  # the builtin runs the driver's kernels and broadcasts
        return False
    params = [torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2))]
    for p in params:
        p.grad = torch.ones_like(p)
    dicts: list[dict[str, Any]] = [{"a": 1}, {}]
    versions = torch.tensor([dict_version(d) for d in dicts], dtype=torch.int64)
    param_ptrs = torch.tensor([p.data_ptr() for p in params], dtype=torch.int64)
    grad_ptrs, scratch = torch.zeros(2, dtype=torch.int64), torch.zeros(4, dtype=torch.int64)
    spread = torch.tensor([5.0, 1.0, 2.0])
    spec = fast_spec(versions, param_ptrs, grad_ptrs, scratch, broadcasts=[(spread, 0, 3)])

    def run(what: int) -> int:
        return fast(params, list(params), dicts, spec.data_ptr(), what, 1)

    if run(CHECK | BUMP | BROADCAST) != 0 or grad_ptrs.tolist() != [p.grad.data_ptr() for p in params]:
        return False
    if params[1]._version != 1 or spread.tolist() != [5.0] * 3:
        return False
    dicts[1]["b"] = 2
    changed = run(CHECK | BUMP)
    dicts[1].clear()
    versions[1] = dict_version(dicts[1])
    params[0].grad = params[0].grad.expand(2, 3)[0]
    params[1].grad = None
    return changed == 2 and run(CHECK | BUMP) == 4 and params[1]._version == 1


def fast_function() -> Callable[..., int] | None:
    """The steady path's builtin, ``fast(params, expected, dicts, spec_address, what, threads)``, once the
    helper is built (None before, and where it cannot be)."""
    if not _helper or _helper[0] is None:
        return None
    return _helper[0][2]


def grad_pointers(params: list[Tensor]) -> tuple[Tensor, Tensor, int, int]:
    """``(grad_ptrs, param_ptrs, missing, unusable)`` of ``params`` (see ``_HELPER_SOURCE``), in C++ once the
    helper is built, else in Python."""
    n = len(params)
    grad_ptrs, param_ptrs = torch.empty(n, dtype=torch.int64), torch.empty(n, dtype=torch.int64)
    if _helper and _helper[0] is not None:
        missing, unusable = _helper[0][0](params, grad_ptrs.data_ptr(), param_ptrs.data_ptr())
        return grad_ptrs, param_ptrs, missing, unusable
    values = []
    missing = unusable = 0
    for p in params:
        g = p.grad
        if g is None:
            values.append(0)
            missing += 1
        elif (
            g.layout != torch.strided
            or g.dtype != p.dtype
            or g.device != p.device
            or g.numel() != p.numel()
            or not g.is_contiguous()
            or g.is_neg()
            or g.is_conj()
        ):
            values.append(-1)
            unusable += 1
        else:
            values.append(g.data_ptr())
    grad_ptrs.copy_(torch.tensor(values, dtype=torch.int64))
    param_ptrs.copy_(torch.tensor(list(map(Tensor.data_ptr, params)), dtype=torch.int64))
    return grad_ptrs, param_ptrs, missing, unusable


def bump(params: list[Tensor]) -> None:
    """Bump the version counters of ``params`` (the kernels wrote them), in C++ once the helper is built."""
    if _helper and _helper[0] is not None:
        _helper[0][1](params)
    else:
        torch._C._increment_version(params)


class Launcher:
    """One compiled kernel, callable over a table of items.

    ``roles`` says, for each kernel argument, where it comes from in a step's operand list
    ``[param, grad, *state, *extras]``: ``("item", j)`` an operand with one element per parameter element (a
    pointer that moves with the item), ``("shared", j)`` one the items share (the packed numbers, a 0-dim state
    entry), ``("size", 0)`` the item's length.
    """

    def __init__(self, kernel: Any, roles: list[tuple[str, int]], mutated: list[int]) -> None:
        if len(roles) > _MAX_ARGS:
            raise ValueError(f"a kernel of {len(roles)} arguments (the driver takes up to {_MAX_ARGS})")
        self.address = _address(kernel)
        self.mutated = mutated  # the operands the kernel writes (whose version counters a call bumps)
        self.roles = roles
        self.nargs = len(roles)
        self.grad_slot = next((k for k, (role, j) in enumerate(roles) if role == "item" and j == 1), -1)
        self.item_roles = [(k, j) for k, (role, j) in enumerate(roles) if role == "item" and j != 1]
        self.shared_roles = [(k, j) for k, (role, j) in enumerate(roles) if role == "shared"]
        self.size_slots = [k for k, (role, _) in enumerate(roles) if role == "size"]

    def table(
        self, sets: Sequence[Sequence[Any]], items: Sequence[tuple[int, int, int, int, int]]
    ) -> tuple[Tensor, Tensor]:
        """``(table, owners)`` for ``items``: ``(set, start, length, owner, grad_start)`` runs the kernel on
        elements ``start:start+length`` of operand list ``sets[set]`` (laid out like a step's; its gradient entry
        is ignored) and on elements ``grad_start:`` of the gradient of ``owner`` (an index into the gradients a
        call is given).  Operands are 1-dim; built once and kept while they stay put."""
        it = torch.tensor(items, dtype=torch.int64).reshape(-1, 5)
        which, start, length, owner, grad_start = it.unbind(1)
        table = torch.zeros(it.shape[0], self.nargs, dtype=torch.int64)
        if self.item_roles:
            cols = [k for k, _ in self.item_roles]
            bases = torch.tensor([[ops[j].data_ptr() for _, j in self.item_roles] for ops in sets], dtype=torch.int64)
            sizes = torch.tensor([sets[0][j].element_size() for _, j in self.item_roles], dtype=torch.int64)
            table[:, cols] = bases[which] + start[:, None] * sizes
        if self.grad_slot >= 0:
            table[:, self.grad_slot] = grad_start * sets[0][0].element_size()
        for k in self.size_slots:
            table[:, k] = length
        return table, owner.contiguous()

    @staticmethod
    def chunks(sets: Sequence[Sequence[Any]], chunk: int = CHUNK_ITEMS) -> list[tuple[int, int, int, int, int]]:
        """Items covering each set whole, cut into pieces of at most ``chunk`` elements; set ``s``'s gradient is
        gradient ``s``."""
        return [
            (s, start, min(chunk, ops[0].numel() - start), s, start)
            for s, ops in enumerate(sets)
            for start in range(0, ops[0].numel(), chunk)
        ]

    def shared(self, operands: Sequence[Any]) -> Tensor:
        """The per-call part of every row: pointers of the operands the items share (from one step's list)."""
        values = [0] * self.nargs
        for k, j in self.shared_roles:
            values[k] = operands[j].data_ptr()
        return torch.tensor(values, dtype=torch.int64)

    def launch_fields(self, table: Tensor, item_set: Tensor, shared: Tensor) -> list[int]:
        """A driver call on these buffers, as the steady path's spec holds it (see ``fast_spec``); the caller
        keeps them alive."""
        fn = ctypes.cast(_driver[0], ctypes.c_void_p).value
        size_slot = self.size_slots[0] if self.size_slots else -1
        fields = [fn, self.address, self.nargs, table.shape[0], table.data_ptr(), shared.data_ptr()]
        return [*fields, self.grad_slot, item_set.data_ptr(), size_slot]

    def __call__(self, table: Tensor, item_set: Tensor, shared: Tensor, grads: Sequence[Tensor] | Tensor) -> None:
        """Run the kernel on every row of ``table``; ``grads[s]`` is the gradient of operand set ``s`` (contiguous,
        of its parameter's dtype and size: the caller checked), or its address if ``grads`` is an int64 tensor."""
        if isinstance(grads, Tensor):
            grad_ptrs = grads.contiguous()
        else:
            grad_ptrs = torch.tensor(list(map(Tensor.data_ptr, grads)), dtype=torch.int64)
        _driver[0](
            self.address,
            self.nargs,
            table.shape[0],
            table.data_ptr(),
            shared.data_ptr(),
            self.grad_slot,
            item_set.data_ptr(),
            grad_ptrs.data_ptr(),
            torch.get_num_threads(),
            self.size_slots[0] if self.size_slots else -1,
        )


def _address(kernel: Any) -> int:
    """The C function behind Inductor's Python binding of a CPU kernel: the library's exported ``kernel``."""
    module = getattr(kernel, "__self__", None)
    path = getattr(module, "__file__", None)
    if not path or getattr(kernel, "__name__", None) != "kernel":
        raise ValueError("not an Inductor CPU kernel binding")
    address = ctypes.cast(ctypes.CDLL(path).kernel, ctypes.c_void_p).value
    if not address:
        raise ValueError("no kernel symbol")
    return address
