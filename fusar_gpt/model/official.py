"""The authors' format in and out: ``vec64_film.pt`` + ``tlm_config.json`` + a peft adapter, one folder or a
whole release (``stage1/`` and one ``stage2/<task>`` folder per task), imported into our run format.

Apart from checkpoint.py because it is its own job: reading another project's layout, checking it is what it
claims to be (shapes, finite weights, one TLM across the task folders), and writing the run that
``model.loader`` loads with one adapter per task.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import torch
import yaml
from safetensors.torch import save_file

from ..chip import ChipSpec
from ..data.tasks import TASKS
from ..io_atomic import atomic_dir
from ..text import one_line
from .checkpoint import ADAPTERS, RUN_CONFIG, CheckpointError, safe_torch_load, save_tlm
from .tlm import TLM

OFFICIAL_FORMAT = "tlm_original_train_patch_resize_v1"  # the official repo's tlm_config.json "format"
# the authors' release: stage2/<folder> -> our task; stage1/ -> caption (stage I is trained on descriptive texts)
RELEASE_TASKS = {"localization": "locate", "counting": "count", "classification": "classify", "detection": "detect"}
STAGE1_TASK = "caption"
RELEASE_SIGMA = 2.0  # the sigma of the released models (their folders carry no tlm_config.json)


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
                    frame: int | None = None, base: str | Path | None = None) -> Path:
    """Convert an official FUSAR-GPT checkpoint dir, or the authors' whole release, into a run dir; returns it.

    A release (``stage1/`` + ``stage2/{localization,counting,classification,detection}/``, see
    :func:`release_folders`) becomes one run with one TLM and one adapter per task in ``RUN/adapters/<task>/``,
    which :func:`fusar_gpt.model.loader.load_model` loads on one base and ``model/routing.py`` switches between.
    ``base`` (the Qwen2.5-VL directory the checkpoint was trained on) goes into the run's ``config.yaml`` so that
    ``load_model`` can load it; a release needs it, a single folder may go without (then the run holds the
    weights only, as before).

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
    base_dir = None if base is None else _base_dir(base)
    if is_release(src):
        return _import_release(src, out, sigma, missing, frame, base_dir)
    tlm, cfg, _ = _read_official(src, sigma, missing)
    _check_base_fits(tlm, src / "vec64_film.pt", base_dir)
    with atomic_dir(out) as tmp:
        save_tlm(tlm, tmp)
        _copy_adapter(src, tmp / "adapter")
        _write_run_files(tmp, frame, cfg, base_dir, {"imported_from": str(src.resolve())})
    return out


def is_release(path: str | Path) -> bool:
    """Whether ``path`` is laid out as the authors' release (``stage1/`` and/or ``stage2/``), not one checkpoint."""
    return (Path(path) / "stage1").is_dir() or (Path(path) / "stage2").is_dir()


def release_folders(src: str | Path) -> dict[str, Path]:
    """Task -> checkpoint folder of a release, in registry order: ``stage2/<name>/`` under the task
    :data:`RELEASE_TASKS` maps it to, and ``stage1/`` as :data:`STAGE1_TASK` (stage I was trained on the
    descriptive texts, our caption task, so that is the question it answers). A folder of another name is refused
    rather than skipped: a release missing a task would otherwise import without a word."""
    src = Path(src)
    if (src / "vec64_film.pt").exists():
        raise CheckpointError(f"{src} holds both a checkpoint (vec64_film.pt) and stage1/ or stage2/ folders; "
                              "import one of them")
    found = {STAGE1_TASK: src / "stage1"} if (src / "stage1").is_dir() else {}
    stage2 = src / "stage2"
    for folder in sorted(stage2.iterdir()) if stage2.is_dir() else ():
        if not folder.is_dir() or folder.name.startswith("."):
            continue
        if folder.name not in RELEASE_TASKS:
            raise CheckpointError(f"{folder}: not a task folder of the release (expected "
                                  f"{', '.join(RELEASE_TASKS)})")
        found[RELEASE_TASKS[folder.name]] = folder
    if not found:
        raise CheckpointError(f"{src}: stage1/ and stage2/ hold no checkpoint folder")
    return {task: found[task] for task in TASKS if task in found}


def _import_release(src: Path, out: Path, sigma: float | None, missing: str, frame: int | None,
                    base_dir: Path | None) -> Path:
    """One run from a release: the TLM they share (stage II freezes it, so any difference is refused: the run
    can hold one), every folder's adapter copied as it is under ``RUN/adapters/<task>/``."""
    folders = release_folders(src)
    if base_dir is None:
        raise CheckpointError(f"{src} is the authors' release: give the base model it was trained on "
                              "(--base QWEN_DIR), which the run loads its adapters onto")
    legacy = [f for f in folders.values() if not (f / "tlm_config.json").exists()]
    first, tlm, cfg, state = None, None, None, None
    for folder in folders.values():
        if not (folder / "adapter_config.json").exists():
            raise CheckpointError(f"{folder} holds no peft adapter (adapter_config.json)")
        own_sigma = sigma if sigma is not None or folder not in legacy else RELEASE_SIGMA
        this, this_cfg, this_state = _read_official(folder, own_sigma, missing)
        if first is None:
            first, tlm, cfg, state = folder / "vec64_film.pt", this, this_cfg, this_state
            continue
        _check_same_tlm(first, tlm, cfg, state, folder / "vec64_film.pt", this, this_cfg, this_state)
    _check_base_fits(tlm, first, base_dir)
    notices = []
    if legacy and sigma is None:
        names = ", ".join(f.relative_to(src).as_posix() for f in legacy)
        notices.append(f"{names}: no tlm_config.json; using sigma {RELEASE_SIGMA}, the one the authors' released "
                       "models were trained with (--sigma overrides)")
    for line in notices:
        print(f"import-official: notice: {line}", file=sys.stderr)
    with atomic_dir(out) as tmp:
        save_tlm(tlm, tmp)
        for task, folder in folders.items():
            _copy_adapter(folder, tmp / ADAPTERS / task)
        _write_run_files(tmp, frame, cfg, base_dir, {
            "imported_from": str(src.resolve()), "layout": "release", "notices": notices,
            "adapters": {task: folder.relative_to(src).as_posix() for task, folder in folders.items()}})
    return out


def _read_official(src: Path, sigma: float | None, missing: str) -> tuple[TLM, dict, dict]:
    """(TLM, official config, film_mlp state dict) of one official checkpoint folder, every tensor checked."""
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
    try:
        tlm.mlp.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
    except RuntimeError as err:  # an extra or missing bias
        raise CheckpointError(f"{weights}: film_mlp does not fit Sequential(Linear, SiLU, Linear) "
                              f"({one_line(err)[:200]})") from None
    return tlm, cfg, sd


def _check_same_tlm(path_a: Path, tlm_a: TLM, cfg_a: dict, sd_a: dict, path_b: Path, tlm_b: TLM, cfg_b: dict,
                    sd_b: dict) -> None:
    """Refuse two folders of one release whose TLMs differ: the run holds one TLM for every adapter."""
    why = ""
    a, b = {**tlm_a.config(), "image_size": cfg_a.get("image_size")}, {**tlm_b.config(),
                                                                      "image_size": cfg_b.get("image_size")}
    if a != b:
        why = ", ".join(f"{k} {a[k]} vs {b[k]}" for k in a if a[k] != b[k])
    elif set(sd_a) != set(sd_b):
        why = f"tensors {sorted(set(sd_a) ^ set(sd_b))}"
    else:
        diff = [k for k in sd_a if not torch.equal(sd_a[k], sd_b[k])]
        why = f"film_mlp {', '.join(diff)}" if diff else ""
    if why:
        raise CheckpointError(f"{path_a} and {path_b}: the TLMs differ ({why}); stage II freezes the TLM, so every "
                              "folder of one release must hold the same one")


def _base_dir(base: str | Path) -> Path:
    path = Path(base).expanduser().resolve()  # absolute: the run answers from any working directory
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{base}: not a model directory (no config.json); the base is the Qwen2.5-VL "
                              "directory the checkpoint was trained on")
    return path


def _check_base_fits(tlm: TLM, weights: Path, base_dir: Path | None) -> None:
    """Refuse, before anything is written, a base whose hidden size is not the TLM's (another model size)."""
    if base_dir is None:
        return
    config = base_dir / "config.json"
    try:
        cfg = json.loads(config.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise CheckpointError(f"{config}: not a readable model configuration ({one_line(err)})"
                              ) from None
    text = cfg.get("text_config") if isinstance(cfg, dict) else None
    hidden = (text or {}).get("hidden_size", cfg.get("hidden_size") if isinstance(cfg, dict) else None)
    if isinstance(hidden, int) and hidden != tlm.hidden_size:
        raise CheckpointError(f"{config}: hidden size {hidden}, but the TLM of {weights} is for "
                              f"{tlm.hidden_size}: the checkpoint was trained on another base model")


def _write_run_files(tmp: Path, frame: int | None, cfg: dict, base_dir: Path | None, provenance: dict) -> None:
    """chip.json (the authors' inputs), import.json (provenance) and, with a base, config.yaml naming it."""
    size = int(frame if frame is not None else cfg.get("image_size", 504))
    ChipSpec(frame=size, eight_bit="rgb").save(tmp)
    provenance = {**provenance, "official_config": cfg, "coordinate_size": size}
    if base_dir is not None:
        provenance["base"] = str(base_dir)
        (tmp / RUN_CONFIG).write_text(yaml.safe_dump({"model": {"base": str(base_dir)}}))
    (tmp / "import.json").write_text(json.dumps(provenance, indent=2) + "\n")


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
