"""`optimlab demo --quick`: the report folder, its figures, and numbers that match the math."""

from __future__ import annotations

import csv
import itertools
import json
import math
import re
from pathlib import Path

import pytest

from optimlab.cli import main
from optimlab.lab.plots import is_blank

COMPARED = {"SGD", "SGD+momentum", "Nesterov", "Adam", "AdamW", "RMSprop", "Adagrad"}


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "report"
    assert main(["demo", "--quick", "--quiet", "--out", str(out)]) == 0
    return out


def _json(report: Path, name: str) -> dict:
    return json.loads((report / "data" / f"{name}.json").read_text())


def test_prints_the_report_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r"
    assert main(["demo", "--quick", "--quiet", "--only", "ewa", "--out", str(out)]) == 0
    printed = capsys.readouterr().out.strip()
    assert Path(printed) == (out / "index.html").resolve() and Path(printed).is_file()


def test_every_experiment_is_in_the_report(report: Path) -> None:
    summary = json.loads((report / "summary.json").read_text())
    slugs = [s["slug"] for s in summary["sections"]]
    assert slugs == ["quadratic", "ewa-momentum", "optimizers", "param-groups", "trajectories", "lr-range-test"]
    assert summary["config"]["quick"] is True


def test_figures_exist_are_not_blank_and_the_page_references_them(report: Path) -> None:
    html = (report / "index.html").read_text()
    pngs = sorted((report / "figures").glob("*.png"))
    summary = json.loads((report / "summary.json").read_text())
    listed = [f for s in summary["sections"] for f in s["figures"]]
    assert len(pngs) >= 10 and sorted(str(p.relative_to(report)) for p in pngs) == sorted(listed)
    for png in pngs:
        assert png.stat().st_size > 5_000, png
        assert not is_blank(png), png
        assert f'href="figures/{png.name}"' in html, png
    # Self-contained: every figure also embedded, no external resources.
    assert html.count("data:image/png;base64,") == len(pngs)
    assert not re.search(r'(src|href)="https?://', html)
    for data_file in (report / "data").iterdir():
        assert f'href="data/{data_file.name}"' in html, data_file


def test_quadratic_numbers_match_the_math(report: Path) -> None:
    d = _json(report, "quadratic")
    x_lr1 = d["runs"]["1.0"]["x"]
    assert x_lr1[:4] == [2.0, -14.0, 98.0, -686.0]  # x ← (1 - 8·1)·x
    x_eighth = d["runs"]["0.125"]["x"]
    assert x_eighth[1] == 0.0 and all(x == 0.0 for x in x_eighth[1:])  # lr = 1/f'' lands in one step
    assert d["one_step_lr"] == 0.125 and d["stability_limit_lr"] == 0.25
    sweep = d["sweep"]
    assert len(sweep["lrs"]) == 10 and sweep["lrs"][0] == 0.01 and sweep["lrs"][-1] == pytest.approx(0.2)
    for lr in sweep["lrs"]:
        assert sweep["step_factor"][str(lr)] == pytest.approx(abs(1 - 8 * lr), abs=1e-12)
    with open(report / "data" / "quadratic_steps.csv") as f:
        rows = list(csv.DictReader(f))
    first_step = {float(r["lr"]): float(r["x"]) for r in rows if r["t"] == "1"}
    assert first_step[1.0] == -14.0 and first_step[0.125] == 0.0
    with open(report / "data" / "quadratic_sweep.csv") as f:
        sweep_rows = list(csv.reader(f))
    assert len(sweep_rows) == 1 + 101 and len(sweep_rows[0]) == 11  # iterations 0..100, 10 lrs
    assert float(sweep_rows[1][1]) == 16.0  # loss at x0 = 2


def test_ewa_weights_sum_to_one_minus_beta_to_the_n(report: Path) -> None:
    d = _json(report, "ewa_momentum")
    n = d["n"]
    assert set(d["ewa"]) == {"0.98", "0.95", "0.9", "0.8"}
    for key, e in d["ewa"].items():
        beta = float(key)
        assert len(e["weights"]) == n
        assert sum(e["weights"]) == pytest.approx(1 - beta**n, rel=1e-12)
        for t in (0, 1, 10, n - 1):
            assert e["weights"][t] == pytest.approx((1 - beta) * beta**t, rel=1e-12)
    with open(report / "data" / "ewa_weights.csv") as f:
        rows = list(csv.DictReader(f))
    assert sum(float(r["weight_beta=0.98"]) for r in rows) == pytest.approx(1 - 0.98**n, rel=1e-12)


def test_momentum_overshoots_where_plain_sgd_does_not(report: Path) -> None:
    m = _json(report, "ewa_momentum")["momentum"]
    momentum, plain = m["SGD + momentum 0.9, lr 0.01"], m["SGD, lr 0.03"]
    assert momentum["momentum"] == 0.9 and momentum["lr"] == 0.01 and plain["lr"] == 0.03
    assert momentum["min_x"] < -0.5 and momentum["sign_changes"] >= 2
    assert plain["min_x"] >= 0 and plain["sign_changes"] == 0
    # First steps of torch-style momentum (v = m·v + g, no 1-m factor) on 4x² from 2: g = 16, then 8·1.84.
    x = momentum["x"]
    assert x[1] == pytest.approx(2 - 0.01 * 16)
    assert x[2] == pytest.approx(x[1] - 0.01 * (0.9 * 16 + 8 * x[1]))


def test_optimizer_comparison_on_digits(report: Path) -> None:
    d = _json(report, "digits_optimizers")
    assert {label.split(",")[0].split(" ")[0] for label in d["runs"]} >= COMPARED
    epochs = d["task"]["epochs"]
    for label, run in d["runs"].items():
        curves = run["curves"]
        assert all(len(c) == epochs + 1 for c in curves.values()), label
        assert all(0.0 <= a <= 1.0 for a in curves["val_acc"] + curves["train_acc"])
        assert curves["train_loss"][0] == pytest.approx(next(iter(d["runs"].values()))["curves"]["train_loss"][0])
    assert max(r["val_acc"] for r in d["runs"].values()) > 0.6  # real learning, even in the quick run
    with open(report / "data" / "digits_optimizers.csv") as f:
        assert len(list(csv.DictReader(f))) == len(d["runs"]) * (epochs + 1)


def test_per_group_learning_rates(report: Path) -> None:
    runs = _json(report, "param_groups")["runs"]
    split = runs["features 0.01, classifier 0.1"]
    assert all(lrs == [0.01, 0.1] for lrs in split["group_lrs_per_epoch"])
    assert all(lrs == [0.1, 0.1] for lrs in runs["one lr 0.1 for all"]["group_lrs_per_epoch"])
    # The small lr keeps the features closer to their start than the large lr everywhere does.
    assert split["relative_change"]["features"][-1] < runs["one lr 0.1 for all"]["relative_change"]["features"][-1]


def test_trajectories(report: Path) -> None:
    d = _json(report, "trajectories")
    assert set(d) == {"rosenbrock", "beale", "saddle", "quadratic"}
    for name, f in d.items():
        assert len(f["runs"]) == 6
        for label, run in f["runs"].items():
            assert run["points"][0] == pytest.approx(f["start"]), (name, label)
            assert all(math.isfinite(v) for v in run["values"]) or run["diverged"]
    # Plain SGD's first step on 4x² + y²/4 from (-1.8, 1.8) with lr 0.2: x·(1 - 0.2·8), y·(1 - 0.2·0.5).
    sgd = d["quadratic"]["runs"]["SGD"]
    assert sgd["lr"] == 0.2 and sgd["points"][1] == pytest.approx([-1.8 * (1 - 1.6), 1.8 * (1 - 0.1)])
    for label, run in d["quadratic"]["runs"].items():
        assert run["values"][-1] < 0.1 * run["values"][0], label  # everyone makes progress on the bowl


def test_lr_range_test_section(report: Path) -> None:
    d = _json(report, "lr_range_test")
    lrs = d["lrs"]
    assert lrs[0] == pytest.approx(1e-4) and all(b > a for a, b in itertools.pairwise(lrs))
    for lr in d["suggestions"].values():
        assert lr is None or 1e-4 <= lr <= 10
    assert d["checks"]  # the suggestions were tried by real training runs
