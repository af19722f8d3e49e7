"""``fusar-gpt demo``: the whole pipeline on the embedded default, on a CPU, honestly reported.

synthetic world -> dataset -> FUSAR-GPT (stage I + II) and the no-AEF baseline (same recipe, no
TLM) on the ``small`` preset -> both evaluated on the same test records -> comparison with paired
95% intervals and a majority-answer (chance) baseline. Every step is resumable: re-running the
command reuses what is already finished.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@dataclass
class DemoSettings:
    scenes: int = 400
    sites: int = 8
    tile_px: int = 512
    block_size: int = 512
    frame: int = 224
    preset: str = "small"
    stage1_steps: int = 60
    stage2_steps: int = 200
    batch_size: int = 8
    eval_batch: int = 16
    eval_limit: int | None = None
    n_boot: int = 1000
    seed: int = 0


QUICK = DemoSettings(scenes=10, sites=4, tile_px=256, block_size=256, preset="tiny", stage1_steps=2,
                     stage2_steps=2, batch_size=2, eval_batch=8, eval_limit=24, n_boot=200)
MODELS = {"fusar-gpt": ("tiny-cpu/stage1.yaml", "tiny-cpu/stage2.yaml"),
          "no-aef": ("ablations/no-aef/stage1.yaml", "ablations/no-aef/stage2.yaml")}


def _train_stage(recipe_file: str, out: Path, s: DemoSettings, steps: int, *, data=None, init=None,
                 progress: bool) -> dict:
    from .config import load_recipe
    from .train import resolve_paths, train

    if (out / "log.jsonl").exists() and (out / "trainer_state.pt").exists():
        done = [json.loads(ln) for ln in (out / "log.jsonl").read_text().splitlines() if '"loss"' in ln]
        if done and done[-1]["step"] >= steps:
            return {"reused": True, "steps": done[-1]["step"], "loss": done[-1]["loss"]}
    overrides = {"train.max_steps": steps, "train.batch_size": s.batch_size, "train.seed": s.seed,
                 "train.save_every": 0, "train.log_every": 10}
    if init is None:
        overrides["model.preset"] = s.preset
    recipe = resolve_paths(load_recipe(CONFIGS / recipe_file, overrides), out=str(out),
                           data=str(data) if data else None, init=str(init) if init else None)
    return train(recipe, progress=progress)


def findings(paired: dict, subset: dict | None) -> list[str]:
    """Plain-words statements of what the paired intervals show (FUSAR-GPT minus no-AEF)."""
    from .report import verdict

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


MAIN_FIGURES = (("count", "acc"), ("locate", "acc100"), ("classify", "acc"), ("detect", "f1@0.5"), ("caption", "bleu4"))


def chance_findings(name: str, metrics: dict, baseline: dict | None) -> list[str]:
    """Whether a model beats the majority answer (its 95% interval lies above the baseline's value)."""
    if not baseline:
        return []
    above, not_above = [], []
    for task, fig in MAIN_FIGURES:
        m, b = metrics.get(task, {}), baseline.get(task, {})
        if m.get(fig) is None or b.get(fig) is None or not m.get(f"{fig}_ci"):
            continue
        (above if m[f"{fig}_ci"][0] > b[fig] else not_above).append(f"{task} {fig}")
    lines = []
    if above:
        lines.append(f"{name} beats the majority-answer baseline on: {', '.join(above)}.")
    if not_above:
        lines.append(f"{name} does NOT beat the majority-answer baseline on: {', '.join(not_above)}.")
    return lines


def run_demo(out="runs/demo", *, quick: bool = False, settings: DemoSettings | None = None,
             progress: bool = True) -> dict:
    from .data.build import BuildConfig, build
    from .data.dataset import load_manifest
    from .data.synth import make_world
    from .evaluate import compare_runs, evaluate_run
    from .scoring import paired, read_predictions

    s = settings or (QUICK if quick else DemoSettings())
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    world, ds = out / "world", out / "dataset"
    if not (world / "world.json").exists():
        make_world(world, scenes=s.scenes, seed=s.seed, sites=s.sites, tile_px=s.tile_px, block_size=s.block_size,
                   progress=progress)
    times["synth"] = time.perf_counter() - t0
    if not (ds / "build.json").exists():
        build(BuildConfig(images=str(world / "images"), annotations=str(world / "annotations.json"),
                          aef=str(world / "aef"), out=str(ds), frame=s.frame, split_by="scene", seed=s.seed,
                          workers=2), progress=progress)
    times["build"] = time.perf_counter() - t0 - sum(times.values())
    evals = []
    for name, (c1, c2) in MODELS.items():
        t = time.perf_counter()
        _train_stage(c1, out / name / "stage1", s, s.stage1_steps, data=ds, progress=progress)
        _train_stage(c2, out / name / "stage2", s, s.stage2_steps, init=out / name / "stage1", progress=progress)
        times[f"train {name}"] = time.perf_counter() - t
        t = time.perf_counter()
        evaluate_run(out / name / "stage2", ds / "manifest.jsonl", split="test", batch_size=s.eval_batch,
                     out=out / name / "eval", progress=progress, n_boot=s.n_boot, limit=s.eval_limit)
        times[f"eval {name}"] = time.perf_counter() - t
        evals.append(out / name / "eval")
    # the AEF-informative subset: coarse ship/plane questions (dark water vs dark tarmac)
    records = load_manifest(ds / "manifest.jsonl", split="test")
    preds = [read_predictions(e / "predictions.jsonl") for e in evals]
    records = [r for r in records if str(r["id"]) in preds[0]]
    coarse = [r for r in records if r["task"] == "classify" and r["meta"].get("level") == "coarse"]
    subset = paired(coarse, preds[0], preds[1], n_boot=s.n_boot) if coarse else None
    main = paired(records, preds[0], preds[1], n_boot=s.n_boot)
    notes = findings(main, subset)
    for name, e in zip(MODELS, evals):
        res = json.loads((e / "metrics.json").read_text())
        notes += chance_findings(name, res["metrics"], res.get("majority_baseline"))
    result = compare_runs(evals, out=out / "compare", names=list(MODELS), title="FUSAR-GPT vs no-AEF (demo)",
                          notes=notes + [f"settings: {json.dumps(asdict(s))}"])
    times["total"] = time.perf_counter() - t0
    summary = {"table": result["table"], "report": result["report"], "findings": notes,
               "seconds": {k: round(v, 1) for k, v in times.items()}, "settings": asdict(s)}
    (out / "demo.json").write_text(json.dumps(summary, indent=2))
    return summary


def format_summary(summary: dict) -> str:
    lines = [summary["table"], ""]
    lines += [f"- {f}" for f in summary["findings"]]
    lines += ["", f"report: {summary['report']}",
              "time: " + ", ".join(f"{k} {v:.0f} s" for k, v in summary["seconds"].items())]
    return "\n".join(lines)
