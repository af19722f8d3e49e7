"""Training recipes: typed dataclasses loaded from YAML, with one-line errors that name the key.

A recipe is data, not code: the stage decides what trains, the learning rate, the epochs and the
data mix. ``inherit: other.yaml`` starts from another recipe (paths relative to the file), so an
ablation is a few lines on top of the recipe it changes. ``${VAR}`` in a string is read from the
environment when the recipe is used, so one recipe serves every machine's weight location.
"""

from __future__ import annotations

import dataclasses
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .data.tasks import stage_tasks
from .recipe_rules import (
    STAGE_TRAINABLE,
    Dtype,
    Fusion,
    LossPer,
    Missing,
    MixedPrecision,
    PresetName,
    RecipeError,
    Schedule,
    Trainable,
    check,
    literal_values,
)
from .text import one_line

STAGE_TASKS = {stage: stage_tasks(stage) for stage in (1, 2)}  # from the task registry


@dataclass
class ModelConfig:
    base: str | None = None               # local Qwen2.5-VL directory (from_pretrained); never copied
    preset: PresetName | None = None      # or a random backbone of this preset, saved in RUN/base
    dtype: Dtype = "float32"
    attn_implementation: str = "sdpa"
    gradient_checkpointing: bool = False
    vision_warmup_steps: int = 0          # presets only: warm the random vision tower up on the data's boxes


@dataclass
class TLMConfig:
    fusion: Fusion = "tlm"                # none: the no-AEF ablation
    sigma: float = 2.0
    hidden_mult: int = 4
    missing: Missing = "null"             # an image without a valid anchor: see TLM


@dataclass
class LoRAConfig:
    r: int = 8
    alpha: int = 32
    dropout: float = 0.05


@dataclass
class DataConfig:
    manifest: str | None = None           # DATASET/manifest.jsonl or the dataset folder
    tasks: list[str] | None = None        # default: captions for stage 1, the four tasks for stage 2
    train_split: str | None = "train"
    val_split: str | None = "val"
    max_length: int | None = 2048
    turns_per_image: int = 1              # >1: records about one image train as one conversation of up to N turns


@dataclass
class TrainConfig:
    epochs: float = 1.0
    max_steps: int | None = None          # optimizer steps; overrides epochs
    batch_size: int = 1                   # global batch per optimizer micro-step, split over processes
    grad_accum: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.0
    vision_lr_scale: float = 1.0          # vision-tower parameters train at lr x this (trainable: backbone)
    tlm_lr_scale: float = 1.0             # TLM parameters train at lr x this: a fresh TLM needs a larger step than
    #                                       the LoRA adapter on a trained backbone (which a large lr wrecks)
    warmup_ratio: float = 0.05
    schedule: Schedule = "cosine"
    loss_per: LossPer = "token"           # token: mean over answer tokens; answer: every answer weighs the same;
    #                                       sqrt: an answer of n tokens weighs sqrt(n)
    max_grad_norm: float | None = 1.0
    seed: int = 42
    mixed_precision: MixedPrecision = "no"
    eval_every: int = 0                   # steps; 0 = only at the end
    save_every: int = 0                   # steps; 0 = only at the end
    keep_checkpoints: int = 2
    log_every: int = 1
    tensorboard: bool = False


@dataclass
class Recipe:
    name: str = "run"
    stage: int = 1
    trainable: Trainable | None = None    # default per stage: 1 -> tlm+lora, 2 -> lora; backbone: the whole
    #                                       Qwen2.5-VL (vision tower + LLM), saved as a standalone model in RUN/model
    init: str | None = None               # stage-1 run directory that stage 2 continues
    out: str | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    tlm: TLMConfig = field(default_factory=TLMConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self):
        check(self)

    @property
    def trains(self) -> Trainable:
        return self.trainable or STAGE_TRAINABLE[self.stage]

    @property
    def tasks(self) -> list[str]:
        return list(self.data.tasks or STAGE_TASKS[self.stage])

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _build(cls, data, prefix: str):
    if not isinstance(data, dict):
        raise RecipeError(f"{prefix.rstrip('.') or 'recipe'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise RecipeError(f"{prefix}{unknown[0]}: unknown key (known: {', '.join(sorted(names))})")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, f"{prefix}{name}")
    return cls(**kwargs)


def _coerce(hint, value, key: str):
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, f"{key}.")
    args = typing.get_args(hint)
    if value is None:
        if type(None) in args:
            return None
        raise RecipeError(f"{key}: may not be empty")
    target = next((a for a in args if a is not type(None)), hint)
    if literal_values(target) is not None:  # a vocabulary of strings: read as a string, check() tests the value
        target = str
    origin = typing.get_origin(target)
    if origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise RecipeError(f"{key}: expected a list, got {value!r}")
        return [str(v) for v in value]
    if target is bool:
        if not isinstance(value, bool):
            raise RecipeError(f"{key}: expected true or false, got {value!r}")
        return value
    if target in (int, float):
        if isinstance(value, bool):
            raise RecipeError(f"{key}: expected a number, got {value!r}")
        try:
            out = target(value) if not isinstance(value, str) else target(float(value))
        except (TypeError, ValueError):
            raise RecipeError(f"{key}: expected a number, got {value!r}") from None
        if target is int and float(value) != out:
            raise RecipeError(f"{key}: expected an integer, got {value!r}")
        return out
    if target is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise RecipeError(f"{key}: expected a string, got {value!r}")
        return str(value)
    return value


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


class _NoAliasLoader(yaml.SafeLoader):
    """Safe YAML without aliases: a recipe has no use for ``*ref``, and nested aliases expand exponentially (a
    519-byte "billion laughs" file took 108 s and 6 GB before failing)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.YAMLError(f"YAML aliases (*name) are not allowed in recipes (line {mark.line + 1})")
        return super().compose_node(parent, index)


def _read(path: Path, seen: tuple = ()) -> dict:
    if path in seen:
        raise RecipeError(f"inherit: {path} inherits itself")
    try:
        data = yaml.load(path.read_text(), Loader=_NoAliasLoader) or {}
    except FileNotFoundError:
        raise RecipeError(f"recipe {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise RecipeError(f"recipe {path} cannot be read ({one_line(err)})") from None
    except yaml.YAMLError as err:
        raise RecipeError(f"recipe {path} is not valid YAML: {one_line(err)}") from None
    except RecursionError:  # `[[[[...` 100,000 deep exhausts the YAML composer's stack
        raise RecipeError(f"recipe {path} is not valid YAML: nested too deeply") from None
    if not isinstance(data, dict):
        raise RecipeError(f"recipe {path}: expected a mapping at the top level")
    parent = data.pop("inherit", None)
    if parent is not None and not isinstance(parent, str):
        raise RecipeError(f"inherit: expected the path of a recipe file, got {parent!r}")
    if parent:
        data = _merge(_read((path.parent / parent).resolve(), seen + (path,)), data)
    for key in ("init", "out"):  # paths in a recipe are relative to the recipe that set them
        if isinstance(data.get(key), str) and not data[key].startswith(("/", "$")):
            data[key] = str((path.parent / data[key]).resolve())
    return data


def load_recipe(path, overrides: dict | None = None) -> Recipe:
    """Read a recipe (following ``inherit``), apply ``overrides`` (dotted keys), validate."""
    data = _read(Path(path).resolve())
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, last = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise RecipeError(f"{dotted}: {p} is not a section")
        node[last] = value
    try:
        return _build(Recipe, data, "")
    except TypeError as err:
        raise RecipeError(f"recipe {path}: {err}") from None


def expand(value: str | None, key: str) -> str | None:
    """``${VAR}`` from the environment; an unset variable is a one-line error naming the key."""
    if value is None:
        return None

    def sub(m):
        if m.group(1) not in os.environ:
            raise RecipeError(f"{key}: environment variable {m.group(1)} is not set (it gives {value!r})")
        return os.environ[m.group(1)]

    return re.sub(r"\$\{(\w+)\}", sub, value)


def save_recipe(recipe: Recipe, path) -> None:
    Path(path).write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False))
