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
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from .boxes import iou
from .data.tasks import (
    LANDCOVER_WORDS,
    TASKS,
    cells_in_order,
    parse_boxes,
    parse_cells,
    parse_count,
    parse_label,
    truth_boxes,
    truth_cells,
    truth_count,
)

THRESHOLDS = (0.25, 0.5)
ROUGE_BETA = 1.2
CIDER_SIGMA = 6.0
_TOKEN_RE = re.compile(r"\d+(?:\.\d+)+|[^\W_]+")


# ---------------------------------------------------------------- per-record outcomes
def tokens(text: str) -> list[str]:
    """Caption tokens: lowercased runs of letters/digits, decimals kept whole; punctuation and ``_`` separate."""
    return _TOKEN_RE.findall(text.lower()) if isinstance(text, str) else []


def match_boxes(preds: Sequence[dict], truth: Sequence[dict], asked: str) -> list[float]:
    """IoUs of the greedy one-to-one matches (descending IoU, same label; empty predicted label = ``asked``).
    Matching once and counting IoU >= t equals matching among the pairs >= t: those pairs come first."""
    lab = lambda d: (d.get("label") or asked).strip().lower()
    pairs = sorted((-v, i, j) for i, p in enumerate(preds) for j, g in enumerate(truth)
                   if lab(p) == lab(g) and (v := iou(p["bbox_2d"], g["bbox_2d"])) > 0)
    used_p, used_g, out = set(), set(), []
    for v, i, j in pairs:
        if i not in used_p and j not in used_g:
            used_p.add(i), used_g.add(j), out.append(-v)
    return out


def _truth(rec, fn):
    try:
        return fn(rec["answer"])
    except ValueError as err:
        raise ValueError(f"record {rec['id']!r}: {err}") from None


def _ngrams(toks: Sequence[str], n: int) -> Counter:
    return Counter(tuple(toks[i:i + n]) for i in range(len(toks) - n + 1))


def lcs(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence, bit-parallel over ``b`` (Hyyro): fast for long captions."""
    if not a or not b:
        return 0
    masks: dict[str, int] = {}
    for j, t in enumerate(b):
        masks[t] = masks.get(t, 0) | (1 << j)
    full = (1 << len(b)) - 1
    v = full
    for t in a:
        u = v & masks.get(t, 0)
        v = ((v + u) | (v - u)) & full
    return len(b) - bin(v).count("1")


def _caption(recs, predictions) -> list[dict]:
    refs = []
    for r in recs:
        refs.append(tokens(r["answer"]))
        if not refs[-1]:
            raise ValueError(f"record {r['id']!r}: caption answer has no words, got {r['answer']!r:.80}")
    hyps = [tokens(predictions.get(r["id"], "")) for r in recs]
    ref_grams = [[_ngrams(t, n) for n in range(1, 5)] for t in refs]
    df: Counter = Counter()
    for grams in ref_grams:
        for g in grams:
            df.update(g.keys())
    log_n = math.log(len(recs))

    def vec(g: Counter):
        w = {k: tf * (log_n - math.log(max(1, df[k]))) for k, tf in g.items()}
        return w, math.sqrt(sum(x * x for x in w.values()))

    out = []
    for r, hyp, ref, rg in zip(recs, hyps, refs, ref_grams):
        hg = [_ngrams(hyp, n) for n in range(1, 5)]
        matches = [sum(min(c, g.get(k, 0)) for k, c in h.items()) for h, g in zip(hg, rg)]
        totals = [max(len(hyp) - n + 1, 0) for n in range(1, 5)]
        common = lcs(hyp, ref)
        p, rc = (common / len(hyp), common / len(ref)) if common else (0.0, 0.0)
        rouge = (1 + ROUGE_BETA**2) * p * rc / (rc + ROUGE_BETA**2 * p) if common else 0.0
        penalty = math.exp(-((len(hyp) - len(ref)) ** 2) / (2 * CIDER_SIGMA**2))
        sims = []
        for h, g in zip(hg, rg):
            (wh, nh), (wr, nr) = vec(h), vec(g)
            val = sum(min(x, wr[k]) * wr[k] for k, x in wh.items() if k in wr)
            sims.append(val / (nh * nr) * penalty if nh and nr else 0.0)
        out.append({"id": r["id"], "matches": matches, "totals": totals, "hyp_len": len(hyp), "ref_len": len(ref),
                    "rougeL": rouge, "cider": 10.0 * sum(sims) / 4})
    return out


def per_record(records: Sequence[dict], predictions: Mapping[str, str]) -> dict[str, list[dict]]:
    """Task -> one JSON-able outcome per record (record order); ``score`` and ``paired`` aggregate exactly these.
    ``pred`` is the parsed prediction (None = unparseable/missing); classify outcomes give confusion pairs."""
    groups: dict[str, list[dict]] = {}
    seen = set()
    for r in records:
        if r.get("task") not in TASKS:
            raise ValueError(f"record {r.get('id')!r}: task must be one of {', '.join(TASKS)}, got {r.get('task')!r}")
        if r["id"] in seen:
            raise ValueError(f"record {r['id']!r} appears twice; predictions are matched by id")
        seen.add(r["id"])
        groups.setdefault(r["task"], []).append(r)
    out: dict[str, list[dict]] = {}
    for task in (t for t in TASKS if t in groups):
        recs, rows = groups[task], []
        if task == "caption":
            out[task] = _caption(recs, predictions)
            continue
        choices_of_level: dict = {}
        for r in recs if task == "classify" else ():
            choices_of_level.setdefault((r.get("meta") or {}).get("level"), set()).add(r["answer"])
        for r in recs:
            meta, text = r.get("meta") or {}, predictions.get(r["id"])
            row = {"id": r["id"]}
            if task == "count":
                true, pred = _truth(r, truth_count), parse_count(text)
                err = None if pred is None else abs(pred - true)
                row.update({"class": meta.get("class"), "true": true, "pred": pred, "correct": err == 0,
                            "within1": err is not None and err <= 1, "abs_err": err})
            elif task == "locate":
                truth = _truth(r, truth_cells)
                g = set(truth)
                pred = parse_cells(text) if isinstance(text, str) else None
                p = set(pred or ())
                first = (cells_in_order(text) or pred or [None])[0] if pred is not None else None
                row.update({"class": meta.get("class"), "true": truth, "pred": pred,
                            "first": first, "acc100": pred is not None and p == g,
                            "acc50": pred is not None and 2 * len(p & g) >= len(p | g),
                            "top1": pred is not None and (first in g if g else not p)})
            elif task in ("classify", "landcover"):
                choices = meta.get("choices") or (sorted(choices_of_level[meta.get("level")]) if task == "classify"
                                                  else LANDCOVER_WORDS)
                true = r["answer"]
                if not true or true != true.strip() or true not in choices:
                    raise ValueError(f"record {r['id']!r}: {task} answer must be one of {list(choices)}, "
                                     f"got {true!r}")
                pred = parse_label(text, choices)
                row.update(level=meta.get("level"), true=true, pred=pred, correct=pred == true)
            else:  # detect
                truth = _truth(r, truth_boxes)
                asked = meta.get("class") or (truth[0]["label"] if truth else "")
                preds = parse_boxes(text) or []
                ious = match_boxes(preds, truth, asked)
                row.update({"class": asked, "n_true": len(truth), "n_pred": len(preds)})
                for t in THRESHOLDS:
                    tp = sum(v >= t for v in ious)
                    row.update({f"tp@{t}": tp, f"fp@{t}": len(preds) - tp, f"fn@{t}": len(truth) - tp})
            rows.append(row)
        out[task] = rows
    return out


# ---------------------------------------------------------------- aggregates as functions of summed columns
def _ratio(num, den, empty):
    """num/den elementwise; ``empty`` where den == 0."""
    num, den = np.asarray(num, float), np.asarray(den, float)
    return np.where(den > 0, num / np.where(den > 0, den, 1), empty)


def _prf(tp, fp, fn):
    clean = np.where((fp == 0) & (fn == 0), 1.0, 0.0)
    return _ratio(tp, tp + fp, clean), _ratio(tp, tp + fn, clean), np.where(tp > 0, _ratio(2 * tp, 2 * tp + fp + fn,
                                                                                           0.0), clean)


def _bleu(s):
    m, t, c, r = s[..., 0:4], s[..., 4:8], s[..., 8], s[..., 9]
    ok = np.all(m > 0, axis=-1) & (c > 0)
    logp = np.log(np.where(m > 0, m, 1) / np.where(t > 0, t, 1)).mean(axis=-1)
    bp = np.where(c > r, 0.0, 1 - r / np.where(c > 0, c, 1))
    return np.where(ok, np.exp(np.where(ok, logp + bp, 0.0)), 0.0)


Figures = dict[str, Callable[[np.ndarray], np.ndarray]]


def _table(task: str, rows: list[dict]) -> tuple[np.ndarray, Figures]:
    """Per-record columns V (n, k) and each figure as a function of column sums (works on (k,) and (B, k))."""
    if task == "count":
        v = [[r["correct"], r["within1"], r["abs_err"] or 0, r["abs_err"] is not None, 1] for r in rows]
        figs = {"acc": lambda s: s[..., 0] / s[..., 4], "mae": lambda s: _ratio(s[..., 2], s[..., 3], np.nan),
                "acc_within1": lambda s: s[..., 1] / s[..., 4]}
    elif task == "locate":
        v = [[r["acc100"], r["acc50"], r["top1"], 1] for r in rows]
        figs = {k: (lambda s, j=j: s[..., j] / s[..., 3]) for j, k in enumerate(("acc100", "acc50", "top1"))}
    elif task in ("classify", "landcover"):
        v = [[r["correct"], 1] for r in rows]
        figs = {"acc": lambda s: s[..., 0] / s[..., 1]}
    elif task == "detect":
        v = [[r[f"{c}@{t}"] for t in THRESHOLDS for c in ("tp", "fp", "fn")] for r in rows]
        figs = {"f1@0.25": lambda s: _prf(s[..., 0], s[..., 1], s[..., 2])[2],
                "f1@0.5": lambda s: _prf(s[..., 3], s[..., 4], s[..., 5])[2],
                "precision@0.5": lambda s: _prf(s[..., 3], s[..., 4], s[..., 5])[0],
                "recall@0.5": lambda s: _prf(s[..., 3], s[..., 4], s[..., 5])[1]}
    else:
        v = [[*r["matches"], *r["totals"], r["hyp_len"], r["ref_len"], r["rougeL"], r["cider"], 1] for r in rows]
        figs = {"bleu4": _bleu, "rougeL": lambda s: s[..., 10] / s[..., 12], "cider": lambda s: s[..., 11] / s[..., 12]}
    return np.asarray(v, dtype=float).reshape(len(rows), -1), figs


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
        if task in ("classify", "landcover", "detect"):
            key = "class" if task == "detect" else "true"
            per: dict = {}
            for label in sorted({r[key] for r in rows}):
                sel = np.array([r[key] == label for r in rows])
                w = _weights(int(sel.sum()), n_boot, seed, task, label)
                per[label] = _figures(v[sel], figs, w, only=("acc", "f1@0.25", "f1@0.5"))
            if task != "detect":
                res["per_class"] = {k: d["acc"] for k, d in per.items()}
                res["per_class_ci"] = {k: d["acc_ci"] for k, d in per.items()}
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
    from .data.tasks import LANDCOVER_WORDS

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
        if task == "classify":
            level = meta.get("level")
            return task, level, meta.get("class") if level == "fine" else None
        return task, meta.get("class")

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
    from .data.dataset import read_jsonl

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
