"""The `optimlab` command: help for every option, one-line errors, and the files compare/lr-find/schedule write."""

from __future__ import annotations

import csv
import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import click
import pytest

from optimlab import registry
from optimlab.cli import cli, main
from optimlab.lab.plots import is_blank


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _check_report(out_dir: Path, figures: list[str]) -> None:
    html = (out_dir / "index.html").read_text()
    for name in figures:
        png = out_dir / "figures" / name
        assert png.is_file() and not is_blank(png), png
        assert f'href="figures/{name}"' in html


# --------------------------------------------------------------------------------------------- help


@pytest.mark.parametrize("command", sorted(cli.commands))
def test_help_explains_every_option(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, command, "--help")
    assert code == 0
    cmd = cli.commands[command]
    assert cmd.help and cmd.help.split("\n")[0].strip() in " ".join(out.split())
    for param in cmd.params:
        if isinstance(param, click.Option):
            assert param.help, f"{command} {param.opts} has no help text"
            assert param.opts[0] in out, param.opts


def test_top_level_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "--help")
    assert code == 0
    for command in ("demo", "compare", "lr-find", "schedule", "list"):
        assert command in out


# --------------------------------------------------------------------------------------------- bad arguments

BAD = [
    (["nope"], "No such command"),
    (["demo", "--bogus"], "No such option"),
    (["demo", "--epochs", "0"], "--epochs"),
    (["demo", "--epochs", "many"], "--epochs"),
    (["demo", "--only", "everything"], "unknown experiment everything"),
    (["demo", "--model", "resnet"], "--model"),
    (["compare"], "Missing argument"),
    (["compare", "sgdd"], "did you mean SGD"),
    (["compare", "sgd:lr=-1"], "Invalid learning rate: -1"),
    (["compare", "sgd:foo=1"], "SGD has no hyperparameter foo"),
    (["compare", "sgd:lr"], "expected key=value"),
    (["compare", "sgd:lr=0.1,lr=0.2"], "given twice"),
    (["compare", "sgd", "sgd"], "given twice"),
    (["compare", "--task", "everest", "sgd"], "--task"),
    (["compare", "--steps", "0", "--task", "beale", "sgd"], "--steps"),
    (["lr-find", "--start-lr", "1", "--end-lr", "0.1"], "must be larger than --start-lr"),
    (["lr-find", "--start-lr", "0"], "--start-lr must be positive"),
    (["lr-find", "--smoothing", "0"], "--smoothing"),
    (["lr-find", "--diverge-threshold", "0.5"], "--diverge-threshold"),
    (["lr-find", "--optimizer", "adam:eps=-1"], "Invalid epsilon value"),
    (["schedule"], "Missing argument"),
    (["schedule", "CosineLR:T_max=10"], "unknown scheduler 'CosineLR'"),
    (["schedule", "CosineAnnealingLR"], "CosineAnnealingLR needs T_max"),
    (["schedule", "StepLR:step_size=10,decay=0.5"], "StepLR has no argument decay"),
    (["schedule", "OneCycleLR:max_lr=0.1,total_steps=50", "--steps", "100"], "use fewer --steps"),
    (["schedule", "LinearLR", "CosineAnnealingLR:T_max=9", "--milestones", "10,5"], "increasing"),
    (["schedule", "LinearLR", "CosineAnnealingLR:T_max=9", "--milestones", "3,5"], "need 1 milestone"),
    (["schedule", "StepLR:step_size=5", "--lr", "-0.1"], "--lr must be positive"),
    (["list", "--verbose"], "No such option"),
]


@pytest.mark.parametrize(("args", "expected"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_arguments_give_a_one_line_error(
    args: list[str], expected: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, err = _run(
        capsys, *args, *(["--out", str(tmp_path / "o")] if args[0] != "list" and len(args) > 1 else [])
    )
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert expected in lines[0] and "error:" in lines[0]
    assert "Traceback" not in err + out
    assert not (tmp_path / "o").exists()  # nothing was written


def test_the_installed_entry_point_gives_one_line_errors() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from optimlab.cli import main; sys.exit(main())", "compare", "adamm"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    line = proc.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert line.startswith("optimlab compare: error: unknown optimizer 'adamm'; did you mean Adam")
    assert line.endswith("(see 'optimlab compare --help')")


def test_unexpected_errors_are_one_line_unless_debugging(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import optimlab.lab.tools as tools

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setattr(tools, "run_schedule", broken)
    code, _, err = _run(capsys, "schedule", "StepLR:step_size=3", "--out", str(tmp_path))
    assert code == 1 and err.strip() == (
        "optimlab: error: RuntimeError: disk on fire second line (set OPTIMLAB_DEBUG=1 for the traceback)"
    )
    monkeypatch.setenv("OPTIMLAB_DEBUG", "1")
    with pytest.raises(RuntimeError, match="disk on fire"):
        main(["schedule", "StepLR:step_size=3", "--out", str(tmp_path)])


# --------------------------------------------------------------------------------------------- list


def test_list_shows_every_optimizer_with_its_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "list", "--json")
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)}
    assert set(rows) == {i.name for i in registry.list_optimizers()}
    assert {"SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "NAdam", "RAdam", "LBFGS"} <= set(rows)
    assert rows["SGD"]["hyperparameters"]["momentum"] == "0"
    assert rows["Adam"]["hyperparameters"]["betas"] == "(0.9, 0.999)"
    assert rows["AdamW"]["hyperparameters"]["weight_decay"] == "0.01"
    assert "foreach" not in rows["Adam"]["hyperparameters"]
    code, out, _ = _run(capsys, "list", "--json", "--all-arguments")
    assert "foreach" in {r["name"]: r for r in json.loads(out)}["Adam"]["hyperparameters"]
    code, out, _ = _run(capsys, "list")
    assert code == 0 and "NAdam" in out and "lr" in out


def test_list_schedulers(capsys: pytest.CaptureFixture[str]) -> None:
    _code, out, _ = _run(capsys, "list", "--schedulers", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert {"StepLR", "CosineAnnealingLR", "OneCycleLR", "LinearWarmupCosineAnnealingLR", "WarmupStableDecayLR"} <= set(
        rows
    )
    assert rows["CosineAnnealingLR"]["arguments"]["T_max"] == "(required)"


# --------------------------------------------------------------------------------------------- compare


def test_compare_on_a_2d_function(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "cmp"
    code, out, _ = _run(
        capsys,
        "compare",
        "--task",
        "quadratic",
        "--steps",
        "30",
        "--out",
        str(out_dir),
        "--quiet",
        "sgd:lr=0.1",
        "sgd:lr=0.1,momentum=0.9",
        "adam",
    )
    assert code == 0 and "index.html" in out
    _check_report(out_dir, ["compare_paths.png", "compare_values.png"])
    runs = json.loads((out_dir / "data" / "compare.json").read_text())
    sgd = runs["sgd:lr=0.1"]
    # x ← x·(1 - 0.1·8), y ← y·(1 - 0.1·0.5) on 4x² + y²/4 from (-1.8, 1.8)
    assert sgd["points"][1] == pytest.approx([-1.8 * 0.2, 1.8 * 0.95])
    assert len(sgd["points"]) == 31
    assert runs["adam (lr=0.1)"]["spec"] == "Adam:lr=0.1"  # the function's default lr for Adam was filled in


def test_compare_on_digits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "cmp"
    code, out, _ = _run(
        capsys,
        "compare",
        "--epochs",
        "2",
        "--images",
        "300",
        "--model",
        "mlp",
        "--out",
        str(out_dir),
        "--quiet",
        "sgd:lr=0.1,momentum=0.9",
        "rmsprop:lr=1e-3",
    )
    assert code == 0 and "val acc" in out
    _check_report(out_dir, ["compare_curves.png", "compare_final.png"])
    with open(out_dir / "data" / "compare.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 3  # two runs, epochs 0..2
    assert {r["run"] for r in rows} == {"sgd:lr=0.1,momentum=0.9", "rmsprop:lr=1e-3"}
    first = [r for r in rows if r["epoch"] == "0"]
    assert first[0]["val_loss"] == first[1]["val_loss"]  # same initial weights for both optimizers
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["settings"]["task"] == "digits" and summary["settings"]["epochs"] == 2


# --------------------------------------------------------------------------------------------- lr-find


def test_lr_find(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "lr"
    code, out, _ = _run(
        capsys,
        "lr-find",
        "--model",
        "mlp",
        "--images",
        "300",
        "--steps",
        "60",
        "--start-lr",
        "1e-4",
        "--end-lr",
        "100",
        "--optimizer",
        "sgd:momentum=0.9",
        "--out",
        str(out_dir),
        "--quiet",
    )
    assert code == 0
    suggested = float(out.strip())
    assert 1e-4 < suggested < 10
    _check_report(out_dir, ["lr_find.png"])
    d = json.loads((out_dir / "data" / "lr_find.json").read_text())
    assert d["suggested_lr"] == suggested and d["optimizer"] == "SGD:momentum=0.9"
    lrs = d["lrs"]
    ratios = [b / a for a, b in itertools.pairwise(lrs)]
    assert all(r == pytest.approx(1e6 ** (1 / 59)) for r in ratios)  # exponential sweep over 6 decades
    assert all(math.isfinite(v) for v in d["losses"])


# --------------------------------------------------------------------------------------------- schedule


def test_schedule_one_cycle_cycles_lr_and_momentum(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "s"
    code, _out, _ = _run(
        capsys,
        "schedule",
        "OneCycleLR:max_lr=0.1,total_steps=100",
        "CosineAnnealingLR:T_max=100",
        "--steps",
        "100",
        "--out",
        str(out_dir),
    )
    assert code == 0
    _check_report(out_dir, ["schedule.png"])
    d = json.loads((out_dir / "data" / "schedule.json").read_text())["schedules"]
    one = d["OneCycleLR:max_lr=0.1,total_steps=100"]
    peak = max(range(100), key=one["lr"].__getitem__)
    assert one["lr"][peak] == pytest.approx(0.1) and 25 <= peak <= 31  # pct_start = 0.3
    assert one["lr"][0] == pytest.approx(0.1 / 25)  # div_factor = 25
    assert one["momentum"][peak] == pytest.approx(0.85) and one["momentum"][0] == pytest.approx(0.95)
    cos = d["CosineAnnealingLR:T_max=100"]
    assert cos["lr"][0] == 0.1 and cos["lr"][50] == pytest.approx(0.05)
    assert len(set(cos["momentum"])) == 1  # cosine annealing leaves momentum alone


def test_schedule_chained_with_milestones_and_plateau(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, _ = _run(
        capsys,
        "schedule",
        "LinearLR:start_factor=0.1,total_iters=10",
        "CosineAnnealingLR:T_max=90",
        "--milestones",
        "10",
        "--steps",
        "100",
        "--lr",
        "0.5",
        "--out",
        str(tmp_path / "a"),
    )
    assert code == 0
    (rec,) = json.loads((tmp_path / "a" / "data" / "schedule.json").read_text())["schedules"].values()
    assert rec["lr"][0] == pytest.approx(0.05) and rec["lr"][10] == pytest.approx(0.5) and rec["lr"][-1] < 0.01
    code, _, _ = _run(
        capsys,
        "schedule",
        "ReduceLROnPlateau:patience=4,factor=0.5",
        "--steps",
        "12",
        "--lr",
        "1",
        "--optimizer",
        "adam",
        "--out",
        str(tmp_path / "b"),
    )
    assert code == 0
    (rec,) = json.loads((tmp_path / "b" / "data" / "schedule.json").read_text())["schedules"].values()
    # A constant metric is a plateau: the first value sets the best, and after more than `patience` = 4 steps
    # without improvement (the 6th scheduler step) the lr is halved.
    assert rec["lr"][:6] == [1.0] * 6 and rec["lr"][6] == 0.5
    assert set(rec["momentum"]) == {0.9}  # Adam's beta1
