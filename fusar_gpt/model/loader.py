"""One model loader: a run directory or an exported model -> the FusarGPT and its chip spec, together.

A model is only usable with the input transform it was trained with, so they are handed back as a pair (as
open_clip's ``create_model_and_transforms`` does): every consumer (``eval``, ``ask``, ``detect-scene``,
``serve``, ``export``) loads through :func:`load_model` and makes its inputs with the spec it returns. The
spec comes from the model directory's own ``chip.json`` and nowhere else: no dataset path is followed, so
the answer is the same from any working directory and after the dataset is gone. :func:`check_model_dir`
refuses a directory without one before any weight is read.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml

from ..chip import ChipSpec, read_spec
from ..recipe_rules import DTYPES
from ..text import one_line
from .backbone import load_backbone
from .checkpoint import ADAPTERS, RUN_CONFIG, load_adapter, load_task_adapters, load_tlm
from .fusar import FusarGPT

EXPORT_FILE = "export.json"
EXPORT_FORMAT = "fusar-gpt.export/1"


def is_export(path) -> bool:
    return (Path(path) / EXPORT_FILE).exists()


def check_model_dir(path) -> ChipSpec:
    """Refuse early (before any input is read or weight loaded) what is not a run or an exported model, or has
    no chip spec; returns the spec."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such run or exported model directory")
    if not is_export(path) and not (path / RUN_CONFIG).exists():
        raise FileNotFoundError(f"{path} is neither a run directory ({RUN_CONFIG}) nor an exported model "
                                f"({EXPORT_FILE})")
    return read_spec(path)  # a chip.json nested too deeply is one line there, for every caller


def load_model(path, device: str = "cpu") -> tuple[FusarGPT, ChipSpec]:
    """``(model, chip spec)`` of a run directory or an exported model, the model in eval mode."""
    spec = check_model_dir(path)
    path = Path(path)
    model = _load_export(path) if is_export(path) else _load_run(path)
    return model.to(device).eval(), spec


def _load_run(run: Path) -> FusarGPT:
    """Base weights by path, TLM and adapter from the run; a whole-backbone run (``trainable: backbone``) carries
    its own weights in RUN/model, which replace the base. A run with RUN/adapters/ (the authors' imported release)
    gets all its task adapters on the one base; ``model/routing.py`` picks one per question."""
    try:
        cfg = yaml.safe_load((run / RUN_CONFIG).read_text())
        model_cfg = cfg["model"]
    except (OSError, yaml.YAMLError, TypeError, KeyError) as err:
        raise ValueError(f"{run / RUN_CONFIG}: not a readable run configuration ({one_line(err)})"
                         ) from None
    except RecursionError:  # YAML of 100,000 nested lists exhausts the parser's stack
        raise ValueError(f"{run / RUN_CONFIG}: not a readable run configuration (nested too deeply)") from None
    weights = run / "model" if (run / "model" / "config.json").exists() else model_cfg.get("base")
    if not weights:
        raise ValueError(f"{run / RUN_CONFIG}: names no base weights (model.base)")
    # in the dtype it was trained in (the recipe's model.dtype), not the stored one: a base kept in bfloat16 to be
    # small would otherwise run in bfloat16, which a CPU without bf16 units emulates (measured 5x slower answers)
    dtype = model_cfg.get("dtype")
    backbone, processor = load_backbone(weights, dtype=getattr(torch, dtype) if dtype in DTYPES else None,
                                        attn_implementation=model_cfg.get("attn_implementation"))
    if (run / ADAPTERS).exists():
        if (run / "adapter").exists():
            raise ValueError(f"{run} holds both adapter/ and {ADAPTERS}/: which one answers is ambiguous")
        backbone = load_task_adapters(backbone, run)
    elif (run / "adapter" / "adapter_config.json").exists():
        backbone = load_adapter(backbone, run)
    return FusarGPT(backbone, load_tlm(run), processor)


def _load_export(path: Path) -> FusarGPT:
    try:
        info = json.loads((path / EXPORT_FILE).read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path / EXPORT_FILE}: not a readable export summary ({one_line(err)})"
                         ) from None
    except RecursionError:
        raise ValueError(f"{path / EXPORT_FILE}: not a readable export summary (nested too deeply)") from None
    if not isinstance(info, dict):
        raise ValueError(f"{path / EXPORT_FILE}: not a readable export summary (expected a JSON object)")
    if info.get("format") != EXPORT_FORMAT:
        raise ValueError(f"{path / EXPORT_FILE}: unknown export format {info.get('format')!r} "
                         f"(expected {EXPORT_FORMAT!r})")
    backbone, processor = load_backbone(path)
    return FusarGPT(backbone, load_tlm(path), processor)
