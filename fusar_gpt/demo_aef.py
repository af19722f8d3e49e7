"""What the anchors (AEF) change in FUSAR-GPT's answers: its records answered again with the anchors removed (the
TLM's learned null prior stands in), by the final model (``aef_use``) and by the stage-I model alone
(``stage1_taught``), with paired 95% intervals of the difference.

Apart from the other findings because these load a trained model and generate again.
"""

from __future__ import annotations

from pathlib import Path

from .evaluate import predict
from .model.loader import load_model
from .scoring import paired, paired_values, terrain_words


def aef_use(run, records: list, predictions: dict, *, batch_size: int, n_boot: int) -> tuple[list, dict]:
    """How much a FUSAR-GPT run's answers depend on the anchors: the same records (the AEF-informative ones:
    landcover and coarse ship/plane questions) answered again with the anchors removed (the TLM's learned null
    prior stands in). Few changed answers mean the TLM has not learned to use AEF: the SAR alone decides."""
    model, spec = load_model(run)
    without = predict(model, [dict(r, aef=None) for r in records], spec=spec, batch_size=batch_size, progress=False)
    ids = [str(r["id"]) for r in records]
    changed = sum(predictions.get(i) != without[i] for i in ids)
    diffs = paired(records, predictions, without, n_boot=n_boot)
    figures = {"n": len(ids), "changed": changed, "by_task": {}}
    text = f"Removing the anchors changes {changed} of {len(ids)} FUSAR-GPT answers to the AEF-informative questions"
    parts = []
    for task in ("landcover", "classify"):
        d = diffs.get(task, {}).get("acc")
        if not d:
            continue
        n_changed = sum(predictions.get(str(r["id"])) != without[str(r["id"])] for r in records if r["task"] == task)
        figures["by_task"][task] = {"n": d["n"], "changed": n_changed, "acc_with": d["a"], "acc_without": d["b"],
                                    "diff_ci": d["diff_ci"]}
        if d.get("diff_ci") is not None:
            lo, hi = d["diff_ci"]
            parts.append(f"{task}: {n_changed} of {d['n']} changed, accuracy {d['a']:.3f} with anchors vs {d['b']:.3f} "
                         f"without, 95% interval [{lo:+.3f}, {hi:+.3f}]")
    if parts:
        text += " (" + "; ".join(parts) + ")"
    if changed <= max(1, len(ids) // 50):
        text += ": the TLM barely moves the visual tokens yet, so these answers come from the SAR image alone"
    return [text + "."], figures


def stage1_taught(run: Path, records: list, *, batch_size: int, n_boot: int, captions: int = 80) -> dict:
    """What stage I alone taught, before stage II: the stage-I model's landcover accuracy and the terrain words of
    its captions (the share of the reference caption's land-cover words it names too), each with the anchors and
    with them removed (the TLM's null prior stands in), paired 95% intervals of the difference."""
    model, _ = load_model(run / "stage1")
    land = [r for r in records if r["task"] == "landcover"]
    caps = [r for r in records if r["task"] == "caption" and terrain_words(r["answer"])][:captions]
    chosen = land + caps
    with_ = predict(model, chosen, batch_size=batch_size, progress=False)
    without = predict(model, [dict(r, aef=None) for r in chosen], batch_size=batch_size, progress=False)
    out = {}
    if land:
        out["landcover acc"] = paired(land, with_, without, n_boot=n_boot)["landcover"]["acc"]

    def recall(r, preds):
        truth = terrain_words(r["answer"])
        return len(truth & terrain_words(preds[str(r["id"])])) / len(truth)

    if caps:
        out["caption terrain words"] = paired_values([recall(r, with_) for r in caps],
                                                     [recall(r, without) for r in caps], n_boot=n_boot)
    return out

