"""One run-directory format for TLM + LoRA (the official format's import and export: model/official.py).

Ours (DESIGN.md §3): ``RUN/tlm.safetensors`` + ``RUN/tlm.json`` and a peft adapter in
``RUN/adapter/`` (or, for the authors' imported release, one per task in ``RUN/adapters/<task>/``); base weights
are referenced, never copied. The official format is
``vec64_film.pt`` (``{"film_mlp": state_dict}``) + ``tlm_config.json`` + a peft adapter dir.
Pickled files are opened with ``torch.load(weights_only=True)`` only: a checkpoint that needs
full unpickling could run arbitrary code, so it is refused, never "trusted".
"""

from __future__ import annotations

import json
import pickle
import shutil
import tempfile
from functools import partial
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..data.tasks import TASKS
from ..text import one_line
from .policy import trains_whole_backbone
from .tlm import TLM

TLM_FORMAT = "fusar-gpt.tlm/1"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")
RUN_CONFIG = "config.yaml"  # a run's recipe; an import writes one naming model.base so that load_model loads it
ADAPTERS = "adapters"       # RUN/adapters/<task>/: one peft adapter per task (an imported release), on one base


class CheckpointError(ValueError):
    """A checkpoint that cannot be read safely or does not match what it claims to be."""


def save_tlm(tlm: TLM, run_dir: str | Path) -> Path:
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in tlm.state_dict().items()}
    save_file(state, str(run / "tlm.safetensors"))
    (run / "tlm.json").write_text(json.dumps({"format": TLM_FORMAT, **tlm.config()}, indent=2) + "\n")
    return run


def load_tlm(run_dir: str | Path, device: str | torch.device = "cpu") -> TLM:
    run = Path(run_dir)
    cfg_path, weights = run / "tlm.json", run / "tlm.safetensors"
    if not cfg_path.exists() or not weights.exists():
        raise CheckpointError(f"{run} holds no TLM (tlm.json + tlm.safetensors)")
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise CheckpointError(f"{cfg_path}: not a readable TLM config ({one_line(err)})") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{cfg_path}: expected a JSON object, got {type(cfg).__name__}")
    fmt = cfg.pop("format", None)
    if fmt != TLM_FORMAT:
        raise CheckpointError(f"{cfg_path}: unknown TLM format {fmt!r} (expected {TLM_FORMAT!r})")
    try:
        tlm = TLM(**cfg)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{cfg_path}: not a TLM config ({one_line(err)})") from None
    try:
        state = load_file(str(weights), device=str(device))
    except Exception as err:  # safetensors raises its own SafetensorError (and OSError) on a torn or lying file
        raise CheckpointError(f"{weights}: not a readable safetensors file ({one_line(err)})") from None
    bad = sorted(k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all())
    if bad:
        raise CheckpointError(f"{weights}: non-finite values in {', '.join(bad)} (a diverged run?)")
    try:
        missing, unexpected = tlm.load_state_dict(state, strict=False)
    except RuntimeError as err:  # a shape that does not match tlm.json
        raise CheckpointError(f"{weights}: tensors do not fit tlm.json ({one_line(err)[:300]})") from None
    if missing or unexpected:
        raise CheckpointError(f"{weights}: tensors do not match tlm.json (missing {missing}, unexpected {unexpected})")
    return tlm.to(device)


def save_adapter(backbone, run_dir: str | Path) -> Path | None:
    """Save the peft adapter of a wrapped backbone to ``RUN/adapter`` (None when there is none)."""
    if not hasattr(backbone, "peft_config"):
        return None
    out = Path(run_dir) / "adapter"
    backbone.save_pretrained(str(out))
    return out


def load_adapter(backbone, run_dir: str | Path, trainable: bool = False):
    """Wrap ``backbone`` with the adapter saved in ``RUN/adapter``."""
    from peft import PeftModel

    path = Path(run_dir) / "adapter"
    return _peft_load(path, lambda: PeftModel.from_pretrained(backbone, str(path), is_trainable=trainable))


def task_adapter_dirs(run_dir: str | Path) -> dict[str, Path]:
    """Task -> adapter folder of ``RUN/adapters/`` in registry order (empty without that folder). A folder named
    after no task is refused: the name is what routes questions to it."""
    root = Path(run_dir) / ADAPTERS
    if not root.is_dir():
        return {}
    found = {}
    for folder in sorted(root.iterdir()):
        if not folder.is_dir() or folder.name.startswith("."):
            continue
        if folder.name not in TASKS:
            raise CheckpointError(f"{folder}: {folder.name!r} is not a task ({', '.join(TASKS)}); {root} holds one "
                                  "adapter per task, named after it")
        found[folder.name] = folder
    if not found:
        raise CheckpointError(f"{root} holds no adapter")
    return {task: found[task] for task in TASKS if task in found}


def load_task_adapters(backbone, run_dir: str | Path):
    """Wrap ``backbone`` with every adapter of ``RUN/adapters/``, each under its task's name (peft multi-adapter):
    one base in memory for all tasks; ``model/routing.py`` activates the one a question needs."""
    from peft import PeftModel

    model = None
    for task, path in task_adapter_dirs(run_dir).items():
        if model is None:
            model = _peft_load(path, partial(PeftModel.from_pretrained, backbone, str(path), adapter_name=task))
        else:
            _peft_load(path, partial(model.load_adapter, str(path), adapter_name=task))
    return model


def _peft_load(path: Path, load):
    """``load()`` (a peft call reading the adapter in ``path``) with its errors as one line naming the folder:
    peft's own name neither the file nor the run."""
    config = path / "adapter_config.json"
    if not config.exists():
        raise CheckpointError(f"{path} holds no peft adapter (adapter_config.json)")
    try:
        json.loads(config.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise CheckpointError(f"{config}: not a readable adapter configuration ({one_line(err)})"
                              ) from None
    except RecursionError:  # 100,000 nested lists: the JSON decoder's stack, one line rather than a traceback
        raise CheckpointError(f"{config}: not a readable adapter configuration (nested too deeply)") from None
    try:
        return load()
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as err:
        raise CheckpointError(f"{path}: not a loadable peft adapter ({one_line(err)[:300]})"
                              ) from None


def safe_torch_load(path: str | Path) -> object:
    """``torch.load`` restricted to tensors and plain containers; anything else is refused."""
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(f"{path} needs full unpickling (it stores Python objects, not just tensors); "
                              "refusing to load it because unpickling can run arbitrary code") from err
    except (RuntimeError, EOFError, OSError) as err:
        raise CheckpointError(f"{path} is not a readable torch checkpoint: {err}") from err


# -------------------------------------------------------------------------------------- training checkpoints
CHECKPOINTS = "checkpoints"


def save_checkpoint(model, run_dir: str | Path, step: int, trainer_state: dict, keep: int = 2,
                    state_dict: dict | None = None) -> Path:
    """Write ``RUN/checkpoints/step-N/`` (TLM, adapter, trainer_state.pt) and refresh the run's top level.

    The step directory is assembled under a temporary name and renamed into place, so a crash
    leaves either the whole checkpoint or none of it; resume only ever reads complete ones.
    ``state_dict`` is the model's full state when the live module holds only shards (FSDP).
    """
    run = Path(run_dir)
    root = run / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    for stale in root.glob(".step-*"):  # a save killed midway (one process saves, so none is in progress)
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".step-{step:08d}-", dir=root))
    try:
        _write_checkpoint(model, tmp, trainer_state, state_dict)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    for old in sorted(p for p in root.glob("step-*") if p.is_dir())[:-keep]:
        shutil.rmtree(old)
    _publish(final, run)
    return final


def _write_checkpoint(model, tmp: Path, trainer_state: dict, state_dict: dict | None) -> None:
    if state_dict is None:
        save_tlm(model.tlm, tmp)
        save_adapter(model.backbone, tmp)
        if trains_whole_backbone(model):
            save_model_dir(model, tmp / "model")
    else:
        tlm = TLM(**model.tlm.config())
        tlm.load_state_dict({k[4:]: v for k, v in state_dict.items() if k.startswith("tlm.")})
        save_tlm(tlm, tmp)
        own = {k[len("backbone."):]: v for k, v in state_dict.items() if k.startswith("backbone.")}
        if hasattr(model.backbone, "peft_config"):
            model.backbone.save_pretrained(str(tmp / "adapter"), state_dict=own)
        elif trains_whole_backbone(model):
            save_model_dir(model, tmp / "model", state_dict=own)
    torch.save(trainer_state, tmp / "trainer_state.pt")


def _publish(ckpt: Path, run: Path) -> None:
    """Copy the newest checkpoint to RUN/{tlm.*, adapter/, trainer_state.pt} (file by file, atomically)."""
    for name in ("tlm.safetensors", "tlm.json", "trainer_state.pt"):
        tmp = run / f".{name}.tmp"
        shutil.copyfile(ckpt / name, tmp)
        tmp.replace(run / name)
    for folder in ("adapter", "model"):
        if not (ckpt / folder).exists():
            continue
        staged = run / f".{folder}.tmp"
        if staged.exists():
            shutil.rmtree(staged)
        shutil.copytree(ckpt / folder, staged)
        old = run / f".{folder}.old"
        if (run / folder).exists():
            (run / folder).rename(old)
        staged.rename(run / folder)
        if old.exists():
            shutil.rmtree(old)


def save_model_dir(model, out: Path, state_dict: dict | None = None) -> None:
    """A standalone Qwen2.5-VL directory (weights, config, tokenizer, processor) that ``load_backbone`` and any
    recipe's ``model.base`` accept."""
    model.backbone.save_pretrained(str(out), state_dict=state_dict)
    if model.processor is not None:  # the same files make_backbone writes, so the same loader reads them
        model.processor.tokenizer.save_pretrained(str(out))
        model.processor.image_processor.save_pretrained(str(out))


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    steps = sorted(p for p in (Path(run_dir) / CHECKPOINTS).glob("step-*") if (p / "trainer_state.pt").exists())
    return steps[-1] if steps else None
