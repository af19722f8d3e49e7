"""What a valid recipe is: the vocabulary of every key, the range of every number, and the rules across keys.

Why apart from ``config`` (the typed sections and reading YAML): these are the rules a recipe must pass, read
by whoever needs to know a recipe's choices (``model/policy.py`` has a row per ``TRAINABLE``; the CLI lists
``DTYPES``) without the loading machinery; ``config.load_recipe`` applies :func:`check` to every recipe it makes.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Literal

from .data.tasks import TASKS

# Every vocabulary a recipe key takes, defined once: config's dataclass fields are typed with these, check()
# accepts exactly their values, and other modules import the tuples (model/policy.py has a row per TRAINABLE).
Trainable = Literal["tlm+lora", "tlm", "lora", "backbone"]
Fusion = Literal["tlm", "sum", "concat", "none"]
Missing = Literal["null", "identity", "error"]
Dtype = Literal["float32", "bfloat16"]
PresetName = Literal["tiny", "small"]
Schedule = Literal["cosine", "linear", "constant"]
LossPer = Literal["token", "answer", "sqrt"]
MixedPrecision = Literal["no", "bf16"]
TRAINABLE, FUSIONS, MISSING, DTYPES, PRESET_NAMES, SCHEDULES, LOSS_PER, MIXED_PRECISION = (  # their values
    typing.get_args(v) for v in (Trainable, Fusion, Missing, Dtype, PresetName, Schedule, LossPer, MixedPrecision))

STAGE_TRAINABLE: dict[int, Trainable] = {1: "tlm+lora", 2: "lora"}


class RecipeError(ValueError):
    """A recipe that cannot be used; the message names the key."""


def check_choice(key: str, value, choices) -> None:
    if value not in choices:
        raise RecipeError(f"{key}: {value!r} is not one of {', '.join(map(str, choices))}")


MAX_LORA_R = 1024  # the smallest Qwen2.5-VL (3B) has hidden size 2048; past half of it a low-rank adapter is not one


RULES = {"int>=1": (lambda v: v >= 1, ">= 1"), "int>=0": (lambda v: v >= 0, ">= 0"),
         ">0": (lambda v: math.isfinite(v) and v > 0, "finite and > 0"),
         ">=0": (lambda v: math.isfinite(v) and v >= 0, "finite and >= 0"),
         "[0,1)": (lambda v: 0 <= v < 1, "in [0, 1)")}


def numeric_ranges(r) -> list[tuple[str, float, str]]:
    """Every numeric field with its rule. Why all of them: a sign slip (``max_grad_norm: -1`` trains backwards,
    ``lr: .inf`` saves NaN weights) otherwise runs to the end and exits 0."""
    t = r.train
    rows = [("lora.r", r.lora.r, "int>=1"), ("train.batch_size", t.batch_size, "int>=1"),
            ("train.grad_accum", t.grad_accum, "int>=1"), ("train.keep_checkpoints", t.keep_checkpoints, "int>=1"),
            ("train.log_every", t.log_every, "int>=1"), ("data.turns_per_image", r.data.turns_per_image, "int>=1"),
            ("tlm.hidden_mult", r.tlm.hidden_mult, "int>=1"), ("train.save_every", t.save_every, "int>=0"),
            ("train.eval_every", t.eval_every, "int>=0"), ("train.seed", t.seed, "int>=0"),
            ("model.vision_warmup_steps", r.model.vision_warmup_steps, "int>=0"),
            ("train.lr", t.lr, ">0"), ("train.epochs", t.epochs, ">0"), ("tlm.sigma", r.tlm.sigma, ">0"),
            ("lora.alpha", r.lora.alpha, ">0"), ("train.vision_lr_scale", t.vision_lr_scale, ">0"),
            ("train.tlm_lr_scale", t.tlm_lr_scale, ">0"), ("train.weight_decay", t.weight_decay, ">=0"),
            ("train.warmup_ratio", t.warmup_ratio, "[0,1)"), ("lora.dropout", r.lora.dropout, "[0,1)")]
    if t.max_grad_norm is not None:
        rows.append(("train.max_grad_norm", t.max_grad_norm, ">0"))
    if r.data.max_length is not None:
        rows.append(("data.max_length", r.data.max_length, "int>=1"))
    return rows


def check(r) -> None:
    """Cross-field rules that types alone cannot say, on a ``config.Recipe`` (not imported: config imports this)."""
    check_choice("stage", r.stage, tuple(STAGE_TRAINABLE))
    check_vocabularies(r)
    if r.model.base is None and r.model.preset is None:
        raise RecipeError(f"model: give base (a local Qwen2.5-VL directory) or preset ({', '.join(PRESET_NAMES)})")
    for key, value, rule in numeric_ranges(r):
        test, want = RULES[rule]
        if not test(value):
            raise RecipeError(f"{key}: must be {want}, got {value}")
    if r.lora.r > MAX_LORA_R:
        raise RecipeError(f"lora.r: must be <= {MAX_LORA_R} (a rank above the hidden size of any Qwen2.5-VL adds "
                          f"nothing), got {r.lora.r}")
    if r.train.max_steps is not None and r.train.max_steps < 1:
        raise RecipeError(f"train.max_steps: must be >= 1, got {r.train.max_steps}")
    for t in r.data.tasks or []:
        check_choice("data.tasks", t, TASKS)
    if r.trains == "backbone" and r.tlm.fusion != "none":
        raise RecipeError("trainable: 'backbone' trains the Qwen2.5-VL weights alone; set tlm.fusion: none "
                          "(the TLM and LoRA come in the stages that start from RUN/model)")
    if r.tlm.fusion == "none" and r.trains == "tlm":
        raise RecipeError("trainable: 'tlm' with tlm.fusion 'none' trains nothing")


def literal_values(hint) -> tuple | None:
    """The values of a ``Literal[...]`` hint (or of ``Literal[...] | None``); None for any other hint."""
    for h in (hint, *typing.get_args(hint)):
        if typing.get_origin(h) is Literal:
            return typing.get_args(h)
    return None


def check_vocabularies(obj, prefix: str = "") -> None:
    """Every field typed with a vocabulary (``Literal``) holds one of its values, sections included."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            check_vocabularies(value, f"{prefix}{f.name}.")
        elif value is not None and (choices := literal_values(hints[f.name])) is not None:
            check_choice(f"{prefix}{f.name}", value, choices)
