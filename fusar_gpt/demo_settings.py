"""The demo's settings: the world it synthesises, the recipes and steps of each stage, and the committed base.

Why an easier world than ``make_world``'s defaults: one ship wherever there is water and one plane
wherever there is a runway, fewer look-alikes, 1-2 m pixels and scenes of 160-224 px, so that a
5M-parameter model learns in minutes on 2 cores. The scene size matters most for localisation: the
realistic 256-320 px scenes are shrunk into the 224 frame, and the random vision tower then finds the
ship's token only about half the time (a linear probe after the warm-up: 44-50%), too little for the
LLM to learn *where* (measured: localisation never beat the majority answer); at 160-224 px nothing is
shrunk. The realistic world (0-5 targets per class, full clutter) is one flag away.

Apart from the steps that run them (``demo_steps``) so that what the committed base is (``base_record``) can be
read and checked without torch or training code.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from .data.tasks import REPORT_ORDER, TASKS

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
BASE_DIR = Path(__file__).resolve().parents[1] / "assets" / "demo-base"   # the committed stage-0 model


DEMO_TASKS = TASKS  # every task of the registry, in its order (the base's tokenizer corpus follows it)


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
    eval_tasks: tuple = REPORT_ORDER
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



BASE_FIELDS = ("scenes", "sites", "min_targets", "max_targets", "clutter", "pixel_m", "image_px", "tile_px",
               "block_size", "frame", "split", "preset", "warmup_steps", "stage0_steps", "stage0_batch", "stage0_tasks",
               "turns", "loss_per", "seed")


def base_record(s: DemoSettings = BASE) -> dict:
    """What the committed base is: the stage-0 recipe file, its overrides, the settings of the world it was
    trained on (those that shape it) and the dataset's tasks (its tokenizer's corpus)."""
    world = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(s).items() if k in BASE_FIELDS}
    return {"recipe": STAGE0, "overrides": stage0_overrides(s), "settings": world, "dataset_tasks": list(DEMO_TASKS),
            "dtype": "bfloat16"}


def stage0_overrides(s: DemoSettings) -> dict:
    return {"model.preset": s.preset, "model.vision_warmup_steps": s.warmup_steps, "train.batch_size": s.stage0_batch,
            "data.tasks": list(s.stage0_tasks), "train.max_steps": s.stage0_steps, "train.seed": s.seed,
            "train.loss_per": s.loss_per, "data.turns_per_image": s.turns}


