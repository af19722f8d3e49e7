"""Manifest datasets: one JSONL record per question/answer turn, read lazily into model-ready items.

A manifest (DESIGN.md §3) holds ``id, image, aef, coordinate_size, question, answer`` (the official
FUSAR-GPT fields) and optionally ours: ``task``, ``split``, ``meta``. Paths are relative to the
manifest's directory (absolute paths are kept as they are). Every record is validated when the
manifest is loaded, so a bad line fails at once with its line number; image and anchor files are
only opened when an item is read, because a manifest may name millions of files.

Filters: ``split=None`` / ``tasks=None`` keep every record. A split (or task) filter keeps only the
records that carry that split (task); official records, which have neither, match no filter.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..chip import ChipSpec, dataset_spec, raster_chip, read_raster
from ..geo import GeoError
from ..geo.anchors import Anchors
from ..geo.frame import MODEL_PATCH
from ..geo.plain import NOT_8BIT
from ..geo.radiometry import to_uint8
from ..geo.raster import DEFAULT_MAX_PIXELS
from .record import parse_record

OFFICIAL_FRAME = 504  # the authors' coordinate frame, their default when a record does not say
IMAGE_TAG = "<image>"
GEOTIFF_SUFFIXES = (".tif", ".tiff")


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
        rec["question"] = " ".join(rec["question"].replace(IMAGE_TAG, " ").split())
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


def _as_names(value, what: str) -> set[str] | None:
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
        raise error(f"{path}: cannot read the {what} ({' '.join(str(err).split())})") from None


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
    task_names = _as_names(tasks, "tasks")
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
    if path.suffix.lower() in GEOTIFF_SUFFIXES:
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
                            f"({' '.join(str(err).split())})") from None


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
        raise ManifestError(f"record {rid!r}: {' '.join(str(err).split())}") from None
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


class ManifestDataset(torch.utils.data.Dataset):
    """Items ``{"id", "task", "image" (PIL RGB), "question", "answer", "anchors" (Anchors | None),
    "coordinate_size", "meta"}`` from a manifest path or from records returned by :func:`load_manifest`. GeoTIFF
    images are made into chips with ``spec`` (default: the spec in the dataset's ``build.json``, if any)."""

    def __init__(self, manifest, *, split: str | None = None, tasks: Sequence[str] | None = None,
                 spec: ChipSpec | None = None) -> None:
        self.spec = spec
        if isinstance(manifest, (str, Path)):
            self.source = str(manifest)
            everything = load_manifest(manifest)
            self.spec = spec or dataset_spec(manifest)
        else:
            self.source = "records"
            everything = list(manifest)
        task_names = _as_names(tasks, "tasks")
        self.records = [r for r in everything if (split is None or r.get("split") == split)
                        and (task_names is None or r.get("task") in task_names)]
        if everything and not self.records:
            splits = sorted({str(r.get("split")) for r in everything})
            found = sorted({str(r.get("task")) for r in everything})
            raise ManifestError(f"{self.source}: no record matches split={split!r} tasks={tasks!r} "
                                f"(splits present: {', '.join(splits)}; tasks present: {', '.join(found)})")

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        rec = self.records[i]
        return {
            "id": rec["id"],
            "task": rec.get("task"),
            "image": read_image(rec, self.spec),
            "question": rec["question"],
            "answer": rec["answer"],
            "anchors": read_anchors(rec),
            "coordinate_size": rec["coordinate_size"],
            "meta": rec.get("meta") or {},
        }


class Conversations(torch.utils.data.Dataset):
    """Records about the same image (and anchors) grouped into conversations of up to ``turns`` question/answer
    turns: the image is encoded once for several supervised answers, which makes a training step several times
    more productive (the text is the cheap part). The grouping is fixed by ``seed`` (a seeded shuffle within each
    image, then chunks), so a run's data order, and so ``--resume``, stay exact. Items are those of
    :class:`ManifestDataset` (the first turn's record) plus ``turns = [(question, answer), ...]`` and ``ids``.

    Records of the ``alone`` tasks (default: captions) are conversations of one turn. Why: an answer that can be
    copied from another turn is learned as a copy, a skill that a single question at inference cannot use, and a
    caption states the targets, their cells and the terrain shares. (Detection alone too was tried on the demo's
    base: a box list gives the count and cells, and a classify question's box can be copied into a detect answer;
    but it did not teach detection, and with fewer passes over the rest, captions and landcover got worse.)"""

    def __init__(self, data: ManifestDataset, turns: int, seed: int = 0, alone: Sequence[str] = ("caption",)) -> None:
        if int(turns) != turns or turns < 1:
            raise ValueError(f"turns must be a positive integer, got {turns!r}")
        self.data = data
        groups: dict[tuple, list[int]] = {}
        for i, rec in enumerate(data.records):
            key = (rec["image"], rec.get("aef")) if rec.get("task") not in alone else ("alone", i)
            groups.setdefault(key, []).append(i)
        rng = np.random.default_rng(seed)
        self.units: list[list[int]] = []
        for members in groups.values():
            members = [members[j] for j in rng.permutation(len(members))]
            self.units += [members[k:k + turns] for k in range(0, len(members), turns)]

    def __len__(self) -> int:
        return len(self.units)

    def __getitem__(self, i: int) -> dict:
        unit = self.units[i]
        item = self.data[unit[0]]
        recs = [self.data.records[j] for j in unit]
        item["turns"] = [(r["question"], r["answer"]) for r in recs]
        item["ids"] = [r["id"] for r in recs]
        return item
