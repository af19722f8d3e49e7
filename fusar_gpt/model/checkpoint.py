"""One run-directory format for TLM + LoRA, and import/export of the official FUSAR-GPT format.

Ours (DESIGN.md §3): ``RUN/tlm.safetensors`` + ``RUN/tlm.json`` and a peft adapter in
``RUN/adapter/``; base weights are referenced, never copied. The official format is
``vec64_film.pt`` (``{"film_mlp": state_dict}``) + ``tlm_config.json`` + a peft adapter dir.
Pickled files are opened with ``torch.load(weights_only=True)`` only: a checkpoint that needs
full unpickling could run arbitrary code, so it is refused, never "trusted".
"""

from __future__ import annotations

import json
import pickle
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..chip import ChipSpec
from ..io_atomic import atomic_dir
from .policy import trains_whole_backbone
from .tlm import TLM

TLM_FORMAT = "fusar-gpt.tlm/1"
OFFICIAL_FORMAT = "tlm_original_train_patch_resize_v1"  # the official repo's tlm_config.json "format"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")


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
        raise CheckpointError(f"{cfg_path}: not a readable TLM config ({' '.join(str(err).split())})") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{cfg_path}: expected a JSON object, got {type(cfg).__name__}")
    fmt = cfg.pop("format", None)
    if fmt != TLM_FORMAT:
        raise CheckpointError(f"{cfg_path}: unknown TLM format {fmt!r} (expected {TLM_FORMAT!r})")
    try:
        tlm = TLM(**cfg)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{cfg_path}: not a TLM config ({' '.join(str(err).split())})") from None
    try:
        state = load_file(str(weights), device=str(device))
    except Exception as err:  # safetensors raises its own SafetensorError (and OSError) on a torn or lying file
        raise CheckpointError(f"{weights}: not a readable safetensors file ({' '.join(str(err).split())})") from None
    bad = sorted(k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all())
    if bad:
        raise CheckpointError(f"{weights}: non-finite values in {', '.join(bad)} (a diverged run?)")
    try:
        missing, unexpected = tlm.load_state_dict(state, strict=False)
    except RuntimeError as err:  # a shape that does not match tlm.json
        raise CheckpointError(f"{weights}: tensors do not fit tlm.json ({' '.join(str(err).split())[:300]})") from None
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
    config = path / "adapter_config.json"
    if not config.exists():
        raise CheckpointError(f"{path} holds no peft adapter (adapter_config.json)")
    try:  # peft's own errors name neither the file nor the run
        json.loads(config.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise CheckpointError(f"{config}: not a readable adapter configuration ({' '.join(str(err).split())})"
                              ) from None
    try:
        return PeftModel.from_pretrained(backbone, str(path), is_trainable=trainable)
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as err:
        raise CheckpointError(f"{path}: not a loadable peft adapter ({' '.join(str(err).split())[:300]})"
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


def _official_config(src: Path, sigma: float | None) -> dict:
    path = src / "tlm_config.json"
    if not path.exists():
        if sigma is None:
            raise CheckpointError(f"{src} has no tlm_config.json (a legacy checkpoint): pass the sigma it was "
                                  "trained with (the official script used 2.0)")
        return {"format": OFFICIAL_FORMAT, "sigma": sigma, "hidden_mult": 4, "image_size": 504, "vec_dim": 64}
    try:
        cfg = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path} is not valid JSON: {err}") from err
    if cfg.get("format") != OFFICIAL_FORMAT:
        raise CheckpointError(f"{path}: unknown format {cfg.get('format')!r} (supported: {OFFICIAL_FORMAT!r})")
    if cfg.get("vec_dim", 64) != 64:
        raise CheckpointError(f"{path}: vec_dim {cfg.get('vec_dim')} is not 64")
    if sigma is not None:
        cfg["sigma"] = sigma
    return cfg


def import_official(src: str | Path, out: str | Path, sigma: float | None = None, missing: str = "identity",
                    frame: int | None = None) -> Path:
    """Convert an official FUSAR-GPT checkpoint dir into a run dir; returns the run dir.

    ``missing`` defaults to ``identity``: the official model never saw an image without
    anchors, so leaving such images unmodulated is the honest choice (no untrained null prior).
    ``frame`` (default: the checkpoint's ``image_size``, 504) goes into the run's ``chip.json`` with the
    authors' input handling (colour PNG/JPEG kept as RGB). Written atomically: a failed import leaves no partial
    run dir behind.
    """
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise CheckpointError(f"{src} is not a directory")
    if out.exists() and any(out.iterdir()):
        raise CheckpointError(f"{out} exists and is not empty; choose a new run directory")
    weights = src / "vec64_film.pt"
    if not weights.exists():
        raise CheckpointError(f"{src} holds no vec64_film.pt")
    cfg = _official_config(src, sigma)
    state = safe_torch_load(weights)
    if not isinstance(state, dict) or not isinstance(state.get("film_mlp"), dict):
        raise CheckpointError(f"{weights} does not hold {{'film_mlp': state_dict}}")
    sd = state["film_mlp"]
    bad = sorted(k for k, v in sd.items()
                 if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all())
    if bad:
        raise CheckpointError(f"{weights}: non-finite values in film_mlp {', '.join(bad)} (a diverged run?)")
    try:
        w0, w2 = sd["0.weight"], sd["2.weight"]
    except KeyError as err:
        raise CheckpointError(f"{weights}: film_mlp lacks {err}; expected Sequential(Linear, SiLU, Linear)") from err
    hidden_size, hidden_mult = w2.shape[0] // 2, int(cfg.get("hidden_mult", 4))
    if w0.shape[1] != 64 or w0.shape[0] != max(128, hidden_mult * hidden_size) or w2.shape[1] != w0.shape[0]:
        raise CheckpointError(f"{weights}: shapes {tuple(w0.shape)}, {tuple(w2.shape)} do not fit "
                              f"hidden_mult={hidden_mult}, hidden size {hidden_size}")
    tlm = TLM(hidden_size, prior_dim=64, hidden_mult=hidden_mult, sigma=float(cfg["sigma"]), missing=missing)
    tlm.mlp.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)

    with atomic_dir(out) as tmp:
        save_tlm(tlm, tmp)
        _copy_adapter(src, tmp / "adapter")
        size = int(frame if frame is not None else cfg.get("image_size", 504))
        ChipSpec(frame=size, eight_bit="rgb").save(tmp)
        provenance = {"imported_from": str(src.resolve()), "official_config": cfg, "coordinate_size": size}
        (tmp / "import.json").write_text(json.dumps(provenance, indent=2) + "\n")
    return out


def _copy_adapter(src: Path, dst: Path) -> None:
    if not (src / "adapter_config.json").exists():
        return
    dst.mkdir(parents=True)
    shutil.copy2(src / "adapter_config.json", dst / "adapter_config.json")
    if (src / "adapter_model.safetensors").exists():
        shutil.copy2(src / "adapter_model.safetensors", dst / "adapter_model.safetensors")
    elif (src / "adapter_model.bin").exists():  # re-save as safetensors, read without unpickling
        state = safe_torch_load(src / "adapter_model.bin")
        save_file({k: v.contiguous() for k, v in state.items()}, str(dst / "adapter_model.safetensors"))
    else:
        raise CheckpointError(f"{src} has adapter_config.json but no adapter weights")


def export_official(tlm: TLM, out: str | Path, image_size: int = 504) -> Path:
    """Write a TLM in the official format so the authors' code can load it."""
    if tlm.fusion != "tlm" or tlm.prior_dim != 64:
        raise CheckpointError("only fusion='tlm' with 64-d priors exists in the official format")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.save({"film_mlp": {k: v.detach().cpu() for k, v in tlm.mlp.state_dict().items()}}, out / "vec64_film.pt")
    cfg = {"format": OFFICIAL_FORMAT, "sigma": tlm.sigma, "hidden_mult": tlm.hidden_mult,
           "image_size": image_size, "vec_dim": 64}
    (out / "tlm_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    return out


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
