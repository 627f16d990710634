"""Step-time and memory benchmarks: optimlab against torch.optim, as multiples of the memory-bandwidth floor.

An elementwise optimizer step is memory-bound: it must stream every parameter, gradient and state tensor through
the memory bus, so no implementation can be faster than (bytes it must move) / (the machine's streaming
bandwidth). This script measures that floor on the machine it runs on and reports every implementation's median
step time as a multiple of it.

For each parameter set (``param_sets.py``) and each elementwise algorithm it times ``step()`` of up to five
variants: optimlab default, optimlab ``fused=True``, torch default (the for-loop on CPU), torch ``foreach=True``
and torch ``fused=True`` (SGD, Adam, AdamW, Adagrad). The variants run interleaved in one process, in a new random
order every round, so machine noise hits them alike; the median and inter-quartile range of many steps are kept.
Fresh subprocesses measure the first step (set-up / compile) cold and warm, and the memory a step allocates.

Run ``python benchmarks/bench_step.py --help``; see ``benchmarks/README.md`` for what every number means.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import gc
import importlib
import json
import math
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from param_sets import PARAM_SETS, ParamSet, get_param_set

SCHEMA = "optimlab.bench_step/1"
HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CHILD_MARKER = "BENCH_STEP_CHILD_RESULT "

# ---------------------------------------------------------------------------------------------------------------
# What each algorithm must move per step


@dataclass(frozen=True)
class Algo:
    """An elementwise algorithm as benchmarked: its hyperparameters and the tensors one step must stream.

    ``reads`` and ``writes`` name whole tensors of the parameter's size; scalars (step counts, ASGD's eta and mu,
    NAdam's mu_product) are not counted. A tensor that is read and written counts twice: once in, once out.
    """

    name: str
    kwargs: dict[str, Any]
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    why: str
    # steps before the update reaches its steady form (RAdam's rectification starts at step 6 with beta2=0.999)
    min_warmup: int = 1

    def bytes_per_param(self, element_size: int = 4) -> int:
        return element_size * (len(self.reads) + len(self.writes))

    @property
    def state_tensors(self) -> tuple[str, ...]:
        """Parameter-sized state tensors the optimizer keeps (its minimum persistent memory)."""
        return tuple(sorted(set(self.reads + self.writes) - {"param", "grad"}))


_PGM = ("param", "grad")
ALGOS: tuple[Algo, ...] = (
    Algo(
        "SGD",
        {"lr": 1e-3, "momentum": 0.9},
        (*_PGM, "momentum_buffer"),
        ("param", "momentum_buffer"),
        "buf = momentum*buf + g; p -= lr*buf",
    ),
    Algo(
        "Adam",
        {"lr": 1e-3},
        (*_PGM, "exp_avg", "exp_avg_sq"),
        ("param", "exp_avg", "exp_avg_sq"),
        "both moments updated in place, p updated from them",
    ),
    Algo(
        "AdamW",
        {"lr": 1e-3},
        (*_PGM, "exp_avg", "exp_avg_sq"),
        ("param", "exp_avg", "exp_avg_sq"),
        "as Adam; the decoupled decay only rescales p, which is streamed anyway",
    ),
    Algo(
        "Adamax",
        {},
        (*_PGM, "exp_avg", "exp_inf"),
        ("param", "exp_avg", "exp_inf"),
        "first moment and infinity norm updated in place",
    ),
    Algo(
        "NAdam",
        {},
        (*_PGM, "exp_avg", "exp_avg_sq"),
        ("param", "exp_avg", "exp_avg_sq"),
        "as Adam; mu_product is a scalar",
    ),
    Algo(
        "RAdam",
        {},
        (*_PGM, "exp_avg", "exp_avg_sq"),
        ("param", "exp_avg", "exp_avg_sq"),
        "as Adam (timed after warm-up, in the rectified regime)",
        min_warmup=6,
    ),
    Algo("Adagrad", {}, (*_PGM, "sum"), ("param", "sum"), "sum += g*g; p -= lr*g/(sqrt(sum)+eps)"),
    Algo(
        "Adadelta",
        {},
        (*_PGM, "square_avg", "acc_delta"),
        ("param", "square_avg", "acc_delta"),
        "two running averages updated in place",
    ),
    Algo(
        "RMSprop",
        {},
        (*_PGM, "square_avg"),
        ("param", "square_avg"),
        "square_avg updated in place (momentum=0, centered=False: no other buffers)",
    ),
    Algo(
        "Rprop",
        {},
        (*_PGM, "prev", "step_size"),
        ("param", "prev", "step_size"),
        "sign(g*prev) needs prev; step sizes updated in place; prev overwritten with g",
    ),
    Algo(
        "ASGD",
        {},
        _PGM,
        ("param", "ax"),
        "while step < t0 (default 1e6) mu == 1 and ax is overwritten with p, never read",
    ),
)
ALGO_BY_NAME = {a.name.lower(): a for a in ALGOS}

# variant -> (library, extra constructor keywords)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "optimlab": ("optimlab", {}),
    "optimlab_fused": ("optimlab", {"fused": True}),
    "torch": ("torch", {}),
    "torch_foreach": ("torch", {"foreach": True}),
    "torch_fused": ("torch", {"fused": True}),
}

# default timed rounds per set (full run, then --quick); a round is one step of every variant
DEFAULT_STEPS = {"gpt2": 15, "resnet50": 40, "many_small": 200, "tiny": 5}
QUICK_STEPS = {"gpt2": 3, "resnet50": 5, "many_small": 30, "tiny": 3}


class Unavailable(Exception):
    """The variant does not exist (yet): reported as "n/a", not as an error."""


def resolve_class(library: str, algo: Algo) -> type:
    """``optimlab.<name>`` or ``torch.optim.<name>``; ``Unavailable`` if it cannot be imported."""
    if library == "torch":
        return getattr(torch.optim, algo.name)
    try:
        import optimlab

        return getattr(optimlab, algo.name)
    except (ImportError, AttributeError) as exc:
        raise Unavailable(f"optimlab.{algo.name} is not importable: {type(exc).__name__}: {exc}") from exc


def make_optimizer(variant: str, algo: Algo, params: list[torch.Tensor]) -> torch.optim.Optimizer:
    """Construct one variant; ``Unavailable`` where the library rejects the keyword (TypeError)."""
    library, extra = VARIANTS[variant]
    cls = resolve_class(library, algo)
    try:
        return cls(params, **algo.kwargs, **extra)
    except TypeError as exc:
        if extra:
            raise Unavailable(
                f"{library}.{algo.name}({', '.join(f'{k}={v}' for k, v in extra.items())}) raises TypeError: {exc}"
            ) from exc
        raise


# ---------------------------------------------------------------------------------------------------------------
# Small measuring tools


def summarize(times: Sequence[float]) -> dict[str, Any]:
    """Median, quartiles, IQR, min, mean of a list of durations (seconds)."""
    xs = sorted(times)
    if len(xs) >= 2:
        q1, _, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    else:
        q1 = q3 = xs[0]
    return {
        "median_s": statistics.median(xs),
        "q1_s": q1,
        "q3_s": q3,
        "iqr_s": q3 - q1,
        "min_s": xs[0],
        "mean_s": statistics.fmean(xs),
        "n": len(xs),
    }


@contextlib.contextmanager
def gc_paused() -> Any:
    """Keep the cyclic garbage collector out of timed regions (as ``timeit`` does)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def attach_grads(params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor]) -> None:
    # Re-attached before every step: the optimizer sees gradients as a default training loop leaves them
    # (tensors it does not own), whatever it did to ``p.grad`` during the previous step.
    for p, g in zip(params, grads):
        p.grad = g


def checksum(tensors: Sequence[torch.Tensor]) -> float:
    return float(sum(t.sum(dtype=torch.float64).item() for t in tensors))


def _proc_status() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(rest.split()[0]) * 1024
    return out


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # Linux >= 4.0: reset VmHWM to the current RSS
        return True
    except OSError:
        return False


class OtherCpu:
    """How much CPU other processes used between construction and ``measure()`` (0 = the machine was ours).

    From ``/proc/stat`` (all CPUs' busy time) minus this process's own CPU time and its reaped children's, as a
    fraction of the machine's capacity over the wall time; hypervisor steal time is reported apart. The load
    average cannot tell this: it counts the benchmark's own threads too.
    """

    def __init__(self) -> None:
        self.start = self._read()

    @staticmethod
    def _read() -> tuple[float, float, float, float] | None:
        try:
            with open("/proc/stat") as f:
                fields = [int(x) for x in f.readline().split()[1:9]]
            hz = os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError):
            return None
        user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
        t = os.times()
        own = t.user + t.system + t.children_user + t.children_system
        return (user + nice + system + irq + softirq) / hz, steal / hz, own, time.monotonic()

    def measure(self) -> dict[str, float] | None:
        end = self._read()
        if end is None or self.start is None:
            return None
        capacity = (end[3] - self.start[3]) * (os.cpu_count() or 1)
        if capacity <= 0:
            return None
        other = (end[0] - self.start[0]) - (end[2] - self.start[2])
        return {
            "other_cpu_fraction": max(0.0, other / capacity),
            "steal_fraction": max(0.0, (end[1] - self.start[1]) / capacity),
        }


def mem_available_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


# ---------------------------------------------------------------------------------------------------------------
# The bandwidth floor

# name -> (kernel, bytes counted per element, in place?). In-place kernels model an optimizer step exactly: every
# tensor written was read first, so counted bytes == bus traffic. Out-of-place kernels are reported for
# reference only: their destination is read before being written (write-allocate), which they do not count.
BANDWIDTH_KERNELS: dict[str, tuple[Callable[[torch.Tensor, torch.Tensor, torch.Tensor], Any], int, bool]] = {
    "add_ (a += b)": (lambda a, b, c: a.add_(b), 12, True),
    "addcmul_ (a += b*c)": (lambda a, b, c: a.addcmul_(b, c, value=1e-6), 16, True),
    "lerp_ (a += w*(b-a))": (lambda a, b, c: a.lerp_(b, 0.5), 12, True),
    "triad out= (a = b + s*c)": (lambda a, b, c: torch.add(b, c, alpha=0.5, out=a), 12, False),
    "copy_ (a = b)": (lambda a, b, c: a.copy_(b), 8, False),
}


class BandwidthKernels:
    """Bandwidth kernels (names from ``BANDWIDTH_KERNELS``) over three float32 buffers of ``buffer_mb`` MiB: calling
    it runs each kernel once, in a new random order, and returns the GB/s (1e9 bytes/s) each reached.  Kept for a
    whole timed phase, it is the floor measured beside every case (see ``time_case``)."""

    def __init__(self, buffer_mb: int, names: Sequence[str], rng: random.Random) -> None:
        self.names = list(names)
        self.n = buffer_mb * 2**20 // 4
        gen = torch.Generator().manual_seed(1)
        self.buffers = [torch.empty(self.n).uniform_(-1, 1, generator=gen) for _ in range(3)]
        self.rng = rng
        self()  # each kernel once, untimed: first-touch and code paths out of the way

    def __call__(self) -> dict[str, float]:
        out = {}
        self.rng.shuffle(self.names)
        for name in self.names:
            fn, bytes_per_element, _ = BANDWIDTH_KERNELS[name]
            t0 = time.perf_counter()
            fn(*self.buffers)
            out[name] = bytes_per_element * self.n / (time.perf_counter() - t0) / 1e9
        return out


IN_PLACE_KERNELS = [name for name, (_, _, in_place) in BANDWIDTH_KERNELS.items() if in_place]


def measure_bandwidth(buffer_mb: int, rounds: int, rng: random.Random) -> dict[str, Any]:
    """Streaming bandwidth of torch's own elementwise kernels on float32 buffers far larger than the caches.

    Runs every kernel once per round, in a new random order each round, with torch's current thread count, and
    returns, per kernel, the median and quartiles of GB/s (1e9 bytes/s); ``combine_bandwidth`` picks the floor.

    Args:
        buffer_mb: size of each of the three buffers in MiB.
        rounds: how many times each kernel runs.
        rng: source of the round order.
    """
    run = BandwidthKernels(buffer_mb, list(BANDWIDTH_KERNELS), rng)
    samples: dict[str, list[float]] = {k: [] for k in BANDWIDTH_KERNELS}
    with gc_paused():
        for _ in range(rounds):
            for name, gbps in run().items():
                samples[name].append(gbps)
    del run
    kernels = {}
    for name, xs in samples.items():
        q1, _, q3 = statistics.quantiles(xs, n=4, method="inclusive") if len(xs) >= 2 else (xs[0], 0, xs[0])
        kernels[name] = {
            "bytes_per_element": BANDWIDTH_KERNELS[name][1],
            "in_place": BANDWIDTH_KERNELS[name][2],
            "median_gbps": statistics.median(xs),
            "q1_gbps": q1,
            "q3_gbps": q3,
            "samples": len(xs),
        }
    return {"buffer_mb": buffer_mb, "rounds": rounds, "threads": torch.get_num_threads(), "kernels": kernels}


def combine_bandwidth(measurements: list[dict[str, Any]]) -> dict[str, Any]:
    """Pool several bandwidth measurements (before and after the timings) into the floor bandwidth.

    Per kernel, the median of the measurements' medians; the floor bandwidth is the highest of these among the
    in-place kernels: the most favourable honest figure, so that the floor is a lower bound on step time.
    """
    per_kernel: dict[str, list[float]] = {}
    for m in measurements:
        for name, k in m["kernels"].items():
            per_kernel.setdefault(name, []).append(k["median_gbps"])
    in_place = {n: statistics.median(v) for n, v in per_kernel.items() if BANDWIDTH_KERNELS[n][2]}
    best = max(in_place, key=in_place.__getitem__)
    return {
        "method": (
            "median GB/s of torch's in-place elementwise kernels over 3 float32 buffers of buffer_mb each "
            "(far larger than the last-level cache), interleaved in random order, torch's thread count; floor "
            "bandwidth = the highest in-place median (out-of-place kernels are shown for reference: their "
            "destination is read before it is written, so their counted bytes understate the traffic)"
        ),
        "floor_gbps": in_place[best],
        "floor_kernel": best,
        "measurements": measurements,
    }


def _wait_for_optimlab_compiles() -> None:
    """Block until optimlab's fused engine has finished compiling in the background (no-op without it)."""
    module = sys.modules.get("optimlab.engines.compiled")
    if module is not None and hasattr(module, "wait_for_compiles"):
        module.wait_for_compiles()


# ---------------------------------------------------------------------------------------------------------------
# Steady-state step time, interleaved


@dataclass
class _Running:
    variant: str
    params: list[torch.Tensor]
    opt: Any = None
    times: list[float] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    status: str = "ok"
    note: str = ""
    base_lrs: list[float] = field(default_factory=list)  # each group's lr as constructed (--lr-schedule cosine)


def _record_warnings(caught: list[warnings.WarningMessage], into: list[str]) -> None:
    for w in caught:
        msg = f"{w.category.__name__}: {w.message}"
        if msg not in into:
            into.append(msg)


def time_case(
    pset: ParamSet,
    base: list[torch.Tensor],
    grad_sets: list[list[torch.Tensor]],
    algo: Algo,
    variants: Sequence[str],
    steps: int,
    warmup: int,
    rng: random.Random,
    log: Callable[[str], None],
    floor: Callable[[], dict[str, float]] | None = None,
    lr_schedule: str = "constant",
) -> list[dict[str, Any]]:
    """Time ``step()`` of every variant of one algorithm on one parameter set, interleaved.

    ``lr_schedule="cosine"``: before each round's steps (untimed), every variant's groups get a new ``lr``, the
    algorithm's own times a cosine decay over the rounds: what a scheduler stepped every iteration does (the
    group changes every step, so optimlab's fused engine cannot reuse the scalars it planned ahead).

    Every variant owns a copy of ``base`` as its parameters; all share the (read-only) gradients, which alternate
    between ``grad_sets`` from step to step so nothing can be cached across steps.  ``floor`` (GB/s of one run of
    each floor kernel) runs once per round too, at a random place among the variants: the floor this case's
    ratios are taken against is measured in the same minutes as its steps (a shared machine's memory bandwidth
    drifts by 20% or more over a long run); it is the highest of the kernels' median GB/s.
    """
    running: list[_Running] = []
    results: list[dict[str, Any]] = []

    def fail(r: _Running, status: str, note: str) -> None:
        r.status, r.note, r.opt, r.params = status, note, None, []
        log(f"    {r.variant}: {status}: {note}")

    for variant in variants:
        r = _Running(variant, [torch.nn.Parameter(t.clone()) for t in base])
        running.append(r)
        attach_grads(r.params, grad_sets[0])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                r.opt = make_optimizer(variant, algo, r.params)
                r.opt.step()  # first warm-up step, alone, so its warnings are attributed to this variant
                _wait_for_optimlab_compiles()  # steady state: time the compiled kernels, not the eager stand-in
            except Unavailable as exc:
                fail(r, "n/a", str(exc))
            except Exception as exc:
                fail(r, "error", f"{type(exc).__name__}: {exc}")
        _record_warnings(caught, r.warnings)
    active = [r for r in running if r.status == "ok"]
    n_warm = max(warmup, algo.min_warmup)
    order: list[_Running | None] = [*active, *([None] if floor is not None else [])]  # None: the floor kernel
    floor_gbps: dict[str, list[float]] = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for rnd in range(1, n_warm + steps):
            timed = rnd >= n_warm
            grads = grad_sets[rnd % len(grad_sets)]
            rng.shuffle(order)
            with gc_paused():
                for r in order:
                    if r is None:
                        assert floor is not None
                        gbps = floor()
                        if timed:
                            for name, value in gbps.items():
                                floor_gbps.setdefault(name, []).append(value)
                        continue
                    if r.status != "ok":
                        continue
                    attach_grads(r.params, grads)
                    if lr_schedule == "cosine":
                        if not r.base_lrs:
                            r.base_lrs = [group["lr"] for group in r.opt.param_groups]
                        factor = 0.55 + 0.45 * math.cos(math.pi * rnd / (n_warm + steps))
                        for group, lr in zip(r.opt.param_groups, r.base_lrs):
                            group["lr"] = lr * factor
                    try:
                        t0 = time.perf_counter()
                        r.opt.step()
                        dt = time.perf_counter() - t0
                    except Exception as exc:
                        fail(r, "error", f"step {rnd + 1}: {type(exc).__name__}: {exc}")
                        continue
                    if timed:
                        r.times.append(dt)
            gc.collect()
    for r in active:
        _record_warnings(caught, r.warnings)
    beside: dict[str, Any] = {}
    if floor_gbps:
        medians = {name: statistics.median(xs) for name, xs in floor_gbps.items()}
        best = max(medians, key=medians.__getitem__)
        beside = {
            "floor_beside_gbps": medians[best],
            "floor_beside_kernel": best,
            "floor_beside_samples": len(floor_gbps[best]),
        }
    for r in running:
        entry: dict[str, Any] = {"set": pset.name, "algo": algo.name, "variant": r.variant, "status": r.status}
        entry.update(beside)
        if r.note:
            entry["note"] = r.note
        if r.warnings:
            entry["warnings"] = r.warnings
        if r.status == "ok":
            entry.update(summarize(r.times))
            entry["params_finite"] = all(bool(torch.isfinite(p).all()) for p in r.params)
        results.append(entry)
    running.clear()
    order.clear()
    active.clear()
    gc.collect()
    return results


# ---------------------------------------------------------------------------------------------------------------
# First step (cold / warm) and memory, in a fresh subprocess


def child_main(spec: dict[str, Any]) -> dict[str, Any]:
    """Run in a fresh process: first step cold, peak memory of a steady step, first step warm, persistent memory.

    1. construct + first step of a first optimizer (cold: nothing of optimlab imported or compiled yet);
    2. after warm-up, one step under ``torch.profiler`` with ``profile_memory``: the allocator reports every CPU
       tensor allocation and free, whose running sum peaks at the step's transient allocation;
    3. one step with the kernel's RSS high-water mark reset (``/proc/self/clear_refs``): the OS view, which also
       sees non-tensor memory (the parent sets ``MALLOC_MMAP_THRESHOLD_`` so that freed large blocks go back to
       the OS and each step's allocations show up again);
    4. the first optimizer is dropped, a second one built on fresh parameters of the same shapes: construct +
       first step again (warm: imports and in-process compile caches are hot), and its RSS growth (persistent
       memory: state plus anything else it keeps).
    """
    torch.set_num_threads(spec["threads"])
    algo = ALGO_BY_NAME[spec["algo"].lower()]
    pset = get_param_set(spec["set"])
    variant = spec["variant"]
    out: dict[str, Any] = {"status": "ok"}
    param_bytes = pset.numel * 4
    t0 = time.perf_counter()
    try:
        resolve_class(VARIANTS[variant][0], algo)
    except Unavailable as exc:
        return {"status": "n/a", "note": str(exc)}
    out["import_s"] = time.perf_counter() - t0
    # Constructing any torch.optim.Optimizer (optimlab's included) imports torch._dynamo, 1-3 s: timed apart so
    # the set-up numbers show what differs between variants; setup_cold_total_s adds it back.
    t0 = time.perf_counter()
    importlib.import_module("torch._dynamo")

    out["import_dynamo_s"] = time.perf_counter() - t0

    values, grads = pset.build(seed=0)
    params = [torch.nn.Parameter(v) for v in values]
    del values
    attach_grads(params, grads)
    gc.collect()
    rss_before = _proc_status()["VmRSS"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            t0 = time.perf_counter()
            opt = make_optimizer(variant, algo, params)
            t1 = time.perf_counter()
            opt.step()
            t2 = time.perf_counter()
        except Unavailable as exc:
            return {"status": "n/a", "note": str(exc)}
    out["warnings"] = []
    _record_warnings(caught, out["warnings"])
    out.update(
        construct_cold_s=t1 - t0,
        first_step_cold_s=t2 - t1,
        setup_cold_s=t2 - t0,
        setup_cold_total_s=out["import_s"] + out["import_dynamo_s"] + t2 - t0,
    )
    # optimlab's fused engine compiles in the background while the first steps run eagerly: how long until the
    # compiled kernels serve the steps (0 when nothing was compiling).
    t0 = time.perf_counter()
    _wait_for_optimlab_compiles()
    out["compiled_ready_after_first_step_s"] = time.perf_counter() - t0
    gc.collect()
    out["rss_growth_cold_bytes"] = _proc_status()["VmRSS"] - rss_before

    if spec.get("memory", True):
        for _ in range(max(1, algo.min_warmup)):
            attach_grads(params, grads)
            opt.step()
        attach_grads(params, grads)
        try:
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
                opt.step()
            events = prof.profiler.kineto_results.events()
            mem = sorted(((e.start_ns(), e.nbytes()) for e in events if e.name() == "[memory]"), key=lambda x: x[0])
            running = peak = 0
            for _, nb in mem:
                running += nb
                peak = max(peak, running)
            out["peak_alloc_bytes"] = peak
            out["net_alloc_bytes"] = running
            out["alloc_events"] = len(mem)
        except Exception as exc:  # a private profiler API: say so rather than fail the whole run
            out["peak_alloc_bytes"] = None
            out["peak_alloc_note"] = f"{type(exc).__name__}: {exc}"
        attach_grads(params, grads)
        gc.collect()
        if _reset_peak_rss():
            before = _proc_status()["VmRSS"]
            t0 = time.perf_counter()
            opt.step()
            out["steady_step_s"] = time.perf_counter() - t0
            out["peak_rss_bytes"] = _proc_status()["VmHWM"] - before
        else:
            out["peak_rss_bytes"] = None
            out["peak_rss_note"] = "/proc/self/clear_refs not writable"

    del opt
    params.clear()
    gc.collect()
    values, _ = pset.build(seed=1)
    params = [torch.nn.Parameter(v) for v in values]
    del values
    attach_grads(params, grads)
    gc.collect()
    rss_before = _proc_status()["VmRSS"]
    t0 = time.perf_counter()
    opt = make_optimizer(variant, algo, params)
    t1 = time.perf_counter()
    opt.step()
    t2 = time.perf_counter()
    _wait_for_optimlab_compiles()
    out.update(construct_warm_s=t1 - t0, first_step_warm_s=t2 - t1, setup_warm_s=t2 - t0)
    gc.collect()
    out["persistent_rss_bytes"] = _proc_status()["VmRSS"] - rss_before
    storages = {}
    for st in opt.state.values():
        for v in st.values():
            if isinstance(v, torch.Tensor):
                s = v.untyped_storage()
                storages[s.data_ptr()] = s.nbytes()
    out["state_tensor_bytes"] = sum(storages.values())
    out["expected_state_bytes"] = len(algo.state_tensors) * param_bytes
    out["param_bytes"] = param_bytes
    return out


def run_child(spec: dict[str, Any], cache_dir: str, timeout: float) -> dict[str, Any]:
    """Run ``child_main(spec)`` in a fresh interpreter with the given inductor cache directory."""
    env = dict(os.environ)
    env["TORCHINDUCTOR_CACHE_DIR"] = cache_dir
    # A fixed threshold turns off glibc's adaptive one: every block >= 128 KiB is its own mmap, returned on free.
    env["MALLOC_MMAP_THRESHOLD_"] = "131072"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=str(HERE))
    except subprocess.TimeoutExpired:
        return {"status": "error", "note": f"child timed out after {timeout:.0f} s"}
    wall = time.perf_counter() - t0
    for line in proc.stdout.splitlines():
        if line.startswith(CHILD_MARKER):
            result = json.loads(line[len(CHILD_MARKER) :])
            result["process_wall_s"] = wall
            return result
    tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
    return {"status": "error", "note": f"child exited {proc.returncode}: {tail}"}


def first_step_cases(
    sets: Sequence[str],
    algos: Sequence[Algo],
    variants: Sequence[str],
    threads: int,
    memory: bool,
    log: Callable[[str], None],
    timeout: float,
) -> list[dict[str, Any]]:
    out = []
    for set_name in sets:
        for algo in algos:
            for variant in variants:
                try:  # no fresh process just to learn that a keyword is rejected
                    make_optimizer(variant, algo, [torch.nn.Parameter(torch.zeros(1))])
                except Unavailable as exc:
                    out.append(
                        {"set": set_name, "algo": algo.name, "variant": variant, "status": "n/a", "note": str(exc)}
                    )
                    continue
                except Exception:
                    pass  # the child reports it, with its traceback
                cache = tempfile.mkdtemp(prefix="bench_step_inductor_")
                try:
                    spec = {
                        "set": set_name,
                        "algo": algo.name,
                        "variant": variant,
                        "threads": threads,
                        "memory": memory,
                    }
                    res = run_child(spec, cache, timeout)
                    if res.get("status") == "ok" and variant == "optimlab_fused":
                        # a new process that finds the on-disk compile cache filled (a script's second run)
                        again = run_child({**spec, "memory": False}, cache, timeout)
                        if again.get("status") == "ok":
                            res["setup_cold_process_warm_disk_cache_s"] = again["setup_cold_s"]
                finally:
                    shutil.rmtree(cache, ignore_errors=True)
                res.update({"set": set_name, "algo": algo.name, "variant": variant})
                log(
                    f"  first step {set_name}/{algo.name}/{variant}: {res.get('status')}"
                    + (
                        f" cold {res['setup_cold_s']:.2f} s, warm {res['setup_warm_s']:.3f} s"
                        if res.get("status") == "ok"
                        else f" ({res.get('note', '')[:200]})"
                    )
                )
                out.append(res)
    return out


# ---------------------------------------------------------------------------------------------------------------
# Machine description


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "logical_cpus": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
    }
    with contextlib.suppress(Exception):
        info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    try:
        cores, model, flags = set(), None, ""
        phys = core = None
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, val = (s.strip() for s in line.partition(":"))
                if key == "model name" and model is None:
                    model = val
                elif key == "physical id":
                    phys = val
                elif key == "core id":
                    core = val
                    cores.add((phys, core))
                elif key == "flags" and not flags:
                    flags = val
        info["cpu_model"] = model
        info["physical_cores"] = len(cores) or None
        info["hypervisor"] = "hypervisor" in flags.split()
    except OSError:
        info["cpu_model"] = platform.processor() or None
    caches = {}
    for idx in range(8):
        d = Path(f"/sys/devices/system/cpu/cpu0/cache/index{idx}")
        with contextlib.suppress(OSError):
            caches[f"L{(d / 'level').read_text().strip()}{(d / 'type').read_text().strip()[0].lower()}"] = (
                (d / "size").read_text().strip()
            )
    info["caches"] = caches
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo") as f:
        info["mem_total_bytes"] = int(f.readline().split()[1]) * 1024
    try:
        import optimlab

        info["optimlab"] = getattr(optimlab, "__version__", None)
    except ImportError:
        info["optimlab"] = None
    with contextlib.suppress(Exception):
        commit = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if commit.returncode == 0:
            info["git_commit"] = commit.stdout.strip()
            info["git_dirty"] = bool(dirty.stdout.strip())
    return info


# ---------------------------------------------------------------------------------------------------------------
# Derived numbers: ratios, comparisons, targets


def derive(doc: dict[str, Any]) -> None:
    """Fill floors, ratios to the floor, optimlab-vs-torch comparisons and the issue's targets into ``doc``.

    A case's floor is its bytes over the floor bandwidth measured beside it, in its own rounds, where there is one
    (``floor_beside_gbps``); else over the run's (measured before and after the timings).  Both ratios are kept.
    """
    floor_bw = doc["bandwidth"]["floor_gbps"] * 1e9
    sizes = doc["param_sets"]
    by_key: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for c in doc["cases"]:
        nbytes = doc["bytes_per_param"][c["algo"]]["bytes"] * sizes[c["set"]]["params"]
        c["floor_run_s"] = nbytes / floor_bw
        c["floor_s"] = nbytes / (c["floor_beside_gbps"] * 1e9) if c.get("floor_beside_gbps") else c["floor_run_s"]
        if c["status"] == "ok":
            c["ratio_to_floor"] = c["median_s"] / c["floor_s"]
            c["ratio_to_run_floor"] = c["median_s"] / c["floor_run_s"]
        by_key.setdefault((c["set"], c["algo"]), {})[c["variant"]] = c

    def med(row: dict[str, dict[str, Any]], v: str) -> float | None:
        c = row.get(v)
        return c["median_s"] if c and c["status"] == "ok" else None

    comparisons = []
    for (set_name, algo), row in by_key.items():
        comp: dict[str, Any] = {"set": set_name, "algo": algo}
        torch_meds = {v: med(row, v) for v in ("torch", "torch_foreach", "torch_fused")}
        present = {v: m for v, m in torch_meds.items() if m is not None}
        if present:
            comp["best_torch"] = min(present, key=present.__getitem__)
        for ours in ("optimlab_fused", "optimlab"):
            mine = med(row, ours)
            if mine is None:
                continue
            for theirs, m in [*torch_meds.items(), ("optimlab", med(row, "optimlab"))]:
                if m is not None and theirs != ours:
                    comp[f"speedup_{ours}_vs_{theirs}"] = m / mine
            if present:
                comp[f"speedup_{ours}_vs_best_torch"] = min(present.values()) / mine
        comparisons.append(comp)
    doc["comparisons"] = comparisons
    doc["targets"] = evaluate_targets(doc, by_key)


def evaluate_targets(doc: dict[str, Any], by_key: dict[tuple[str, str], dict[str, dict[str, Any]]]) -> list[dict]:
    """The issue's targets, checked against this run's numbers (a summary for the reader, not a test)."""
    targets = []
    for (set_name, algo), row in sorted(by_key.items()):
        fused = row.get("optimlab_fused")
        if fused is None or fused.get("status") != "ok":
            continue
        if set_name in ("gpt2", "resnet50"):
            targets.append(
                {
                    "target": "fused within 1.5x of the floor",
                    "set": set_name,
                    "algo": algo,
                    "value": fused["ratio_to_floor"],
                    "pass": fused["ratio_to_floor"] <= 1.5,
                }
            )
            tf = row.get("torch_fused")
            if tf and tf.get("status") == "ok":
                targets.append(
                    {
                        "target": "fused no slower than torch fused",
                        "set": set_name,
                        "algo": algo,
                        "value": fused["median_s"] / tf["median_s"],
                        "pass": fused["median_s"] <= tf["median_s"],
                    }
                )
        if set_name == "many_small" and algo == "AdamW":
            tf = row.get("torch_fused")
            if tf and tf.get("status") == "ok":
                speedup = tf["median_s"] / fused["median_s"]
                targets.append(
                    {
                        "target": "fused AdamW >= 10x faster than torch fused AdamW",
                        "set": set_name,
                        "algo": algo,
                        "value": speedup,
                        "pass": speedup >= 10,
                    }
                )
    fs = {(f["set"], f["algo"], f["variant"]): f for f in doc.get("first_step", [])}
    for (set_name, algo, variant), f in sorted(fs.items()):
        if variant != "optimlab_fused" or f.get("status") != "ok":
            continue
        if set_name not in PARAM_SETS:
            continue
        targets.append(
            {
                "target": "fused first step under 5 s cold (incl. optimlab + torch._dynamo imports)",
                "set": set_name,
                "algo": algo,
                "value": f["setup_cold_total_s"],
                "pass": f["setup_cold_total_s"] < 5.0,
            }
        )
        ref = fs.get((set_name, algo, "torch_fused"))
        if f.get("peak_alloc_bytes") is not None:
            ref_extra = 0
            if ref and ref.get("status") == "ok" and ref.get("peak_alloc_bytes") is not None:
                ref_extra = ref["peak_alloc_bytes"] + max(0, ref["persistent_rss_bytes"] - ref["expected_state_bytes"])
            extra = f["peak_alloc_bytes"] + max(0, f["persistent_rss_bytes"] - f["expected_state_bytes"])
            # "no extra copy": what fused allocates beyond the required state exceeds torch fused's by less than
            # half a parameter copy
            targets.append(
                {
                    "target": "fused memory: no extra param/grad copy beyond torch fused",
                    "set": set_name,
                    "algo": algo,
                    "value": (extra - ref_extra) / f["param_bytes"],
                    "pass": extra - ref_extra < 0.5 * f["param_bytes"],
                }
            )
    return targets


# ---------------------------------------------------------------------------------------------------------------
# Schema check (used by the smoke test and by anyone reading old result files)

_TOP_KEYS = {
    "schema",
    "created",
    "command",
    "config",
    "machine",
    "bandwidth",
    "bytes_per_param",
    "param_sets",
    "cases",
    "first_step",
    "comparisons",
    "targets",
    "skipped",
    "notes",
}
_TIMING_KEYS = {"median_s", "q1_s", "q3_s", "iqr_s", "min_s", "mean_s", "n", "floor_s", "ratio_to_floor"}
_FIRST_STEP_KEYS = {
    "construct_cold_s",
    "first_step_cold_s",
    "setup_cold_s",
    "setup_cold_total_s",
    "construct_warm_s",
    "first_step_warm_s",
    "setup_warm_s",
    "persistent_rss_bytes",
    "state_tensor_bytes",
    "expected_state_bytes",
    "param_bytes",
}


def validate_result(doc: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming every way ``doc`` departs from the result schema."""
    problems = []
    missing = _TOP_KEYS - set(doc)
    if missing:
        problems.append(f"missing top-level keys {sorted(missing)}")
    if doc.get("schema") != SCHEMA:
        problems.append(f"schema is {doc.get('schema')!r}, expected {SCHEMA!r}")
    bw = doc.get("bandwidth", {})
    if not (isinstance(bw.get("floor_gbps"), float) and bw["floor_gbps"] > 0):
        problems.append("bandwidth.floor_gbps must be a positive float")
    for algo, b in doc.get("bytes_per_param", {}).items():
        if not (isinstance(b.get("bytes"), int) and b["bytes"] == 4 * (len(b["reads"]) + len(b["writes"]))):
            problems.append(f"bytes_per_param[{algo}] inconsistent with its reads/writes")
    for i, c in enumerate(doc.get("cases", [])):
        where = f"cases[{i}] ({c.get('set')}/{c.get('algo')}/{c.get('variant')})"
        if c.get("variant") not in VARIANTS or c.get("set") not in doc.get("param_sets", {}):
            problems.append(f"{where}: unknown variant or set")
        if c.get("status") == "ok":
            lacking = _TIMING_KEYS - set(c)
            if lacking:
                problems.append(f"{where}: missing {sorted(lacking)}")
            elif not (0 < c["q1_s"] <= c["median_s"] <= c["q3_s"] and c["n"] >= 1 and c["floor_s"] > 0):
                problems.append(f"{where}: timing statistics out of order")
        elif c.get("status") in ("n/a", "error"):
            if not c.get("note"):
                problems.append(f"{where}: status {c['status']} without a note")
        else:
            problems.append(f"{where}: unknown status {c.get('status')!r}")
    for i, f in enumerate(doc.get("first_step", [])):
        if f.get("status") == "ok":
            lacking = _FIRST_STEP_KEYS - set(f)
            if lacking:
                problems.append(f"first_step[{i}]: missing {sorted(lacking)}")
        elif f.get("status") not in ("n/a", "error") or not f.get("note"):
            problems.append(f"first_step[{i}]: status {f.get('status')!r} without a note")
    if problems:
        raise ValueError("invalid bench_step result: " + "; ".join(problems))


# ---------------------------------------------------------------------------------------------------------------
# Printing

_SHORT = {
    "optimlab": "optimlab",
    "optimlab_fused": "optimlab fused",
    "torch": "torch",
    "torch_foreach": "torch foreach",
    "torch_fused": "torch fused",
}


def _ms(s: float) -> str:
    return f"{s * 1e3:.3g}" if s * 1e3 < 100 else f"{s * 1e3:.0f}"


def format_tables(doc: dict[str, Any]) -> str:
    """The human-readable report of a result document."""
    lines = []
    m = doc["machine"]
    bw = doc["bandwidth"]
    lines.append(
        f"{m.get('cpu_model')} | {m.get('physical_cores')} cores, torch {m['torch']} "
        f"with {m['torch_threads']} threads | load avg at start {doc['config'].get('loadavg_start')}"
        + (
            f" | other processes' CPU use during the run {100 * doc['config']['other_cpu_fraction']:.0f}%"
            if doc["config"].get("other_cpu_fraction") is not None
            else ""
        )
    )
    pooled = {
        name.split(" ")[0]: statistics.median([mm["kernels"][name]["median_gbps"] for mm in bw["measurements"]])
        for name in bw["measurements"][0]["kernels"]
    }
    lines.append(
        f"run's floor bandwidth {bw['floor_gbps']:.1f} GB/s ({bw['floor_kernel']}, before and after the timings); "
        "all kernels, GB/s: " + ", ".join(f"{k} {v:.1f}" for k, v in pooled.items())
    )
    beside = doc["config"].get("floor_beside")
    if beside:
        lines.append(
            "each case's floor: its bytes over the highest median GB/s of the in-place kernels on "
            f"{beside['buffer_mb']} MiB buffers, run in the same rounds as its steps (column GB/s)"
        )
    variants = doc["config"]["variants"]
    cases = {(c["set"], c["algo"], c["variant"]): c for c in doc["cases"]}
    comps = {(c["set"], c["algo"]): c for c in doc["comparisons"]}
    for set_name in doc["config"]["sets"]:
        ps = doc["param_sets"][set_name]
        lines.append("")
        lines.append(
            f"== {set_name}: {ps['tensors']} tensors, {ps['params'] / 1e6:.2f}M params == "
            "median step ms (x floor), IQR as % of median"
        )
        head = f"{'algo':9} {'B/p':>3} {'GB/s':>5} {'floor':>7} |" + "".join(f" {_SHORT[v]:>22}" for v in variants)
        head += " | fused speedup vs: torch fused / foreach / best torch | others' CPU"
        lines.append(head)
        for algo in doc["config"]["algos"]:
            if (set_name, algo, variants[0]) not in cases and not any((set_name, algo, v) in cases for v in variants):
                continue
            any_case = next(cases[(set_name, algo, v)] for v in variants if (set_name, algo, v) in cases)
            gbps = any_case.get("floor_beside_gbps")
            gbps_cell = f"{gbps:.1f}" if gbps else "-"
            row = f"{algo:9} {doc['bytes_per_param'][algo]['bytes']:>3} {gbps_cell:>5} {_ms(any_case['floor_s']):>7} |"
            for v in variants:
                c = cases.get((set_name, algo, v))
                if c is None:
                    cell = "-"
                elif c["status"] != "ok":
                    cell = c["status"]
                else:
                    cell = f"{_ms(c['median_s'])} ({c['ratio_to_floor']:.2f}x) {100 * c['iqr_s'] / c['median_s']:.0f}%"
                row += f" {cell:>22}"
            comp = comps.get((set_name, algo), {})
            sp = [comp.get(f"speedup_optimlab_fused_vs_{k}") for k in ("torch_fused", "torch_foreach", "best_torch")]
            row += " | " + " / ".join(f"{x:.2f}x" if x is not None else "-" for x in sp)
            if any_case.get("other_cpu_fraction") is not None:
                row += f" | {100 * any_case['other_cpu_fraction']:.0f}%"
            lines.append(row)
    if doc.get("first_step"):
        lines.append("")
        lines.append("== first step (construct + step, s) and memory (x param bytes) ==")
        lines.append(
            "cold: fresh process, empty compile cache (total: + optimlab and torch._dynamo imports); "
            "cold,disk: fresh process, filled cache; warm: 2nd optimizer in the process"
        )
        lines.append(
            f"{'set':10} {'algo':9} {'variant':15} {'cold':>7} {'total':>7} {'warm':>7} {'cold,disk':>9} "
            f"{'peak alloc':>10} {'peak rss':>8} {'persist':>7} {'state':>5}"
        )
        for f in doc["first_step"]:
            head = f"{f['set']:10} {f['algo']:9} {f['variant']:15}"
            if f.get("status") != "ok":
                lines.append(f"{head} {f.get('status')}: {f.get('note', '')[:80]}")
                continue
            pb = f["param_bytes"]

            def x(v: Any, pb: int = pb) -> str:
                return f"{v / pb:.2f}" if isinstance(v, (int, float)) else "-"

            disk = f.get("setup_cold_process_warm_disk_cache_s")
            lines.append(
                f"{head} {f['setup_cold_s']:7.3f} {f['setup_cold_total_s']:7.3f} {f['setup_warm_s']:7.3f} "
                f"{(f'{disk:.3f}' if disk is not None else '-'):>9} {x(f.get('peak_alloc_bytes')):>10} "
                f"{x(f.get('peak_rss_bytes')):>8} {x(f['persistent_rss_bytes']):>7} "
                f"{x(f['expected_state_bytes']):>5}"
            )
    if doc.get("targets"):
        lines.append("")
        lines.append("== targets (issue 5) ==")
        for t in doc["targets"]:
            lines.append(
                f"{'PASS' if t['pass'] else 'FAIL'}  {t['set']:10} {t['algo']:9} {t['target']}: {t['value']:.3g}"
            )
    for note in doc.get("notes", []):
        lines.append(f"note: {note}")
    for what, why in doc.get("skipped", {}).items():
        lines.append(f"skipped {what}: {why}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# Command line


_ENV_PREFIXES = ("OPTIMLAB_", "TORCH", "OMP_", "MKL_", "KMP_", "GOMP_", "MALLOC_", "PYTORCH_")


def _parse_list(value: str, known: Sequence[str], what: str) -> list[str]:
    if value == "all":
        return list(known)
    lower = {k.lower(): k for k in known}
    items = [s.strip() for s in value.split(",") if s.strip()]
    bad = [s for s in items if s.lower() not in lower]
    if bad or not items:
        names = ", ".join(map(repr, bad)) if bad else repr(value)
        raise SystemExit(f"bench_step: unknown {what} {names}; choose from {', '.join(known)}")
    return [lower[s.lower()] for s in items]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--sets",
        default=None,
        help="comma-separated parameter sets: gpt2,resnet50,many_small (tiny: smoke tests). "
        "Default: all three; with --quick: resnet50,many_small",
    )
    p.add_argument("--algos", default="all", help="comma-separated algorithms or 'all'")
    p.add_argument("--variants", default="all", help=f"comma-separated, or 'all': {', '.join(VARIANTS)}")
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help=f"timed rounds per case (default per set: {DEFAULT_STEPS}; --quick: {QUICK_STEPS})",
    )
    p.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="untimed rounds first (default 3; --quick 1); RAdam always gets at least 6",
    )
    p.add_argument(
        "--phases",
        default="steady,first_step,memory",
        help="steady: interleaved step times; first_step: cold/warm set-up in subprocesses; "
        "memory: peak/persistent memory (in the same subprocesses)",
    )
    p.add_argument(
        "--first-step-algos",
        default=None,
        help="algorithms for the subprocess phases (default: --algos; with --quick: AdamW)",
    )
    p.add_argument(
        "--first-step-sets",
        default=None,
        help="parameter sets for the subprocess phases (default: --sets; with --quick: resnet50)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a couple of minutes: fewer steps, smaller sets, "
        "bandwidth on smaller buffers, subprocess phases for AdamW only",
    )
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    p.add_argument(
        "--bandwidth-mb",
        type=int,
        default=None,
        help="size of each bandwidth buffer in MiB (default 512; --quick 256); must dwarf the last-level cache",
    )
    p.add_argument(
        "--lr-schedule",
        choices=("constant", "cosine"),
        default="constant",
        help="constant: every step at the algorithm's lr; cosine: each round sets every variant's lr to a new value "
        "(a per-step cosine decay, untimed, as a scheduler stepped every iteration does)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the round order")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/step-<time>.json)")
    p.add_argument("--show", default=None, metavar="JSON", help="print the tables of a saved result and exit")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark described by ``argv``; returns the result document (also written as JSON)."""
    args = build_parser().parse_args(argv)
    if args.child is not None:
        spec = json.loads(args.child)
        print(CHILD_MARKER + json.dumps(child_main(spec)), flush=True)
        return {}
    if args.show:
        doc = json.loads(Path(args.show).read_text())
        validate_result(doc)
        print(format_tables(doc))
        return doc

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f}s] {msg}", file=sys.stderr, flush=True)

    started = time.perf_counter()
    if args.threads is not None:
        if args.threads < 1:
            raise SystemExit("bench_step: --threads must be >= 1")
        torch.set_num_threads(args.threads)
    sets = (
        _parse_list(args.sets, ("gpt2", "resnet50", "many_small", "tiny"), "parameter set")
        if args.sets
        else (["resnet50", "many_small"] if args.quick else list(PARAM_SETS))
    )
    algo_names = _parse_list(args.algos, [a.name for a in ALGOS], "algorithm")
    variants = _parse_list(args.variants, list(VARIANTS), "variant")
    phases = _parse_list(args.phases, ("steady", "first_step", "memory"), "phase")
    fs_algo_names = (
        _parse_list(args.first_step_algos, [a.name for a in ALGOS], "algorithm")
        if (args.first_step_algos)
        else (["AdamW"] if args.quick and "AdamW" in algo_names else algo_names[:1] if args.quick else algo_names)
    )
    if args.first_step_sets:
        fs_sets = _parse_list(args.first_step_sets, ("gpt2", "resnet50", "many_small", "tiny"), "parameter set")
    else:
        fs_sets = (["resnet50"] if "resnet50" in sets else sets[:1]) if args.quick else list(sets)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)
    for name, v in (("--steps", args.steps), ("--warmup", args.warmup), ("--bandwidth-mb", args.bandwidth_mb)):
        if v is not None and v < (0 if name == "--warmup" else 1):
            raise SystemExit(f"bench_step: {name} must be positive, got {v}")
    bandwidth_mb = args.bandwidth_mb or (256 if args.quick else 512)
    rng = random.Random(args.seed)
    threads = torch.get_num_threads()

    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    run_meter = OtherCpu()
    notes: list[str] = []
    if load_start is not None and load_start > 0.25 * (os.cpu_count() or 1):
        notes.append(
            f"1-minute load average was {load_start:.2f} at start: the machine was busy, these timings "
            "are not publishable"
        )
    skipped: dict[str, str] = {}
    algos: list[Algo] = []
    for name in algo_names:
        algo = ALGO_BY_NAME[name.lower()]
        try:
            resolve_class("optimlab", algo)
            algos.append(algo)
        except Unavailable as exc:
            skipped[name] = str(exc)
            log(f"skipping {name}: {exc}")
    fs_algos = [a for a in algos if a.name in fs_algo_names]

    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "command": [Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])],
        "config": {
            "sets": sets,
            "algos": [a.name for a in algos],
            "variants": variants,
            "phases": phases,
            "first_step_algos": [a.name for a in fs_algos],
            "first_step_sets": fs_sets,
            "steps": {s: args.steps or (QUICK_STEPS if args.quick else DEFAULT_STEPS)[s] for s in sets},
            "warmup": warmup,
            "quick": args.quick,
            "threads": threads,
            "seed": args.seed,
            "lr_schedule": args.lr_schedule,
            "dtype": "float32",
            "device": "cpu",
            "loadavg_start": load_start,
            "algo_kwargs": {a.name: a.kwargs for a in algos},
            # settings that change what is measured (e.g. OPTIMLAB_COMPILE=0, OMP_NUM_THREADS)
            "env": {k: v for k, v in sorted(os.environ.items()) if k.startswith(_ENV_PREFIXES)},
        },
        "machine": machine_info(),
        "bytes_per_param": {
            a.name: {
                "reads": list(a.reads),
                "writes": list(a.writes),
                "bytes": a.bytes_per_param(),
                "state_tensors": list(a.state_tensors),
                "why": a.why,
            }
            for a in ALGOS
        },
        "param_sets": {},
        "cases": [],
        "first_step": [],
        "skipped": skipped,
        "notes": notes,
    }
    psets = {s: get_param_set(s) for s in dict.fromkeys([*sets, *fs_sets])}
    doc["param_sets"] = {
        s: {"tensors": p.num_tensors, "params": p.numel, "description": p.description} for s, p in psets.items()
    }

    bw_rounds = 7 if args.quick else 15
    log(f"bandwidth: 3 x {bandwidth_mb} MiB, {bw_rounds} rounds, {threads} threads")
    bw_measurements = [measure_bandwidth(bandwidth_mb, bw_rounds, rng)]

    if "steady" in phases:
        floor = BandwidthKernels(bandwidth_mb, IN_PLACE_KERNELS, rng)
        doc["config"]["floor_beside"] = {"kernels": sorted(IN_PLACE_KERNELS), "buffer_mb": bandwidth_mb}
        for set_name in sets:
            pset = psets[set_name]
            steps = args.steps or (QUICK_STEPS if args.quick else DEFAULT_STEPS)[set_name]
            base, grads_a = pset.build(seed=0)
            grads_b = pset.build(seed=1)[1]
            grad_sets = [grads_a, grads_b]
            sums = [checksum(g) for g in grad_sets]
            for algo in algos:
                need = pset.numel * 4 * (2 + 1 + len(variants) * (2 + len(algo.state_tensors)) + 3)
                avail = mem_available_bytes()
                if avail is not None and need > 0.85 * avail:
                    why = f"needs ~{need / 2**30:.1f} GiB, {avail / 2**30:.1f} GiB available"
                    skipped[f"{set_name}/{algo.name}"] = why
                    log(f"[{set_name}] {algo.name}: skipped, {why}")
                    continue
                log(
                    f"[{set_name}] {algo.name}: {len(variants)} variants, {max(warmup, algo.min_warmup)} warm-up + "
                    f"{steps} timed rounds"
                )
                meter = OtherCpu()
                new_cases = time_case(
                    pset, base, grad_sets, algo, variants, steps, warmup, rng, log, floor, args.lr_schedule
                )
                busy = meter.measure()
                for c in new_cases:
                    if busy is not None:
                        c.update(busy)
                doc["cases"] += new_cases
                if busy is not None and busy["other_cpu_fraction"] > 0.05:
                    log(f"    other processes used {100 * busy['other_cpu_fraction']:.0f}% of the CPUs meanwhile")
                if [checksum(g) for g in grad_sets] != sums:
                    notes.append(f"{set_name}/{algo.name}: an optimizer modified the gradients in place")
            del base, grad_sets, grads_a, grads_b
            gc.collect()
        del floor
        gc.collect()
        bw_measurements.append(measure_bandwidth(bandwidth_mb, bw_rounds, rng))

    if "first_step" in phases or "memory" in phases:
        log(
            f"first step / memory: {len(fs_sets)} sets x {len(fs_algos)} algos x {len(variants)} variants "
            "in fresh processes"
        )
        doc["first_step"] = first_step_cases(
            fs_sets, fs_algos, variants, threads, "memory" in phases, log, timeout=1800
        )

    doc["bandwidth"] = combine_bandwidth(bw_measurements)
    doc["config"]["loadavg_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    busy = run_meter.measure()
    if busy is not None:
        doc["config"].update(busy)
        if busy["other_cpu_fraction"] > 0.05 or busy["steal_fraction"] > 0.05:
            notes.append(
                f"other processes used {100 * busy['other_cpu_fraction']:.0f}% of the CPUs (steal "
                f"{100 * busy['steal_fraction']:.0f}%) during the run: these timings are not publishable"
            )
    doc["config"]["wall_s"] = time.perf_counter() - started
    derive(doc)
    validate_result(doc)
    out = (
        Path(args.out)
        if args.out
        else HERE / "results" / (f"step-{'quick-' if args.quick else ''}{_dt.datetime.now():%Y%m%d-%H%M%S}.json")
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(format_tables(doc))
    print(f"\nwrote {out}")
    return doc


if __name__ == "__main__":
    main()
