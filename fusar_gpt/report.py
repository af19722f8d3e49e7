"""Markdown reports and figures of evaluation metrics: one run (``report.md``) or several compared (``compare.md``).

Input is the metrics dict of ``fusar_gpt.scoring.score`` (``{task: {"n", metric, metric + "_ci", "per_class"...}}``,
any task may be absent) and, for comparisons, the paired differences of ``fusar_gpt.scoring.paired``. Every cell of
a table reads ``value [lo, hi]`` (three decimals, the 95% bootstrap interval in brackets), ``n`` rows give the
number of items scored per task, and a figure a run does not have reads ``—``. Files are written atomically
(temporary file + rename) and are byte-for-byte deterministic. matplotlib is optional (the ``plot`` extra): without
it the markdown is still written and the figures are skipped.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .data.tasks import REPORT_ORDER, parse_boxes, parse_label, truth_boxes
from .geo.plain import NOT_8BIT
from .io_atomic import atomic_path

LOWER_IS_BETTER = frozenset({"mae"})
NOT_FRACTION = frozenset({"n", "mae", "cider"})  # everything else is a fraction in [0, 1]
MISSING = "—"
NONE_LABEL = "(none)"
TRUE_RGB, PRED_RGB = (0, 255, 0), (255, 0, 0)
_LEGEND = ("Each cell reads value [95% bootstrap interval]. Fractions lie in [0, 1]; MAE counts objects (lower is "
           "better); CIDEr is on a 0-10 scale; n is the number of items scored; — marks a figure a run lacks.")


# ---------------------------------------------------------------- flattening and formatting
def _number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _interval(v) -> tuple[float, float] | None:
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(_number(x) for x in v):
        return float(v[0]), float(v[1])
    return None


def _float(v) -> float:
    return math.nan if v is None else float(v)


def _base(metric: str) -> str:
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
    if _number(d.get("n")):
        out[(task, prefix + "n")] = (float(d["n"]), None)
    nested = []
    for k, v in d.items():
        k = str(k)
        if k == "n" or k.endswith("_ci") or k == "per_class":
            continue
        if _number(v) or (v is None and k + "_ci" in d):  # None: undefined (say, precision with no predictions)
            out[(task, prefix + k)] = (_float(v), _interval(d.get(k + "_ci")))
        elif isinstance(v, Mapping):
            nested.append((k, v))
    per_class = d.get("per_class")
    if isinstance(per_class, Mapping):
        cis = d.get("per_class_ci") if isinstance(d.get("per_class_ci"), Mapping) else {}
        for key in sorted(per_class, key=str):
            e, label = per_class[key], str(key) or NONE_LABEL
            if _number(e) or e is None:
                out[(task, f"{prefix}acc[{label}]")] = (_float(e), _interval(cis.get(key)))
            elif isinstance(e, Mapping):
                for m, x in e.items():
                    if (_number(x) or (x is None and f"{m}_ci" in e)) and m != "n" and not str(m).endswith("_ci"):
                        out[(task, f"{prefix}{m}[{label}]")] = (_float(x), _interval(e.get(f"{m}_ci")))
    for k, v in nested:
        _flatten_into(out, task, v, f"{prefix}{k}/")


def _keys(flats: Sequence[dict]) -> list[tuple[str, str]]:
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
    """``0.812 [0.771, 0.850]`` (``+0.052 [+0.010, +0.094]`` when signed); ``n`` as an integer; None -> ``—``."""
    if value is None:
        return MISSING
    if _base(metric) == "n":
        return str(int(value))
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
    return "better" if (lo > 0) != (_base(metric) in LOWER_IS_BETTER) else "worse"


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
            for k in _keys(flats)]
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
            if not (isinstance(e, Mapping) and _number(e.get("a")) and _number(e.get("b"))) or close(v0, vi):
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
    for key in _keys(flats):
        row = [key[0], key[1], _cell(flats[0], key)]
        for f, p, flip in zip(flats[1:], paired[1:], flips):
            e = _paired_entry(p, *key)
            diff = e.get("diff") if e is not None and _number(e.get("diff")) else None
            ci = _interval(e.get("diff_ci")) if diff is not None else None
            if flip and diff is not None:
                diff, ci = -diff, ci and (-ci[1], -ci[0])
            row += [_cell(f, key), format_value(key[1], diff, ci, signed=True),
                    verdict(key[1], ci) if diff is not None else MISSING]
        rows.append(row + ([_cell(base, key)] if base is not None else []))
    return _markdown(header, rows)


# ---------------------------------------------------------------- files
def _atomic(path: Path, write) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        write(f)


def _save_text(path: Path, text: str) -> None:
    _atomic(path, lambda f: f.write(text.encode("utf-8")))


def _save_fig(fig, path: Path) -> None:
    _atomic(path, lambda f: fig.savefig(f, format="png", dpi=100, metadata={"Software": None}))


def _figure_class():
    try:
        from matplotlib.figure import Figure  # drawing through Figure needs no pyplot state and no display
    except ImportError:
        return None
    return Figure


def _sync_figures(out: Path, owned: Sequence[str], written: Sequence[str]) -> None:
    """Remove figures of an earlier report that this one did not draw, so the directory never contradicts it."""
    for name in owned:
        if name not in written:
            with contextlib.suppress(FileNotFoundError):
                (out / name).unlink()


def _head(title: str, notes: Sequence[str]) -> list[str]:
    lines = [f"# {title}", ""]
    if notes:
        lines += ["## Notes", "", *(f"- {' '.join(str(n).split())}" for n in notes), ""]
    return lines


# ---------------------------------------------------------------- figures
def _bars(Figure, names: Sequence[str], flats: Sequence[dict], base: dict | None):
    """Per task, grouped bars of the fractions (per-class too) with interval error bars; MAE and CIDEr each on
    their own axis; the baseline as a dashed black line over each bar group. None when there is nothing to draw."""
    panels = []
    for task in dict.fromkeys(k[0] for k in _keys(flats)):
        mets = [m for t, m in _keys(flats) if t == task and _base(m) != "n"]
        if fr := [m for m in mets if _base(m) not in NOT_FRACTION]:
            panels.append((task, task, fr, True))
        panels += [(task, f"{task}: {m}", [m], False) for m in mets if _base(m) in NOT_FRACTION]
    if not panels:
        return None
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    width = max(3.6, 0.35 * max(len(p[2]) for p in panels) * len(flats) + 1.5)
    fig = Figure(figsize=(ncols * width, nrows * 3.6))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    w = 0.8 / len(flats)
    for ax, (task, title, mets, frac) in zip(axes, panels):
        x = np.arange(len(mets))
        for j, f in enumerate(flats):
            idx = [i for i, m in enumerate(mets) if (task, m) in f and math.isfinite(f[(task, m)][0])]
            vals = np.array([f[(task, mets[i])][0] for i in idx])
            cis = [f[(task, mets[i])][1] or (v, v) for i, v in zip(idx, vals)]
            err = np.array([[max(v - lo, 0.0) for v, (lo, _) in zip(vals, cis)],
                            [max(hi - v, 0.0) for v, (_, hi) in zip(vals, cis)]]).reshape(2, len(idx))
            ax.bar(x[idx] + (j - (len(flats) - 1) / 2) * w, vals, w, yerr=err, capsize=3, color=f"C{j}")
        if base is not None:
            bi = [i for i, m in enumerate(mets) if (task, m) in base and math.isfinite(base[(task, m)][0])]
            if bi:
                ax.hlines([base[(task, mets[i])][0] for i in bi], x[bi] - 0.45, x[bi] + 0.45, colors="black",
                          linestyles="--", zorder=3)
        ax.set_xticks(x, mets, rotation=30 if len(mets) > 3 else 0, ha="right" if len(mets) > 3 else "center",
                      fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_xlim(-0.5, len(mets) - 0.5)
        if frac:
            ax.set_ylim(0, 1.05)
        ax.grid(axis="y", alpha=0.3)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    if len(flats) > 1 or base is not None:  # one legend, built by hand so a run absent from a panel keeps its colour
        from matplotlib.lines import Line2D
        from matplotlib.patches import Patch

        handles = [Patch(color=f"C{j}", label=name) for j, name in enumerate(names)]
        handles += [Line2D([], [], color="black", linestyle="--", label="majority baseline")] if base else []
        axes[0].legend(handles=handles, fontsize=7)
    fig.tight_layout()
    return fig


def confusion(records: Sequence[Mapping], predictions: Mapping[str, str], level: str) -> tuple[list[str], np.ndarray]:
    """Confusion counts of the classify records at ``meta["level"] == level`` that have a prediction.
    Returns (labels, matrix): labels sorted (true answers and offered choices), matrix int64 of shape
    (len(labels), len(labels) + 1): rows true label, columns predicted label (``parse_label`` over the record's
    choices) with a last column ``(none)`` for unparseable predictions. Records without a prediction are skipped."""
    rows = [r for r in records if r.get("task") == "classify" and (r.get("meta") or {}).get("level") == level
            and str(r.get("id")) in predictions]
    labels = sorted({str(r["answer"]) for r in rows} | {str(c) for r in rows for c in r["meta"].get("choices") or ()})
    col = {lab: i for i, lab in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels) + 1), dtype=np.int64)
    for r in rows:
        pred = parse_label(predictions[str(r["id"])], r["meta"].get("choices") or labels)
        matrix[col[str(r["answer"])], col.get(str(pred), len(labels)) if pred is not None else len(labels)] += 1
    return labels, matrix


def _confusion_figure(Figure, records, predictions):
    mats = [(lv, *confusion(records, predictions, lv)) for lv in ("coarse", "fine")]
    mats = [m for m in mats if m[2].sum() > 0]
    if not mats:
        return None
    sizes = [max(3.6, 0.55 * len(labels) + 2.2) for _, labels, _ in mats]
    fig = Figure(figsize=(sum(sizes), max(sizes)))
    axes = fig.subplots(1, len(mats), squeeze=False, width_ratios=sizes).ravel()
    for ax, (level, labels, m) in zip(axes, mats):
        ax.imshow(m, cmap="Blues", vmin=0, vmax=max(int(m.max()), 1))
        for (i, j), c in np.ndenumerate(m):
            ax.text(j, i, str(c), ha="center", va="center", fontsize=8, color="white" if c > m.max() / 2 else "black")
        ax.set_xticks(range(len(labels) + 1), [*labels, NONE_LABEL], rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"classify, {level} (n={int(m.sum())}, acc={np.trace(m[:, :-1]) / m.sum():.3f})", fontsize=10)
    fig.tight_layout()
    return fig


def _to_rgb(image) -> Image.Image:
    if isinstance(image, Image.Image) and image.mode not in NOT_8BIT:
        return image.convert("RGB")
    a = np.asarray(image)
    if a.dtype != np.uint8:
        a = np.nan_to_num(a.astype(np.float64))
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        a = ((a - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(a)).round().astype(np.uint8)
    if a.ndim == 2:
        a = np.stack([a] * 3, axis=-1)
    elif a.shape[-1] < 3:
        a = np.repeat(a[..., :1], 3, axis=-1)
    return Image.fromarray(np.ascontiguousarray(a[..., :3]), "RGB")


def _scaled(box, frame, w: int, h: int) -> tuple[int, int, int, int] | None:
    """A frame box (``{"bbox_2d": ...}`` or 4 numbers) in image pixels, ordered and clipped; None if outside."""
    b = box["bbox_2d"] if isinstance(box, Mapping) else box
    fw, fh = (frame, frame) if _number(frame) else tuple(frame) if frame else (w, h)
    x1, x2 = sorted(round(float(v) * w / fw) for v in (b[0], b[2]))
    y1, y2 = sorted(round(float(v) * h / fh) for v in (b[1], b[3]))
    if x2 < 0 or y2 < 0 or x1 > w - 1 or y1 > h - 1:
        return None
    return max(x1, 0), max(y1, 0), min(x2, w - 1), min(y2, h - 1)


def draw_boxes(image, true_boxes, pred_boxes, frame=None) -> np.ndarray:
    """RGB uint8 copy of ``image`` (PIL image or array, any depth) with true boxes outlined in green and predicted
    boxes in red, drawn inward from the box edge; the true outline is twice as thick, so a perfect prediction still
    shows both colours. Boxes are in the ``frame`` (coordinate_size: int or [w, h]); None = image pixels."""
    img = _to_rgb(image)
    w, h = img.size
    t = max(1, round(min(w, h) / 112))
    draw = ImageDraw.Draw(img)
    for boxes, color, width in ((true_boxes, TRUE_RGB, 2 * t), (pred_boxes, PRED_RGB, t)):
        for box in boxes or ():
            if (xy := _scaled(box, frame, w, h)) is not None:
                draw.rectangle(xy, outline=color, width=width)
    return np.asarray(img).copy()


def example_panels(records: Sequence[Mapping], predictions: Mapping[str, str], n: int) -> list[tuple]:
    """Up to ``n`` detect records that have a prediction and a readable image, those with at least one true box
    first (record order otherwise), as (record, true boxes, predicted boxes or None if unparseable, RGB array)."""
    cands, truths = [r for r in records if r.get("task") == "detect" and str(r.get("id")) in predictions], {}
    for r in cands:
        with contextlib.suppress(ValueError):
            truths[id(r)] = truth_boxes(r.get("answer"))
    chosen = []
    for r in sorted((r for r in cands if id(r) in truths), key=lambda r: not truths[id(r)]):
        if len(chosen) >= n:
            break
        pred = parse_boxes(predictions[str(r["id"])])
        try:
            with Image.open(r["image"]) as im:
                arr = draw_boxes(im, truths[id(r)], pred, frame=r.get("coordinate_size"))
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            continue  # a missing or unreadable image is skipped, not fatal
        chosen.append((r, truths[id(r)], pred, arr))
    return chosen


def _examples_figure(Figure, records, predictions, n: int):
    chosen = example_panels(records, predictions, n)
    if not chosen:
        return None
    fig = Figure(figsize=(3.4 * len(chosen), 3.9))
    axes = fig.subplots(1, len(chosen), squeeze=False).ravel()
    for ax, (r, truth, pred, arr) in zip(axes, chosen):
        ax.imshow(arr)
        h, w = arr.shape[:2]
        for boxes, color, top in ((truth, "lime", True), (pred or [], "red", False)):
            for b in boxes:
                if (xy := _scaled(b, r.get("coordinate_size"), w, h)) is not None and b.get("label"):
                    ax.text(xy[0], xy[1] if top else xy[3], b["label"], color=color, fontsize=7,
                            va="bottom" if top else "top", clip_on=True)
        said = "unparseable" if pred is None else f"{len(pred)} predicted"
        ax.set_title(f"{str(r['id'])[:32]}\n{len(truth)} true, {said}", fontsize=8)
        ax.set_axis_off()
    fig.suptitle("detect: truth in green, prediction in red", fontsize=10)
    fig.tight_layout()
    return fig


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
    Figure = _figure_class()
    if Figure is None:
        lines += ["Figures skipped: matplotlib is not installed.", ""]
    else:
        base = flatten(baseline) if baseline is not None else None
        draws = [("bars.png", "Metrics with 95% intervals", lambda: _bars(Figure, ["value"], [flat], base))]
        if records and predictions is not None:
            draws += [("confusion.png", "Classification confusion (rows true, columns predicted)",
                       lambda: _confusion_figure(Figure, records, predictions)),
                      ("examples.png", "Detection examples: truth in green, prediction in red",
                       lambda: _examples_figure(Figure, records, predictions, n_examples))]
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
    Figure = _figure_class()
    fig = None
    if Figure is None:
        lines += ["Figures skipped: matplotlib is not installed.", ""]
    else:
        fig = _bars(Figure, names, [flatten(m) for m in metrics],
                    flatten(baseline) if baseline is not None else None)
    if fig is not None:
        _save_fig(fig, out / "compare.png")
        lines += ["## Figures", "", "![Metrics across runs with 95% intervals](compare.png)", ""]
    _sync_figures(out, ("compare.png",), ["compare.png"] if fig is not None else [])
    path = out / "compare.md"
    _save_text(path, "\n".join(lines).rstrip("\n") + "\n")
    return path
