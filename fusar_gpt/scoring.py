"""Scores of model answers against manifest truths, with bootstrap intervals (DESIGN.md section 3, "Metrics").

The truth is each record's own ``answer`` read with the strict parsers of ``data.tasks`` (a truth that does not
parse is a ValueError naming the record: a broken manifest must not yield a quiet score); model output is read
with the lenient parsers. A record without a prediction is unparseable. Choices this module makes, because the
design leaves them open:

- count: ``acc`` and ``acc_within1`` count unparseable answers as wrong; ``mae`` is over the parseable answers
  only (``None`` when there are none), so read it next to ``acc``: a model can lower MAE by refusing hard images.
- locate: a missing prediction is unparseable and wrong on all three figures, but a present empty answer is
  "none" (the lenient parser's rule). ``top1`` uses the model's own order of mention, not canonical order; when
  the truth is empty, top1 = 1 iff the prediction is empty too. Acc@50 counts empty-vs-empty as 1.
- classify: per-class accuracy is by TRUE label (coarse ``ship``/``plane`` and fine subtypes are distinct labels).
  Without ``meta["choices"]`` the choices are the truth labels of all records of the same ``meta["level"]``.
- landcover: as classify (accuracy, per class by true label); the choices are ``meta["choices"]``, else the
  Dynamic World words ``LANDCOVER_WORDS``.
- detect: a record is (image, asked class = ``meta["class"]``). A predicted box with an empty label takes the
  asked class; labels match case-insensitively and a box can only match a true box of its label (so a wrongly
  labelled box is a false positive). Greedy one-to-one matching by descending IoU (ties: earlier box first);
  IoU on raw coordinates (boxes past the frame are kept), area = (x2-x1)*(y2-y1), a degenerate box has IoU 0.
  Duplicates are false positives. Unparseable or missing output = no boxes, so on a record whose truth is
  ``None`` it costs nothing. Per-class figures pool the records that ask for that class. A ratio that is 0/0
  (P without predictions, R without truths, F1 without TP) is 1 when the set has no errors (FP = FN = 0,
  nothing to find and nothing claimed) and 0 otherwise.
- caption: tokens are lowercased runs of letters/digits (decimals such as ``3.5`` kept whole), punctuation
  dropped. BLEU-4 is corpus-level with uniform weights, brevity penalty and no smoothing (0 if any n-gram
  precision is 0). ROUGE-L is the LCS F-measure with beta 1.2, mean over records. CIDEr-D follows Vedantam et al.
  with one reference: n = 1..4, tf-idf with document frequencies from the evaluated references (log N - log df),
  clipped hypothesis weights, Gaussian length penalty sigma 6, times 10. CIDEr is NOT a fraction: its scale is
  0-10 (10 for a hypothesis equal to its reference, unless every n-gram of it occurs in every reference; a
  single-record set has idf 0 everywhere and so CIDEr 0). The bootstrap keeps the idf of the full set.

Intervals: 95% percentile bootstrap over records (per task; per class over that class's records), with a fixed
seed per (seed, task, class), so ``score`` and ``paired`` draw the same resamples. ``paired`` reports
``diff = a - b`` (positive = run ``a`` higher; for ``mae`` higher is worse) on shared resamples.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

from .boxes import iou  # noqa: F401  (re-exported: callers read IoU, tokens and LCS from here)
from .data.manifest import read_jsonl
from .data.tasks import LANDCOVER_WORDS, REGISTRY, TASKS
from .outcomes import CIDER_SIGMA, ROUGE_BETA, THRESHOLDS, Figures, lcs, match_boxes, tokens  # noqa: F401


# ---------------------------------------------------------------- per-record outcomes
def per_record(records: Sequence[dict], predictions: Mapping[str, str]) -> dict[str, list[dict]]:
    """Task -> one JSON-able outcome per record (record order; tasks in registry order); ``score`` and ``paired``
    aggregate exactly these. ``pred`` is the parsed prediction (None = unparseable/missing); classify outcomes
    give confusion pairs. Each task's rows are its registry entry's ``outcomes``."""
    groups: dict[str, list[dict]] = {}
    seen = set()
    for r in records:
        if r.get("task") not in TASKS:
            raise ValueError(f"record {r.get('id')!r}: task must be one of {', '.join(TASKS)}, got {r.get('task')!r}")
        if r["id"] in seen:
            raise ValueError(f"record {r['id']!r} appears twice; predictions are matched by id")
        seen.add(r["id"])
        groups.setdefault(r["task"], []).append(r)
    return {task: REGISTRY[task].outcomes(groups[task], predictions) for task in TASKS if task in groups}


# ---------------------------------------------------------------- aggregates as functions of summed columns
def _table(task: str, rows: list[dict]) -> tuple[np.ndarray, Figures]:
    """Per-record columns V (n, k) and each figure as a function of column sums (works on (k,) and (B, k))."""
    t = REGISTRY[task]
    return np.asarray([t.columns(r) for r in rows], dtype=float).reshape(len(rows), -1), t.figures


def _weights(n: int, n_boot: int, seed: int, task: str, label: str = "") -> np.ndarray:
    """(n_boot, n) multiplicities of records in each resample; a fixed stream per (seed, task, class)."""
    rng = np.random.default_rng([seed, TASKS.index(task), zlib.crc32(label.encode())])
    idx = rng.integers(0, n, size=(n_boot, n)) + (np.arange(n_boot) * n)[:, None]
    return np.bincount(idx.ravel(), minlength=n_boot * n).reshape(n_boot, n).astype(float)


def _num(x) -> float | None:
    x = float(x)
    return None if math.isnan(x) else x


def _interval(boot: np.ndarray) -> list[float] | None:
    boot = boot[~np.isnan(boot)]
    return None if not boot.size else [float(x) for x in np.percentile(boot, [2.5, 97.5])]


def _figures(v, figs, w, only=None) -> dict:
    out = {}
    sums, boot_sums = v.sum(axis=0), w @ v
    for name, fn in figs.items():
        if only is None or name in only:
            out[name], out[f"{name}_ci"] = _num(fn(sums)), _interval(fn(boot_sums))
    return out


def _check_boot(n_boot, seed):
    if not isinstance(n_boot, int) or n_boot < 1 or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"n_boot must be a positive and seed a non-negative integer, got {n_boot!r}, {seed!r}")


def score(records: Sequence[dict], predictions: Mapping[str, str], *, n_boot: int = 1000, seed: int = 0) -> dict:
    """Every figure of every task present in ``records``, each with ``n`` and a 95% interval ``<figure>_ci``.
    Every record counts: one without a prediction is wrong, and ``missing`` says how many had none (a model that
    skips hard records must not look better)."""
    _check_boot(n_boot, seed)
    out = {}
    for task, rows in per_record(records, predictions).items():
        v, figs = _table(task, rows)
        missing = sum(r["id"] not in predictions for r in rows)  # counted wrong, and said so
        res = {"n": len(rows), "missing": missing, **_figures(v, figs, _weights(len(rows), n_boot, seed, task))}
        key, only = REGISTRY[task].per_class, REGISTRY[task].per_class_metrics
        if key is not None:
            per: dict = {}
            for label in sorted({r[key] for r in rows}):
                sel = np.array([r[key] == label for r in rows])
                w = _weights(int(sel.sum()), n_boot, seed, task, label)
                per[label] = _figures(v[sel], figs, w, only=only)
            if len(only) == 1:  # one per-class figure: label -> value, with its intervals beside
                res["per_class"] = {k: d[only[0]] for k, d in per.items()}
                res["per_class_ci"] = {k: d[f"{only[0]}_ci"] for k, d in per.items()}
            else:
                res["per_class"] = per
        out[task] = res
    return out


def paired(records: Sequence[dict], preds_a: Mapping[str, str], preds_b: Mapping[str, str], *, n_boot: int = 1000,
           seed: int = 0) -> dict:
    """Task -> figure -> ``{"n", "a", "b", "diff", "diff_ci"}`` with ``diff = a - b``; both runs are scored on the
    same resamples, so the interval is of the paired difference (the design's ablation comparison)."""
    _check_boot(n_boot, seed)
    rows_a, rows_b = per_record(records, preds_a), per_record(records, preds_b)
    out = {}
    for task in rows_a:
        (va, figs), (vb, _) = _table(task, rows_a[task]), _table(task, rows_b[task])
        w = _weights(len(va), n_boot, seed, task)
        sa, sb, ba, bb = va.sum(axis=0), vb.sum(axis=0), w @ va, w @ vb
        out[task] = {}
        for name, fn in figs.items():
            a, b = _num(fn(sa)), _num(fn(sb))
            out[task][name] = {"n": len(va), "a": a, "b": b, "diff": None if a is None or b is None else a - b,
                               "diff_ci": _interval(fn(ba) - fn(bb))}
    return out


def terrain_words(text) -> set[str]:
    """The land-cover class words (``LANDCOVER_WORDS``: water, trees, ..., "shrub and scrub") a text names, as whole
    words: what a caption says about the terrain, which in FUSAR-GPT only the anchors can tell reliably."""
    low = " ".join(tokens(text))
    return {w for w in LANDCOVER_WORDS if re.search(rf"\b{re.escape(w)}\b", low)}


def paired_values(a: Sequence[float], b: Sequence[float], *, n_boot: int = 1000, seed: int = 0) -> dict:
    """``{"n", "a", "b", "diff", "diff_ci"}`` for two per-record values of the same records (means, a - b), both
    resampled together: the paired interval for a figure that ``score`` does not know."""
    _check_boot(n_boot, seed)
    va, vb = np.asarray(a, float), np.asarray(b, float)
    if va.shape != vb.shape or va.ndim != 1:
        raise ValueError(f"paired values need two equal-length lists, got {va.shape} and {vb.shape}")
    if not va.size:
        return {"n": 0, "a": None, "b": None, "diff": None, "diff_ci": None}
    w = _weights(len(va), n_boot, seed, "caption", "paired_values")
    ma, mb = float(va.mean()), float(vb.mean())
    return {"n": len(va), "a": ma, "b": mb, "diff": ma - mb, "diff_ci": _interval((w @ (va - vb)) / len(va))}


# ---------------------------------------------------------------- baseline and prediction files
def majority_predictions(train_records: Sequence[dict], records: Sequence[dict]) -> dict[str, str]:
    """The chance-level baseline: each record gets the most common training truth of its task and asked class
    (fine classify: its level and coarse class; coarse classify: its level only, since there ``meta["class"]``
    is the answer itself), else of its task. Ties go to the smallest answer string; no train data gives ``""``."""

    def key(r):
        meta, task = r.get("meta") or {}, r.get("task")
        t = REGISTRY.get(task) if isinstance(task, str) else None
        return (task, *t.baseline_key(meta)) if t is not None else (task, meta.get("class"))

    by_key: dict = {}
    for r in train_records:
        by_key.setdefault(key(r), Counter())[r["answer"]] += 1
        by_key.setdefault(r.get("task"), Counter())[r["answer"]] += 1
    best = lambda c: min(c.items(), key=lambda kv: (-kv[1], kv[0]))[0]
    return {r["id"]: best(by_key.get(key(r)) or by_key.get(r.get("task")) or Counter({"": 1})) for r in records}


def read_predictions(path) -> dict[str, str]:
    """``{"id", "answer"}`` JSONL lines (blank lines skipped) -> id -> answer; ``{"id", "error"}`` lines (a record
    that could not be asked) are left out, so they score as unanswered. A bad line or a repeated id is a one-line
    ValueError naming the file and line."""
    out: dict[str, str] = {}
    lines: dict[str, int] = {}
    for where, obj in read_jsonl(path, ValueError, "predictions"):
        if not isinstance(obj, dict):
            raise ValueError(f"{where}: expected a JSON object with 'id' and 'answer'")
        rid = obj.get("id")
        rid = str(rid) if isinstance(rid, int) and not isinstance(rid, bool) else rid
        if not isinstance(rid, str) or not rid:
            raise ValueError(f"{where}: field 'id' must be a non-empty string, got {json.dumps(obj.get('id'))}")
        if "answer" not in obj and isinstance(obj.get("error"), str):
            continue  # a record the model could not be asked (eval / ask wrote why): unanswered, so wrong
        if not isinstance(obj.get("answer"), str):
            raise ValueError(f"{where}: field 'answer' must be a string, got {json.dumps(obj.get('answer'))}")
        if rid in out:
            raise ValueError(f"{where}: duplicate id {rid!r} (first on line {lines[rid]})")
        out[rid], lines[rid] = obj["answer"], int(where.rsplit(" ", 1)[1])
    return out
