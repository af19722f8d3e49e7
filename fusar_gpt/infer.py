"""Put a trained model to work: ``ask`` one question about one image, or answer a folder or manifest in batches.

A question is only FUSAR-GPT's question when the image reaches the model as the run's training images did
(same radiometric stretch, same model frame) and with the AEF anchors of its place and year. So every input
goes through :func:`prepare`, which repeats what ``data/build.py`` did to the training images and reads the
place and year from wherever they are: a GeoTIFF's own georeference and acquisition date, a lon/lat box and a
year given for a plain PNG/JPEG, or a ready ``.npz`` anchor file. The settings (frame, anchor grid, stretch)
come from the run's dataset (``build.json``) or from ``export.json`` of an exported model, so nobody has to
remember them. ``detect.py`` (whole scenes) and ``serve.py`` (HTTP) reuse the same preparation.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .geo import check_bbox
from .geo.anchors import Anchors
from .geo.plain import PLAIN_SUFFIXES, InputTooLarge, read_plain
from .geo.raster import DEFAULT_MAX_PIXELS

RASTER_SUFFIXES = (".tif", ".tiff")
IMAGE_SUFFIXES = PLAIN_SUFFIXES
DEFAULT_MAX_NEW_TOKENS = 256


__all__ = ["InputTooLarge"]  # re-exported: the server answers it with 413


@dataclass(frozen=True)
class Settings:
    """How images become model input: the square model frame, the anchor grid and the dB stretch (None =
    per-image 2-98 % percentiles, as ``fusar-gpt build`` does without ``--stretch``)."""

    frame: int = 504
    grid: int = 8
    stretch: tuple[float, float] | None = None

    def to_dict(self) -> dict:
        return {"frame": self.frame, "grid": self.grid, "stretch": list(self.stretch) if self.stretch else None}

    @classmethod
    def from_dict(cls, d: dict) -> Settings:
        s = d.get("stretch")
        return cls(frame=int(d.get("frame", 504)), grid=int(d.get("grid", 8)),
                   stretch=(float(s[0]), float(s[1])) if s else None)


def model_settings(path) -> Settings:
    """The settings a run was trained with: ``export.json``, else its dataset's ``build.json``, else the
    manifest's ``coordinate_size`` (official data), else an imported checkpoint's frame, else the defaults."""
    import yaml

    path = Path(path)
    if (path / "export.json").exists():
        return Settings.from_dict(json.loads((path / "export.json").read_text()).get("settings") or {})
    if (path / "config.yaml").exists():
        manifest = (yaml.safe_load((path / "config.yaml").read_text()).get("data") or {}).get("manifest")
        if manifest:
            m = Path(manifest)
            build = (m if m.is_dir() else m.parent) / "build.json"
            if build.exists():
                return Settings.from_dict(json.loads(build.read_text()).get("config") or {})
            if m.is_file():
                line = next((ln for ln in m.read_text().splitlines() if ln.strip()), None)
                size = json.loads(line).get("coordinate_size") if line else None
                if isinstance(size, int):
                    return Settings(frame=size)
    if (path / "import.json").exists():
        return Settings(frame=int(json.loads((path / "import.json").read_text()).get("coordinate_size", 504)))
    return Settings()


def check_model_dir(path) -> Path:
    """Refuse early (before any input is read or weight loaded) what is not a run or an exported model."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such run or exported model directory")
    if not (path / "export.json").exists() and not (path / "config.yaml").exists():
        raise FileNotFoundError(f"{path} is neither a run directory (config.yaml) nor an exported model "
                                f"(export.json)")
    return path


def load_model(path, device: str = "cpu"):
    """``(model, settings)`` of a run directory or of an exported model (``fusar-gpt export``), in eval mode."""
    from .model.export import is_export, load_export

    path = check_model_dir(path)
    if is_export(path):
        model = load_export(path, device)
    else:
        from .evaluate import load_run

        model, _ = load_run(path, device)
    return model, model_settings(path)


@dataclass
class Prepared:
    """One model-ready input: the 8-bit image in the model frame and its anchors (None = no AEF prior)."""

    image: np.ndarray
    anchors: Anchors | None
    source: str
    footprint: tuple[float, float, float, float] | None = None
    year: int | None = None

    @property
    def info(self) -> dict:
        a = self.anchors
        return {"image": self.source, "footprint": list(self.footprint) if self.footprint else None,
                "year": self.year, "aef_year": a.year if a is not None else None,
                "valid_anchors": a.n_valid if a is not None else 0}


def sniff(data: bytes) -> str | None:
    """The suffix an image's bytes really have (never trust a file name or a MIME type sent by a client)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return ".png"
    if data[:3] == b"\xff\xd8\xff":
        return ".jpg"
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return ".tif"
    return None


def _raster_size(path: Path) -> tuple[int, int]:
    import rasterio
    from rasterio.errors import RasterioError

    try:
        with rasterio.open(path) as ds:
            return ds.width, ds.height
    except RasterioError as err:
        raise ValueError(f"{path}: not a readable raster ({' '.join(str(err).split())})") from None


def prepare(image, settings: Settings, *, store=None, bbox=None, year: int | None = None, anchors=None,
            no_aef: bool = False, data: bytes | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> Prepared:
    """Image (a path, or ``data`` bytes with ``image`` as its display name) + geo -> :class:`Prepared`.

    The prior comes from exactly one place: ``no_aef`` (none), ``anchors`` (an :class:`Anchors` or a .npz
    path), or ``store`` (an ``AEFStore``) sampled over the GeoTIFF's pixel grid in its acquisition year, or
    over ``bbox`` in ``year`` for a PNG/JPEG. ``year`` overrides a GeoTIFF's date; ``bbox`` is the footprint
    of a GeoTIFF without georeference. Anything missing is a one-line ``ValueError`` saying what to add.
    """
    from .geo.frame import to_model_frame
    from .geo.radiometry import to_uint8
    from .geo.raster import read_sar

    if anchors is not None and no_aef:
        raise ValueError("anchors and no-AEF contradict each other: give one")
    name = str(image)
    if data is None:
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such image file")
        with open(path, "rb") as fh:
            kind = sniff(fh.read(8)) or path.suffix.lower()
    else:
        path, kind = None, sniff(data)
    if kind not in RASTER_SUFFIXES + IMAGE_SUFFIXES:
        raise ValueError(f"{name}: not a GeoTIFF, PNG or JPEG image")
    if year is not None and (isinstance(year, bool) or not isinstance(year, (int, np.integer))):
        raise ValueError(f"year must be an integer, got {year!r}")
    raster = None
    if kind in RASTER_SUFFIXES:
        with _as_file(path, data, ".tif", name) as tif:
            w, h = _raster_size(tif)
            if w * h > max_pixels:
                raise InputTooLarge(f"{name}: {w}x{h} pixels is above the cap of {max_pixels}")
            raster = read_sar(tif, footprint=bbox)
        raster.path = name
        pixels = to_uint8(raster, fixed=settings.stretch)
        footprint = raster.footprint
        year = year if year is not None else (raster.date.year if raster.date else None)
    else:
        pixels = read_plain(path if data is None else io.BytesIO(data), name, max_pixels)
        footprint = check_bbox(bbox) if bbox is not None else None
    frame = to_model_frame(pixels, settings.frame)[0]

    if no_aef:
        prior = None
    elif anchors is not None:
        prior = anchors if isinstance(anchors, Anchors) else Anchors.load(anchors)
        if prior.multi_year:  # the asked (or acquisition) year when the file has it, else its latest
            years = [int(y) for y in prior.years]
            prior = prior.for_year(years.index(year) if year in years else len(years) - 1)
    else:
        if store is None:
            raise ValueError("no AEF prior: give an AEF root (the place and year come from the GeoTIFF, or from "
                             "bbox + year), an anchors file, or ask without AEF (no-aef)")
        if footprint is None:
            raise ValueError(f"{name} has no georeference: give its bbox lon_min,lat_min,lon_max,lat_max and year")
        if year is None:
            raise ValueError(f"{name}: no acquisition date in the file's tags or name; give the year")
        if raster is not None:
            prior = store.sample_raster(raster.crs, raster.transform, raster.width, raster.height, int(year),
                                        grid=settings.grid)
        else:
            prior = store.sample(footprint, int(year), grid=settings.grid)
    return Prepared(frame, prior, name, footprint, None if year is None else int(year))


@contextmanager
def _as_file(path, data: bytes | None, suffix: str, name: str):
    """A path for rasterio: the file itself, or the bytes in a temporary file removed on exit. Errors name
    the image as the caller knows it, never the temporary file."""
    if data is None:
        yield Path(path)
        return
    fd, tmp = tempfile.mkstemp(suffix=suffix, prefix="fusar-upload-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        try:
            yield Path(tmp)
        except ValueError as err:
            raise type(err)(str(err).replace(tmp, name)) from None
    finally:
        Path(tmp).unlink(missing_ok=True)


def priors_of(items: Sequence[Prepared], prior_dim: int = 64):
    from .model.fusar import Priors

    return Priors.stack([None if p.anchors is None else (p.anchors.features, p.anchors.positions, p.anchors.mask)
                         for p in items], prior_dim)


def answer(model, items: Sequence[Prepared], questions: Sequence[str], *, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
           batch_size: int = 8, progress: bool = False) -> list[str]:
    """Greedy answers, ``batch_size`` inputs per ``generate`` call (any object with FusarGPT's ``answer``)."""
    if len(items) != len(questions):
        raise ValueError(f"{len(items)} images but {len(questions)} questions")
    if batch_size < 1 or max_new_tokens < 1:
        raise ValueError("batch size and max new tokens must be positive")
    from tqdm import tqdm

    prior_dim = getattr(getattr(model, "tlm", None), "prior_dim", 64)
    out: list[str] = []
    with tqdm(total=len(items), desc="answering", unit="answer", disable=not progress) as bar:
        for s in range(0, len(items), batch_size):
            chunk = list(items[s:s + batch_size])
            out += model.answer([p.image for p in chunk], list(questions[s:s + batch_size]),
                                priors_of(chunk, prior_dim), max_new_tokens=max_new_tokens, do_sample=False)
            bar.update(len(chunk))
    return out


def ask(model, settings: Settings, image, question: str, *, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        **geo) -> dict:
    """One answer about one image; ``geo`` as for :func:`prepare`. Returns the answer with where and when."""
    if not isinstance(question, str) or not question.strip():
        raise ValueError("the question is empty")
    item = prepare(image, settings, **geo)
    return {"question": question, "answer": answer(model, [item], [question], max_new_tokens=max_new_tokens)[0],
            **item.info}


def _atomic_jsonl(path: Path, rows) -> None:
    from .data.build import _atomic_bytes

    _atomic_bytes(path, "".join(json.dumps(row) + "\n" for row in rows).encode())


def list_images(folder) -> list[Path]:
    """Every GeoTIFF/PNG/JPEG under ``folder`` (recursively, sorted); none is an error."""
    folder = Path(folder)
    suffixes = RASTER_SUFFIXES + IMAGE_SUFFIXES
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
    if not paths:
        raise ValueError(f"{folder}: no GeoTIFF, PNG or JPEG images in it")
    return paths


def ask_folder(model, settings: Settings, folder, question: str, out, *, store=None, year: int | None = None,
               no_aef: bool = False, batch_size: int = 8, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
               progress: bool = False) -> dict:
    """One question about every GeoTIFF/PNG/JPEG under ``folder``, in batches, to a JSONL file at ``out``.

    A PNG/JPEG takes its anchors from a ``.npz`` of the same name beside it. An image that cannot be used
    (unreadable, no place or year) gets an ``error`` line instead of an answer, as the builder's quarantine
    does: one bad file must not throw away the answers of the others. The file appears only when complete.
    """
    folder = Path(folder)
    paths = list_images(folder)
    if not isinstance(question, str) or not question.strip():
        raise ValueError("a folder needs a question (the same one is asked of every image)")
    rows: list[dict] = []
    ready: list[tuple[int, Prepared]] = []

    def flush():
        texts = answer(model, [p for _, p in ready], [question] * len(ready), max_new_tokens=max_new_tokens,
                       batch_size=batch_size)
        for (k, p), text in zip(ready, texts):
            rows[k] = {"question": question, "answer": text, **p.info, "image": rows[k]["image"]}
        ready.clear()

    from tqdm import tqdm

    for path in tqdm(paths, desc="answering", unit="image", disable=not progress):
        rel = path.relative_to(folder).as_posix()
        rows.append({"image": rel})
        side = path.with_suffix(".npz")
        try:
            anchors = side if (path.suffix.lower() in IMAGE_SUFFIXES and side.exists() and not no_aef) else None
            ready.append((len(rows) - 1, prepare(path, settings, store=store, year=year, no_aef=no_aef,
                                                 anchors=anchors)))
        except ValueError as err:
            rows[-1]["error"] = " ".join(str(err).split())
        if len(ready) == batch_size:
            flush()
    if ready:
        flush()
    _atomic_jsonl(Path(out), rows)
    errors = sum("error" in r for r in rows)
    return {"images": len(rows), "answered": len(rows) - errors, "errors": errors, "out": str(out)}


def ask_manifest(model, manifest, out, *, split: str | None = None, batch_size: int = 8,
                 progress: bool = False) -> dict:
    """Every record of a manifest (its own image, anchors and question) -> ``{id, answer}`` lines that
    ``fusar-gpt score`` reads. Same batched generation as ``fusar-gpt eval``."""
    from .data.dataset import load_manifest
    from .evaluate import predict, write_predictions

    records = load_manifest(manifest, split=split)
    if not records:
        raise ValueError(f"{manifest}: no records" + (f" in split {split!r}" if split else ""))
    errors: dict[str, str] = {}
    predictions = predict(model, records, batch_size=batch_size, progress=progress, errors=errors)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    write_predictions(out, predictions, errors)
    return {"records": len(records), "answered": len(predictions), "errors": len(errors), "out": str(out)}
