"""The demo's resumable steps, shared by ``fusar-gpt demo`` and ``--ablations``: the world and its dataset, the
stage-0 model both compared models start from (or ``rebuild_base``, which re-makes the committed one), and one
compared model trained (stage I + II) and evaluated. Each step reuses what a previous run already finished.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from .config import load_recipe
from .data.build import BuildConfig, build
from .data.synth import make_world
from .demo_settings import BASE, BASE_DIR, CONFIGS, DEMO_TASKS, STAGE0, DemoSettings, base_record, stage0_overrides
from .evaluate import evaluate_run
from .io_atomic import replace_dir
from .model.backbone import load_backbone
from .train import resolve_paths, train


def _train_stage(recipe_file: str, out: Path, s: DemoSettings, steps: int, *, data=None, init=None,
                 progress: bool, **extra) -> dict:
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


def rebuild_base(work="runs/demo-base", target=BASE_DIR, *, settings: DemoSettings = BASE,
                 progress: bool = True) -> Path:
    """Reproduce assets/demo-base: synthesise the base world (seed ``settings.seed``), build it, run stage 0 on
    it and store the resulting model in bfloat16 with ``base.json`` (how it was made) beside it."""
    work, s = Path(work), settings
    ds = world_and_dataset(work, s, DEMO_TASKS, progress)
    overrides = stage0_overrides(s)
    _train_stage(STAGE0, work / "stage0", s, s.stage0_steps, data=ds, progress=progress, **overrides)
    model, processor = load_backbone(str(work / "stage0" / "model"), dtype=torch.bfloat16)
    target = Path(target)
    with replace_dir(target) as tmp:  # the old base stays whole until the new one is
        model.save_pretrained(str(tmp))
        processor.tokenizer.save_pretrained(str(tmp))
        processor.image_processor.save_pretrained(str(tmp))
        (tmp / "base.json").write_text(json.dumps(base_record(s), indent=2, sort_keys=True) + "\n")
    return target


def stage0_model(out: Path, ds: Path, s: DemoSettings, progress: bool) -> str:
    """The stage-0 model the two compared models start from: the committed base, or (quick mode, or a base of
    your own) stage 0 run here."""
    if s.base:
        base = Path(s.base)
        if not (base / "config.json").exists():
            raise FileNotFoundError(f"{base}: no base model there; 'make base' (fusar-gpt demo --rebuild-base) "
                                    f"rebuilds it")
        return str(base.resolve())
    overrides = {**stage0_overrides(s), "train.seed": s.seed}
    _train_stage(STAGE0, out / "stage0", s, s.stage0_steps, data=ds, progress=progress, **overrides)
    return str((out / "stage0" / "model").resolve())


def train_and_evaluate(run: Path, recipes: tuple, ds: Path, s: DemoSettings, base: str, times: dict,
                       progress: bool) -> dict:
    """One compared model: stage I then stage II from ``base`` (or one stage alone when ``recipes`` holds one
    recipe: the one-stage ablation trains every task at once for the steps of both), then its evaluation on the
    test split in ``run/eval``. Returns stage I's training summary; the wall times land in ``times``."""
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

