"""The ``optimlab`` command: parses arguments and calls :mod:`optimlab.lab`, nothing more.

Bad arguments end with a one-line error that says what is wrong (exit status 2), never a traceback; set the
environment variable ``OPTIMLAB_DEBUG=1`` to see the traceback of an unexpected error.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import click

__all__ = ["cli", "main"]

_SPEC_HELP = (
    "Optimizers are written NAME[:key=value,...], e.g. sgd:lr=0.05,momentum=0.9,nesterov=true or "
    "adam:lr=3e-3,betas=(0.9,0.99) (names are case-insensitive; see `optimlab list`)."
)


def _fail(message: str) -> NoReturn:
    raise click.UsageError(message)


def _user_errors() -> tuple[type[BaseException], ...]:
    from optimlab.lab.specs import SpecError

    return (SpecError, ValueError, KeyError)


def _call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a lab function; input errors it detects become a one-line usage error."""
    try:
        return fn(*args, **kwargs)
    except _user_errors() as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        _fail(str(msg))


def _progress(quiet: bool, stages: int) -> Any:
    from optimlab.lab.progress import Progress, RichProgress

    return Progress() if quiet else RichProgress(stages)


def _console() -> Any:
    from rich.console import Console

    return Console(highlight=False)


def _print_report(path: Path, seconds: float, figures: Sequence[Path]) -> None:
    console = _console()
    console.print(f"[bold green]Done[/] in {seconds:.1f} s: {len(figures)} figure(s).")
    console.print(f"Report: [bold]{path.resolve()}[/]", soft_wrap=True)


def _positive(name: str, value: float | None) -> None:
    if value is not None and not value > 0:
        _fail(f"{name} must be positive, got {value}")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="optimlab", message="optimlab %(version)s")
def cli() -> None:
    """optimlab: see what the learning rate, momentum and the choice of optimizer do.

    Start with `optimlab demo`: it runs the experiments (about a minute, no download) and writes a
    report folder with an HTML page, PNG figures and the raw numbers.
    """


# ------------------------------------------------------------------------------------------------- demo


@cli.command()
@click.option(
    "--out",
    "-o",
    "out",
    default="optimlab-report",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder to write the report to (created if needed; files of the same name are replaced).",
)
@click.option(
    "--quick",
    is_flag=True,
    help="A much smaller run (3 epochs on 600 images, shorter paths, low-resolution figures): seconds "
    "instead of a minute. For tests and a first look.",
)
@click.option(
    "--seed",
    default=0,
    show_default=True,
    type=int,
    help="Seed of every random choice (data split, initial weights, batch order, noise).",
)
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    default=None,
    help="Epochs of the digits runs [default: 20, or 3 with --quick].",
)
@click.option(
    "--model",
    type=click.Choice(["cnn", "mlp"]),
    default="cnn",
    show_default=True,
    help="The network trained on the digits: a small CNN or a two-layer MLP.",
)
@click.option(
    "--only",
    multiple=True,
    metavar="NAME",
    help="Run only this experiment (repeatable): quadratic, ewa, optimizers, param-groups, trajectories, "
    "lr-range-test.",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="torch threads. The models are tiny: 1 is as fast as more on an idle machine, and much faster on a busy one.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress display; print only the report's path.")
def demo(
    out: str, quick: bool, seed: int, epochs: int | None, model: str, only: tuple[str, ...], threads: int, quiet: bool
) -> None:
    """Run the lab's experiments and write the report.

    \b
    Experiments (each a real run of optimlab's optimizers):
      quadratic      gradient descent on y = 4x²: divergence at lr = 1, one-step landing at lr = 1/8, a sweep
      ewa            exponentially weighted averages; momentum against plain SGD
      optimizers     10 optimizers on a small CNN for scikit-learn's bundled digits
      param-groups   a small lr on the features and a larger one on the classifier, vs one lr
      trajectories   paths on Rosenbrock, Beale, a saddle and a quadratic
      lr-range-test  the learning-rate range test and a check of its suggestions
    """
    from optimlab.lab.experiments import EXPERIMENTS, DemoConfig, run_demo

    bad = [n for n in only if n not in EXPERIMENTS]
    if bad:
        _fail(f"unknown experiment {', '.join(bad)} for --only; choose from {', '.join(EXPERIMENTS)}")
    config = DemoConfig(quick=quick, seed=seed, epochs=epochs, model=model, threads=threads)
    with _progress(quiet, len(only) or len(EXPERIMENTS)) as progress:
        result = _call(run_demo, out, config, only or None, progress)
    if quiet:
        click.echo(str(result.index.resolve()))
    else:
        _print_report(result.index, result.seconds, result.figures)


# ------------------------------------------------------------------------------------------------- compare


@cli.command(epilog=_SPEC_HELP)
@click.argument("optimizers", nargs=-1, required=True, metavar="OPTIMIZER...")
@click.option(
    "--task",
    "-t",
    default="digits",
    show_default=True,
    type=click.Choice(["digits", "rosenbrock", "beale", "saddle", "quadratic"], case_sensitive=False),
    help="digits: train a small network on scikit-learn's bundled 8x8 digits; the others: 2-D test "
    "functions, drawn with each optimizer's path over the contours.",
)
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True, help="Epochs on digits.")
@click.option(
    "--steps",
    type=click.IntRange(min=1),
    default=None,
    help="Optimizer steps on a 2-D function [default: the function's own, 100-500].",
)
@click.option(
    "--model", type=click.Choice(["cnn", "mlp"]), default="cnn", show_default=True, help="The network on digits."
)
@click.option(
    "--images",
    type=click.IntRange(min=20),
    default=None,
    help="Use only this many digit images (faster) [default: all 1,797].",
)
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=64, show_default=True, help="Mini-batch size on digits."
)
@click.option(
    "--seed",
    default=0,
    show_default=True,
    type=int,
    help="Seed of the data split, initial weights and batch order (the same for every optimizer).",
)
@click.option(
    "--out",
    "-o",
    "out",
    default="optimlab-compare",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder to write the report to.",
)
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True, help="torch threads.")
@click.option("--quiet", "-q", is_flag=True, help="No progress display.")
def compare(
    optimizers: tuple[str, ...],
    task: str,
    epochs: int,
    steps: int | None,
    model: str,
    images: int | None,
    batch_size: int,
    seed: int,
    out: str,
    threads: int,
    quiet: bool,
) -> None:
    """Compare optimizers (with your hyperparameters) on a built-in task.

    \b
    Examples:
      optimlab compare sgd:lr=0.1 sgd:lr=0.01,momentum=0.9 adam adamw:lr=3e-3
      optimlab compare --task rosenbrock sgd:lr=1e-3 adam:lr=0.1 rmsprop:lr=0.01

    An optimizer given without lr uses its own default on digits, and a value suited to the function on the
    2-D tasks.
    """
    from optimlab.lab.tools import run_compare

    with _progress(quiet, 1) as progress:
        result = _call(
            run_compare,
            list(optimizers),
            task.lower(),
            out,
            epochs,
            steps,
            model,
            images,
            batch_size,
            seed,
            threads,
            progress,
        )
    console = _console()
    from rich.table import Table

    table = Table(title=f"{task}: final numbers")
    if task.lower() == "digits":
        for col in ("optimizer", "val acc", "val loss", "train loss", "seconds"):
            table.add_column(col, justify="left" if col == "optimizer" else "right")
        for r in sorted(result.rows, key=lambda r: -r["val_acc"]):
            table.add_row(
                r["optimizer"],
                f"{r['val_acc']:.1%}",
                f"{r['val_loss']:.4f}",
                f"{r['train_loss']:.4f}",
                f"{r['seconds']:.1f}",
            )
    else:
        for col in ("optimizer", "steps", "final point", "f − f*"):
            table.add_column(col, justify="left" if col == "optimizer" else "right")
        for r in sorted(result.rows, key=lambda r: r["gap"]):
            x, y = r["final_point"]
            table.add_row(
                r["optimizer"],
                str(r["steps"]),
                f"({x:.4g}, {y:.4g})",
                "diverged" if r["diverged"] else f"{r['gap']:.3g}",
            )
    console.print(table)
    _print_report(result.index, result.seconds, result.figures)


# ------------------------------------------------------------------------------------------------- lr-find


@cli.command("lr-find", epilog=_SPEC_HELP)
@click.option(
    "--optimizer",
    "optimizer",
    default="sgd:momentum=0.9",
    show_default=True,
    metavar="SPEC",
    help="The optimizer to test; its lr is overridden by the sweep, its other hyperparameters are used.",
)
@click.option(
    "--model",
    type=click.Choice(["cnn", "mlp"]),
    default="cnn",
    show_default=True,
    help="The network trained on the digits.",
)
@click.option("--start-lr", type=float, default=1e-6, show_default=True, help="First learning rate of the sweep.")
@click.option("--end-lr", type=float, default=10.0, show_default=True, help="Last learning rate of the sweep.")
@click.option(
    "--steps",
    type=click.IntRange(min=2),
    default=200,
    show_default=True,
    help="Mini-batches in the sweep (one lr each); about 20-30 per decade of lr reads well.",
)
@click.option(
    "--mode",
    type=click.Choice(["exp", "linear"]),
    default="exp",
    show_default=True,
    help="exp: lrs evenly spaced on a log scale (usual); linear: evenly spaced.",
)
@click.option(
    "--smoothing",
    type=click.FloatRange(min=0, max=1, min_open=True),
    default=0.1,
    show_default=True,
    help="Weight of each new loss in the smoothed curve (1 = no smoothing).",
)
@click.option(
    "--diverge-threshold",
    type=float,
    default=4.0,
    show_default=True,
    help="Stop once the smoothed loss exceeds this multiple of its lowest value; 0 never stops early "
    "(a non-finite loss always stops).",
)
@click.option(
    "--rule",
    type=click.Choice(["valley", "steepest", "min10"]),
    default="valley",
    show_default=True,
    help="The suggestion to highlight: valley (middle of the descent), steepest (fastest descent in "
    "log lr), min10 (a tenth of the lr at the lowest loss). All three are reported.",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True, help="Mini-batch size.")
@click.option("--images", type=click.IntRange(min=20), default=None, help="Use only this many digit images.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the data, weights and batches.")
@click.option(
    "--out",
    "-o",
    "out",
    default="optimlab-lr-find",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder to write the plot, the numbers and a page to.",
)
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True, help="torch threads.")
@click.option("--quiet", "-q", is_flag=True, help="No progress display; print only the suggested lr.")
def lr_find(
    optimizer: str,
    model: str,
    start_lr: float,
    end_lr: float,
    steps: int,
    mode: str,
    smoothing: float,
    diverge_threshold: float,
    rule: str,
    batch_size: int,
    images: int | None,
    seed: int,
    out: str,
    threads: int,
    quiet: bool,
) -> None:
    """Find a learning rate with the range test on the built-in digits task.

    The lr grows every mini-batch from --start-lr to --end-lr while the loss is recorded; the model and
    optimizer are restored afterwards. For your own model use the Python API:
    `from optimlab.lab import lr_range_test`.
    """
    _positive("--end-lr", end_lr)
    if start_lr < 0 or (mode == "exp" and start_lr == 0):
        _fail(f"--start-lr must be {'positive' if mode == 'exp' else 'non-negative'}, got {start_lr}")
    if not end_lr > start_lr:
        _fail(f"--end-lr ({end_lr}) must be larger than --start-lr ({start_lr})")
    if diverge_threshold != 0 and not diverge_threshold > 1:
        _fail(f"--diverge-threshold must be > 1 (or 0 to disable), got {diverge_threshold}")
    from optimlab.lab.tools import run_lr_find

    with _progress(quiet, 1) as progress:
        tool, result = _call(
            run_lr_find,
            optimizer,
            out,
            model,
            start_lr,
            end_lr,
            steps,
            mode,
            smoothing,
            diverge_threshold or None,
            rule,
            batch_size,
            images,
            seed,
            threads,
            progress,
        )
    if quiet:
        click.echo(repr(result.suggested_lr))
        return
    console = _console()
    console.print(
        f"Range test: {len(result.lrs)} steps, stopped: {result.stop_reason}"
        + (f" at lr {result.stop_lr:.3g}" if result.stop_lr is not None else "")
    )
    for r, lr in result.suggestions.items():
        mark = "  [bold](suggested)[/]" if r == rule else ""
        console.print(f"  {r:>9}: {'—' if lr is None else f'{lr:.3g}'}{mark}")
    _print_report(tool.index, tool.seconds, tool.figures)


# ------------------------------------------------------------------------------------------------- schedule


def _parse_milestones(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        _fail(f"--milestones must be comma-separated integers, got {text!r}")
    if not values or any(v <= 0 for v in values) or values != sorted(values):
        _fail(f"--milestones must be increasing positive integers, got {text!r}")
    return values


@cli.command()
@click.argument("schedulers", nargs=-1, required=True, metavar="SCHEDULER...")
@click.option("--steps", type=click.IntRange(min=1), default=100, show_default=True, help="Steps to simulate.")
@click.option("--lr", type=float, default=0.1, show_default=True, help="The optimizer's initial (base) lr.")
@click.option(
    "--optimizer",
    default="sgd:momentum=0.9",
    show_default=True,
    metavar="SPEC",
    help="The optimizer the schedulers drive; momentum-cycling schedulers (OneCycleLR, CyclicLR) cycle its "
    "momentum (SGD) or beta1 (adam).",
)
@click.option(
    "--milestones",
    default=None,
    metavar="N[,N...]",
    help="Chain the schedulers one after the other (SequentialLR), switching at these steps; without it "
    "each scheduler is drawn as its own curve.",
)
@click.option(
    "--metric",
    type=float,
    default=1.0,
    show_default=True,
    help="Value fed to ReduceLROnPlateau every step (constant: a plateau).",
)
@click.option(
    "--out",
    "-o",
    "out",
    default="optimlab-schedule",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder to write the plot, the numbers and a page to.",
)
def schedule(
    schedulers: tuple[str, ...], steps: int, lr: float, optimizer: str, milestones: str | None, metric: float, out: str
) -> None:
    """Plot the learning rate (and momentum) a scheduler sets over the steps.

    Schedulers are optimlab.lr_scheduler classes written Name:arg=value,... (see `optimlab list --schedulers`).

    \b
    Examples:
      optimlab schedule OneCycleLR:max_lr=0.1,total_steps=100
      optimlab schedule CosineAnnealingLR:T_max=100 StepLR:step_size=30,gamma=0.5
      optimlab schedule LinearWarmupCosineAnnealingLR:warmup_steps=10,total_steps=100
      optimlab schedule LinearLR:start_factor=0.1,total_iters=10 CosineAnnealingLR:T_max=90 --milestones 10
    """
    _positive("--lr", lr)
    from optimlab.lab.tools import run_schedule

    result = _call(run_schedule, list(schedulers), steps, lr, optimizer, _parse_milestones(milestones), out, metric)
    console = _console()
    for r in result.rows:
        console.print(f"{r['schedule']}: lr {r['first_lr']:.4g} → peak {r['peak_lr']:.4g} → last {r['last_lr']:.4g}")
    _print_report(result.index, result.seconds, result.figures)


# ------------------------------------------------------------------------------------------------- list


@cli.command("list")
@click.option(
    "--all-arguments",
    "-a",
    is_flag=True,
    help="Also show implementation flags (foreach, fused, capturable, differentiable, maximize).",
)
@click.option("--schedulers", is_flag=True, help="List the schedulers `optimlab schedule` accepts instead.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts) instead of a table.")
def list_(all_arguments: bool, schedulers: bool, as_json: bool) -> None:
    """List optimlab's optimizers with their hyperparameters and defaults."""
    from optimlab.lab.tools import describe_optimizers, describe_schedulers

    rows = describe_schedulers() if schedulers else describe_optimizers(all_arguments)
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    from rich.markup import escape
    from rich.table import Table

    key = "arguments" if schedulers else "hyperparameters"
    table = Table(title="optimlab.lr_scheduler" if schedulers else "optimlab optimizers", show_lines=True)
    table.add_column("name", style="bold", no_wrap=True)
    table.add_column(key, overflow="fold")
    if not schedulers:
        table.add_column("in torch.optim")
    table.add_column("what it is", overflow="fold")
    for r in rows:
        args = "\n".join(f"{k}={v}" for k, v in r[key].items())
        cells = [r["name"], args] + ([] if schedulers else ["yes" if r["in_torch"] else "new"]) + [r["summary"]]
        table.add_row(*(escape(c) for c in cells))  # docstrings hold brackets rich would read as markup
    _console().print(table)


# ------------------------------------------------------------------------------------------------- entry point


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``optimlab`` command; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    prog = "optimlab"
    try:
        cli.main(args=args, prog_name=prog, standalone_mode=False)
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.exceptions.Abort:
        click.echo("optimlab: aborted", err=True)
        return 130
    except click.UsageError as e:
        cmd = e.ctx.command_path if e.ctx is not None else prog
        message = " ".join(e.format_message().split())
        click.echo(f"{cmd}: error: {message} (see '{cmd} --help')", err=True)
        return 2
    except click.ClickException as e:
        click.echo(f"{prog}: error: {' '.join(e.format_message().split())}", err=True)
        return e.exit_code
    except KeyboardInterrupt:
        click.echo("optimlab: interrupted", err=True)
        return 130
    except Exception as e:
        if os.environ.get("OPTIMLAB_DEBUG"):
            raise
        message = " ".join(str(e).split()) or type(e).__name__
        click.echo(f"{prog}: error: {type(e).__name__}: {message} (set OPTIMLAB_DEBUG=1 for the traceback)", err=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
