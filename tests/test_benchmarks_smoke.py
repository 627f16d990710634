"""Smoke test of the step benchmarks (benchmarks/bench_step.py, benchmarks/param_sets.py).

Runs the harness end to end on tiny sizes and checks the parameter-set shapes, the byte-count table and the JSON
schema. No assertion is made about any timing: the numbers of a test run mean nothing.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

BENCH_DIR = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench() -> Iterator[ModuleType]:
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(BENCH_DIR))
        import bench_step

        yield bench_step


@pytest.fixture(scope="module")
def param_sets(bench: ModuleType) -> ModuleType:
    import param_sets

    return param_sets


def test_param_sets_match_the_published_architectures(param_sets: ModuleType) -> None:
    gpt2 = param_sets.get_param_set("gpt2")
    assert (gpt2.num_tensors, gpt2.numel) == (148, 124_439_808)
    shapes = dict(gpt2.shapes)
    assert shapes["wte.weight"] == (50257, 768) and shapes["wpe.weight"] == (1024, 768)
    assert shapes["h.11.attn.c_attn.weight"] == (768, 2304) and shapes["h.0.mlp.c_proj.weight"] == (3072, 768)
    assert shapes["ln_f.bias"] == (768,)

    resnet = param_sets.get_param_set("resnet50")
    assert (resnet.num_tensors, resnet.numel) == (161, 25_557_032)
    shapes = dict(resnet.shapes)
    assert shapes["conv1.weight"] == (64, 3, 7, 7)
    assert shapes["layer4.0.downsample.0.weight"] == (2048, 1024, 1, 1)
    assert shapes["layer3.5.conv2.weight"] == (256, 256, 3, 3)
    assert shapes["fc.weight"] == (1000, 2048)
    assert sum(1 for name, _ in resnet.shapes if name.endswith("conv2.weight")) == 16  # 3 + 4 + 6 + 3 blocks

    small = param_sets.get_param_set("many_small")
    assert (small.num_tensors, small.numel) == (1000, 1_024_000)
    assert {s for _, s in small.shapes} == {(1024,)}

    with pytest.raises(KeyError, match="unknown parameter set 'gpt3'"):
        param_sets.get_param_set("gpt3")


def test_build_is_deterministic_finite_and_signed(param_sets: ModuleType) -> None:
    tiny = param_sets.get_param_set("tiny")
    p1, g1 = tiny.build(seed=3)
    p2, g2 = tiny.build(seed=3)
    p3, _ = tiny.build(seed=4)
    assert [t.shape for t in p1] == [torch.Size(s) for _, s in tiny.shapes]
    assert all(torch.equal(a, b) for a, b in zip(p1 + g1, p2 + g2))
    assert not all(torch.equal(a, b) for a, b in zip(p1, p3))
    flat = torch.cat([g.flatten() for g in g1])
    assert torch.isfinite(flat).all() and (flat > 0).any() and (flat < 0).any()
    assert flat.abs().max() <= 1e-3


def test_byte_counts(bench: ModuleType) -> None:
    by_name = {a.name: a for a in bench.ALGOS}
    assert set(by_name) == {
        "SGD", "Adam", "AdamW", "Adamax", "NAdam", "RAdam", "Adagrad", "Adadelta", "RMSprop", "Rprop", "ASGD",
    }  # fmt: skip
    # the example: AdamW in fp32 reads param, grad, exp_avg, exp_avg_sq and writes three back
    assert by_name["AdamW"].bytes_per_param() == 28
    assert by_name["AdamW"].state_tensors == ("exp_avg", "exp_avg_sq")
    for algo in bench.ALGOS:
        assert {"param", "grad"} <= set(algo.reads) and "param" in algo.writes and "grad" not in algo.writes
        assert algo.bytes_per_param() == 4 * (len(algo.reads) + len(algo.writes))
    assert by_name["ASGD"].bytes_per_param() == 16  # ax is written, not read, while mu == 1


def _run(bench: ModuleType, tmp_path: Path, *args: str) -> dict[str, Any]:
    out = tmp_path / "result.json"
    doc = bench.main(["--sets", "tiny", "--steps", "3", "--warmup", "1", "--bandwidth-mb", "4", "--out", str(out),
                      *args])  # fmt: skip
    on_disk = json.loads(out.read_text())
    bench.validate_result(on_disk)
    assert on_disk["cases"] == json.loads(json.dumps(doc["cases"]))
    return on_disk


def test_steady_phase_end_to_end(
    bench: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # optimlab's fused engine without its compiler: the harness is under test here, not the engine, and a cold
    # compile would make this test take half a minute
    monkeypatch.setenv("OPTIMLAB_COMPILE", "0")
    doc = _run(bench, tmp_path, "--algos", "SGD,AdamW,Adagrad", "--phases", "steady")
    assert doc["config"]["env"]["OPTIMLAB_COMPILE"] == "0"
    assert doc["config"]["sets"] == ["tiny"] and doc["param_sets"]["tiny"] == {
        "tensors": 6, "params": 314, "description": "6 small tensors (smoke tests only)",
    }  # fmt: skip
    assert doc["machine"]["torch"] == torch.__version__ and doc["machine"]["torch_threads"] >= 1
    assert len(doc["bandwidth"]["measurements"]) == 2 and doc["bandwidth"]["floor_gbps"] > 0
    cases = {(c["algo"], c["variant"]): c for c in doc["cases"]}
    assert set(cases) == {(a, v) for a in ("SGD", "AdamW", "Adagrad") for v in bench.VARIANTS}
    for (algo, variant), c in cases.items():
        if variant.startswith("torch"):  # torch has every variant of these three algorithms on CPU
            assert c["status"] == "ok", c
        if c["status"] == "ok":
            assert c["n"] == 3 and c["params_finite"]
            nbytes = doc["bytes_per_param"][algo]["bytes"] * 314
            # the floor measured beside the case, one run of its kernel per timed round
            assert c["floor_beside_samples"] == 3 and c["floor_beside_gbps"] > 0
            assert c["floor_s"] == pytest.approx(nbytes / (c["floor_beside_gbps"] * 1e9))
            assert c["ratio_to_floor"] == pytest.approx(c["median_s"] / c["floor_s"])
            run_floor = nbytes / (doc["bandwidth"]["floor_gbps"] * 1e9)  # the run's, kept beside it
            assert c["floor_run_s"] == pytest.approx(run_floor)
            assert c["ratio_to_run_floor"] == pytest.approx(c["median_s"] / run_floor)
    in_place = sorted(name for name, k in doc["bandwidth"]["measurements"][0]["kernels"].items() if k["in_place"])
    assert doc["config"]["floor_beside"] == {"kernels": in_place, "buffer_mb": 4}
    assert {c["floor_beside_kernel"] for c in doc["cases"] if "floor_beside_kernel" in c} <= set(in_place)
    comp = {c["algo"]: c for c in doc["comparisons"]}
    assert comp["AdamW"]["best_torch"] in ("torch", "torch_foreach", "torch_fused")
    if cases[("AdamW", "optimlab_fused")]["status"] == "ok":
        expected = cases[("AdamW", "torch_fused")]["median_s"] / cases[("AdamW", "optimlab_fused")]["median_s"]
        assert comp["AdamW"]["speedup_optimlab_fused_vs_torch_fused"] == pytest.approx(expected)
    printed = capsys.readouterr().out
    assert "== tiny: 6 tensors" in printed and "AdamW" in printed and "wrote " in printed


def test_cosine_lr_schedule_changes_every_variants_lr(
    bench: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPTIMLAB_COMPILE", "0")
    made: list[Any] = []
    make = bench.make_optimizer
    monkeypatch.setattr(bench, "make_optimizer", lambda *args: made.append(make(*args)) or made[-1])
    doc = _run(bench, tmp_path, "--algos", "AdamW", "--phases", "steady", "--lr-schedule", "cosine")
    assert doc["config"]["lr_schedule"] == "cosine"
    assert all(c["status"] == "ok" and c["params_finite"] for c in doc["cases"] if c["variant"] != "optimlab_fused")
    lrs = {opt.param_groups[0]["lr"] for opt in made}
    base = bench.ALGO_BY_NAME["adamw"].kwargs.get("lr", 1e-3)
    assert len(lrs) == 1 and 0.1 * base < lrs.pop() < base  # every variant at the same, decayed lr


def test_first_step_and_memory_in_a_subprocess(bench: ModuleType, tmp_path: Path) -> None:
    doc = _run(bench, tmp_path, "--algos", "AdamW", "--variants", "torch_fused", "--phases", "first_step,memory")
    assert doc["cases"] == []
    (f,) = doc["first_step"]
    assert f["status"] == "ok", f
    assert (f["set"], f["algo"], f["variant"]) == ("tiny", "AdamW", "torch_fused")
    assert f["param_bytes"] == 314 * 4 and f["expected_state_bytes"] == 2 * 314 * 4
    assert f["state_tensor_bytes"] >= f["expected_state_bytes"]  # exp_avg, exp_avg_sq (+ step scalars)
    assert 0 < f["setup_cold_s"] <= f["setup_cold_total_s"] and f["setup_warm_s"] > 0
    assert f["peak_alloc_bytes"] is not None and f["peak_alloc_bytes"] >= 0


def test_unavailable_and_failing_variants_do_not_stop_the_run(bench: ModuleType, param_sets: ModuleType,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    class NoFused(torch.optim.SGD):
        def __init__(self, params: Any, *, fused: bool | None = None, **kw: Any) -> None:
            if fused:
                raise TypeError("__init__() got an unexpected keyword argument 'fused'")
            super().__init__(params, **kw)

    class Broken(torch.optim.SGD):
        def step(self, closure: Any = None) -> None:
            raise RuntimeError("kaputt")

    def resolve(library: str, algo: Any) -> type:
        return Broken if library == "optimlab" and algo.name == "Adam" else NoFused

    monkeypatch.setattr(bench, "resolve_class", resolve)
    tiny = param_sets.get_param_set("tiny")
    base, grads = tiny.build()
    sgd = next(a for a in bench.ALGOS if a.name == "SGD")
    res = {c["variant"]: c for c in bench.time_case(tiny, base, [grads], sgd, ["optimlab", "optimlab_fused"], 2, 1,
                                                    random.Random(0), lambda msg: None)}  # fmt: skip
    assert res["optimlab"]["status"] == "ok" and res["optimlab"]["n"] == 2
    assert res["optimlab_fused"]["status"] == "n/a" and "TypeError" in res["optimlab_fused"]["note"]
    adam = next(a for a in bench.ALGOS if a.name == "Adam")
    res = {c["variant"]: c for c in bench.time_case(tiny, base, [grads], adam, ["optimlab", "torch"], 2, 1,
                                                    random.Random(0), lambda msg: None)}  # fmt: skip
    assert res["optimlab"]["status"] == "error" and "kaputt" in res["optimlab"]["note"]
    assert res["torch"]["status"] == "ok" and res["torch"]["n"] == 2


def test_bad_input_is_rejected(bench: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="unknown algorithm 'Adamw2'; choose from SGD, Adam,"):
        bench.main(["--algos", "AdamW,Adamw2", "--out", str(tmp_path / "x.json")])
    with pytest.raises(SystemExit, match="--steps must be positive"):
        bench.main(["--steps", "0", "--out", str(tmp_path / "x.json")])
    assert not (tmp_path / "x.json").exists()


def test_validate_result_names_the_problems(bench: ModuleType, tmp_path: Path) -> None:
    doc = _run(bench, tmp_path, "--algos", "SGD", "--variants", "torch,torch_foreach", "--phases", "steady")
    assert bench.main(["--show", str(tmp_path / "result.json")]) == doc  # a saved result re-prints
    broken = json.loads(json.dumps(doc))
    del broken["machine"]
    broken["cases"][0]["q1_s"] = broken["cases"][0]["median_s"] * 2
    broken["bytes_per_param"]["SGD"]["bytes"] = 99
    with pytest.raises(ValueError) as err:
        bench.validate_result(broken)
    msg = str(err.value)
    assert "missing top-level keys ['machine']" in msg
    assert "out of order" in msg and "bytes_per_param[SGD]" in msg
