"""Markdown reports and figures of evaluation metrics: one run (``report.md``) or several compared (``compare.md``).

This module writes the files; the pieces live apart, one job each: ``report_tables`` (the metrics flattened into
rows, formatted and compared, verdicts), ``report_figures`` (the matplotlib figures) and ``report_examples``
(confusion counts and detection examples drawn from the records). Files are written atomically (temporary file +
rename) and are byte-for-byte deterministic. matplotlib is optional (the ``plot`` extra): without it the markdown
is still written and the figures are skipped.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from pathlib import Path

from .io_atomic import atomic_path
from .report_examples import confusion, draw_boxes, example_panels  # noqa: F401  (re-exported: the old home)
from .report_figures import bars_figure, confusion_figure, examples_figure, figure_class
from .report_tables import (  # noqa: F401  (re-exported: callers read the tables from here)
    comparison_table,
    flatten,
    format_value,
    metrics_table,
    verdict,
)
from .text import one_line

_LEGEND = ("Each cell reads value [95% bootstrap interval]. Fractions lie in [0, 1]; MAE counts objects (lower is "
           "better); CIDEr is on a 0-10 scale; n is the number of items scored; — marks a figure a run lacks.")


# ---------------------------------------------------------------- files
def _atomic(path: Path, write) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        write(f)


def _save_text(path: Path, text: str) -> None:
    _atomic(path, lambda f: f.write(text.encode("utf-8")))


def _save_fig(fig, path: Path) -> None:
    _atomic(path, lambda f: fig.savefig(f, format="png", dpi=100, metadata={"Software": None}))


def _sync_figures(out: Path, owned: Sequence[str], written: Sequence[str]) -> None:
    """Remove figures of an earlier report that this one did not draw, so the directory never contradicts it."""
    for name in owned:
        if name not in written:
            with contextlib.suppress(FileNotFoundError):
                (out / name).unlink()


def _head(title: str, notes: Sequence[str]) -> list[str]:
    lines = [f"# {title}", ""]
    if notes:
        lines += ["## Notes", "", *(f"- {one_line(n)}" for n in notes), ""]
    return lines


# ---------------------------------------------------------------- reports
def write_report(out_dir, metrics: Mapping, *, title: str, records: Sequence[Mapping] | None = None,
                 predictions: Mapping[str, str] | None = None, baseline: Mapping | None = None,
                 notes: Sequence[str] = (), n_examples: int = 4) -> Path:
    """``out_dir/report.md`` (title, notes, metrics table) with ``bars.png`` and, given records and predictions
    (keyed by record id), ``confusion.png`` and ``examples.png``. Returns the report path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    flat = flatten(metrics)
    lines = _head(title, notes) + ["## Metrics", "", metrics_table(["value"], [metrics], baseline) if flat
                                   else "(no metrics)", "", _LEGEND, ""]
    figures: list[tuple[str, str]] = []
    Figure = figure_class()
    if Figure is None:
        lines += ["Figures skipped: matplotlib is not installed.", ""]
    else:
        base = flatten(baseline) if baseline is not None else None
        draws = [("bars.png", "Metrics with 95% intervals", lambda: bars_figure(Figure, ["value"], [flat], base))]
        if records and predictions is not None:
            draws += [("confusion.png", "Classification confusion (rows true, columns predicted)",
                       lambda: confusion_figure(Figure, records, predictions)),
                      ("examples.png", "Detection examples: truth in green, prediction in red",
                       lambda: examples_figure(Figure, records, predictions, n_examples))]
        for name, caption, draw in draws:
            if (fig := draw()) is not None:
                _save_fig(fig, out / name)
                figures.append((name, caption))
    _sync_figures(out, ("bars.png", "confusion.png", "examples.png"), [n for n, _ in figures])
    if figures:
        lines += ["## Figures", ""] + [f"![{c}]({n})\n" for n, c in figures]
    path = out / "report.md"
    _save_text(path, "\n".join(lines).rstrip("\n") + "\n")
    return path


def write_comparison(out_dir, names: Sequence[str], metrics: Sequence[Mapping], paired: Sequence[Mapping | None],
                     *, title: str, baseline: Mapping | None = None, notes: Sequence[str] = ()) -> Path:
    """``out_dir/compare.md``: every run's figures, the paired difference of runs 2.. to the first with a verdict,
    and ``compare.png`` (grouped bars per metric across runs). Returns the markdown path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = [str(n) for n in names]
    table = comparison_table(names, metrics, paired, baseline)
    lines = _head(title, notes) + ["## Metrics", "", table, "", _LEGEND,
                                   f"Δ is the paired difference (run − {names[0]}) over the same items with its 95% "
                                   "bootstrap interval; the verdict is better or worse when that interval excludes "
                                   "0 (for MAE lower is better), otherwise no significant difference.", ""]
    Figure = figure_class()
    fig = None
    if Figure is None:
        lines += ["Figures skipped: matplotlib is not installed.", ""]
    else:
        fig = bars_figure(Figure, names, [flatten(m) for m in metrics],
                          flatten(baseline) if baseline is not None else None)
    if fig is not None:
        _save_fig(fig, out / "compare.png")
        lines += ["## Figures", "", "![Metrics across runs with 95% intervals](compare.png)", ""]
    _sync_figures(out, ("compare.png",), ["compare.png"] if fig is not None else [])
    path = out / "compare.md"
    _save_text(path, "\n".join(lines).rstrip("\n") + "\n")
    return path
