"""How each task is scored: its per-record outcomes, the columns a record adds to the sums, and its figures as
functions of those sums. The registry (``data/tasks.py``) names them for each task; ``scoring.py`` aggregates them
and documents the choices they make. Every figure works on a ``(k,)`` sum and on ``(B, k)`` bootstrap sums.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from .boxes import iou
from .data.parsers import (
    asked_class,
    cells_in_order,
    parse_boxes,
    parse_cells,
    parse_count,
    parse_label,
    tokens,
    truth_boxes,
    truth_caption,
    truth_cells,
    truth_count,
    truth_label,
)
from .data.questions import LANDCOVER_WORDS

THRESHOLDS = (0.25, 0.5)
ROUGE_BETA = 1.2
CIDER_SIGMA = 6.0

Figures = Mapping[str, Callable[[np.ndarray], np.ndarray]]
Outcomes = Callable[[Sequence[dict], Mapping[str, str]], list[dict]]


def _truth(rec, fn, *args):
    try:
        return fn(rec["answer"], *args)
    except ValueError as err:
        raise ValueError(f"record {rec['id']!r}: {err}") from None


def _ratio(num, den, empty):
    """num/den elementwise; ``empty`` where den == 0."""
    num, den = np.asarray(num, float), np.asarray(den, float)
    return np.where(den > 0, num / np.where(den > 0, den, 1), empty)


# ---------------------------------------------------------------- count
def count_outcomes(recs: Sequence[dict], predictions: Mapping[str, str]) -> list[dict]:
    rows = []
    for r in recs:
        true, pred = _truth(r, truth_count), parse_count(predictions.get(r["id"]))
        err = None if pred is None else abs(pred - true)
        rows.append({"id": r["id"], "class": (r.get("meta") or {}).get("class"), "true": true, "pred": pred,
                     "correct": err == 0, "within1": err is not None and err <= 1, "abs_err": err})
    return rows


def count_columns(r: dict) -> list:
    return [r["correct"], r["within1"], r["abs_err"] or 0, r["abs_err"] is not None, 1]


COUNT_FIGURES: Figures = {"acc": lambda s: s[..., 0] / s[..., 4], "mae": lambda s: _ratio(s[..., 2], s[..., 3], np.nan),
                          "acc_within1": lambda s: s[..., 1] / s[..., 4]}


# ---------------------------------------------------------------- locate
def locate_outcomes(recs: Sequence[dict], predictions: Mapping[str, str]) -> list[dict]:
    rows = []
    for r in recs:
        text = predictions.get(r["id"])
        truth = _truth(r, truth_cells)
        g = set(truth)
        pred = parse_cells(text) if isinstance(text, str) else None
        p = set(pred or ())
        first = (cells_in_order(text) or pred or [None])[0] if pred is not None else None
        rows.append({"id": r["id"], "class": (r.get("meta") or {}).get("class"), "true": truth, "pred": pred,
                     "first": first, "acc100": pred is not None and p == g,
                     "acc50": pred is not None and 2 * len(p & g) >= len(p | g),
                     "top1": pred is not None and (first in g if g else not p)})
    return rows


def locate_columns(r: dict) -> list:
    return [r["acc100"], r["acc50"], r["top1"], 1]


LOCATE_FIGURES: Figures = {k: (lambda s, j=j: s[..., j] / s[..., 3]) for j, k in enumerate(("acc100", "acc50", "top1"))}


# ---------------------------------------------------------------- classify and landcover (labels)
def _label_outcomes(task: str, recs, predictions, default_choices) -> list[dict]:
    rows = []
    for r in recs:
        meta = r.get("meta") or {}
        choices = meta.get("choices") or default_choices(meta)
        true = _truth(r, truth_label, choices, task)
        pred = parse_label(predictions.get(r["id"]), choices)
        rows.append({"id": r["id"], "level": meta.get("level"), "true": true, "pred": pred, "correct": pred == true})
    return rows


def classify_outcomes(recs: Sequence[dict], predictions: Mapping[str, str]) -> list[dict]:
    """Without ``meta["choices"]`` the choices are the truth labels of the records of the same level."""
    of_level: dict = {}
    for r in recs:
        of_level.setdefault((r.get("meta") or {}).get("level"), set()).add(r["answer"])
    return _label_outcomes("classify", recs, predictions, lambda meta: sorted(of_level[meta.get("level")]))


def landcover_outcomes(recs: Sequence[dict], predictions: Mapping[str, str]) -> list[dict]:
    return _label_outcomes("landcover", recs, predictions, lambda meta: LANDCOVER_WORDS)


def label_columns(r: dict) -> list:
    return [r["correct"], 1]


LABEL_FIGURES: Figures = {"acc": lambda s: s[..., 0] / s[..., 1]}


# ---------------------------------------------------------------- detect
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


def detect_outcomes(recs: Sequence[dict], predictions: Mapping[str, str]) -> list[dict]:
    rows = []
    for r in recs:
        truth = _truth(r, truth_boxes)
        asked = ((r.get("meta") or {}).get("class") or asked_class(r.get("question"))
                 or (truth[0]["label"] if truth else ""))
        preds = parse_boxes(predictions.get(r["id"])) or []
        ious = match_boxes(preds, truth, asked)
        row = {"id": r["id"], "class": asked, "n_true": len(truth), "n_pred": len(preds)}
        for t in THRESHOLDS:
            tp = sum(v >= t for v in ious)
            row.update({f"tp@{t}": tp, f"fp@{t}": len(preds) - tp, f"fn@{t}": len(truth) - tp})
        rows.append(row)
    return rows


def detect_columns(r: dict) -> list:
    return [r[f"{c}@{t}"] for t in THRESHOLDS for c in ("tp", "fp", "fn")]


def _prf(tp, fp, fn):
    clean = np.where((fp == 0) & (fn == 0), 1.0, 0.0)
    return _ratio(tp, tp + fp, clean), _ratio(tp, tp + fn, clean), np.where(tp > 0, _ratio(2 * tp, 2 * tp + fp + fn,
                                                                                           0.0), clean)


DETECT_FIGURES: Figures = {"f1@0.25": lambda s: _prf(s[..., 0], s[..., 1], s[..., 2])[2],
                           "f1@0.5": lambda s: _prf(s[..., 3], s[..., 4], s[..., 5])[2],
                           "precision@0.5": lambda s: _prf(s[..., 3], s[..., 4], s[..., 5])[0],
                           "recall@0.5": lambda s: _prf(s[..., 3], s[..., 4], s[..., 5])[1]}


# ---------------------------------------------------------------- caption
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


def caption_outcomes(recs: Sequence[dict], predictions: Mapping[str, str]) -> list[dict]:
    """Per record its n-gram matches and totals (corpus BLEU-4), ROUGE-L and CIDEr-D (idf over ``recs``)."""
    refs = [_truth(r, truth_caption) for r in recs]
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


def caption_columns(r: dict) -> list:
    return [*r["matches"], *r["totals"], r["hyp_len"], r["ref_len"], r["rougeL"], r["cider"], 1]


def _bleu(s):
    m, t, c, r = s[..., 0:4], s[..., 4:8], s[..., 8], s[..., 9]
    ok = np.all(m > 0, axis=-1) & (c > 0)
    logp = np.log(np.where(m > 0, m, 1) / np.where(t > 0, t, 1)).mean(axis=-1)
    bp = np.where(c > r, 0.0, 1 - r / np.where(c > 0, c, 1))
    return np.where(ok, np.exp(np.where(ok, logp + bp, 0.0)), 0.0)


CAPTION_FIGURES: Figures = {"bleu4": _bleu, "rougeL": lambda s: s[..., 10] / s[..., 12],
                            "cider": lambda s: s[..., 11] / s[..., 12]}
