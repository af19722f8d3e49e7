"""The chip: one SAR file (or PNG/JPEG chip) turned into what the model sees, and the spec that says how.

A question is only FUSAR-GPT's question when the image reaches the model as the training images did: the same
model frame, the same dB stretch, the same band or polarisation, anchors on the same grid, sampled the same way.
Those choices are the :class:`ChipSpec`. ``build`` records it in ``build.json``; ``train`` copies it into every
run as ``RUN/chip.json``; exports and imports carry it; ``ask``, ``detect-scene``, ``serve`` and ``eval`` read it
from the model directory only, so the same question gets the same input from any working directory and after
the dataset is deleted. The spec is the model's input transform, as open_clip hands back a model with its own.

Every path that turns pixels into a model input (``build``, the manifest dataset's GeoTIFF records, ``ask``,
``detect-scene``, ``serve``) goes through :func:`load_chip` or :func:`raster_chip` here, so they cannot drift.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from .geo import GeoError, check_bbox
from .geo.anchors import Anchors
from .geo.bands import check_bands, check_pol
from .geo.dualpol import DUAL, DualPol, dual_to_uint8, read_dual
from .geo.frame import MODEL_PATCH, FrameMap, to_model_frame
from .geo.plain import PLAIN_SUFFIXES, InputTooLarge, read_plain, to_gray
from .geo.radiometry import to_uint8
from .geo.raster import DEFAULT_MAX_PIXELS, SCALES, SarImage, open_raster, read_sar
from .io_atomic import write_text
from .text import one_line
from .vocab import CHIP_MAX_PIXELS, EIGHT_BIT, RASTER_SUFFIXES, SAMPLING  # noqa: F401 (re-exported)

CHIP_FILE = "chip.json"
CHIP_FORMAT = "fusar-gpt.chip/1"
YEAR_POLICIES = ("acquisition",)   # the AEF year is the acquisition year (the store's nearest year)

__all__ = ["CHIP_FILE", "ChipSpec", "ModelChip", "InputTooLarge", "MissingChipSpec", "load_chip", "raster_chip",
           "read_spec", "sniff"]


class MissingChipSpec(FileNotFoundError):
    """A model directory without ``chip.json``: its inputs cannot be made as its training inputs were."""


@dataclass(frozen=True)
class ChipSpec:
    """How a file becomes model input. ``stretch`` None = each image's own 2-98 % dB percentiles; ``bands`` /
    ``pol`` as ``fusar-gpt build --bands/--pol`` (None = read from the band descriptions, co-pol first)."""
    frame: int = 504
    grid: int = 8
    sampling: str = "point"
    stretch: tuple[float, float] | None = None
    bands: str | None = None
    pol: str | None = None
    scale: str | None = None         # what the pixel values are: db | amplitude | intensity (None: from tags/data)
    year_policy: str = "acquisition"
    eight_bit: str = "gray"

    def __post_init__(self):
        if isinstance(self.frame, bool) or not isinstance(self.frame, int) or self.frame <= 0 \
                or self.frame % MODEL_PATCH:
            raise ValueError(f"chip frame must be a positive multiple of {MODEL_PATCH}, got {self.frame!r}")
        if isinstance(self.grid, bool) or not isinstance(self.grid, int) or not 2 <= self.grid <= 64:
            raise ValueError(f"chip anchor grid must be an integer in 2..64, got {self.grid!r}")
        for name, value, allowed in (("sampling", self.sampling, SAMPLING), ("year_policy", self.year_policy,
                                     YEAR_POLICIES), ("eight_bit", self.eight_bit, EIGHT_BIT),
                                     ("scale", self.scale, (None, *SCALES))):
            if value not in allowed:
                raise ValueError(f"chip {name} must be one of {', '.join(allowed)}, got {value!r}")
        # the syntax of bands / pol, checked once here rather than per file (where a typo quarantines every image)
        object.__setattr__(self, "bands", check_bands(self.bands, "chip bands"))
        object.__setattr__(self, "pol", check_pol(self.pol, "chip pol"))
        if self.stretch is not None:
            lo, hi = (float(v) for v in self.stretch)
            if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
                raise ValueError(f"chip stretch must be two finite dB values, low < high, got {self.stretch!r}")
            object.__setattr__(self, "stretch", (lo, hi))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["stretch"] = list(self.stretch) if self.stretch else None
        return d

    @classmethod
    def from_dict(cls, d: dict, what: str = "chip spec") -> ChipSpec:
        """From ``to_dict``'s output or a build config (other keys are ignored); a bad value is a one-line error."""
        if not isinstance(d, dict):
            raise ValueError(f"{what}: expected an object, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in known}
        if kwargs.get("stretch") is not None:
            s = kwargs["stretch"]
            if not isinstance(s, (list, tuple)) or len(s) != 2:
                raise ValueError(f"{what}: stretch must be [low, high] in dB, got {s!r}")
            kwargs["stretch"] = tuple(s)
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{what}: {err}") from None

    def differences(self, other: ChipSpec) -> list[str]:
        """``field: ours != theirs`` for every field that differs."""
        a, b = self.to_dict(), other.to_dict()
        return [f"{k}: {a[k]!r} != {b[k]!r}" for k in a if a[k] != b[k]]

    def save(self, folder) -> Path:
        """``folder/chip.json``, written through a temporary sibling (readers never see half a file)."""
        path = Path(folder) / CHIP_FILE
        write_text(path, json.dumps({"format": CHIP_FORMAT, **self.to_dict()}, indent=2) + "\n")
        return path


def read_spec(folder) -> ChipSpec:
    """The chip spec of a run, export or import directory; refused in one line when it has none."""
    path = Path(folder) / CHIP_FILE
    if not path.is_file():
        raise MissingChipSpec(
            f"{folder}: no {CHIP_FILE}, so its inputs cannot be made as its training inputs were; add it with "
            f"`fusar-gpt chip-spec {folder} --dataset DATASET` (the dataset it was trained on) or "
            f"`fusar-gpt chip-spec {folder} --frame N` (imported official checkpoints use --frame 504)")
    try:
        d = json.loads(path.read_text())
    except RecursionError:
        raise ValueError(f"{path}: not a readable chip spec (nested too deeply)") from None
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable chip spec ({one_line(err)})") from None
    if not isinstance(d, dict) or d.get("format") != CHIP_FORMAT:
        raise ValueError(f"{path}: unknown chip spec format (expected {CHIP_FORMAT!r})")
    return ChipSpec.from_dict(d, str(path))


def dataset_spec(manifest) -> ChipSpec | None:
    """The spec a dataset was built with (``build.json`` beside its manifest), or None (an official manifest)."""
    m = Path(manifest)
    build = (m if m.is_dir() else m.parent) / "build.json"
    if not build.is_file():
        return None
    try:
        summary = json.loads(build.read_text())
        spec = summary.get("chip") or summary.get("config")  # "config" alone: a dataset built before chip specs
    except (OSError, ValueError, AttributeError):
        raise ValueError(f"{build}: not a readable build summary") from None
    return ChipSpec.from_dict(spec or {}, str(build))


@dataclass
class ModelChip:
    """One model-ready input: the 8-bit image in the model frame, its anchors (None = no AEF prior) and, when
    boxes were given, those boxes in frame pixels."""
    image: np.ndarray
    anchors: Anchors | None
    source: str
    footprint: tuple[float, float, float, float] | None = None
    year: int | None = None
    boxes: np.ndarray | None = None
    frame_map: FrameMap | None = None   # how source pixels map into the frame (boxes back to the source)

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


def read_raster(path, spec: ChipSpec, *, footprint=None, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                window=None) -> SarImage | DualPol:
    """The SAR measurement of ``path`` with the spec's band / polarisation choice (the one place it is applied);
    ``bands: dual`` reads the co- and cross-pol bands for the colour composite."""
    if spec.bands == DUAL:
        return read_dual(path, scale=spec.scale, window=window, max_pixels=max_pixels, footprint=footprint)
    return read_sar(path, window=window, max_pixels=max_pixels, footprint=footprint, bands=spec.bands,
                    pol=spec.pol, scale=spec.scale)


def raster_chip(raster: SarImage, spec: ChipSpec, *, store=None, year: int | None = None, anchors=None,
                no_aef: bool = False, boxes=None, source: str | None = None) -> ModelChip:
    """A read SAR raster (a whole file or a scene window) -> :class:`ModelChip`: the spec's stretch, the model
    frame, and the prior (see :func:`_prior`) sampled over the raster's own pixel grid."""
    name = source or str(raster.path)
    year = year if year is not None else (raster.date.year if raster.date else None)
    prior = _prior(name, spec, store, anchors, no_aef, raster.footprint, year, raster)
    pixels = dual_to_uint8(raster, fixed=spec.stretch) if isinstance(raster, DualPol) else \
        to_uint8(raster, fixed=spec.stretch)
    image, fboxes, fmap = to_model_frame(pixels, spec.frame, boxes)
    return ModelChip(image, prior, name, raster.footprint, None if year is None else int(year), fboxes, fmap)


def pixels_chip(pixels: np.ndarray, spec: ChipSpec, *, source: str, prior: Anchors | None,
                footprint=None, year: int | None = None, boxes=None) -> ModelChip:
    """8-bit PNG/JPEG pixels -> :class:`ModelChip` (the spec's 8-bit mode, then the model frame)."""
    if spec.eight_bit == "gray":
        pixels = to_gray(pixels)
    image, fboxes, fmap = to_model_frame(pixels, spec.frame, boxes)
    return ModelChip(image, prior, source, footprint, year, fboxes, fmap)


def load_chip(image, spec: ChipSpec, *, store=None, bbox=None, year: int | None = None, anchors=None,
              no_aef: bool = False, data: bytes | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
              boxes=None, name: str | None = None) -> ModelChip:
    """A file (a path, or ``data`` bytes with ``image`` as its display name) + geo -> :class:`ModelChip`.

    The prior comes from exactly one place: ``no_aef`` (none), ``anchors`` (an :class:`Anchors` or a .npz path),
    or ``store`` (an ``AEFStore``) sampled over the GeoTIFF's pixel grid in its acquisition year, or over ``bbox``
    in ``year`` for a PNG/JPEG. ``year`` overrides a GeoTIFF's date; ``bbox`` is the footprint of a GeoTIFF
    without georeference. Anything missing is a one-line ``ValueError`` saying what to add. Messages name the
    file as ``name`` (default: ``image``), so a server can show a client the name it sent, not its own path.
    """
    if anchors is not None and no_aef:
        raise ValueError("anchors and no-AEF contradict each other: give one")
    name = name or str(image)
    if data is None:
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"{name}: no such image file")
        with open(path, "rb") as fh:
            kind = sniff(fh.read(8))  # the bytes, never the name: a ".tif" of VRT XML is not a GeoTIFF
    else:
        path, kind = None, sniff(data)
    if kind not in RASTER_SUFFIXES + PLAIN_SUFFIXES:
        raise ValueError(f"{name}: not a GeoTIFF, PNG or JPEG image")
    if year is not None and (isinstance(year, bool) or not isinstance(year, (int, np.integer))):
        raise ValueError(f"year must be an integer, got {year!r}")
    if kind in RASTER_SUFFIXES:
        with _as_file(path, data, ".tif", name) as tif:
            w, h = _raster_size(tif)
            if w * h > max_pixels:
                raise InputTooLarge(f"{name}: {w}x{h} pixels is above the cap of {max_pixels}")
            raster = read_raster(tif, spec, footprint=bbox)
        raster.path = name
        return raster_chip(raster, spec, store=store, year=year, anchors=anchors, no_aef=no_aef, boxes=boxes,
                           source=name)
    pixels = read_plain(path if data is None else io.BytesIO(data), name, max_pixels)
    footprint = check_bbox(bbox) if bbox is not None else None
    prior = _prior(name, spec, store, anchors, no_aef, footprint, year, None)
    return pixels_chip(pixels, spec, source=name, prior=prior, footprint=footprint, year=year, boxes=boxes)


def _prior(name, spec: ChipSpec, store, anchors, no_aef, footprint, year, raster) -> Anchors | None:
    if no_aef:
        return None
    if anchors is not None:
        prior = anchors if isinstance(anchors, Anchors) else Anchors.load(anchors)
        if prior.multi_year:  # the asked (or acquisition) year when the file has it, else its latest
            years = [int(y) for y in prior.years]
            prior = prior.for_year(years.index(year) if year in years else len(years) - 1)
        return prior
    if store is None:
        raise ValueError("no AEF prior: give an AEF root (the place and year come from the GeoTIFF, or from "
                         "bbox + year), an anchors file, or ask without AEF (no-aef)")
    if footprint is None:
        raise ValueError(f"{name} has no georeference: give its bbox lon_min,lat_min,lon_max,lat_max and year")
    if year is None:
        raise ValueError(f"{name}: no acquisition date in the file's tags or name; give the year")
    if raster is not None:
        return store.sample_raster(raster.crs, raster.transform, raster.width, raster.height, int(year),
                                   grid=spec.grid, method=spec.sampling)
    return store.sample(footprint, int(year), grid=spec.grid, method=spec.sampling)


def _raster_size(path: Path) -> tuple[int, int]:
    from rasterio.errors import RasterioError

    try:
        with open_raster(path) as ds:
            return ds.width, ds.height
    except RasterioError as err:
        raise ValueError(f"{path}: not a readable raster ({one_line(err)})") from None


@contextmanager
def _as_file(path, data: bytes | None, suffix: str, name: str):
    """A path for rasterio: the file itself, or the bytes in a temporary file removed on exit. Errors name
    the image as the caller knows it (``name``), never the temporary file or the resolved path."""
    if data is None:
        try:
            yield Path(path)
        except (ValueError, GeoError) as err:
            raise type(err)(str(err).replace(str(path), name)) from None
        return
    fd, tmp = tempfile.mkstemp(suffix=suffix, prefix="fusar-upload-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        try:
            yield Path(tmp)
        except (ValueError, GeoError) as err:
            raise type(err)(str(err).replace(tmp, name)) from None
    finally:
        Path(tmp).unlink(missing_ok=True)
