"""COCO / VOC / YOLO readers: one truth in three formats, and bad input quarantined, never lost or kept."""

from __future__ import annotations

import json
import math

import pytest

from fusar_gpt.data.annotations import (
    AnnotationError,
    ImageAnnotations,
    Obj,
    Problem,
    read_annotations,
    split_name,
    validate_objects,
)

# name -> (width, height, [(box xyxy, label, subtype)]); integer boxes so VOC's 1-based pixels are exact.
SCENE = {
    "a.png": (100, 80, [((10, 20, 30, 40), "ship", "tanker"), ((50, 5, 70, 15), "plane", None)]),
    "b.png": (64, 64, []),
    "c.png": (120, 90, [((0, 0, 12, 9), "ship", None), ((100, 70, 120, 90), "ship", "cargo")]),
}


def write_coco(path, scene=SCENE, **extra_images):
    cats = {"ship": 1, "plane": 2}
    images, anns = [], []
    for i, (name, (w, h, objs)) in enumerate(scene.items(), 1):
        images.append({"id": i, "file_name": name, "width": w, "height": h, **extra_images})
        for (x1, y1, x2, y2), label, sub in objs:
            ann = {"id": len(anns) + 1, "image_id": i, "category_id": cats[label], "bbox": [x1, y1, x2 - x1, y2 - y1]}
            if sub:
                ann["attributes"] = {"subtype": sub}
            anns.append(ann)
    data = {"images": images, "annotations": anns, "categories": [{"id": v, "name": k} for k, v in cats.items()]}
    path.write_text(json.dumps(data))
    return path


def voc_xml(name, w, h, objs) -> str:
    parts = [f"<annotation><folder>x</folder><filename>{name}</filename>"
             f"<size><width>{w}</width><height>{h}</height><depth>1</depth></size>"]
    for (x1, y1, x2, y2), label, sub in objs:
        parts.append(f"<object><name>{label}</name>{f'<subtype>{sub}</subtype>' if sub else ''}<difficult>0</difficult>"
                     f"<bndbox><xmin>{x1 + 1}</xmin><ymin>{y1 + 1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox>"
                     "</object>")
    return "".join(parts) + "</annotation>"


def write_voc(d, scene=SCENE):
    d.mkdir(parents=True, exist_ok=True)
    for name, (w, h, objs) in scene.items():
        (d / f"{name[:-4]}.xml").write_text(voc_xml(name, w, h, objs))
    return d


def write_yolo(d, scene=SCENE, names=("ship", "plane", "ship/tanker", "ship/cargo")):
    d.mkdir(parents=True, exist_ok=True)
    (d / "classes.txt").write_text("\n".join(names) + "\n")
    for name, (w, h, objs) in scene.items():
        lines = []
        for (x1, y1, x2, y2), label, sub in objs:
            k = names.index(f"{label}/{sub}" if sub else label)
            lines.append(f"{k} {(x1 + x2) / 2 / w:.9f} {(y1 + y2) / 2 / h:.9f} {(x2 - x1) / w:.9f} {(y2 - y1) / h:.9f}")
        (d / f"{name[:-4]}.txt").write_text("\n".join(lines))
    return d


def sizes(scene=SCENE):
    return {name: (w, h) for name, (w, h, _) in scene.items()}


def _key(t):
    return t[0], t[1] or "", t[2]


def as_truth(anns: dict[str, ImageAnnotations]):
    return {k.split(".")[0]: sorted(((o.label, o.subtype, o.box) for o in a.objects), key=_key)
            for k, a in anns.items()}


def close(a, b, tol):
    assert a.keys() == b.keys()
    for k in a:
        assert len(a[k]) == len(b[k]), k
        for (la, sa, ba), (lb, sb, bb) in zip(a[k], b[k]):
            assert (la, sa) == (lb, sb)
            assert all(abs(p - q) <= tol for p, q in zip(ba, bb)), (k, ba, bb)


def test_same_objects_in_all_formats(tmp_path):
    coco, p1 = read_annotations(write_coco(tmp_path / "c.json"), "coco")
    voc, p2 = read_annotations(write_voc(tmp_path / "voc"), "voc")
    yolo, p3 = read_annotations(write_yolo(tmp_path / "yolo"), "yolo", image_sizes=sizes())
    assert p1 == p2 == p3 == []
    expected = {k[:-4]: sorted(((lab, sub, tuple(map(float, box))) for box, lab, sub in objs), key=_key)
                for k, (_, _, objs) in SCENE.items()}
    close(as_truth(coco), expected, 0)
    close(as_truth(voc), expected, 1)
    close(as_truth(yolo), expected, 1e-6)
    assert set(yolo) == {"a", "b", "c"}  # YOLO keys are stems
    assert coco["a.png"].width == voc["a.png"].width == yolo["a"].width == 100
    assert coco["b.png"].objects == voc["b.png"].objects == yolo["b"].objects == []


def test_voc_is_one_based_inclusive(tmp_path):
    (tmp_path / "a.xml").write_text(voc_xml("a.png", 10, 10, [((0, 0, 10, 10), "ship", None)]))
    anns, _ = read_annotations(tmp_path / "a.xml", "voc")
    assert anns["a.png"].objects[0].box == (0.0, 0.0, 10.0, 10.0)  # xmin=1..xmax=10 is the full 10 px


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", json.dumps({"images": [], "categories": []})])
def test_unusable_coco_raises_one_line(tmp_path, text):
    f = tmp_path / "bad.json"
    f.write_text(text)
    with pytest.raises(AnnotationError) as e:
        read_annotations(f, "coco")
    assert "\n" not in str(e.value) and str(e.value)


def test_missing_input_and_unknown_format(tmp_path):
    with pytest.raises(AnnotationError, match="not found"):
        read_annotations(tmp_path / "nope", "voc")
    with pytest.raises(AnnotationError, match="unknown annotation format"):
        read_annotations(tmp_path, "kitti")
    with pytest.raises(AnnotationError, match="no .xml"):
        read_annotations(tmp_path, "voc")


def test_coco_malformed_entries_keep_the_valid_images(tmp_path):
    f = write_coco(tmp_path / "c.json", site="s1", date="2024-05-01", landcover_grid=["water"] * 9)
    data = json.loads(f.read_text())
    data["images"].append({"id": 4, "file_name": "d.png", "width": 50, "height": 50})  # no annotations: valid
    data["images"].append({"id": 5, "width": 50, "height": 50})  # no file name
    data["annotations"] += [
        {"id": 90, "image_id": 2, "category_id": 1, "bbox": [1, 2, 3]},  # b: 3 numbers
        {"id": 91, "image_id": 99, "category_id": 1, "bbox": [1, 2, 3, 4]},  # unknown image
        {"id": 92, "image_id": 3, "bbox": [1, 2, 3, 4]},  # c: no category
        {"id": 93, "image_id": 4, "category_id": 1, "bbox": [1, 2, float("nan"), 4]},  # d: not finite
    ]
    f.write_text(json.dumps(data))
    anns, problems = read_annotations(f, "coco")
    assert set(anns) == {"a.png"}
    assert len(anns["a.png"].objects) == 2
    assert anns["a.png"].extra == {"site": "s1", "date": "2024-05-01", "landcover_grid": ["water"] * 9}
    by_image = {p.image: p.reason for p in problems}
    assert set(by_image) == {"b.png", "c.png", "d.png", None}
    assert "bbox" in by_image["b.png"] and "category_id" in by_image["c.png"] and "finite" in by_image["d.png"]
    file_level = [p.reason for p in problems if p.image is None]
    assert any("99" in r for r in file_level) and any("file_name" in r for r in file_level)
    assert all("\n" not in p.reason for p in problems)


@pytest.mark.parametrize("image_id, ann_id", [(1, "1"), ("7", 7)])
def test_coco_image_id_of_another_type_quarantines_the_image(tmp_path, image_id, ann_id):
    """An annotation with image_id "1" for the image whose id is 1: dropping it (as an exact-match lookup does)
    would build the image with one target less and a wrong count answer, so the image is quarantined instead."""
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"images": [{"id": image_id, "file_name": "e.png"}, {"id": 2, "file_name": "f.png"}],
                             "annotations": [{"id": 1, "image_id": ann_id, "category_id": 1, "bbox": [1, 2, 3, 4]},
                                             {"id": 2, "image_id": 2, "category_id": 1, "bbox": [1, 2, 3, 4]}],
                             "categories": [{"id": 1, "name": "ship"}]}))
    anns, problems = read_annotations(f, "coco")
    assert set(anns) == {"f.png"} and len(anns["f.png"].objects) == 1
    (p,) = problems
    assert p.image == "e.png" and f"image_id {ann_id!r}" in p.reason and f"id is {image_id!r}" in p.reason


def test_coco_image_without_annotations_is_valid(tmp_path):
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"images": [{"id": 1, "file_name": "e.png"}], "annotations": [],
                             "categories": [{"id": 1, "name": "ship"}]}))
    anns, problems = read_annotations(f, "coco")
    assert problems == [] and anns["e.png"] == ImageAnnotations("e.png", [], None, None, {})


def test_unknown_category(tmp_path):
    f = write_coco(tmp_path / "c.json")
    data = json.loads(f.read_text())
    data["annotations"][0]["category_id"] = 7  # on a.png
    f.write_text(json.dumps(data))
    anns, problems = read_annotations(f, "coco")
    assert set(anns) == {"b.png", "c.png"}
    assert problems == [Problem("a.png", problems[0].reason)] and "unknown category" in problems[0].reason
    # a known category outside the asked classes is unknown too
    anns, problems = read_annotations(write_coco(tmp_path / "d.json"), "coco", classes=["ship"])
    assert set(anns) == {"b.png", "c.png"}
    assert [p.image for p in problems] == ["a.png"] and "unknown category 'plane'" in problems[0].reason


def test_box_outside_is_a_problem_partly_outside_is_clipped(tmp_path):
    scene = {"in.png": (100, 50, [((90, 10, 130, 20), "ship", None), ((-5, -5, 10, 10), "plane", None)]),
             "out.png": (100, 50, [((150, 10, 160, 20), "ship", None)]),
             "flat.png": (100, 50, [((20, 10, 20, 20), "ship", None)])}
    anns, problems = read_annotations(write_coco(tmp_path / "c.json", scene), "coco")
    assert [o.box for o in anns["in.png"].objects] == [(90.0, 10.0, 100.0, 20.0), (0.0, 0.0, 10.0, 10.0)]
    reasons = {p.image: p.reason for p in problems}
    assert set(reasons) == {"out.png", "flat.png"}
    assert "[150, 10, 160, 20]" in reasons["out.png"] and "outside" in reasons["out.png"]
    assert "empty" in reasons["flat.png"]


def test_validate_objects():
    objs = [Obj((-3.0, 2.0, 20.0, 30.0), "ship")]
    assert validate_objects(objs, 10, 10) == ([Obj((0.0, 2.0, 10.0, 10.0), "ship")], None)
    for box, word in [((1, 1, 1, 5), "empty"), ((10, 0, 20, 5), "outside"), ((0, 0, math.inf, 5), "finite"),
                      ((0, 0, 5, math.nan), "finite"), ((-9, -9, 0, 0), "outside")]:
        bad = [Obj((1, 1, 2, 2), "plane"), Obj(box, "ship")]
        kept, reason = validate_objects(bad, 10, 10)
        assert kept == bad and word in reason and "'ship'" in reason and "\n" not in reason
    assert validate_objects([], 0, 10)[1] is not None


def test_image_sizes_fill_in_missing_sizes(tmp_path):
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"images": [{"id": 1, "file_name": "sub/e.png"}], "categories": [{"id": 1, "name": "ship"}],
                             "annotations": [{"image_id": 1, "category_id": 1, "bbox": [5, 5, 100, 5]}]}))
    anns, _ = read_annotations(f, "coco", image_sizes={"e": (40, 30)})
    assert (anns["sub/e.png"].width, anns["sub/e.png"].objects[0].box) == (40, (5, 5, 40, 10))


def test_voc_malformed_file_among_good_ones(tmp_path):
    d = write_voc(tmp_path / "voc")
    (d / "broken.xml").write_text("<annotation><filename>x.png</filename><object>")
    (d / "nobox.xml").write_text("<annotation><filename>y.png</filename><object><name>ship</name></object>"
                                 "</annotation>")
    anns, problems = read_annotations(d, "voc")
    assert set(anns) == set(SCENE)
    reasons = {p.image: p.reason for p in problems}
    assert set(reasons) == {"broken.xml", "y.png"}
    assert "cannot parse" in reasons["broken.xml"] and "bndbox" in reasons["y.png"]


def test_voc_image_annotated_twice_is_quarantined(tmp_path):
    d = write_voc(tmp_path / "voc")
    (d / "zz.xml").write_text(voc_xml("a.png", 100, 80, [((1, 1, 5, 5), "ship", None)]))
    anns, problems = read_annotations(d, "voc")
    assert set(anns) == {"b.png", "c.png"}
    assert [p.image for p in problems] == ["a.png"] and "a.xml and zz.xml" in problems[0].reason


def test_yolo_bad_lines_and_index_out_of_range(tmp_path):
    d = write_yolo(tmp_path / "yolo")
    (d / "a.txt").write_text("0 0.5 0.5 0.1 0.1\n7 0.5 0.5 0.1 0.1\n")
    (d / "b.txt").write_text("-1 0.5 0.5 0.1 0.1\n")
    (d / "c.txt").write_text("0 0.5 0.5 0.1\n")
    (d / "z.txt").write_text("0 0.5 0.5 0.1 0.1\n")  # no size known
    anns, problems = read_annotations(d, "yolo", image_sizes=sizes())
    assert anns == {}
    reasons = {p.image: p.reason for p in problems}
    assert set(reasons) == {"a", "b", "c", "z"}
    assert "out of range" in reasons["a"] and "out of range" in reasons["b"]
    assert "class cx cy w h" in reasons["c"] and "size" in reasons["z"]


def test_yolo_names_from_data_yaml_in_parent_and_required_inputs(tmp_path):
    d = tmp_path / "ds" / "labels"
    d.mkdir(parents=True)
    (tmp_path / "ds" / "data.yaml").write_text("path: .\nnames:\n  0: plane\n  1: ship/fishing\n")
    (d / "a.txt").write_text("1 0.5 0.5 0.2 0.4\n")
    anns, problems = read_annotations(d, "yolo", image_sizes={"a.tif": (50, 20)})
    assert problems == [] and anns["a"].objects == [Obj((20.0, 6.0, 30.0, 14.0), "ship", "fishing")]
    with pytest.raises(AnnotationError, match="image_sizes"):
        read_annotations(d, "yolo")
    (tmp_path / "ds" / "data.yaml").unlink()
    with pytest.raises(AnnotationError, match="class names"):
        read_annotations(d, "yolo", image_sizes={"a": (50, 20)})
    anns, _ = read_annotations(d, "yolo", classes=["plane", "ship"], image_sizes={"a": (50, 20)})
    assert anns["a"].objects[0].label == "ship" and anns["a"].objects[0].subtype is None


def test_label_slash_subtype_names(tmp_path):
    assert split_name(" ship / tanker ") == ("ship", "tanker") and split_name("plane") == ("plane", None)
    f = tmp_path / "c.json"
    f.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png", "width": 50, "height": 50}],
        "categories": [{"id": 1, "name": "ship/tanker"}, {"id": 2, "name": "ship"}],
        "annotations": [{"image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]},
                        {"image_id": 1, "category_id": 2, "bbox": [1, 1, 5, 5], "subtype": "cargo"},
                        {"image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "attributes": {"subtype": "lng"}}]}))
    anns, problems = read_annotations(f, "coco", classes=["ship", "plane"])
    assert problems == []
    assert [(o.label, o.subtype) for o in anns["a.png"].objects] == [("ship", "tanker"), ("ship", "cargo"),
                                                                     ("ship", "lng")]
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "a.xml").write_text(voc_xml("a.png", 50, 50, [((1, 1, 5, 5), "plane/fighter", None)]))
    anns, _ = read_annotations(tmp_path / "v", "voc")
    assert anns["a.png"].objects[0] == Obj((1.0, 1.0, 5.0, 5.0), "plane", "fighter")
