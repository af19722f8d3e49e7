"""Manifests: one JSONL record per question/answer turn, read, validated and opened lazily (no torch here).

A manifest (DESIGN.md §3) holds ``id, image, aef, coordinate_size, question, answer`` (the official
FUSAR-GPT fields) and optionally ours: ``task``, ``split``, ``meta``. Paths are relative to the
manifest's directory (absolute paths are kept as they are). Every record is validated when the
manifest is loaded, so a bad line fails at once with its line number; image and anchor files are
only opened when an item is read, because a manifest may name millions of files. The authors' manifests
load as their own reader loads them (:func:`_official`: their 504 frame, derived ids, JSON answers).

Filters: ``split=None`` / ``tasks=None`` keep every record. A split (or task) filter keeps only the
records that carry that split (task); official records, which have neither, match no filter.

Why apart from ``dataset.py`` (the torch ``Dataset`` classes): scoring, the demo's bookkeeping and ``fusar-gpt
score`` read manifests and must not pay for importing torch.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..chip import ChipSpec, raster_chip, read_raster
from ..geo import GeoError
from ..geo.anchors import Anchors
from ..geo.frame import MODEL_PATCH
from ..geo.plain import NOT_8BIT
from ..geo.radiometry import to_uint8
from ..geo.raster import DEFAULT_MAX_PIXELS
from ..text import one_line
from ..vocab import RASTER_SUFFIXES
from .record import parse_record

OFFICIAL_FRAME = 504  # the authors' coordinate frame, their default when a record does not say
IMAGE_TAG = "<image>"


class ManifestError(ValueError):
    """A bad manifest, record, or file named by a record; the message is one line naming the file."""


def _type(value) -> str:
    return "null" if value is None else type(value).__name__


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _official(rec: dict, n: int) -> dict:
    """The leniencies of the authors' reader, so that their manifests load as their code loads them: no
    ``coordinate_size`` means their 504 frame; no ``id`` gets one derived from the image and the record's place;
    an answer that is not a string (a box list, a number) is serialised to JSON text, as it reaches the model;
    the ``<image>`` placeholder their prompts carry is dropped (our chat template places the image itself)."""
    rec = dict(rec)
    rec.setdefault("coordinate_size", OFFICIAL_FRAME)
    if "id" not in rec and isinstance(rec.get("image"), str):
        rec["id"] = f"{Path(rec['image']).stem}#{n}"
    answer = rec.get("answer")
    if answer is not None and not isinstance(answer, str):
        rec["answer"] = json.dumps(answer, ensure_ascii=False)
    if isinstance(rec.get("question"), str) and IMAGE_TAG in rec["question"]:
        rec["question"] = one_line(rec["question"].replace(IMAGE_TAG, " "))
    return rec


def _check_record(rec, where: str, root: Path, n: int = 0) -> dict:
    """Validate one parsed JSON line (:func:`record.parse_record`, after the authors' leniencies) and return it
    normalised (absolute paths, defaults filled in)."""
    try:
        r = parse_record(_official(rec, n) if isinstance(rec, dict) else rec, where)
    except ValueError as err:
        raise ManifestError(str(err)) from None
    return {
        "id": r.id,
        "image": str(root / r.image),  # an absolute path stays as it is under "/"
        "aef": str(root / r.aef) if r.aef else None,
        "coordinate_size": r.coordinate_size,
        "question": r.question,
        "answer": r.answer,
        "task": r.task,
        "split": r.split,
        "meta": dict(r.meta or {}),
    }


def as_names(value, what: str) -> set[str] | None:
    """A split or task filter as a set of names (None: no filter); anything else is a ValueError."""
    if value is None:
        return None
    names = {value} if isinstance(value, str) else set(value)
    if not names or not all(isinstance(v, str) for v in names):
        raise ValueError(f"{what} filter must be a non-empty list of names, got {value!r}")
    return names


def _read_text(path: Path, error, what: str) -> str:
    """The file as text (a UTF-8 BOM skipped); unreadable is ``error`` in one line naming the file."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise error(f"{path}: cannot read the {what}: no such {what} file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise error(f"{path}: cannot read the {what} ({one_line(err)})") from None


def read_jsonl(path, error=ValueError, what: str = "file"):
    """Yield ``("FILE line N", object)`` for each non-blank JSONL line; unreadable files and bad JSON
    raise ``error`` with one line naming the file (and line). Lines end at ``\n`` only (``\r\n`` too), as JSONL
    says: ``str.splitlines`` would also split at U+2028 and friends, which ``ensure_ascii=False`` writers leave
    inside strings. A UTF-8 byte-order mark (Windows editors) is skipped."""
    path = Path(path)
    for n, line in enumerate(_read_text(path, error, what).split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{path} line {n}"
        try:
            yield where, json.loads(line)
        except json.JSONDecodeError as err:
            raise error(f"{where}: not valid JSON ({err.msg} at column {err.colno})") from None
        except RecursionError:
            raise error(f"{where}: JSON nested too deeply") from None


def load_manifest(path, *, split: str | None = None, tasks: Sequence[str] | None = None) -> list[dict]:
    """Read and validate a manifest; returns normalised records (absolute paths) in file order.

    Each record has ``id, image, aef (or None), coordinate_size (int or [w, h], as written),
    question, answer, task (or None), split (or None), meta (dict)``. Blank lines are skipped.
    Raises :class:`ManifestError` naming the file and line for any bad line.
    """
    path = Path(path)
    task_names = as_names(tasks, "tasks")
    root = path.absolute().parent
    records = []
    for n, (where, raw) in enumerate(_manifest_rows(path), start=1):
        rec = _check_record(raw, where, root, n)
        if split is not None and rec["split"] != split:
            continue
        if task_names is not None and rec["task"] not in task_names:
            continue
        records.append(rec)
    return records


def _manifest_rows(path: Path):
    """``("FILE line N" / "FILE record N", object)``: JSONL, or a ``.json`` file holding one list of records (the
    authors' format)."""
    if path.suffix.lower() != ".json":
        yield from read_jsonl(path, ManifestError, "manifest")
        return
    text = _read_text(path, ManifestError, "manifest")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ManifestError(f"{path}: not valid JSON ({err.msg} at line {err.lineno} column {err.colno})") from None
    except RecursionError:
        raise ManifestError(f"{path}: JSON nested too deeply") from None
    if not isinstance(data, list):
        raise ManifestError(f"{path}: a .json manifest must hold a list of records, got {_type(data)}")
    for n, rec in enumerate(data, start=1):
        yield f"{path} record {n}", rec


def frame_size(record: dict) -> tuple[int, int]:
    """``(width, height)`` of a record's coordinate frame (``coordinate_size`` may be an int or [w, h])."""
    size = record["coordinate_size"]
    return (size, size) if _is_int(size) else (int(size[0]), int(size[1]))


def read_image(record: dict, spec: ChipSpec | None = None) -> Image.Image:
    """The record's image as RGB: an 8-bit PNG/JPEG as is (model-ready, as ``build`` wrote it), or a SAR GeoTIFF
    made into a chip of the record's frame with ``spec``'s stretch and band choice (None: the defaults)."""
    path, rid = Path(record["image"]), record["id"]
    if not path.is_file():
        raise ManifestError(f"record {rid!r}: image file {path} does not exist")
    if path.suffix.lower() in RASTER_SUFFIXES:
        return _read_geotiff(path, frame_size(record), rid, spec or ChipSpec())
    try:
        with Image.open(path) as im:
            if im.width * im.height > DEFAULT_MAX_PIXELS:  # checked on the header, before any pixel is decoded
                raise ManifestError(f"record {rid!r}: image file {path} is {im.width}x{im.height} pixels, above "
                                    f"the cap of {DEFAULT_MAX_PIXELS}")
            im.load()
            if im.mode in NOT_8BIT:
                raise ManifestError(f"record {rid!r}: image file {path} is mode {im.mode}, not 8-bit; "
                                    f"manifest images must be model-ready 8-bit (or a GeoTIFF)")
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as err:
        raise ManifestError(f"record {rid!r}: image file {path} is not a readable image "
                            f"({one_line(err)})") from None


def _read_geotiff(path: Path, size: tuple[int, int], rid: str, spec: ChipSpec) -> Image.Image:
    """A square frame that is a multiple of 28 is the one chip path (``chip.raster_chip``); any other frame (the
    authors' records may say [w, h]) gets the same 8-bit pixels resized to it."""
    w, h = size
    try:
        raster = read_raster(path, spec)
        if w == h and w % MODEL_PATCH == 0:
            arr = raster_chip(raster, replace(spec, frame=w), no_aef=True).image
        else:
            arr = np.asarray(Image.fromarray(to_uint8(raster, fixed=spec.stretch)).resize((w, h),
                                                                                         Image.Resampling.BILINEAR))
    except (GeoError, ValueError) as err:
        raise ManifestError(f"record {rid!r}: {one_line(err)}") from None
    return Image.fromarray(arr).convert("RGB")


def read_anchors(record: dict) -> Anchors | None:
    """The record's anchors (single-year), or None when it names no anchor file.

    Multi-year files give the year recorded in ``meta['aef_year']`` when present, else their last year.
    """
    if not record.get("aef"):
        return None
    rid = record["id"]
    try:
        anchors = Anchors.load(record["aef"])
    except GeoError as err:
        raise ManifestError(f"record {rid!r}: {err}") from None
    if not anchors.multi_year:
        return anchors
    years = [int(y) for y in anchors.years]
    want = (record.get("meta") or {}).get("aef_year")
    if want is None:
        return anchors.for_year(len(years) - 1)
    if not _is_int(want) or want not in years:
        raise ManifestError(f"record {rid!r}: meta aef_year {want!r} is not among the years {years} "
                            f"of anchor file {record['aef']}")
    return anchors.for_year(years.index(want))
