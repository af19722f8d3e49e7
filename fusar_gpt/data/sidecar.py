"""Place and date for chips that carry none: the ``--geo`` sidecar table of ``fusar-gpt build``.

Most public SAR detection sets ship PNG/JPEG chips (or TIFFs without georeference) and keep where and when each
was taken in a table beside them. With that table a chip gets real AEF anchors; without it, an empty prior.
One row per chip, CSV (a header row) or JSON (a list of objects, or an object keyed by file name):

- ``file``: the chip as ``--images`` names it (its path relative to the folder, its file name, or its stem);
- the place: ``lon_min, lat_min, lon_max, lat_max`` (the chip's edges), or ``lon, lat`` of its centre with
  ``pixel_m`` (ground pixel size in metres; the box then follows from the chip's pixel size);
- the date: ``date`` (``YYYY-MM-DD``, or any ISO date) or ``year``.

Every row is validated when the table is read (pydantic), so a bad row is one line naming the file and row.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from ..geo import check_bbox
from ..text import one_line

M_PER_DEG_LAT = 110_574.0   # WGS84, near enough for a chip's extent (its anchors are 1/8 of it apart)
M_PER_DEG_LON = 111_320.0   # at the equator; times cos(latitude)


class GeoRow(BaseModel):
    model_config = ConfigDict(extra="ignore")

    file: str
    lon_min: float | None = None
    lat_min: float | None = None
    lon_max: float | None = None
    lat_max: float | None = None
    lon: float | None = None
    lat: float | None = None
    pixel_m: float | None = None
    date: str | None = None
    year: int | None = None

    @field_validator("*", mode="before")
    @classmethod
    def _blank_is_none(cls, value):
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _complete(self):
        box = (self.lon_min, self.lat_min, self.lon_max, self.lat_max)
        centre = (self.lon, self.lat, self.pixel_m)
        if all(v is not None for v in box):
            check_bbox(box, f"row for {self.file}")
        elif all(v is not None for v in centre):
            check_bbox((self.lon, self.lat, self.lon, self.lat), f"row for {self.file}")
            if not (self.pixel_m > 0 and math.isfinite(self.pixel_m)):
                raise ValueError(f"pixel_m must be a positive number of metres, got {self.pixel_m}")
        else:
            raise ValueError("give lon_min, lat_min, lon_max, lat_max, or lon, lat and pixel_m")
        if self.date is not None:
            try:
                dt.date.fromisoformat(self.date[:10])
            except ValueError:
                raise ValueError(f"date must be YYYY-MM-DD, got {self.date!r}") from None
        return self

    @property
    def when(self) -> str | None:
        """The acquisition date (or just the year) as build records it."""
        return self.date[:10] if self.date else (str(self.year) if self.year is not None else None)

    def footprint(self, width: int, height: int) -> tuple[float, float, float, float]:
        """The chip's lon/lat box; from its centre, pixel size and pixel extent when no box was given."""
        if self.lon_min is not None:
            return check_bbox((self.lon_min, self.lat_min, self.lon_max, self.lat_max))
        half_w = width * self.pixel_m / 2 / (M_PER_DEG_LON * max(math.cos(math.radians(self.lat)), 1e-6))
        half_h = height * self.pixel_m / 2 / M_PER_DEG_LAT
        return check_bbox((self.lon - half_w, self.lat - half_h, self.lon + half_w, self.lat + half_h))


def read_geo_table(path) -> dict[str, GeoRow]:
    """``{key: row}`` with each row under its file, that file's name and its stem (the keys ``plan`` tries)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"--geo {path}: not a readable file ({one_line(err)})") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as err:
            raise ValueError(f"--geo {path}: not valid JSON ({one_line(err)})") from None
        if isinstance(data, dict):
            data = [{"file": k, **v} if isinstance(v, dict) else v for k, v in data.items()]
        if not isinstance(data, list):
            raise ValueError(f"--geo {path}: expected a list of rows or an object keyed by file name")
        rows = [(f"{path} row {n}", r) for n, r in enumerate(data, start=1)]
    else:
        reader = csv.DictReader(text.splitlines())
        if not reader.fieldnames or "file" not in reader.fieldnames:
            raise ValueError(f"--geo {path}: a CSV with a header row naming 'file' and the place and date columns")
        rows = [(f"{path} line {n}", r) for n, r in enumerate(reader, start=2)]
    table: dict[str, GeoRow] = {}
    for where, raw in rows:
        if not isinstance(raw, dict):
            raise ValueError(f"{where}: expected an object, got {type(raw).__name__}")
        try:
            row = GeoRow.model_validate(raw)
        except ValidationError as err:
            first = err.errors()[0]
            field = ".".join(str(v) for v in first["loc"]) or "row"
            raise ValueError(f"{where}: {field}: {first['msg'].removeprefix('Value error, ')}") from None
        for key in {row.file, Path(row.file).name, Path(row.file).stem}:
            table.setdefault(key, row)
    return table
