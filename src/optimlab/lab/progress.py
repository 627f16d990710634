"""Progress reporting for long lab runs: silent by default, a rich progress display on the command line."""

from __future__ import annotations

from types import TracebackType
from typing import Any

__all__ = ["Progress", "RichProgress"]


class Progress:
    """What the experiments call.  ``stage`` starts a named piece of work of ``total`` units; ``advance``
    reports units done; ``note`` prints a line of information.  This base class does nothing."""

    def stage(self, description: str, total: int) -> None:
        pass

    def advance(self, units: int = 1) -> None:
        pass

    def note(self, text: str) -> None:
        pass

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class RichProgress(Progress):
    """A rich progress display: a bar for the current stage, and one for the whole run when it has several.

    The display starts with the first stage, so a run that fails while checking its inputs prints only its
    error.

    Args:
        stages: how many stages the run has (an overall bar is shown when there are several).
        console: a ``rich.console.Console`` (default: standard error, so standard output stays clean).
    """

    def __init__(self, stages: int, console: Any = None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as _RichProgress

        self.console = console or Console(stderr=True)
        self._progress = _RichProgress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        )
        self._stages = stages
        self._overall: Any = None
        self._current: Any = None
        self._started = False

    def stage(self, description: str, total: int) -> None:
        if not self._started:
            self._progress.start()
            self._started = True
            if self._stages > 1:
                self._overall = self._progress.add_task("all stages", total=self._stages)
        if self._current is not None:
            self._finish_current()
        self._current = self._progress.add_task(description, total=max(total, 1))

    def _finish_current(self) -> None:
        task = next(t for t in self._progress.tasks if t.id == self._current)
        self._progress.update(self._current, completed=task.total)
        if self._overall is not None:
            self._progress.advance(self._overall)

    def advance(self, units: int = 1) -> None:
        if self._current is not None:
            self._progress.advance(self._current, units)

    def note(self, text: str) -> None:
        self._progress.console.print(text)

    def __enter__(self) -> RichProgress:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._current is not None and exc_type is None:
            self._finish_current()
        if self._started:
            self._progress.stop()
