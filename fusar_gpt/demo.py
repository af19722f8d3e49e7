"""``fusar-gpt demo``: the whole pipeline on the embedded default, on a CPU, honestly reported.

synthetic world -> dataset -> stage 0 (the random ``small`` backbone learns to see: whole model,
no AEF) -> FUSAR-GPT (stage I + II) and the no-AEF baseline (same recipe, no TLM), both from that
stage-0 model -> both evaluated on the same test records -> comparison with paired 95% intervals,
each model against the majority answer (chance) with paired 95% intervals too, and how many of
FUSAR-GPT's answers change when its anchors are removed. Every step is resumable: re-running the
command reuses what is already finished.

Why a stage 0: the paper starts from a pretrained Qwen2.5-VL-7B that can already see. No weights can
be downloaded here, and LoRA on a random LLM does not learn to read images within a CPU budget (the
answers collapse onto the majority answer), so the demo first trains the whole small backbone on the
training split, several questions per image in one conversation. Both compared models share it.

The steps live apart, one job each: ``demo_settings`` (the world, recipes and steps; the committed base),
``demo_steps`` (world, dataset, stage 0, one model trained and evaluated), ``demo_findings`` (what the paired
intervals say) and ``demo_aef`` (the answers again without the anchors). This module runs them in order.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

from .data.manifest import load_manifest
from .demo_aef import aef_use, stage1_taught
from .demo_findings import MAIN_FIGURES, chance_findings, findings, flat_diffs, per_class  # noqa: F401  (re-exported)
from .demo_settings import (  # noqa: F401  (re-exported: the demo's settings were read from here)
    BASE,
    BASE_DIR,
    CONFIGS,
    DEMO_TASKS,
    MODELS,
    QUICK,
    STAGE0,
    DemoSettings,
    base_record,
)
from .demo_steps import rebuild_base, stage0_model, train_and_evaluate, world_and_dataset  # noqa: F401  (re-exported)
from .evaluate import compare_runs
from .io_atomic import write_text
from .scoring import majority_predictions, paired, read_predictions


def run_demo(out="runs/demo", *, quick: bool = False, settings: DemoSettings | None = None,
             progress: bool = True) -> dict:
    s = settings or (QUICK if quick else DemoSettings())
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    ds = world_and_dataset(out, s, DEMO_TASKS, progress)
    times["synth + build"] = time.perf_counter() - t0
    t = time.perf_counter()
    seen = {"model.base": stage0_model(out, ds, s, progress)}
    times["stage 0"] = time.perf_counter() - t
    evals, stage1 = [], {}
    for name, recipes in MODELS.items():
        stage1[name] = train_and_evaluate(out / name, recipes, ds, s, seen["model.base"], times, progress)
        evals.append(out / name / "eval")
    records = load_manifest(ds / "manifest.jsonl", split="test", tasks=list(s.eval_tasks))
    preds = [read_predictions(e / "predictions.jsonl") for e in evals]
    records = [r for r in records if str(r["id"]) in preds[0]]
    coarse = [r for r in records if r["task"] == "classify" and r["meta"].get("level") == "coarse"]
    subset = paired(coarse, preds[0], preds[1], n_boot=s.n_boot) if coarse else None
    main = paired(records, preds[0], preds[1], n_boot=s.n_boot)
    notes = findings(main, subset)
    aef = None
    informative = [r for r in records if r["task"] == "landcover"] + coarse
    if informative:
        t = time.perf_counter()
        lines, aef = aef_use(out / "fusar-gpt" / "stage2", informative, preds[0], batch_size=s.eval_batch,
                             n_boot=s.n_boot)
        notes += lines
        times["anchors removed"] = time.perf_counter() - t
    t = time.perf_counter()
    taught = stage1_taught(out / "fusar-gpt", records, batch_size=s.eval_batch, n_boot=s.n_boot)
    times["stage I alone"] = time.perf_counter() - t
    parts = [f"{k} {d['a']:.3f} with anchors vs {d['b']:.3f} without (95% interval [{d['diff_ci'][0]:+.3f}, "
             f"{d['diff_ci'][1]:+.3f}])" for k, d in taught.items() if d.get("diff_ci") is not None]
    if parts:
        notes.append("What stage I alone taught FUSAR-GPT (its stage-I model, before stage II): " + "; ".join(parts)
                     + ".")
    stage1 = {name: {"train": summary, **({"with_vs_without_anchors": taught} if name == "fusar-gpt" else {})}
              for name, summary in stage1.items()}
    majority = majority_predictions(load_manifest(ds / "manifest.jsonl", split="train", tasks=list(s.eval_tasks)),
                                    records)
    chance = {}
    for name, p in zip(MODELS, preds):
        lines, chance[name] = chance_findings(name, records, p, majority, s.n_boot)
        notes += lines
    classes = {name: per_class(records, p) for name, p in zip(MODELS, preds)}
    notes.append("Coarse classification per true class: " + "; ".join(
        f"{name} " + ", ".join(f"{k} {v:.3f}" for k, v in sorted(c.items())) for name, c in classes.items()) + ".")
    result = compare_runs(evals, out=out / "compare", names=list(MODELS), title="FUSAR-GPT vs no-AEF (demo)",
                          notes=notes + [f"settings: {json.dumps(asdict(s))}"])
    times["total"] = time.perf_counter() - t0
    summary = {"table": result["table"], "report": result["report"], "findings": notes, "vs_majority": chance,
               "vs_no_aef": flat_diffs(main), "per_class": classes, "aef_use": aef, "stage1": stage1,
               "seconds": {k: round(v, 1) for k, v in times.items()}, "settings": asdict(s)}
    write_text(out / "demo.json", json.dumps(summary, indent=2))
    return summary


def format_summary(summary: dict) -> str:
    lines = [summary["table"], ""]
    lines += [f"- {f}" for f in summary["findings"]]
    lines += ["", f"report: {summary['report']}",
              "time: " + ", ".join(f"{k} {v:.0f} s" for k, v in summary["seconds"].items())]
    return "\n".join(lines)
