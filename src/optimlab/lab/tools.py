"""The lab's tools for a user's own work, behind ``optimlab compare``, ``lr-find``, ``schedule`` and ``list``.

Each tool checks its inputs first (raising :class:`~optimlab.lab.specs.SpecError`/``ValueError`` with a message
that names the problem, before anything runs), then runs and writes a small report folder like the demo's:
``index.html``, ``figures/`` and ``data/``.
"""

from __future__ import annotations

import inspect
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

import optimlab
from optimlab import registry
from optimlab.lab import plots
from optimlab.lab.experiments import final_table, history_rows, torch_threads, train_specs
from optimlab.lab.functions import FUNCTIONS, get_function, run_trajectory
from optimlab.lab.lr_finder import RULES, LRRangeTestResult, lr_range_test
from optimlab.lab.progress import Progress
from optimlab.lab.report import ReportWriter, Section, Table
from optimlab.lab.specs import OptimizerSpec, SpecError, parse_optimizer_spec, split_spec
from optimlab.lab.tasks import MODELS, load_digits_data, make_model

__all__ = [
    "FLAG_HYPERPARAMETERS",
    "TASKS",
    "ToolResult",
    "describe_optimizers",
    "describe_schedulers",
    "run_compare",
    "run_lr_find",
    "run_schedule",
    "scheduler_classes",
]

TASKS = ("digits", *FUNCTIONS)

#: Constructor arguments that choose an implementation rather than the math; hidden by ``optimlab list``.
FLAG_HYPERPARAMETERS = frozenset({"foreach", "fused", "capturable", "differentiable", "maximize"})


@dataclass
class ToolResult:
    """What a tool wrote and its headline numbers."""

    out_dir: Path
    index: Path
    figures: list[Path] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def _finish(writer: ReportWriter, command: str, seconds: float, settings: dict[str, Any]) -> Path:
    footer = f"optimlab {optimlab.__version__} · torch {torch.__version__} · <code>optimlab {command}</code>"
    index = writer.write_html(subtitle=f"<p>optimlab {command} · {seconds:.1f} s</p>", footer=footer)
    writer.write_summary({"command": command, "settings": settings, "seconds": seconds})
    return index


def _default_key(spec: OptimizerSpec) -> str:
    if spec.name == "SGD" and spec.hyperparameters.get("momentum", 0):
        return "nesterov" if spec.hyperparameters.get("nesterov") else "momentum"
    return spec.name.lower()


def _check_buildable(specs: Sequence[OptimizerSpec]) -> None:
    """Build each optimizer once on a dummy parameter so bad values fail before any run."""
    for spec in specs:
        spec.create([torch.zeros(2, requires_grad=True)])


# ------------------------------------------------------------------------------------------------- compare


def run_compare(
    specs: Sequence[str | OptimizerSpec],
    task: str = "digits",
    out_dir: str | Path = "optimlab-compare",
    epochs: int = 10,
    steps: int | None = None,
    model: str = "cnn",
    images: int | None = None,
    batch_size: int = 64,
    seed: int = 0,
    threads: int = 1,
    progress: Progress | None = None,
) -> ToolResult:
    """Compare optimizers on a built-in task and write a report.

    Args:
        specs: optimizers as ``"NAME[:key=value,...]"`` (e.g. ``"adamw:lr=3e-3,weight_decay=0.05"``).  An
            optimizer without ``lr`` uses its own default on ``digits`` and a value suited to the function on
            the 2-D tasks.
        task: ``"digits"`` (train a small network on scikit-learn's bundled digits) or a 2-D test function
            (``rosenbrock``, ``beale``, ``saddle``, ``quadratic``).
        out_dir: the report folder.
        epochs: epochs on ``digits``.
        steps: optimizer steps on a 2-D function (default: the function's own).
        model: ``"cnn"`` or ``"mlp"`` on ``digits``.
        images: use only this many digit images (default: all 1,797).
        batch_size: mini-batch size on ``digits``.
        seed: seed of the data split, initial weights and batch order (the same for every optimizer).
        threads: torch threads while running.
        progress: progress reporter.
    """
    progress = progress or Progress()
    if not specs:
        raise SpecError("give at least one optimizer to compare")
    parsed = [s if isinstance(s, OptimizerSpec) else parse_optimizer_spec(s) for s in specs]
    labels = [p.label for p in parsed]
    if len(set(labels)) != len(labels):
        raise SpecError(
            f"the same optimizer spec is given twice: {', '.join(sorted({x for x in labels if labels.count(x) > 1}))}"
        )
    task = task.lower()
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
    if task == "digits":
        if epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {epochs}")
        if model not in MODELS:
            raise ValueError(f"unknown model {model!r}; choose from {', '.join(MODELS)}")
        if batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {batch_size}")
    elif steps is not None and steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    _check_buildable(parsed)

    start = time.perf_counter()
    writer = ReportWriter(out_dir, f"optimlab compare: {len(parsed)} optimizers on {task}")
    with torch_threads(threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if task == "digits":
            section, rows = _compare_digits(writer, parsed, epochs, model, images, batch_size, seed, progress)
        else:
            section, rows = _compare_function(writer, parsed, task, steps, progress)
    writer.add(section)
    seconds = time.perf_counter() - start
    section.seconds = seconds
    settings = {
        "specs": [p.text for p in parsed],
        "task": task,
        "epochs": epochs,
        "steps": steps,
        "model": model,
        "images": images,
        "batch_size": batch_size,
        "seed": seed,
    }
    index = _finish(writer, "compare", seconds, settings)
    figures = [writer.out_dir / "figures" / f.filename for f in section.figures]
    return ToolResult(writer.out_dir, index, figures, rows, seconds)


def _compare_digits(
    w: ReportWriter,
    specs: list[OptimizerSpec],
    epochs: int,
    model: str,
    images: int | None,
    batch_size: int,
    seed: int,
    progress: Progress,
) -> tuple[Section, list[dict[str, Any]]]:
    progress.stage(f"{len(specs)} optimizers on digits", len(specs) * epochs)
    data = load_digits_data(seed=seed, limit=images)
    histories = train_specs(specs, data, epochs, model, seed, progress, batch_size)
    cols, rows = history_rows(histories)
    files = [w.csv("compare", cols, rows)]
    files.append(
        w.json(
            "compare",
            {
                h.label: {
                    "spec": s.text,
                    **h.final(),
                    "curves": {k: getattr(h, k) for k in ("train_loss", "val_loss", "train_acc", "val_acc")},
                }
                for h, s in zip(histories, specs)
            },
        )
    )
    n_train, n_val = data.sizes
    figs = [
        w.figure(
            plots.plot_training_curves(
                histories, f"{model.upper()} on digits ({n_train} train / {n_val} val images), {epochs} epochs"
            ),
            "compare_curves",
            "Loss and accuracy after every epoch; every run starts from the same weights and sees the same batches.",
        ),
        w.figure(
            plots.plot_final_bars(histories, "After the last epoch (validation set)"),
            "compare_final",
            "Final validation accuracy and loss, sorted.",
        ),
    ]
    section = Section(
        slug="compare",
        title=f"{len(specs)} optimizers on digits",
        lead="Each optimizer trains the same freshly initialised network on scikit-learn's bundled 8×8 digits.",
        look="How fast the training loss falls, and whether validation follows (the gap is over-fitting).",
        figures=figs,
        tables=[final_table(histories, specs)],
        data_files=files,
    )
    out = [{"optimizer": s.text, **h.final(), "diverged": h.diverged} for h, s in zip(histories, specs)]
    return section, out


def _compare_function(
    w: ReportWriter, specs: list[OptimizerSpec], task: str, steps: int | None, progress: Progress
) -> tuple[Section, list[dict[str, Any]]]:
    function = get_function(task)
    with_lr = [s.with_defaults(lr=function.default_lr(_default_key(s))) for s in specs]
    for s, orig in zip(with_lr, specs):
        s.label = orig.label if "lr" in orig.hyperparameters else f"{orig.label} (lr={s.hyperparameters['lr']:g})"
    progress.stage(f"{len(specs)} optimizers on {task}", len(specs))
    trajs = []
    for s in with_lr:
        trajs.append(run_trajectory(function, s.create, steps=steps, label=s.label))
        progress.advance()
    runs = {task: (function, trajs)}
    fstar = function.min_value or 0.0
    files = [
        w.json(
            "compare",
            {
                t.label: {"spec": s.text, "points": t.points, "values": t.values, "diverged": t.diverged}
                for t, s in zip(trajs, with_lr)
            },
        ),
        w.csv(
            "compare",
            ["optimizer", "step", "x", "y", "f"],
            [[t.label, i, p[0], p[1], v] for t in trajs for i, (p, v) in enumerate(zip(t.points, t.values))],
        ),
    ]
    figs = [
        w.figure(
            plots.plot_trajectories(runs),
            "compare_paths",
            "Each optimizer's path from the same start (white dot) over the contours; ★ is the minimum.",
        ),
        w.figure(plots.plot_trajectory_values(runs), "compare_values", "f − f* over the steps (log scale)."),
    ]
    out = []
    table_rows = []
    for t, s in zip(trajs, with_lr):
        final = t.values[-1]
        gap = final - fstar if math.isfinite(final) and not t.diverged else math.inf
        out.append(
            {
                "optimizer": s.text,
                "steps": len(t.values) - 1,
                "final_point": t.points[-1],
                "final_value": final,
                "gap": gap,
                "diverged": t.diverged,
            }
        )
        table_rows.append(
            [
                t.label,
                len(t.values) - 1,
                f"({t.points[-1][0]:.4g}, {t.points[-1][1]:.4g})",
                final,
                gap,
                "yes" if t.diverged else "",
            ]
        )
    section = Section(
        slug="compare",
        title=f"{len(specs)} optimizers on {task}: f = {function.formula}",
        lead=f"{function.note.capitalize()}.",
        figures=figs,
        tables=[Table(["optimizer", "steps", "final point", "final f", "f − f*", "diverged"], table_rows)],
        data_files=files,
    )
    return section, out


# ------------------------------------------------------------------------------------------------- lr-find


def run_lr_find(
    optimizer: str = "sgd:momentum=0.9",
    out_dir: str | Path = "optimlab-lr-find",
    model: str = "cnn",
    start_lr: float = 1e-6,
    end_lr: float = 10.0,
    num_steps: int = 200,
    mode: str = "exp",
    smoothing: float = 0.1,
    diverge_threshold: float | None = 4.0,
    rule: str = "valley",
    batch_size: int = 64,
    images: int | None = None,
    seed: int = 0,
    threads: int = 1,
    progress: Progress | None = None,
) -> tuple[ToolResult, LRRangeTestResult]:
    """Run the learning-rate range test for ``optimizer`` on the digits task and write a report.

    For your own model, call :func:`optimlab.lab.lr_range_test` from Python.  Arguments are those of
    :func:`~optimlab.lab.lr_finder.lr_range_test` plus the task's (``model``, ``batch_size``, ``images``).
    """
    progress = progress or Progress()
    spec = parse_optimizer_spec(optimizer)
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; choose from {', '.join(MODELS)}")
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; choose from {', '.join(RULES)}")
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    _check_buildable([spec])
    start = time.perf_counter()
    writer = ReportWriter(out_dir, f"optimlab lr-find: {spec.text} on digits ({model})")
    with torch_threads(threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        data = load_digits_data(seed=seed, limit=images)
        net = make_model(model, seed=seed)
        opt = spec.create(net.parameters())
        gen = torch.Generator().manual_seed(seed)

        class _Batches:
            def __iter__(self) -> Any:
                order = torch.randperm(len(data.y_train), generator=gen)
                for i in range(0, len(order), batch_size):
                    idx = order[i : i + batch_size]
                    yield data.x_train[idx], data.y_train[idx]

        progress.stage("learning-rate range test", num_steps)
        result = lr_range_test(
            opt,
            lambda b: nn.functional.cross_entropy(net(b[0]), b[1]),
            loader=_Batches(),
            model=net,
            start_lr=start_lr,
            end_lr=end_lr,
            num_steps=num_steps,
            mode=mode,  # type: ignore[arg-type]
            smoothing=smoothing,
            diverge_threshold=diverge_threshold,
            skip_start=max(1, num_steps // 20),
            skip_end=max(1, num_steps // 40),
            rule=rule,  # type: ignore[arg-type]
            callback=lambda *_: progress.advance(),
        )
    files = [writer.json("lr_find", {"optimizer": spec.text, "model": model, **result.to_dict()})]
    result.to_csv(writer.out_dir / "data" / "lr_find.csv")
    files.append("data/lr_find.csv")
    fig, axes = plots.new_figure(1, 1, 8.5, 5.0)
    result.plot(ax=axes[0, 0], title=f"Learning-rate range test: {spec.text} on the digits {model.upper()}")
    figs = [
        writer.figure(fig, "lr_find", "Loss against learning rate, raw and smoothed, with the three suggestion rules.")
    ]
    sugg = result.suggestions
    table = Table(["rule", "suggested lr"], [[r, "—" if v is None else v] for r, v in sugg.items()])
    seconds = time.perf_counter() - start
    writer.add(
        Section(
            slug="lr-find",
            title="Learning-rate range test",
            lead=f"{len(result.lrs)} mini-batches with the lr raised from {start_lr:g} towards {end_lr:g} "
            f"({mode} sweep); stopped: {result.stop_reason}.",
            look="Pick an lr on the steep descent of the smoothed curve, well before its lowest point.",
            figures=figs,
            tables=[table],
            data_files=files,
            seconds=seconds,
        )
    )
    settings = {
        "optimizer": spec.text,
        "model": model,
        "start_lr": start_lr,
        "end_lr": end_lr,
        "steps": num_steps,
        "mode": mode,
        "smoothing": smoothing,
        "diverge_threshold": diverge_threshold,
        "rule": rule,
        "batch_size": batch_size,
        "images": images,
        "seed": seed,
    }
    index = _finish(writer, "lr-find", seconds, settings)
    rows = [{"rule": r, "lr": v} for r, v in sugg.items()]
    return ToolResult(writer.out_dir, index, [writer.out_dir / "figures" / "lr_find.png"], rows, seconds), result


# ------------------------------------------------------------------------------------------------- schedule

# Schedulers that need Python objects (functions, other schedulers) rather than numbers.
_PYTHON_ONLY = {
    "LambdaLR",
    "MultiplicativeLR",
    "HyperparameterScheduler",
    "SequentialLR",
    "ChainedScheduler",
    "LRScheduler",
    "_LRScheduler",
}


def scheduler_classes() -> dict[str, type]:
    """optimlab's schedulers that can be built from numbers alone (what ``optimlab schedule`` accepts)."""
    from optimlab import lr_scheduler

    out = {}
    for name in lr_scheduler.__all__:
        cls = getattr(lr_scheduler, name)
        if isinstance(cls, type) and name not in _PYTHON_ONLY:
            out[name] = cls
    return out


def _scheduler_arguments(cls: type) -> dict[str, Any]:
    sig = inspect.signature(cls.__init__)
    return {
        n: p.default
        for n, p in sig.parameters.items()
        if n not in ("self", "optimizer", "last_epoch", "verbose") and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }


def _find_scheduler(name: str) -> type:
    classes = scheduler_classes()
    by_lower = {n.lower(): c for n, c in classes.items()}
    cls = by_lower.get(name.lower())
    if cls is None:
        import difflib

        close = difflib.get_close_matches(name, list(classes), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; choose from {', '.join(classes)}"
        raise SpecError(f"unknown scheduler {name!r}{hint}")
    return cls


def _build_scheduler(optimizer: torch.optim.Optimizer, spec: str) -> Any:
    name, kwargs = split_spec(spec, "scheduler")
    cls = _find_scheduler(name)
    args = _scheduler_arguments(cls)
    unknown = sorted(set(kwargs) - set(args))
    if unknown:
        raise SpecError(f"{cls.__name__} has no argument {', '.join(unknown)}; it takes {', '.join(args)}")
    missing = [n for n, d in args.items() if d is inspect.Parameter.empty and n not in kwargs]
    if missing:
        raise SpecError(f"{cls.__name__} needs {', '.join(missing)} (e.g. {cls.__name__}:{missing[0]}=...)")
    try:
        return cls(optimizer, **kwargs)
    except (ValueError, TypeError, ZeroDivisionError) as e:
        raise SpecError(f"{spec}: {e}") from None


def _momentum_of(group: dict[str, Any]) -> float | None:
    if "betas" in group:
        return float(group["betas"][0])
    if "momentum" in group:
        return float(group["momentum"])
    return None


def _record_schedule(
    specs: Sequence[str], steps: int, optimizer: OptimizerSpec, milestones: Sequence[int] | None, metric: float
) -> dict[str, list[float]]:
    import warnings

    from optimlab import lr_scheduler

    param = torch.zeros(1, requires_grad=True)
    opt = optimizer.create([param])
    scheds = [_build_scheduler(opt, s) for s in specs]
    if milestones is not None:
        if len(milestones) != len(scheds) - 1:
            raise SpecError(
                f"{len(scheds)} schedulers chained need {len(scheds) - 1} milestone(s), got {len(milestones)}"
            )
        try:
            sched = lr_scheduler.SequentialLR(opt, scheds, milestones=list(milestones))
        except (ValueError, TypeError) as e:
            raise SpecError(f"cannot chain {' then '.join(specs)}: {e}") from None
    else:
        sched = scheds[0]
    plateau = isinstance(sched, lr_scheduler.ReduceLROnPlateau)
    lrs, moms = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. OneCycleLR past total_steps is reported as an error below instead
        for _ in range(steps):
            group = opt.param_groups[0]
            lrs.append(float(group["lr"]))
            m = _momentum_of(group)
            if m is not None:
                moms.append(m)
            opt.step()
            try:
                if plateau:
                    sched.step(metric)
                else:
                    sched.step()
            except (ValueError, ZeroDivisionError, TypeError) as e:
                hint = "; use fewer --steps" if "total" in str(e) else ""
                raise SpecError(f"{' then '.join(specs)}: {e} (at step {len(lrs)}{hint})") from None
    return {"lr": lrs, "momentum": moms}


def run_schedule(
    specs: Sequence[str],
    steps: int = 100,
    lr: float = 0.1,
    optimizer: str = "sgd:momentum=0.9",
    milestones: Sequence[int] | None = None,
    out_dir: str | Path = "optimlab-schedule",
    metric: float = 1.0,
) -> ToolResult:
    """Plot the learning rate (and momentum / β₁) that schedulers set, step by step, and write a report.

    Args:
        specs: schedulers of :mod:`optimlab.lr_scheduler` as ``"Name:arg=value,..."`` (e.g.
            ``"OneCycleLR:max_lr=0.1,total_steps=100"``); each is drawn as its own curve, or, with
            ``milestones``, they are chained into one ``SequentialLR``.
        steps: optimizer steps to simulate.
        lr: the optimizer's initial lr (the schedulers' ``base_lr``).
        optimizer: the optimizer spec (``sgd:momentum=0.9`` so that momentum-cycling schedulers have
            something to cycle; use ``adam`` to see β₁ instead).
        milestones: chain the schedulers with ``SequentialLR`` switching at these steps.
        out_dir: the report folder.
        metric: the value fed to ``ReduceLROnPlateau`` every step (constant: a plateau, so it reduces the lr
            every ``patience + 1`` steps).
    """
    if not specs:
        raise SpecError("give at least one scheduler, e.g. CosineAnnealingLR:T_max=100")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a positive number, got {lr}")
    opt_spec = parse_optimizer_spec(optimizer).with_defaults(lr=lr)
    start = time.perf_counter()
    if milestones is not None:
        label = " → ".join(specs) + f" (switch at {', '.join(map(str, milestones))})"
        records = {label: _record_schedule(specs, steps, opt_spec, milestones, metric)}
    else:
        records = {s: _record_schedule([s], steps, opt_spec, None, metric) for s in specs}
    writer = ReportWriter(out_dir, "optimlab schedule")
    labels = list(records)
    files = [
        writer.json(
            "schedule", {"optimizer": opt_spec.text, "steps": steps, "milestones": milestones, "schedules": records}
        ),
        writer.csv(
            "schedule",
            ["step", *[f"lr[{x}]" for x in labels], *[f"momentum[{x}]" for x in labels if records[x]["momentum"]]],
            [
                [
                    t,
                    *[records[x]["lr"][t] for x in labels],
                    *[records[x]["momentum"][t] for x in labels if records[x]["momentum"]],
                ]
                for t in range(steps)
            ],
        ),
    ]
    fig = plots.plot_schedules(records, f"Schedules over {steps} steps (optimizer {opt_spec.text})")
    figs = [writer.figure(fig, "schedule", "The lr the optimizer used at each step (and momentum/β₁ if it changes).")]
    seconds = time.perf_counter() - start
    writer.add(
        Section(
            slug="schedule",
            title="Schedules",
            lead="Step 0 is the value after the scheduler is built; each following value is the one the optimizer "
            "uses after one more <code>scheduler.step()</code>.",
            figures=figs,
            tables=[
                Table(
                    ["schedule", "first lr", "peak lr", "last lr"],
                    [[x, r["lr"][0], max(r["lr"]), r["lr"][-1]] for x, r in records.items()],
                )
            ],
            data_files=files,
            seconds=seconds,
        )
    )
    index = _finish(
        writer,
        "schedule",
        seconds,
        {"specs": list(specs), "steps": steps, "lr": lr, "optimizer": opt_spec.text, "milestones": milestones},
    )
    rows = [
        {"schedule": x, "first_lr": r["lr"][0], "peak_lr": max(r["lr"]), "last_lr": r["lr"][-1]}
        for x, r in records.items()
    ]
    return ToolResult(writer.out_dir, index, [writer.out_dir / "figures" / "schedule.png"], rows, seconds)


# ------------------------------------------------------------------------------------------------- list


def _plain(doc: str) -> str:
    """A docstring's first paragraph as one line of plain text (reST roles such as :math:`x` unwrapped)."""
    first = doc.split("\n\n")[0]
    return " ".join(re.sub(r":\w+:`([^`]*)`", r"\1", first).replace("``", "").split())


def _fmt_default(value: Any) -> str:
    if value is inspect.Parameter.empty:
        return "(required)"
    return repr(value)


def describe_optimizers(all_arguments: bool = False) -> list[dict[str, Any]]:
    """Every optimizer: name, hyperparameters with defaults, whether torch.optim has it, one-line summary."""
    out = []
    for info in registry.list_optimizers():
        hps = {k: v for k, v in info.hyperparameters.items() if all_arguments or k not in FLAG_HYPERPARAMETERS}
        out.append(
            {
                "name": info.name,
                "hyperparameters": {k: _fmt_default(v) for k, v in hps.items()},
                "in_torch": info.in_torch,
                "summary": _plain(inspect.getdoc(info.cls) or ""),
                "references": info.references,
            }
        )
    return out


def describe_schedulers() -> list[dict[str, Any]]:
    """Every scheduler ``optimlab schedule`` can build, with its arguments and defaults."""
    out = []
    for name, cls in scheduler_classes().items():
        out.append(
            {
                "name": name,
                "arguments": {k: _fmt_default(v) for k, v in _scheduler_arguments(cls).items()},
                "summary": _plain(inspect.getdoc(cls) or ""),
            }
        )
    return out
