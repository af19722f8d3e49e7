"""What the demo's paired intervals say, in plain words: FUSAR-GPT against the no-AEF baseline, each model
against the majority answer (chance), and the coarse accuracy per true class.

Apart from the runs (``demo``) and the re-runs without anchors (``demo_aef``): these only read predictions that
exist already, so they need no model and are checked on hand-made records.
"""

from __future__ import annotations

from .report_tables import verdict
from .scoring import paired, score


def findings(paired: dict, subset: dict | None) -> list[str]:
    """Plain-words statements of what the paired intervals show (FUSAR-GPT minus no-AEF)."""
    lines = []
    better, worse = [], []
    for task, figures in paired.items():
        for metric, d in figures.items():
            if not isinstance(d, dict) or d.get("diff_ci") is None or metric == "n":
                continue
            v = verdict(metric, d["diff_ci"])
            if v == "better":
                better.append(f"{task} {metric}")
            elif v == "worse":
                worse.append(f"{task} {metric}")
    if better:
        lines.append(f"FUSAR-GPT beats the no-AEF baseline with 95% confidence on: {', '.join(better)}.")
    if worse:
        lines.append(f"FUSAR-GPT is worse than the no-AEF baseline with 95% confidence on: {', '.join(worse)}.")
    if not better and not worse:
        lines.append("FUSAR-GPT and the no-AEF baseline are not distinguishable on this test split: every "
                     "paired 95% interval contains 0.")
    if subset:
        d = subset.get("classify", {}).get("acc")
        if d and d.get("diff_ci") is not None:
            lo, hi = d["diff_ci"]
            v = verdict("acc", d["diff_ci"]).replace("no significant difference", "not distinguishable")
            lines.append(f"On the coarse ship/plane questions, where dark water and dark tarmac make the SAR "
                         f"context ambiguous and the AEF land cover decides, FUSAR-GPT is {v} "
                         f"(accuracy difference {d['diff']:+.3f}, 95% interval [{lo:+.3f}, {hi:+.3f}]).")
    return lines


MAIN_FIGURES = (("count", "acc"), ("locate", "acc100"), ("classify", "acc"), ("landcover", "acc"),
                ("detect", "f1@0.25"), ("detect", "f1@0.5"), ("caption", "rougeL"), ("caption", "bleu4"))


def chance_findings(name: str, records: list, predictions: dict, majority: dict, n_boot: int) -> tuple[list, dict]:
    """Whether a model beats the majority answer on each headline figure: the paired 95% interval of
    (model - majority) on the same records lies above 0 (paired, so the baseline's own noise cancels)."""
    diffs = paired(records, predictions, majority, n_boot=n_boot)
    above, not_above, table = [], [], {}
    for task, fig in MAIN_FIGURES:
        d = diffs.get(task, {}).get(fig)
        if not d or d.get("diff_ci") is None:
            continue
        table[f"{task} {fig}"] = d
        lo, hi = d["diff_ci"]
        text = f"{task} {fig} {d['a']:.3f} vs {d['b']:.3f} ({d['diff']:+.3f}, 95% interval [{lo:+.3f}, {hi:+.3f}])"
        (above if verdict(fig, d["diff_ci"]) == "better" else not_above).append(text)
    lines = []
    if above:
        lines.append(f"{name} beats the majority-answer baseline on: {'; '.join(above)}.")
    if not_above:
        lines.append(f"{name} does NOT beat the majority-answer baseline on: {'; '.join(not_above)}.")
    return lines, table


def flat_diffs(diffs: dict) -> dict:
    """``paired`` output as ``{"task metric": {n, a, b, diff, diff_ci}}`` (the shape of ``vs_majority``)."""
    return {f"{task} {metric}": d for task, figures in diffs.items() for metric, d in figures.items()
            if isinstance(d, dict) and d.get("diff_ci") is not None}


def per_class(records: list, predictions: dict) -> dict:
    """Accuracy per true coarse class (``ship``, ``plane``) of the coarse classify questions: a model that
    answers one class every time shows it here (the overall accuracy hides it)."""
    coarse = [r for r in records if r["task"] == "classify" and r["meta"].get("level") == "coarse"]
    return score(coarse, predictions, n_boot=1)["classify"]["per_class"] if coarse else {}

