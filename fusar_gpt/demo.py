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

Why an easier world than ``make_world``'s defaults: one ship wherever there is water and one plane
wherever there is a runway, fewer look-alikes, 1-2 m pixels and scenes of 160-224 px, so that a
5M-parameter model learns in minutes on 2 cores. The scene size matters most for localisation: the
realistic 256-320 px scenes are shrunk into the 224 frame, and the random vision tower then finds the
ship's token only about half the time (a linear probe after the warm-up: 44-50%), too little for the
LLM to learn *where* (measured: localisation never beat the majority answer); at 160-224 px nothing is
shrunk. The realistic world (0-5 targets per class, full clutter) is one flag away.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
BASE_DIR = Path(__file__).resolve().parents[1] / "assets" / "demo-base"   # the committed stage-0 model


DEMO_TASKS = ("caption", "count", "locate", "classify", "detect", "landcover")


@dataclass
class DemoSettings:
    scenes: int = 1600
    sites: int = 8
    min_targets: int = 1       # per class wherever it has room (water / runway); the realistic world draws 0..5
    max_targets: int = 1
    clutter: float = 0.25      # look-alike density (realistic: 1)
    pixel_m: tuple = (1.0, 2.0)  # (realistic: 1-3 m)
    image_px: tuple = (160, 224)  # scene sizes: at most the frame, so targets are never shrunk (realistic: 256-320)
    tile_px: int = 512
    block_size: int = 512
    frame: int = 224
    split: tuple = (0.65, 0.05, 0.3)  # a large test split: paired intervals narrow enough to tell chance apart
    preset: str = "small"
    warmup_steps: int = 200    # stage 0: vision warm-up steps (16 images each)
    stage0_steps: int = 400
    stage0_batch: int = 4      # more, smaller steps learn more per CPU second than fewer large ones
    stage0_tasks: tuple = ("count", "locate", "classify", "detect")
    base: str | None = str(BASE_DIR)  # the stage-0 model to start from; None: run stage 0 here (quick mode)
    stage1_tasks: tuple = ("caption", "landcover")
    stage2_tasks: tuple = ("count", "locate", "classify", "detect", "landcover")
    # stage I is where the TLM learns the anchors: at 80 steps and 10x the LoRA's lr, removing the anchors changed
    # 5% of the AEF-informative answers; at 300 steps, 39% at 30x and 40% at 20x; at 30x the captions fell below
    # the majority caption's ROUGE-L (interval), at 20x they stay above it
    stage1_steps: int = 300
    stage2_steps: int = 40
    # stages I and II continue a model that can already see: small steps, as the paper's 1e-4 / 1e-5 on 7B
    # (the CPU recipes' 1e-3 / 5e-4 are for LoRA on a random LLM and wreck a trained one: loss 0.5 -> 11);
    # the fresh TLM needs a larger one than the LoRA (stage I only; stage II freezes it)
    stage1_lr: float = 1e-4
    stage2_lr: float = 1e-4
    tlm_lr_scale: float = 20.0
    batch_size: int = 8
    turns: int = 8             # questions per image and training sequence
    loss_per: str = "sqrt"     # an answer of n tokens weighs sqrt(n): captions and boxes get learned, counts too
    eval_batch: int = 16
    eval_tasks: tuple = ("count", "locate", "classify", "landcover", "detect", "caption")
    # test records per task (the first n of each); the long answers (boxes, captions) are the costly ones
    eval_per_task: tuple = (("count", 240), ("locate", 240), ("classify", 300), ("landcover", 480), ("detect", 240),
                            ("caption", 160))
    eval_limit: int | None = None
    n_boot: int = 1000
    seed: int = 0


QUICK = DemoSettings(scenes=10, sites=4, tile_px=256, block_size=256, split=(0.8, 0.1, 0.1), preset="tiny",
                     base=None, warmup_steps=2, stage0_steps=2, stage0_batch=2, stage1_steps=2, stage2_steps=2,
                     batch_size=2, turns=4, eval_batch=8, eval_limit=24, eval_per_task=(), n_boot=200)
# The committed base model (assets/demo-base): our stage-0 recipe, trained once and longer than the demo could,
# on a world of ANOTHER seed than the demo's (so the demo's test scenes are unseen), then stored in bfloat16.
# The demo starts from it as a user starts from Qwen2.5-VL weights; `make base` reproduces it.
BASE = DemoSettings(seed=1, split=(0.9, 0.05, 0.05), warmup_steps=300, stage0_steps=2500, stage0_tasks=DEMO_TASKS)
STAGE0 = "tiny-cpu/stage0.yaml"
MODELS = {"fusar-gpt": ("tiny-cpu/stage1.yaml", "tiny-cpu/stage2.yaml"),
          "no-aef": ("ablations/no-aef/stage1.yaml", "ablations/no-aef/stage2.yaml")}


def _train_stage(recipe_file: str, out: Path, s: DemoSettings, steps: int, *, data=None, init=None,
                 progress: bool, **extra) -> dict:
    from .config import load_recipe
    from .train import resolve_paths, train

    if (out / "log.jsonl").exists() and (out / "trainer_state.pt").exists():
        done = [json.loads(ln) for ln in (out / "log.jsonl").read_text().splitlines() if '"loss"' in ln]
        if done and done[-1]["step"] >= steps:
            return {"reused": True, "steps": done[-1]["step"], "loss": done[-1]["loss"]}
    overrides = {"train.max_steps": steps, "train.batch_size": s.batch_size, "train.seed": s.seed,
                 "train.save_every": 0, "train.log_every": 10, "train.loss_per": s.loss_per,
                 "data.turns_per_image": s.turns, **extra}
    recipe = resolve_paths(load_recipe(CONFIGS / recipe_file, overrides), out=str(out),
                           data=str(data) if data else None, init=str(init) if init else None)
    return train(recipe, progress=progress)


def world_and_dataset(out: Path, s: DemoSettings, tasks, progress: bool) -> Path:
    from .data.build import BuildConfig, build
    from .data.synth import make_world

    world, ds = out / "world", out / "dataset"
    if not (world / "world.json").exists():
        make_world(world, scenes=s.scenes, seed=s.seed, sites=s.sites, tile_px=s.tile_px, block_size=s.block_size,
                   min_targets=s.min_targets, max_targets=s.max_targets, clutter=s.clutter, pixel_m=s.pixel_m,
                   image_px=s.image_px, progress=progress)
    if not (ds / "build.json").exists():
        build(BuildConfig(images=str(world / "images"), annotations=str(world / "annotations.json"),
                          aef=str(world / "aef"), out=str(ds), frame=s.frame, split=tuple(s.split),
                          split_by="scene", seed=s.seed, workers=2, tasks=tuple(tasks)), progress=progress)
    return ds


BASE_FIELDS = ("scenes", "sites", "min_targets", "max_targets", "clutter", "pixel_m", "image_px", "tile_px",
               "block_size", "frame", "split", "preset", "warmup_steps", "stage0_steps", "stage0_batch", "stage0_tasks",
               "turns", "loss_per", "seed")


def base_record(s: DemoSettings = BASE) -> dict:
    """What the committed base is: the stage-0 recipe file, its overrides, the settings of the world it was
    trained on (those that shape it) and the dataset's tasks (its tokenizer's corpus)."""
    world = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(s).items() if k in BASE_FIELDS}
    return {"recipe": STAGE0, "overrides": _stage0_overrides(s), "settings": world, "dataset_tasks": list(DEMO_TASKS),
            "dtype": "bfloat16"}


def _stage0_overrides(s: DemoSettings) -> dict:
    return {"model.preset": s.preset, "model.vision_warmup_steps": s.warmup_steps, "train.batch_size": s.stage0_batch,
            "data.tasks": list(s.stage0_tasks), "train.max_steps": s.stage0_steps, "train.seed": s.seed,
            "train.loss_per": s.loss_per, "data.turns_per_image": s.turns}


def rebuild_base(work="runs/demo-base", target=BASE_DIR, *, settings: DemoSettings = BASE,
                 progress: bool = True) -> Path:
    """Reproduce assets/demo-base: synthesise the base world (seed ``settings.seed``), build it, run stage 0 on
    it and store the resulting model in bfloat16 with ``base.json`` (how it was made) beside it."""
    import shutil

    import torch

    from .io_atomic import atomic_dir
    from .model.backbone import load_backbone

    work, s = Path(work), settings
    ds = world_and_dataset(work, s, DEMO_TASKS, progress)
    overrides = _stage0_overrides(s)
    _train_stage(STAGE0, work / "stage0", s, s.stage0_steps, data=ds, progress=progress, **overrides)
    model, processor = load_backbone(str(work / "stage0" / "model"), dtype=torch.bfloat16)
    target = Path(target)
    fresh, old = target.with_name(target.name + ".new"), target.with_name(target.name + ".old")
    shutil.rmtree(fresh, ignore_errors=True)
    with atomic_dir(fresh) as tmp:  # the old base stays whole until the new one is
        model.save_pretrained(str(tmp))
        processor.tokenizer.save_pretrained(str(tmp))
        processor.image_processor.save_pretrained(str(tmp))
        (tmp / "base.json").write_text(json.dumps(base_record(s), indent=2, sort_keys=True) + "\n")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    fresh.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    return target


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


MAIN_FIGURES = (("count", "acc"), ("locate", "acc100"), ("classify", "acc"), ("landcover", "acc"),
                ("detect", "f1@0.25"), ("detect", "f1@0.5"), ("caption", "rougeL"), ("caption", "bleu4"))


def chance_findings(name: str, records: list, predictions: dict, majority: dict, n_boot: int) -> tuple[list, dict]:
    """Whether a model beats the majority answer on each headline figure: the paired 95% interval of
    (model - majority) on the same records lies above 0 (paired, so the baseline's own noise cancels)."""
    from .report import verdict
    from .scoring import paired

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


def aef_use(run, records: list, predictions: dict, *, batch_size: int, n_boot: int) -> tuple[list, dict]:
    """How much a FUSAR-GPT run's answers depend on the anchors: the same records (the AEF-informative ones:
    landcover and coarse ship/plane questions) answered again with the anchors removed (the TLM's learned null
    prior stands in). Few changed answers mean the TLM has not learned to use AEF: the SAR alone decides."""
    from .evaluate import predict
    from .model.loader import load_model
    from .scoring import paired

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
    from .evaluate import predict
    from .model.loader import load_model
    from .scoring import paired, paired_values, terrain_words

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


def _flat(diffs: dict) -> dict:
    """``paired`` output as ``{"task metric": {n, a, b, diff, diff_ci}}`` (the shape of ``vs_majority``)."""
    return {f"{task} {metric}": d for task, figures in diffs.items() for metric, d in figures.items()
            if isinstance(d, dict) and d.get("diff_ci") is not None}


def per_class(records: list, predictions: dict) -> dict:
    """Accuracy per true coarse class (``ship``, ``plane``) of the coarse classify questions: a model that
    answers one class every time shows it here (the overall accuracy hides it)."""
    from .scoring import score

    coarse = [r for r in records if r["task"] == "classify" and r["meta"].get("level") == "coarse"]
    return score(coarse, predictions, n_boot=1)["classify"]["per_class"] if coarse else {}


def stage0_model(out: Path, ds: Path, s: DemoSettings, progress: bool) -> str:
    """The stage-0 model the two compared models start from: the committed base, or (quick mode, or a base of
    your own) stage 0 run here."""
    if s.base:
        base = Path(s.base)
        if not (base / "config.json").exists():
            raise FileNotFoundError(f"{base}: no base model there; 'make base' (fusar-gpt demo --rebuild-base) "
                                    f"rebuilds it")
        return str(base.resolve())
    overrides = {**_stage0_overrides(s), "train.seed": s.seed}
    _train_stage(STAGE0, out / "stage0", s, s.stage0_steps, data=ds, progress=progress, **overrides)
    return str((out / "stage0" / "model").resolve())


def train_and_evaluate(run: Path, recipes: tuple, ds: Path, s: DemoSettings, base: str, times: dict,
                       progress: bool) -> dict:
    """One compared model: stage I then stage II from ``base`` (or one stage alone when ``recipes`` holds one
    recipe: the one-stage ablation trains every task at once for the steps of both), then its evaluation on the
    test split in ``run/eval``. Returns stage I's training summary; the wall times land in ``times``."""
    from .evaluate import evaluate_run

    name = run.name
    t = time.perf_counter()
    seen = {"model.base": base, "model.preset": None}
    first = {"train.lr": s.stage1_lr, "train.tlm_lr_scale": s.tlm_lr_scale, "data.tasks": list(s.stage1_tasks)}
    if len(recipes) == 1:
        tasks = list(dict.fromkeys(s.stage1_tasks + s.stage2_tasks))
        summary = _train_stage(recipes[0], run / "stage2", s, s.stage1_steps + s.stage2_steps, data=ds,
                               progress=progress, **seen, **{**first, "data.tasks": tasks})
    else:
        summary = _train_stage(recipes[0], run / "stage1", s, s.stage1_steps, data=ds, progress=progress, **seen,
                               **first)
        _train_stage(recipes[1], run / "stage2", s, s.stage2_steps, init=run / "stage1", progress=progress,
                     **{"train.lr": s.stage2_lr, "data.tasks": list(s.stage2_tasks)})
    times[f"train {name}"] = time.perf_counter() - t
    t = time.perf_counter()
    if not (run / "eval" / "metrics.json").exists():
        evaluate_run(run / "stage2", ds / "manifest.jsonl", split="test", batch_size=s.eval_batch, out=run / "eval",
                     progress=progress, n_boot=s.n_boot, limit=s.eval_limit, tasks=list(s.eval_tasks),
                     per_task=dict(s.eval_per_task))
    times[f"eval {name}"] = time.perf_counter() - t
    return summary


def run_demo(out="runs/demo", *, quick: bool = False, settings: DemoSettings | None = None,
             progress: bool = True) -> dict:
    from .data.dataset import load_manifest
    from .evaluate import compare_runs
    from .scoring import majority_predictions, paired, read_predictions

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
               "vs_no_aef": _flat(main), "per_class": classes, "aef_use": aef, "stage1": stage1,
               "seconds": {k: round(v, 1) for k, v in times.items()}, "settings": asdict(s)}
    (out / "demo.json").write_text(json.dumps(summary, indent=2))
    return summary


def format_summary(summary: dict) -> str:
    lines = [summary["table"], ""]
    lines += [f"- {f}" for f in summary["findings"]]
    lines += ["", f"report: {summary['report']}",
              "time: " + ", ".join(f"{k} {v:.0f} s" for k, v in summary["seconds"].items())]
    return "\n".join(lines)
