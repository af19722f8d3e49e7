"""The base weights a run starts from: a local Qwen2.5-VL directory, or a random preset backbone built in RUN/base."""

from __future__ import annotations

from pathlib import Path

from ..config import Recipe
from ..data.manifest import load_manifest
from ..io_atomic import replace_dir
from .backbone import DEFAULT_CORPUS, make_backbone
from .warmup import warm_up_base


def build_base(recipe: Recipe, progress: bool = False) -> str:
    """The run's base weights, recorded in the recipe (``model.base``, resolved; ``model.preset`` cleared).

    ``model.base`` is used as it is. A preset is built once into RUN/base: a random backbone whose tokenizer is
    trained on the dataset's questions and answers, its vision tower optionally warmed up on the dataset's boxes
    first (``model.vision_warmup_steps``). RUN/base is built under a temporary name and renamed (``replace_dir``), so an
    interrupted creation is redone, never half used; a later call (another process, a resumed run) finds it built
    and only records it. Under several processes the main process calls this first, the others after a barrier.
    """
    if recipe.model.base:
        return recipe.model.base
    base = Path(recipe.out) / "base"
    if not (base / "config.json").exists():
        records = load_manifest(recipe.data.manifest)
        texts = list(DEFAULT_CORPUS) + [t for r in records[:4000] for t in (r["question"], r["answer"])]
        with replace_dir(base) as tmp:
            make_backbone(recipe.model.preset, tmp, texts=texts, seed=recipe.train.seed)
            if recipe.model.vision_warmup_steps:
                warm_up_base(tmp, recipe.data.manifest, steps=recipe.model.vision_warmup_steps,
                             split=recipe.data.train_split, seed=recipe.train.seed, progress=progress)
    recipe.model.base, recipe.model.preset = str(base.resolve()), None
    return recipe.model.base
