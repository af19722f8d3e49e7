"""``fusar-gpt demo --ablations``: the paper's fusion ablation at small scale, on the demo's world and seed.

The paper (PAPER.md) reports that TLM beats adding or concatenating the prior (counting 52.5 vs 36.4 for sum and
37.9 for concat) and that the two decoupled stages help. Here the same comparison runs on the demo's world, from
the same base model, with the same steps: ``tlm`` (FUSAR-GPT), ``sum``, ``concat``, ``none`` (no AEF) and
``one-stage`` (TLM + LoRA on every task at once, for the steps of both stages). Each is evaluated on the same test
records and compared with ``tlm`` by paired 95% bootstrap intervals (a - b = variant - tlm). The ``tlm`` and
``none`` runs are the demo's own (same folder names), so after ``make demo`` only three more models train.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

from .data.manifest import load_manifest
from .demo_findings import MAIN_FIGURES
from .demo_settings import DEMO_TASKS, QUICK, DemoSettings
from .demo_steps import stage0_model, train_and_evaluate, world_and_dataset
from .io_atomic import write_text
from .scoring import paired, read_predictions, score

VARIANTS = {"fusar-gpt": ("tiny-cpu/stage1.yaml", "tiny-cpu/stage2.yaml"),
            "sum": ("ablations/sum-fusion/stage1.yaml", "ablations/sum-fusion/stage2.yaml"),
            "concat": ("ablations/concat-fusion/stage1.yaml", "ablations/concat-fusion/stage2.yaml"),
            "no-aef": ("ablations/no-aef/stage1.yaml", "ablations/no-aef/stage2.yaml"),
            "one-stage": ("ablations/one-stage.yaml",)}
LABELS = {"fusar-gpt": "tlm", "sum": "sum", "concat": "concat", "no-aef": "none", "one-stage": "one-stage"}


def run_ablations(out="runs/demo", *, quick: bool = False, settings: DemoSettings | None = None,
                  progress: bool = True) -> dict:
    """Train and evaluate every variant (finished ones are reused) and write ``ablations.json`` + ``.md``."""
    s = settings or (QUICK if quick else DemoSettings())
    out = Path(out)
    t0, times = time.perf_counter(), {}
    ds = world_and_dataset(out, s, DEMO_TASKS, progress)
    base = stage0_model(out, ds, s, progress)
    for name, recipes in VARIANTS.items():
        train_and_evaluate(out / name, recipes, ds, s, base, times, progress)
    preds = {name: read_predictions(out / name / "eval" / "predictions.jsonl") for name in VARIANTS}
    records = [r for r in load_manifest(ds / "manifest.jsonl", split="test", tasks=list(s.eval_tasks))
               if str(r["id"]) in preds["fusar-gpt"]]
    figures = {LABELS[name]: score(records, p, n_boot=1) for name, p in preds.items()}
    vs_tlm = {}
    for name, p in preds.items():
        if name != "fusar-gpt":
            diffs = paired(records, p, preds["fusar-gpt"], n_boot=s.n_boot)
            vs_tlm[LABELS[name]] = {f"{t} {m}": diffs[t][m] for t, m in MAIN_FIGURES if m in diffs.get(t, {})}
    times["total"] = time.perf_counter() - t0
    result = {"figures": {k: {f"{t} {m}": v.get(t, {}).get(m) for t, m in MAIN_FIGURES} for k, v in figures.items()},
              "vs_tlm": vs_tlm, "seconds": {k: round(v, 1) for k, v in times.items()}, "settings": asdict(s),
              "n": {t: sum(r["task"] == t for r in records) for t in dict.fromkeys(t for t, _ in MAIN_FIGURES)}}
    write_text(out / "ablations.json", json.dumps(result, indent=2))
    write_text(out / "ablations.md", format_ablations(result) + "\n")
    return result


def format_ablations(result: dict) -> str:
    """Markdown: each variant's headline figures, and its paired difference from tlm with the 95% interval."""
    names = list(result["figures"])
    keys = list(next(iter(result["figures"].values())))
    lines = ["| figure (n) | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for k in keys:
        cells = []
        for name in names:
            v = result["figures"][name].get(k)
            d = result["vs_tlm"].get(name, {}).get(k)
            text = "—" if v is None else f"{v:.3f}"
            if d and d.get("diff_ci"):
                lo, hi = d["diff_ci"]
                text += f" ({d['diff']:+.3f} [{lo:+.3f}, {hi:+.3f}])"
            cells.append(text)
        n = result["n"].get(k.split()[0], "")
        lines.append(f"| {k} ({n}) | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Value (paired difference from tlm [95% bootstrap interval]); wall time: "
                 + ", ".join(f"{k} {v:.0f} s" for k, v in result["seconds"].items()))
    return "\n".join(lines)
