"""The manifest record schema: strict types, one-line errors, and the builder writing only what it accepts."""

from __future__ import annotations

import pytest

from fusar_gpt.data.record import ManifestRecord, parse_record

GOOD = {"id": "a-1", "image": "images/a.png", "aef": "anchors/a.npz", "coordinate_size": 224,
        "question": "How many ships?", "answer": "2", "task": "count", "split": "test", "meta": {"k": 1}}


def test_a_good_record_parses_and_extra_fields_are_ignored():
    rec = parse_record({**GOOD, "id": 7, "extra": [1, 2]}, "m.jsonl line 1")
    assert rec.id == "7" and rec.coordinate_size == 224 and not hasattr(rec, "extra")
    assert parse_record({**GOOD, "coordinate_size": [640, 512]}, "x").coordinate_size == [640, 512]


@pytest.mark.parametrize("change, message", [
    ({"coordinate_size": "224"}, "field 'coordinate_size' must be a positive integer or [width, height], got \"224\""),
    ({"coordinate_size": 0}, "field 'coordinate_size' must be"),
    ({"coordinate_size": [224, -1]}, "field 'coordinate_size' must be"),
    ({"coordinate_size": [224, 224, 3]}, "field 'coordinate_size' must be"),
    ({"id": ""}, "field 'id' must be a non-empty string, got str"),
    ({"id": True}, "field 'id' must be a non-empty string, got bool"),
    ({"answer": 3}, "field 'answer' must be a string, got int"),
    ({"image": ""}, "field 'image' must be a non-empty path string"),
    ({"question": "x" * 16_001}, "16001 characters, above the cap of 16000"),
])
def test_bad_fields_are_one_line_errors_naming_the_field(change, message):
    with pytest.raises(ValueError) as err:
        parse_record({**GOOD, **change}, "m.jsonl line 4")
    assert str(err.value).startswith("m.jsonl line 4: ") and message in str(err.value)
    assert "\n" not in str(err.value)


def test_the_builder_cannot_construct_a_record_the_reader_refuses():
    with pytest.raises(ValueError):
        ManifestRecord(**{**GOOD, "coordinate_size": True})
    assert parse_record(ManifestRecord(**GOOD).model_dump(), "x").model_dump() == ManifestRecord(**GOOD).model_dump()
