"""Tables of evaluation metrics: the metrics dict flattened into rows, formatted, compared, judged.

Input is the metrics dict of ``fusar_gpt.scoring.score`` (``{task: {"n", metric, metric + "_ci", "per_class"...}}``,
any task may be absent) and, for comparisons, the paired differences of ``fusar_gpt.scoring.paired``. Every cell of
a table reads ``value [lo, hi]`` (three decimals, the 95% bootstrap interval in brackets), ``n`` rows give the
number of items scored per task, and a figure a run does not have reads ``—``. Apart from ``report.py`` (which
writes the files) and ``report_figures.py`` (which draws the same rows), so that the CLI's ``score`` and
``compare`` print these tables with neither files nor matplotlib.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence

from .data.tasks import REPORT_ORDER

LOWER_IS_BETTER = frozenset({"mae"})
NOT_FRACTION = frozenset({"n", "mae", "cider"})  # everything else is a fraction in [0, 1]
COUNTS = frozenset({"n", "missing"})  # numbers of records: integers, never "1.000"
MISSING = "—"
NONE_LABEL = "(none)"


def is_number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _interval(v) -> tuple[float, float] | None:
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(is_number(x) for x in v):
        return float(v[0]), float(v[1])
    return None


def _float(v) -> float:
    return math.nan if v is None else float(v)


def metric_kind(metric: str) -> str:
    """``coarse/acc[ship]`` -> ``acc``: the metric's kind, which sets its direction and scale."""
    return metric.rsplit("/", 1)[-1].split("[", 1)[0]


def _task_key(task: str):
    return (REPORT_ORDER.index(task), "") if task in REPORT_ORDER else (len(REPORT_ORDER), task)


def flatten(metrics: Mapping | None) -> dict[tuple[str, str], tuple[float, tuple[float, float] | None]]:
    """``{(task, metric): (value, interval or None)}`` in table order. Per-class figures become ``acc[ship]`` /
    ``f1@0.5[ship]``; nested dicts (a level, say) become ``level/metric``."""
    out: dict = {}
    for task in sorted((t for t in (metrics or {}) if isinstance(metrics[t], Mapping)), key=_task_key):
        _flatten_into(out, str(task), metrics[task], "")
    return out


def _flatten_into(out: dict, task: str, d: Mapping, prefix: str) -> None:
    if is_number(d.get("n")):
        out[(task, prefix + "n")] = (float(d["n"]), None)
    nested = []
    for k, v in d.items():
        k = str(k)
        if k == "n" or k.endswith("_ci") or k == "per_class":
            continue
        if is_number(v) or (v is None and k + "_ci" in d):  # None: undefined (say, precision with no predictions)
            out[(task, prefix + k)] = (_float(v), _interval(d.get(k + "_ci")))
        elif isinstance(v, Mapping):
            nested.append((k, v))
    per_class = d.get("per_class")
    if isinstance(per_class, Mapping):
        cis = d.get("per_class_ci") if isinstance(d.get("per_class_ci"), Mapping) else {}
        for key in sorted(per_class, key=str):
            e, label = per_class[key], str(key) or NONE_LABEL
            if is_number(e) or e is None:
                out[(task, f"{prefix}acc[{label}]")] = (_float(e), _interval(cis.get(key)))
            elif isinstance(e, Mapping):
                for m, x in e.items():
                    if (is_number(x) or (x is None and f"{m}_ci" in e)) and m != "n" and not str(m).endswith("_ci"):
                        out[(task, f"{prefix}{m}[{label}]")] = (_float(x), _interval(e.get(f"{m}_ci")))
    for k, v in nested:
        _flatten_into(out, task, v, f"{prefix}{k}/")


def row_keys(flats: Sequence[dict]) -> list[tuple[str, str]]:
    seen: dict = {}
    for f in flats:
        for k in f:
            seen.setdefault(k, None)
    return sorted(seen, key=lambda k: _task_key(k[0]))  # stable: metric order within a task is kept


def _num(x: float, signed: bool) -> str:
    if not math.isfinite(x):
        return "n/a"
    x = 0.0 if abs(x) < 5e-4 else x  # no "-0.000"
    return f"{x:+.3f}" if signed else f"{x:.3f}"


def format_value(metric: str, value, interval=None, *, signed: bool = False) -> str:
    """``0.812 [0.771, 0.850]`` (``+0.052 [+0.010, +0.094]`` when signed); counts (``n``, ``missing``) as
    integers; None -> ``—``."""
    if value is None:
        return MISSING
    if metric_kind(metric) in COUNTS:
        if not math.isfinite(float(value)):
            return "n/a"
        return f"{int(value):+d}" if signed else str(int(value))
    text = _num(float(value), signed)
    ci = _interval(interval)
    return text + (f" [{_num(ci[0], signed)}, {_num(ci[1], signed)}]" if ci else "")


def _cell(flat: dict, key) -> str:
    return format_value(key[1], *flat[key]) if key in flat else MISSING


def verdict(metric: str, diff_ci) -> str:
    """``better`` / ``worse`` when the interval of (run - reference) excludes 0, read with the metric's direction
    (MAE: lower is better); ``no significant difference`` when it holds 0; ``—`` without an interval."""
    ci = _interval(diff_ci)
    if ci is None or not all(math.isfinite(x) for x in ci):
        return MISSING
    lo, hi = sorted(ci)
    if lo <= 0 <= hi:
        return "no significant difference"
    return "better" if (lo > 0) != (metric_kind(metric) in LOWER_IS_BETTER) else "worse"


def _markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    esc = lambda s: str(s).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(map(esc, header)) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(map(esc, r)) + " |" for r in rows])


def metrics_table(names: Sequence[str], metrics: Sequence[Mapping], baseline: Mapping | None = None) -> str:
    """Markdown table: a row per (task, metric), a column per run, plus ``majority baseline`` when given."""
    names, flats = list(names), [flatten(m) for m in metrics]
    if len(names) != len(flats):
        raise ValueError(f"{len(names)} names for {len(flats)} metrics dicts")
    base = flatten(baseline) if baseline is not None else None
    header = ["task", "metric", *names] + (["majority baseline"] if base is not None else [])
    rows = [[k[0], k[1], *(_cell(f, k) for f in flats), *([_cell(base, k)] if base is not None else [])]
            for k in row_keys(flats)]
    return _markdown(header, rows)


def _paired_entry(p, task: str, metric: str) -> Mapping | None:
    node = p.get(task) if isinstance(p, Mapping) else None
    if isinstance(node, Mapping) and isinstance(node.get(metric), Mapping):
        return node[metric]
    for part in metric.split("/"):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node if isinstance(node, Mapping) and "diff" in node else None


def _reversed(p, first: dict, run: dict) -> bool:
    """Whether ``p`` was computed as paired(first, run) rather than paired(run, first): its ``a`` / ``b`` values
    match the first run's / this run's figures (votes over the figures where the two runs differ)."""
    close = lambda x, y: abs(x - y) <= 1e-9 * max(1.0, abs(x), abs(y))
    votes = 0
    for task, node in (p or {}).items():
        for metric, e in (node or {}).items() if isinstance(node, Mapping) else ():
            v0, vi = first.get((task, metric), (math.nan,))[0], run.get((task, metric), (math.nan,))[0]
            if not (isinstance(e, Mapping) and is_number(e.get("a")) and is_number(e.get("b"))) or close(v0, vi):
                continue
            votes += (close(e["a"], vi) and close(e["b"], v0)) - (close(e["a"], v0) and close(e["b"], vi))
    return votes < 0


def _align_paired(names, paired) -> list:
    paired = list(paired)
    if len(paired) == len(names) - 1:
        return [None, *paired]
    if len(paired) != len(names):
        raise ValueError(f"paired must hold one entry per run after the first ({len(names) - 1}) or per run "
                         f"({len(names)}), got {len(paired)}")
    return paired


def comparison_table(names: Sequence[str], metrics: Sequence[Mapping], paired: Sequence[Mapping | None],
                     baseline: Mapping | None = None) -> str:
    """Like ``metrics_table``, with, after each run but the first, its paired difference to the first run
    (``diff`` and ``diff_ci`` of ``paired[i][task][metric]``) and a verdict. Δ always reads run − first:
    ``paired[i]`` is meant as paired(records, run i, first run), and one computed the other way round (its ``a``
    and ``b`` values match the first run's and run i's figures) is negated."""
    names, flats = list(names), [flatten(m) for m in metrics]
    if not names or len(names) != len(flats):
        raise ValueError(f"{len(names)} names for {len(flats)} metrics dicts")
    paired = _align_paired(names, paired)
    flips = [_reversed(p, flats[0], f) for p, f in zip(paired[1:], flats[1:])]
    base = flatten(baseline) if baseline is not None else None
    header = ["task", "metric", names[0]]
    for name in names[1:]:
        header += [name, f"Δ {name} − {names[0]}", f"verdict {name}"]
    header += ["majority baseline"] if base is not None else []
    rows = []
    for key in row_keys(flats):
        row = [key[0], key[1], _cell(flats[0], key)]
        for f, p, flip in zip(flats[1:], paired[1:], flips):
            e = _paired_entry(p, *key)
            diff = e.get("diff") if e is not None and is_number(e.get("diff")) else None
            ci = _interval(e.get("diff_ci")) if diff is not None else None
            if flip and diff is not None:
                diff, ci = -diff, ci and (-ci[1], -ci[0])
            row += [_cell(f, key), format_value(key[1], diff, ci, signed=True),
                    verdict(key[1], ci) if diff is not None else MISSING]
        rows.append(row + ([_cell(base, key)] if base is not None else []))
    return _markdown(header, rows)

