"""Questions, canonical answers and the parsers that read them back (builders and scorer share one contract)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fusar_gpt.data.tasks import (
    CAPTION_QUESTIONS,
    CELLS,
    CLASSIFY_QUESTIONS,
    COUNT_QUESTIONS,
    DETECT_QUESTIONS,
    FINE_QUESTIONS,
    LANDCOVER_QUESTIONS,
    LANDCOVER_WORDS,
    LOCATE_QUESTIONS,
    PAPER_TASKS,
    TASKS,
    FrameObj,
    SceneInfo,
    build_qa,
    caption_text,
    cell_of,
    dominant_cover,
    format_boxes,
    parse_boxes,
    parse_cells,
    parse_count,
    parse_label,
    truth_boxes,
    truth_cells,
    truth_count,
)

F = 300
SHIPS = [FrameObj((10, 10, 40, 30), "ship", "tanker"), FrameObj((140, 140, 160, 160), "ship", "cargo"),
         FrameObj((60, 60, 80, 80), "ship", "tanker")]
SCENE = SceneInfo(landcover={"water": 0.45, "built": 0.30, "trees": 0.15, "flooded_vegetation": 0.07, "bare": 0.03},
                  layout=["built", "built", "built", "water", "trees", "trees", "water", "trees", "trees"],
                  sensor="Sentinel-1", date="2024-05-01")


def by_task(qas, task):
    return [q for q in qas if q.task == task]


def test_cells_row_major_and_borders():
    centres = [(50 + 100 * c, 50 + 100 * r) for r in range(3) for c in range(3)]
    assert [cell_of((x - 5, y - 5, x + 5, y + 5), F) for x, y in centres] == list(CELLS)
    assert cell_of((90, 0, 110, 10), F) == "top"  # centre x = 100: on the border -> the later cell
    assert cell_of((89, 0, 110, 10), F) == "top-left"
    assert cell_of((190, 190, 210, 210), F) == "bottom-right"  # 200 on both borders
    assert cell_of((74, 0, 75, 1), 224) == "top-left" and cell_of((75, 0, 75, 1), 224) == "top"  # 224/3 = 74.67
    assert cell_of((-50, -50, -10, -10), F) == "top-left" and cell_of((400, 250, 500, 260), F) == "bottom-right"


def test_answers_on_a_hand_made_scene():
    objs = SHIPS + [FrameObj((250, 20, 290, 40), "plane")]
    qas = build_qa(objs, F, ("count", "locate", "detect"), seed=1)
    assert [(q.task, q.meta["class"], q.answer) for q in qas] == [
        ("count", "ship", "3"), ("count", "plane", "1"),
        ("locate", "ship", "top-left, center"), ("locate", "plane", "top-right"),
        ("detect", "ship", '[{"bbox_2d": [10, 10, 40, 30], "label": "ship"}, '
                           '{"bbox_2d": [60, 60, 80, 80], "label": "ship"}, '
                           '{"bbox_2d": [140, 140, 160, 160], "label": "ship"}]'),
        ("detect", "plane", '[{"bbox_2d": [250, 20, 290, 40], "label": "plane"}]')]
    none = build_qa(SHIPS, F, ("count", "locate", "detect"), seed=1, classes=("plane",))
    assert [q.answer for q in none] == ["0", "None", "None"]
    assert [t for t in TASKS if by_task(build_qa(objs, F, seed=1), t)] == list(PAPER_TASKS)  # the default
    assert [t for t in TASKS if by_task(build_qa(objs, F, TASKS, seed=1, scene=SCENE), t)] == list(TASKS)


def test_questions_come_from_the_templates():
    qas = build_qa(SHIPS, F, seed="x", scene=SCENE, subtypes={"ship": ["tanker", "cargo", "fishing"]})
    t = {"count": COUNT_QUESTIONS, "locate": LOCATE_QUESTIONS, "detect": DETECT_QUESTIONS}
    for q in qas:
        if q.task in t:
            c = q.meta["class"]
            assert q.question in [s.format(plural=c + "s", singular=c) for s in t[q.task]]
        elif q.task == "caption":
            assert q.question in CAPTION_QUESTIONS
        else:
            box = "[" + ", ".join(map(str, q.meta["box"])) + "]"
            fine = q.meta["level"] == "fine"
            choices = "cargo, fishing or tanker" if fine else "ship or plane"
            assert q.question in [s.format(box=box, choices=choices, label="ship")
                                  for s in (FINE_QUESTIONS if fine else CLASSIFY_QUESTIONS)]


def test_classify_coarse_and_fine():
    objs = SHIPS + [FrameObj((250, 20, 290, 40), "plane"), FrameObj((5, 250, 15, 260), "tower")]
    qas = by_task(build_qa(objs, F, ("classify",), seed=3, max_classify=10), "classify")
    coarse = [q for q in qas if q.meta["level"] == "coarse"]
    fine = [q for q in qas if q.meta["level"] == "fine"]
    assert sorted(tuple(q.meta["box"]) for q in coarse) == sorted(o.box for o in objs[:4])  # 'tower' not asked
    for q in coarse:
        assert q.answer == next(o.label for o in objs if list(o.box) == q.meta["box"]) and "ship or plane" in q.question
    assert sorted(q.answer for q in fine) == ["cargo", "tanker", "tanker"]
    assert all(q.meta["choices"] == ["cargo", "tanker"] and "cargo or tanker" in q.question for q in fine)
    some = build_qa(objs, F, ("classify",), seed=3, max_classify=2)
    assert len({tuple(q.meta["box"]) for q in some}) == 2
    assert build_qa(objs, F, ("classify",), seed=3, max_classify=0) == []
    # one known subtype only: no fine question (nothing to choose); a dataset-wide list makes one
    lone = [FrameObj((10, 10, 20, 20), "ship", "tanker")]
    assert [q.meta["level"] for q in build_qa(lone, F, ("classify",), seed=0)] == ["coarse"]
    q = build_qa(lone, F, ("classify",), seed=0, subtypes={"ship": ["tanker", "lng", "cargo"]})[1]
    assert q.answer == "tanker" and q.meta["choices"] == ["cargo", "lng", "tanker"]
    with pytest.raises(ValueError, match="not in subtypes"):
        build_qa(lone, F, ("classify",), seed=0, subtypes={"ship": ["cargo", "lng"]})


def test_caption_mentions_shares_layout_and_counts():
    objs = SHIPS + [FrameObj((250, 20, 290, 40), "plane")]
    text = caption_text(objs, F, SCENE, seed=0)
    for part in ("45% water", "30% built-up land", "15% trees", "7% flooded vegetation",
                 "bare ground or paved surfaces", "3 ships (2 tanker, 1 cargo)", "top-left and center", "1 plane",
                 "top-right", "2024-05-01", "Sentinel-1", "left and bottom-left", "top-left, top and top-right"):
        assert part in text, (part, text)
    assert "\n" not in text
    bare = caption_text(SHIPS, F, None, seed=0)
    assert "%" not in bare and "3 ships" in bare and "planes" in bare  # absent class said too
    assert build_qa(SHIPS, F, ("caption",), seed=0)[0].answer == bare
    empty = caption_text([], F, None, seed=0)
    assert "ships or planes" in empty
    pct = caption_text([], F, SceneInfo(landcover={"water": 60, "grass": 40}), seed=0)
    assert "60% water" in pct and "40% grass" in pct
    with pytest.raises(ValueError, match="9 cells"):
        caption_text([], F, SceneInfo(layout=["water"] * 4), seed=0)


def _dump(qas):
    return json.dumps([asdict(q) for q in qas], sort_keys=True)


def test_same_seed_same_output_in_every_process():
    kw = dict(seed="run:img-7", scene=SCENE)
    here = _dump(build_qa(SHIPS, F, **kw))
    assert here == _dump(build_qa(SHIPS, F, **kw))
    # a fresh interpreter with another string-hash salt must pick the same wording
    code = ("import json, sys; from dataclasses import asdict; from fusar_gpt.data.tasks import *; "
            "o, s = json.loads(sys.argv[1]); objs = [FrameObj(tuple(d['box']), d['label'], d['subtype']) for d in o]; "
            f"qas = build_qa(objs, {F}, seed='run:img-7', scene=SceneInfo(**s)); "
            "sys.stdout.write(json.dumps([asdict(q) for q in qas], sort_keys=True))")
    arg = json.dumps([[asdict(o) for o in SHIPS], asdict(SCENE)])
    for hashseed in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", code, arg], capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONHASHSEED": hashseed}).stdout
        assert out == here


def test_different_seeds_vary_the_wording_not_the_answers():
    runs = [build_qa(SHIPS, F, TASKS, seed=s, scene=SCENE) for s in range(60)]
    for task in TASKS:
        questions = {q.question for qas in runs for q in by_task(qas, task) if q.meta.get("level") != "fine"}
        assert len(questions) >= (4 if task != "classify" else 8), task  # classify: several boxes too
    for task in ("count", "locate", "detect", "landcover"):
        assert len({tuple(q.answer for q in by_task(qas, task)) for qas in runs}) == 1
    assert len({by_task(qas, "caption")[0].answer for qas in runs}) >= 4


@pytest.mark.parametrize("text,n", [
    ("3", 3), ("There are three ships.", 3), ("I count 12 ships and 2 planes", 12), ("No ships.", 0),
    ("none", 0), ("Zero", 0), ("No, there are 4 planes.", 4), ("twenty-one", 21), ("Twenty", 20),
    ("**7**", 7), ("The answer is: 5.", 5), ("1,024 ships", 1024), ("3.0", 3), ("seventeen ships", 17),
    ("-2", None), ("2.5 ships", None), ("", None), ("lots of ships", None), ("x2", None), (None, None),
])
def test_parse_count(text, n):
    assert parse_count(text) == n


@pytest.mark.parametrize("text,cells", [
    ("top-left, center", ["top-left", "center"]), ("Center, TOP-LEFT", ["top-left", "center"]),
    ("top-left", ["top-left"]),
    ("The ships are in the top left and bottom-right corners.", ["top-left", "bottom-right"]),
    ("top, left", ["top", "left"]), ("upper right and the middle", ["top-right", "center"]),
    ("center-left, bottom center, centre", ["left", "center", "bottom"]), ("right, right, right", ["right"]),
    ("TOP_LEFT and bottomright", ["top-left", "bottom-right"]),
    ("None", []), ("no", []), ("", []), ("There are no ships.", []), ("I cannot tell", None), (3, None),
])
def test_parse_cells(text, cells):
    assert parse_cells(text) == cells


@pytest.mark.parametrize("text,label", [
    ("ship", "ship"), ("It is a Ship.", "ship"), ("plane, not ship", "plane"), ("shipping lane", None),
    ("", None), ("PLANE", "plane"),
])
def test_parse_label(text, label):
    assert parse_label(text, ["ship", "plane"]) == label


def test_parse_label_multiword_choices():
    choices = ["oil", "oil tanker", "bulk_carrier"]
    assert parse_label("an Oil Tanker", choices) == "oil tanker"
    assert parse_label("a bulk carrier", choices) == "bulk_carrier" and parse_label("oil", choices) == "oil"


@pytest.mark.parametrize("text,boxes", [
    ('```json\n[{"bbox_2d": [1, 2, 3, 4], "label": "ship"}]\n```', [([1, 2, 3, 4], "ship")]),
    ("Sure! Here they are: [{'bbox_2d': [1.4, 2.6, 30, 40,], 'label': 'plane'},] Hope this helps.",
     [([1, 3, 30, 40], "plane")]),
    ('{"bbox_2d": [5, 6, 7, 8], "label": "ship"}\n{"bbox_2d": [-5, 6, 700, 8], "label": "ship"}',
     [([5, 6, 7, 8], "ship"), ([-5, 6, 700, 8], "ship")]),
    ("[[1, 2, 3, 4], [5, 6, 7, 8]]", [([1, 2, 3, 4], ""), ([5, 6, 7, 8], "")]),
    ("None", []), ("There are no ships.", []), ("[]", []),
    ('[{"bbox_2d": [1, 2, 3], "label": "ship"}]', None),
    ('[{"bbox_2d": [1, 2, 3, 4, 5], "label": "ship"}]', None),
    ('[{"bbox_2d": [1, 2, 3, 4], "label": "ship"}, {"bbox_2d": [1, 2, "x", 4]}]', None),
    ('[{"label": "ship"}]', None), ("I see something", None), ("", None),
])
def test_parse_boxes(text, boxes):
    want = None if boxes is None else [{"bbox_2d": b, "label": lab} for b, lab in boxes]
    assert parse_boxes(text) == want


@pytest.mark.parametrize("bad", ["03", " 3", "3 ", "3.0", "three", "-1", "", "+3", "٣", None, 3])
def test_truth_count_is_strict(bad):
    with pytest.raises(ValueError):
        truth_count(bad)


@pytest.mark.parametrize("bad", ["none", "", "center, top-left", "top-left,center", "top-left, top-left",
                                 "Top-left", "top left", "top-left, ", "[]", None])
def test_truth_cells_is_strict(bad):
    with pytest.raises(ValueError):
        truth_cells(bad)


@pytest.mark.parametrize("bad", ["none", "[]", "", '```json\n[{"bbox_2d": [1, 2, 3, 4], "label": "ship"}]\n```',
                                 "[{'bbox_2d': [1, 2, 3, 4], 'label': 'ship'}]",
                                 '[{"bbox_2d": [1.0, 2, 3, 4], "label": "ship"}]',
                                 '[{"bbox_2d": [1, 2, 3], "label": "ship"}]', '[{"bbox_2d": [1, 2, 3, 4]}]',
                                 '[{"bbox_2d": [1, 2, 3, 4], "label": "ship", "score": 1}]',
                                 ' [{"bbox_2d": [1, 2, 3, 4], "label": "ship"}]', '{"bbox_2d": [1, 2, 3, 4], '
                                 '"label": "ship"}', "Boxes: [[1, 2, 3, 4]]", None])
def test_truth_boxes_is_strict(bad):
    with pytest.raises(ValueError):
        truth_boxes(bad)


def test_truth_parsers_accept_canonical_answers():
    assert truth_count("0") == 0 and truth_count("120") == 120
    assert truth_cells("None") == [] and truth_cells("top, center, bottom-right") == ["top", "center", "bottom-right"]
    assert truth_boxes("None") == [] and truth_boxes(format_boxes(SHIPS[:1])) == [
        {"bbox_2d": [10, 10, 40, 30], "label": "ship"}]


def test_build_qa_rejects_bad_input():
    for kwargs, msg in [(dict(objects=[FrameObj((1.5, 2, 3, 4), "ship")]), "4 integers"),
                        (dict(tasks=("count", "vqa")), "tasks"), (dict(frame=0), "frame"),
                        (dict(objects=[FrameObj((1, 2, 3, 4), "")]), "label")]:
        args = {"objects": SHIPS, "frame": F, **kwargs}
        with pytest.raises(ValueError, match=msg) as e:
            build_qa(args.pop("objects"), args.pop("frame"), **args, seed=0)
        assert "\n" not in str(e.value)


coords = st.integers(-30, F + 30)
boxes = st.tuples(coords, coords, coords, coords).map(lambda b: (min(b[0], b[2]), min(b[1], b[3]),
                                                                  max(b[0], b[2]), max(b[1], b[3])))
objects = st.lists(st.builds(FrameObj, boxes, st.sampled_from(["ship", "plane", "oil rig"]),
                             st.sampled_from([None, "tanker", "cargo", "lng carrier"])), max_size=12)


@settings(max_examples=150, deadline=None)
@given(objects, st.one_of(st.integers(), st.text(max_size=8)))
def test_every_answer_round_trips_through_both_parsers(objs, seed):
    for q in build_qa(objs, F, seed=seed, classes=("ship", "plane", "oil rig"), max_classify=5):
        mine = [o for o in objs if o.label == q.meta.get("class")]
        if q.task == "count":
            assert parse_count(q.answer) == truth_count(q.answer) == len(mine)
        elif q.task == "locate":
            want = [c for c in CELLS if c in {cell_of(o.box, F) for o in mine}]
            assert parse_cells(q.answer) == truth_cells(q.answer) == want
        elif q.task == "detect":
            got = truth_boxes(q.answer)
            assert parse_boxes(q.answer) == got
            assert sorted(tuple(d["bbox_2d"]) for d in got) == sorted(o.box for o in mine)
        elif q.task == "classify":
            assert parse_label(q.answer, q.meta["choices"]) == q.answer
            assert parse_label(f"It is a {q.answer.upper()}.", q.meta["choices"]) == q.answer


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 10**6))
def test_counts_round_trip_in_prose(n):
    assert parse_count(str(n)) == truth_count(str(n)) == n
    assert parse_count(f"I can see {n} ships in the image.") == n


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(CELLS), unique=True), st.randoms(use_true_random=False))
def test_cells_in_any_order_and_case_come_back_canonical(cells, rnd):
    want = [c for c in CELLS if c in cells]
    assert truth_cells(", ".join(want) or "None") == want
    shuffled = list(cells)
    rnd.shuffle(shuffled)
    messy = " and ".join(c.upper() if rnd.random() < 0.5 else c.replace("-", " ") for c in shuffled)
    assert parse_cells(f"Targets are in the {messy}." if cells else "None") == want


@settings(max_examples=100, deadline=None)
@given(st.lists(st.fixed_dictionaries({"bbox_2d": st.lists(coords, min_size=4, max_size=4),
                                       "label": st.sampled_from(["ship", "plane", "oil rig"])}), max_size=6))
def test_formatted_boxes_round_trip(items):
    text = format_boxes(items)
    assert parse_boxes(text) == truth_boxes(text)
    dump = lambda d: json.dumps(d, sort_keys=True)
    assert sorted(map(dump, truth_boxes(text))) == sorted(map(dump, items))
    assert parse_boxes(f"```json\n{text}\n```") == truth_boxes(text)


def test_landcover_asks_the_dominant_class_once_and_only_when_known():
    qas = by_task(build_qa(SHIPS, F, TASKS, seed=3, scene=SCENE), "landcover")
    assert [(q.answer, q.meta["choices"]) for q in qas] == [("water", list(LANDCOVER_WORDS))]
    assert qas[0].question in LANDCOVER_QUESTIONS
    assert parse_label(qas[0].answer, LANDCOVER_WORDS) == "water"  # the scorer reads its own truth back
    assert by_task(build_qa(SHIPS, F, TASKS, seed=3), "landcover") == []  # no scene: no question, no guess
    assert by_task(build_qa(SHIPS, F, TASKS, seed=3, scene=SceneInfo(landcover={})), "landcover") == []


def test_dominant_cover_rules():
    assert dominant_cover({"shrub_and_scrub": 0.5, "crops": 0.3, "water": 0.2}) == "shrub and scrub"
    assert dominant_cover({"flooded_vegetation": 40, "bare": 35, "water": 25}) == "flooded vegetation"  # percent
    assert dominant_cover({"grass": 0.4, "crops": 0.4}) == "grass"  # a tie: Dynamic World order
    assert dominant_cover({"water": 0.0}) is None and dominant_cover(None) is None
    with pytest.raises(ValueError, match="lava"):
        dominant_cover({"lava": 0.9})
    with pytest.raises(ValueError, match="finite"):
        dominant_cover({"water": float("nan")})


AUTHORS_PROMPT = ("This is a SAR image. Please carefully check the image and detect the following object: plane. "
                  "Output each detected target\u2019s bbox coordinates in JSON format. The format of the bbox "
                  "coordinates is:  '''json [ {  \"bbox_2d\": [x1, y1, x2, y2], \"label\": \"category name\" } ]  '''  "
                  "If there are no such targets in the image, simply respond with None.")


def test_the_authors_detection_prompt_is_a_detect_question_and_names_its_class(tmp_path, capsys):
    from fusar_gpt.__main__ import main
    from fusar_gpt.data.tasks import asked_class, task_of_question

    assert task_of_question(AUTHORS_PROMPT) == "detect" and asked_class(AUTHORS_PROMPT) == "plane"
    assert task_of_question("<image>" + AUTHORS_PROMPT.replace("plane", "ship")) == "detect"
    assert asked_class("How many planes?") is None
    box = '[{"bbox_2d": [102, 267, 161, 328], "label": "plane"}]'
    rows = [{"id": "d1", "image": "a.png", "coordinate_size": 504, "question": AUTHORS_PROMPT, "answer": box},
            {"id": "d2", "image": "b.png", "coordinate_size": 504, "question": AUTHORS_PROMPT, "answer": "None"}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "p.jsonl").write_text(json.dumps({"id": "d1", "answer": box}) + "\n"
                                      + json.dumps({"id": "d2", "answer": box}) + "\n")
    assert main(["score", "--predictions", str(tmp_path / "p.jsonl"), "--manifest", str(tmp_path / "m.jsonl"),
                 "--json"]) == 0
    detect = json.loads(capsys.readouterr().out)["detect"]
    assert detect["n"] == 2 and 0 < detect["f1@0.5"] < 1  # one true positive, one false positive
