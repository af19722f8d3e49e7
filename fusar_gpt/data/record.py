"""The manifest record: one schema (pydantic) for what ``build`` writes and what the dataset reads.

A record is ``id, image, aef, coordinate_size, question, answer`` (the official FUSAR-GPT fields) plus ours:
``task``, ``split``, ``meta`` (DESIGN.md §3). The builder constructs every record through
:class:`ManifestRecord`, so it cannot write what the reader would refuse; the reader validates every line with it
and reports the first problem in one line naming the file, the line and the field. Types are strict (``true`` is
not a size, ``"3"`` is not a number) because a lenient coercion here becomes a silently wrong sample later.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError, field_validator

MAX_QUESTION_CHARS = 16_000  # far above any task prompt; a longer one is a broken or hostile record

Size = StrictInt | Annotated[list[StrictInt], Field(min_length=2, max_length=2)]

# how each field's problem is told (pydantic's own wording names types the user never wrote)
EXPECTED = {"id": "a non-empty string", "image": "a non-empty path string", "aef": "a path string or null",
            "coordinate_size": "a positive integer or [width, height]", "question": "a string",
            "answer": "a string", "task": "a string or null", "split": "a string or null",
            "meta": "an object or null"}


class ManifestRecord(BaseModel):
    """One question/answer turn about one image (paths as written: relative to the manifest's folder)."""

    model_config = ConfigDict(strict=True, extra="ignore")

    id: StrictStr | StrictInt
    image: Annotated[StrictStr, Field(min_length=1)]
    aef: StrictStr | None = None
    coordinate_size: Size
    question: StrictStr
    answer: StrictStr
    task: StrictStr | None = None
    split: StrictStr | None = None
    meta: dict[str, Any] | None = None

    @field_validator("id")
    @classmethod
    def _id_text(cls, value):
        value = str(value)
        if not value:
            raise ValueError("empty")
        return value

    @field_validator("coordinate_size")
    @classmethod
    def _positive(cls, value):
        if any(v <= 0 for v in ([value] if isinstance(value, int) else value)):
            raise ValueError("not positive")
        return value


def _type(value) -> str:
    return "null" if value is None else type(value).__name__


def parse_record(raw, where: str) -> ManifestRecord:
    """``raw`` (a parsed JSON value) as a :class:`ManifestRecord`; any problem is a ``ValueError`` in one line:
    ``WHERE: missing field 'x'`` / ``WHERE: field 'x' must be ..., got TYPE``."""
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a JSON object, got {_type(raw)}")
    try:
        rec = ManifestRecord.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "?"
        if first["type"] == "missing":
            raise ValueError(f"{where}: missing field '{field}'") from None
        value = raw.get(field)
        got = json.dumps(value) if field == "coordinate_size" else _type(value)
        raise ValueError(f"{where}: field '{field}' must be {EXPECTED.get(field, 'valid')}, got {got}") from None
    if len(rec.question) > MAX_QUESTION_CHARS:  # checked before any tokenizer sees it (50 MB aborted eval)
        raise ValueError(f"{where}: the question is {len(rec.question)} characters, above the cap of "
                         f"{MAX_QUESTION_CHARS}")
    return rec
