"""The report folder: PNG figures, raw numbers (CSV and JSON) and one self-contained HTML page.

Layout of a report folder::

    index.html        the page (styles inline, figures embedded, so it can be mailed or moved on its own)
    figures/*.png     every figure as a file
    data/*.csv|json   the raw numbers behind every figure and table
    summary.json      what ran: experiments, settings, timings, versions

Each experiment adds a :class:`Section`: a title, a short explanation of what to look at and why it happens,
its figures with captions, its tables and the names of its data files.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import math
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

from matplotlib.figure import Figure

from optimlab.lab.plots import save_figure

__all__ = ["FigureRef", "ReportWriter", "Section", "Table", "to_jsonable"]


@dataclass
class FigureRef:
    """A figure saved in the report: its file name (relative to ``figures/``) and its caption (HTML)."""

    filename: str
    caption: str


@dataclass
class Table:
    """A small table shown in the page (and saved as CSV by the experiment that made it)."""

    columns: list[str]
    rows: list[list[Any]]
    caption: str = ""


@dataclass
class Section:
    """One experiment in the report.

    Args:
        slug: short identifier, used as the HTML anchor.
        title: section heading.
        lead: one or two sentences: the question the experiment answers.
        look: what to look at in the figures (HTML).
        why: why it happens (HTML).
        figures, tables, data_files: what the experiment produced.
        seconds: how long it took.
    """

    slug: str
    title: str
    lead: str
    look: str = ""
    why: str = ""
    figures: list[FigureRef] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    data_files: list[str] = field(default_factory=list)
    seconds: float = 0.0
    extra: str = ""


def to_jsonable(obj: Any) -> Any:
    """Plain JSON types; non-finite floats become the strings "nan"/"inf"/"-inf" (JSON has no NaN)."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if hasattr(obj, "item") and callable(obj.item):
        return to_jsonable(obj.item())
    return obj


def _format_cell(value: Any) -> str:
    if isinstance(value, float):
        if not math.isfinite(value):
            return "—"
        return f"{value:.4g}"
    return html.escape(str(value))


class ReportWriter:
    """Writes figures, data files and the HTML page into ``out_dir``.

    Args:
        out_dir: the report folder (created if needed; files already there with the same names are replaced).
        title: the page title.
        dpi: resolution of the PNG figures.
        embed_figures: embed the PNGs in the HTML page (self-contained) as well as linking the files.
    """

    def __init__(self, out_dir: str | Path, title: str, dpi: int = 110, embed_figures: bool = True) -> None:
        self.out_dir = Path(out_dir)
        self.title = title
        self.dpi = dpi
        self.embed_figures = embed_figures
        self.sections: list[Section] = []
        (self.out_dir / "figures").mkdir(parents=True, exist_ok=True)
        (self.out_dir / "data").mkdir(parents=True, exist_ok=True)

    # -------------------------------------------------------------------------------------------- files

    def figure(self, fig: Figure, name: str, caption: str) -> FigureRef:
        """Save ``fig`` as ``figures/<name>.png`` and return its reference for a section."""
        filename = f"{name}.png"
        save_figure(fig, self.out_dir / "figures" / filename, dpi=self.dpi)
        return FigureRef(filename, caption)

    def csv(self, name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
        """Write ``data/<name>.csv`` (full float precision) and return its relative path."""
        rel = f"data/{name}.csv"
        with open(self.out_dir / rel, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(columns)
            for row in rows:
                writer.writerow([repr(v) if isinstance(v, float) else v for v in row])
        return rel

    def json(self, name: str, obj: Any) -> str:
        """Write ``data/<name>.json`` and return its relative path."""
        rel = f"data/{name}.json"
        (self.out_dir / rel).write_text(json.dumps(to_jsonable(obj), indent=1) + "\n")
        return rel

    def add(self, section: Section) -> None:
        self.sections.append(section)

    # -------------------------------------------------------------------------------------------- HTML

    def _img(self, ref: FigureRef) -> str:
        rel = f"figures/{ref.filename}"
        if self.embed_figures:
            data = base64.b64encode((self.out_dir / rel).read_bytes()).decode("ascii")
            src = f"data:image/png;base64,{data}"
        else:
            src = rel
        alt = html.escape(ref.filename)
        return (
            f'<figure><a href="{rel}"><img src="{src}" alt="{alt}" data-file="{rel}"></a>'
            f'<figcaption>{ref.caption} <span class="files">(<a href="{rel}">{html.escape(ref.filename)}</a>)'
            f"</span></figcaption></figure>"
        )

    @staticmethod
    def _table(table: Table) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
        body = "".join("<tr>" + "".join(f"<td>{_format_cell(v)}</td>" for v in row) + "</tr>" for row in table.rows)
        caption = f"<caption>{table.caption}</caption>" if table.caption else ""
        return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def _section(self, s: Section) -> str:
        parts = [f'<section id="{s.slug}">', f"<h2>{html.escape(s.title)}</h2>", f'<p class="lead">{s.lead}</p>']
        if s.look:
            parts.append(f'<div class="look"><strong>What to look at.</strong> {s.look}</div>')
        parts.extend(self._img(f) for f in s.figures)
        if s.why:
            parts.append(f'<div class="why"><strong>Why it happens.</strong> {s.why}</div>')
        parts.extend(self._table(t) for t in s.tables)
        if s.extra:
            parts.append(s.extra)
        if s.data_files:
            links = ", ".join(f'<a href="{html.escape(d)}">{html.escape(d)}</a>' for d in s.data_files)
            parts.append(f'<p class="files">Raw numbers: {links}. Ran in {s.seconds:.1f} s.</p>')
        parts.append("</section>")
        return "\n".join(parts)

    def write_html(self, intro: str = "", subtitle: str = "", footer: str = "") -> Path:
        """Write ``index.html`` with every section added so far and return its path."""
        pkg = resources.files("optimlab.lab") / "templates"
        page = Template((pkg / "report.html").read_text()).substitute(
            title=html.escape(self.title),
            subtitle=subtitle,
            css=(pkg / "report.css").read_text(),
            toc="\n".join(f'<li><a href="#{s.slug}">{html.escape(s.title)}</a></li>' for s in self.sections),
            intro=intro,
            sections="\n".join(self._section(s) for s in self.sections),
            footer=footer,
        )
        path = self.out_dir / "index.html"
        path.write_text(page)
        return path

    def write_summary(self, extra: dict[str, Any] | None = None) -> Path:
        """Write ``summary.json``: the sections, their files and timings, and the software versions."""
        import matplotlib
        import torch

        import optimlab

        summary = {
            "title": self.title,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "versions": {
                "optimlab": optimlab.__version__,
                "torch": torch.__version__,
                "matplotlib": matplotlib.__version__,
                "python": platform.python_version(),
            },
            "sections": [
                {
                    "slug": s.slug,
                    "title": s.title,
                    "seconds": s.seconds,
                    "figures": [f"figures/{f.filename}" for f in s.figures],
                    "data": s.data_files,
                }
                for s in self.sections
            ],
            **(extra or {}),
        }
        path = self.out_dir / "summary.json"
        path.write_text(json.dumps(to_jsonable(summary), indent=1) + "\n")
        return path
