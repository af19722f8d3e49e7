"""The figures of a report, drawn with matplotlib: bars of the metric rows, confusion matrices, detection examples.

matplotlib is optional (the ``plot`` extra), so it is never imported at module level here: ``figure_class``
imports it when a report is written and returns None without it (the markdown is still written, the figures are
skipped), and ``bars_figure`` imports its legend handles only when it draws a legend. Each function takes the
``Figure`` class and returns a figure, or None when there is nothing to draw; ``report.py`` saves them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .report_examples import confusion, example_panels, scaled_box
from .report_tables import NONE_LABEL, NOT_FRACTION, metric_kind, row_keys


def figure_class():
    """matplotlib's ``Figure``, or None without matplotlib (imported here, lazily: it is optional)."""
    try:
        from matplotlib.figure import Figure  # drawing through Figure needs no pyplot state and no display
    except ImportError:
        return None
    return Figure


def bars_figure(Figure, names: Sequence[str], flats: Sequence[dict], base: dict | None):
    """Per task, grouped bars of the fractions (per-class too) with interval error bars; MAE and CIDEr each on
    their own axis; the baseline as a dashed black line over each bar group. None when there is nothing to draw."""
    panels = []
    for task in dict.fromkeys(k[0] for k in row_keys(flats)):
        mets = [m for t, m in row_keys(flats) if t == task and metric_kind(m) != "n"]
        if fr := [m for m in mets if metric_kind(m) not in NOT_FRACTION]:
            panels.append((task, task, fr, True))
        panels += [(task, f"{task}: {m}", [m], False) for m in mets if metric_kind(m) in NOT_FRACTION]
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
        from matplotlib.lines import Line2D  # lazy, as in figure_class: matplotlib is optional
        from matplotlib.patches import Patch

        handles = [Patch(color=f"C{j}", label=name) for j, name in enumerate(names)]
        handles += [Line2D([], [], color="black", linestyle="--", label="majority baseline")] if base else []
        axes[0].legend(handles=handles, fontsize=7)
    fig.tight_layout()
    return fig


def confusion_figure(Figure, records, predictions):
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


def examples_figure(Figure, records, predictions, n: int):
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
                if (xy := scaled_box(b, r.get("coordinate_size"), w, h)) is not None and b.get("label"):
                    ax.text(xy[0], xy[1] if top else xy[3], b["label"], color=color, fontsize=7,
                            va="bottom" if top else "top", clip_on=True)
        said = "unparseable" if pred is None else f"{len(pred)} predicted"
        ax.set_title(f"{str(r['id'])[:32]}\n{len(truth)} true, {said}", fontsize=8)
        ax.set_axis_off()
    fig.suptitle("detect: truth in green, prediction in red", fontsize=10)
    fig.tight_layout()
    return fig

