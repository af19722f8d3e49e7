"""What a training run starts from: its paths (the CLI's, or what the init run already knows), the chip spec it
records in RUN/chip.json, and the model with exactly the recipe's parameters trainable.

Why apart from ``train.py`` (the loop): benchmarks and tests build the same model without training it, and the
loop reads better without the set-up before it.
"""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from .chip import CHIP_FILE, ChipSpec, dataset_spec, read_spec
from .config import Recipe, RecipeError, expand
from .data.manifest import OFFICIAL_FRAME, load_manifest
from .model.backbone import load_backbone
from .model.base import build_base
from .model.checkpoint import ADAPTERS, load_adapter, load_tlm
from .model.fusar import FusarGPT
from .model.policy import Trained, add_lora, adds_lora, apply_policy, whole_backbone
from .model.tlm import TLM


def resolve_paths(recipe: Recipe, out: str | None = None, data: str | None = None, init: str | None = None) -> Recipe:
    """Apply CLI paths and fill what the stage-1 run already knows (base weights, data)."""
    recipe.out = out or recipe.out or f"runs/{recipe.name}"
    recipe.init = expand(init or recipe.init, "init")
    recipe.data.manifest = expand(data or recipe.data.manifest, "data.manifest")
    if recipe.init:
        first = Path(recipe.init) / "config.yaml"
        if not first.exists():
            raise RecipeError(f"init: {recipe.init} is not a run directory (no config.yaml)")
        if (Path(recipe.init) / ADAPTERS).is_dir():  # one adapter per task: which one to continue is not ours to pick
            raise RecipeError(f"init: {recipe.init} holds one adapter per task ({ADAPTERS}/); continue one of them: "
                              "import its folder alone (import-official RELEASE/stage1 --base ...)")
        prev = yaml.safe_load(first.read_text())
        if recipe.model.base is None:
            recipe.model.base, recipe.model.preset = prev["model"]["base"], None
        # an imported checkpoint's config.yaml names its base only: then the data comes from the recipe or --data
        recipe.data.manifest = recipe.data.manifest or (prev.get("data") or {}).get("manifest")
    recipe.model.base = expand(recipe.model.base, "model.base")
    if recipe.model.base and Path(recipe.model.base).is_dir():  # the run answers from any working directory
        recipe.model.base = str(Path(recipe.model.base).resolve())
    if recipe.data.manifest is None:
        raise RecipeError("data.manifest: no dataset given (recipe, --data, or the init run's)")
    manifest = Path(recipe.data.manifest)
    recipe.data.manifest = str((manifest / "manifest.jsonl") if manifest.is_dir() else manifest)
    return recipe


def run_spec(recipe: Recipe) -> ChipSpec:
    """The chip spec the run's inputs were made with, for RUN/chip.json: the dataset's (build.json), else the
    init run's, else what an official manifest implies (its records' frame; colour PNGs kept as they are)."""
    spec = dataset_spec(recipe.data.manifest)
    if spec is not None:
        return spec
    if recipe.init and (Path(recipe.init) / CHIP_FILE).is_file():
        return read_spec(recipe.init)
    records = load_manifest(recipe.data.manifest)
    size = records[0]["coordinate_size"] if records else OFFICIAL_FRAME
    frame = size if isinstance(size, int) else OFFICIAL_FRAME
    try:
        return ChipSpec(frame=frame, eight_bit="rgb")
    except ValueError:  # a frame the chip path cannot make (not a multiple of 28): the authors' 504
        return ChipSpec(frame=OFFICIAL_FRAME, eight_bit="rgb")


def build_model(recipe: Recipe, weights_from: Path | None = None) -> FusarGPT:
    """Backbone + TLM (+ LoRA) with exactly the recipe's parameters trainable (model/policy.py decides which).

    ``weights_from`` is a checkpoint to resume; otherwise a stage-2 recipe starts from its init run.
    """
    return build_trainable(recipe, weights_from)[0]


def build_trainable(recipe: Recipe, weights_from: Path | None = None) -> tuple[FusarGPT, Trained]:
    """:func:`build_model` and what its policy trains (the names, the optimizer groups at the recipe's lrs)."""
    dtype = getattr(torch, recipe.model.dtype)
    whole = whole_backbone(recipe.trains)
    weights = weights_from / "model" if whole and weights_from is not None else Path(build_base(recipe))
    backbone, processor = load_backbone(str(weights), dtype=dtype,
                                        attn_implementation=recipe.model.attn_implementation)
    hidden = backbone.config.text_config.hidden_size
    source = weights_from or (Path(recipe.init) if recipe.init else None)
    if source is not None and (source / "tlm.json").exists():
        tlm = load_tlm(source)
    else:
        t = recipe.tlm
        tlm = TLM(hidden, sigma=t.sigma, hidden_mult=t.hidden_mult, fusion=t.fusion, missing=t.missing)
    model = FusarGPT(backbone, tlm.float(), processor)
    if source is not None and (source / "adapter" / "adapter_config.json").exists():
        model.backbone = load_adapter(backbone, source, trainable=True)
    elif adds_lora(recipe.trains):
        add_lora(model, r=recipe.lora.r, alpha=recipe.lora.alpha, dropout=recipe.lora.dropout)
    if recipe.model.gradient_checkpointing:
        kwargs = {"use_reentrant": False}
        for cfg in (backbone.config, backbone.config.text_config):
            cfg.use_cache = False  # a cache is useless in training and incompatible with recomputation
        if hasattr(model.backbone, "activation_checkpointing_enable"):  # the transformers 5.x name
            model.backbone.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    trained = apply_policy(model, recipe.trains, recipe.train)
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.float()  # trainable tensors stay fp32 under a bf16 base
    model.train()
    return model, trained
