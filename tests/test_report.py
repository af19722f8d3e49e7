"""Reports: markdown tables, verdicts, confusion counts, box drawing and the figures written beside them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from fusar_gpt.report import write_comparison, write_report
from fusar_gpt.report_examples import confusion as confusion_counts
from fusar_gpt.report_examples import draw_boxes, example_panels
from fusar_gpt.report_tables import format_value, metrics_table, verdict

pytest.importorskip("matplotlib")

GREEN, RED, GREY = (0, 255, 0), (255, 0, 0), (128, 128, 128)

METRICS = {
    "count": {"n": 40, "acc": 0.625, "acc_ci": [0.5, 0.75], "mae": 0.45, "mae_ci": [0.3, 0.6],
              "acc_within1": 0.9, "acc_within1_ci": [0.8, 0.975]},
    "locate": {"n": 40, "acc100": 0.4, "acc100_ci": [0.25, 0.55], "acc50": 0.55, "acc50_ci": [0.4, 0.7],
               "top1": 0.7, "top1_ci": [0.55, 0.825]},
    "classify": {"n": 30, "acc": 0.8, "acc_ci": [0.6667, 0.9333], "per_class": {"ship": 0.85, "plane": 0.7},
                 "per_class_ci": {"ship": [0.7, 1.0], "plane": [0.4, 1.0]}},
    "detect": {"n": 40, "f1@0.25": 0.61, "f1@0.25_ci": [0.5, 0.72], "f1@0.5": 0.52, "f1@0.5_ci": [0.41, 0.63],
               "precision@0.5": 0.5, "precision@0.5_ci": [0.38, 0.62], "recall@0.5": 0.54,
               "recall@0.5_ci": [0.42, 0.66],
               "per_class": {"ship": {"f1@0.25": 0.66, "f1@0.25_ci": [0.5, 0.8], "f1@0.5": 0.55,
                                      "f1@0.5_ci": [0.4, 0.7]}}},
    "caption": {"n": 20, "bleu4": 0.21, "bleu4_ci": [0.18, 0.24], "rougeL": 0.45, "rougeL_ci": [0.41, 0.49],
                "cider": 1.234, "cider_ci": [0.98, 1.5]},
}
BASELINE = {"count": {"n": 40, "acc": 0.35, "acc_ci": [0.2, 0.5], "mae": 1.1, "mae_ci": [0.8, 1.4]},
            "classify": {"n": 30, "acc": 0.6, "acc_ci": [0.43, 0.77]}}


def _rows(metrics):
    """(task, metric label, value, interval) for every figure of a metrics dict, named as the table names them."""
    for task, d in metrics.items():
        yield task, "n", d["n"], None
        for k, v in d.items():
            if k in ("n", "per_class", "per_class_ci") or k.endswith("_ci"):
                continue
            yield task, k, v, d[k + "_ci"]
        for label, e in d.get("per_class", {}).items():
            if isinstance(e, dict):
                yield from ((task, f"{m}[{label}]", e[m], e[m + "_ci"]) for m in e if not m.endswith("_ci"))
            else:
                yield task, f"acc[{label}]", e, d["per_class_ci"][label]


def _cells(md: str) -> dict[tuple[str, str], list[str]]:
    """Table rows of a markdown report keyed by (task, metric): the remaining cells."""
    out = {}
    for line in md.splitlines():
        if line.startswith("| ") and not line.startswith("| task |"):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            out[(cells[0], cells[1])] = cells[2:]
    return out


def _png(path, min_side=200):
    assert path.is_file()
    with Image.open(path) as im:
        assert im.format == "PNG" and min(im.size) >= min_side
        a = np.asarray(im.convert("RGB"))
    assert a.std() > 5  # something was drawn
    return a


def _image(path, value=128, size=224):
    Image.fromarray(np.full((size, size), value, np.uint8), "L").save(path)
    return str(path)


def _records(tmp_path):
    box = lambda b, lab="ship": {"bbox_2d": b, "label": lab}
    coarse, fine = ["ship", "plane"], ["cargo", "fishing", "tanker"]
    recs = [
        {"id": "c1", "task": "classify", "answer": "ship", "meta": {"level": "coarse", "choices": coarse}},
        {"id": "c2", "task": "classify", "answer": "ship", "meta": {"level": "coarse", "choices": coarse}},
        {"id": "c3", "task": "classify", "answer": "plane", "meta": {"level": "coarse", "choices": coarse}},
        {"id": "c4", "task": "classify", "answer": "plane", "meta": {"level": "coarse", "choices": coarse}},
        {"id": "c5", "task": "classify", "answer": "ship", "meta": {"level": "coarse", "choices": coarse}},  # no pred
        {"id": "f1", "task": "classify", "answer": "cargo", "meta": {"level": "fine", "choices": fine}},
        {"id": "f2", "task": "classify", "answer": "tanker", "meta": {"level": "fine", "choices": fine}},
        {"id": "d0", "task": "detect", "answer": "None", "image": _image(tmp_path / "d0.png")},
        {"id": "d1", "task": "detect", "answer": json.dumps([box([40, 40, 100, 100])]),
         "image": _image(tmp_path / "d1.png")},
        {"id": "d2", "task": "detect", "answer": json.dumps([box([10, 10, 60, 60])]),
         "image": str(tmp_path / "missing.png")},
        {"id": "d3", "task": "detect", "answer": json.dumps([box([20, 150, 80, 200], "plane")]),
         "image": _image(tmp_path / "d3.png", 60)},
    ]
    for r in recs:
        r.setdefault("image", _image(tmp_path / "c.png"))
        r.update(coordinate_size=224, question="?", split="test", meta=r.get("meta", {}))
    preds = {"c1": "ship", "c2": "It is a plane.", "c3": "plane", "c4": "no idea", "f1": "Tanker", "f2": "tanker",
             "d0": "None", "d1": json.dumps([box([130, 130, 190, 190])]), "d2": "None", "d3": "[{'bbox_2d': [1, 2"}
    return recs, preds


def test_confusion_counts_exactly(tmp_path):
    recs, preds = _records(tmp_path)
    labels, m = confusion_counts(recs, preds, "coarse")
    assert labels == ["plane", "ship"]
    # columns: plane, ship, (none); c5 has no prediction and is not counted
    assert m.tolist() == [[1, 0, 1], [1, 1, 0]] and m.dtype == np.int64
    labels, m = confusion_counts(recs, preds, "fine")
    assert labels == ["cargo", "fishing", "tanker"]
    assert m.tolist() == [[0, 0, 1, 0], [0, 0, 0, 0], [0, 0, 1, 0]]
    labels, m = confusion_counts(recs, preds, "other")
    assert labels == [] and m.shape == (0, 1)


def test_draw_boxes_pixels():
    img = Image.fromarray(np.full((224, 224), 128, np.uint8), "L")
    a = draw_boxes(img, [{"bbox_2d": [40, 40, 100, 100], "label": "ship"}],
                   [{"bbox_2d": [130, 130, 190, 190], "label": "ship"}], frame=224)
    assert a.shape == (224, 224, 3) and a.dtype == np.uint8
    px = lambda x, y: tuple(int(v) for v in a[y, x])
    # true outline: 4 px (twice the 2 px prediction outline at 224 px) drawn inward from the edge
    assert px(40, 70) == GREEN and px(43, 70) == GREEN and px(44, 70) == GREY and px(39, 70) == GREY
    assert px(70, 100) == GREEN and px(100, 40) == GREEN and px(70, 70) == GREY
    assert px(130, 160) == RED and px(131, 160) == RED and px(132, 160) == GREY and px(190, 190) == RED
    assert np.asarray(img).max() == 128  # the input is not drawn on

    # identical boxes: the prediction on top of the thicker truth, both colours visible
    a = draw_boxes(np.full((224, 224), 128, np.uint8), [[10, 10, 50, 50]], [[10, 10, 50, 50]])
    assert tuple(a[30, 10]) == RED and tuple(a[30, 12]) == GREEN and tuple(a[30, 14]) == GREY

    # frame scaling: a 224 frame box drawn on a 448 px image lands at twice the coordinates; 16-bit input is fine
    ramp = np.tile(np.linspace(0, 40000, 448).astype(np.uint16), (448, 1))
    a = draw_boxes(ramp, [[40, 40, 100, 100]], None, frame=[224, 224])
    assert tuple(a[140, 0]) == (0, 0, 0) and tuple(a[140, 447]) == (255, 255, 255)  # min-max scaled to 8 bits
    assert tuple(a[140, 80]) == GREEN and tuple(a[140, 87]) == GREEN and tuple(a[140, 88]) != GREEN
    assert tuple(a[140, 79]) != GREEN and tuple(a[140, 200]) == GREEN and tuple(a[140, 140]) != GREEN

    # boxes past the frame are clipped, boxes wholly outside are ignored; None (unparseable) draws nothing
    a = draw_boxes(img, [[-20, -20, 30, 30], [300, 300, 400, 400]], None, frame=224)
    assert tuple(a[10, 0]) == GREEN and (a == GREEN).all(-1).sum() > 0
    assert (a == RED).all(-1).sum() == 0


def test_example_panels_pick_truth_first_and_skip_missing_images(tmp_path):
    recs, preds = _records(tmp_path)
    picked = example_panels(recs, preds, 4)
    # d2's image is missing; d1 and d3 have true boxes so come before the empty d0
    assert [p[0]["id"] for p in picked] == ["d1", "d3", "d0"]
    assert picked[1][2] is None and picked[0][2] == [{"bbox_2d": [130, 130, 190, 190], "label": "ship"}]
    assert tuple(picked[0][3][70, 40]) == GREEN and tuple(picked[0][3][160, 130]) == RED
    assert [p[0]["id"] for p in example_panels(recs, preds, 1)] == ["d1"]


def test_format_value_and_verdict():
    assert format_value("acc", 0.8125, [0.77, 0.85]) == "0.812 [0.770, 0.850]"
    assert format_value("n", 40.0) == "40"
    assert format_value("missing", 1) == "1" and format_value("count/missing", 0.0) == "0"  # a count, not "1.000"
    assert format_value("missing", 2, signed=True) == "+2" and format_value("missing", float("nan")) == "n/a"
    assert format_value("cider", 1.234, None) == "1.234"
    assert format_value("acc", 0.05, [-0.01, 0.1], signed=True) == "+0.050 [-0.010, +0.100]"
    assert format_value("acc", -1e-17, [-0.0, 0.0002], signed=True) == "+0.000 [+0.000, +0.000]"
    assert format_value("acc", None) == "—" and format_value("acc", float("nan"), [0, 1]) == "n/a [0.000, 1.000]"
    assert verdict("acc", [0.01, 0.2]) == "better" and verdict("acc", [-0.2, -0.01]) == "worse"
    assert verdict("acc", [-0.1, 0.1]) == "no significant difference"
    assert verdict("acc", [0.0, 0.1]) == "no significant difference"
    assert verdict("mae", [-0.8, -0.2]) == "better" and verdict("mae", [0.2, 0.8]) == "worse"
    assert verdict("f1@0.5[ship]", [0.1, 0.3]) == "better" and verdict("acc", None) == "—"


def test_metrics_table_every_figure_and_missing_tasks():
    md = metrics_table(["full", "partial"], [METRICS, {"count": METRICS["count"]}], baseline=BASELINE)
    header = md.splitlines()[0]
    assert header == "| task | metric | full | partial | majority baseline |"
    cells = _cells(md)
    for task, metric, v, ci in _rows(METRICS):
        want = str(v) if metric == "n" else f"{v:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"
        assert cells[(task, metric)][0] == want
        assert cells[(task, metric)][1] == (want if task == "count" else "—")
    assert len(cells) == len(list(_rows(METRICS)))
    assert cells[("count", "acc")] == ["0.625 [0.500, 0.750]"] * 2 + ["0.350 [0.200, 0.500]"]
    assert cells[("classify", "acc[plane]")] == ["0.700 [0.400, 1.000]", "—", "—"]
    assert cells[("detect", "f1@0.5[ship]")] == ["0.550 [0.400, 0.700]", "—", "—"]
    assert cells[("caption", "cider")] == ["1.234 [0.980, 1.500]", "—", "—"]
    # task order is fixed, whatever the dict order
    assert list(dict.fromkeys(k[0] for k in cells)) == ["count", "locate", "classify", "detect", "caption"]
    assert "majority baseline" not in metrics_table(["a"], [METRICS])
    with pytest.raises(ValueError):
        metrics_table(["a", "b"], [METRICS])


def test_write_report(tmp_path):
    (tmp_path / "img").mkdir()
    recs, preds = _records(tmp_path / "img")
    notes = ["Counting beats the majority baseline.", "Detection is\nweak at IoU 0.5."]
    out = tmp_path / "rep"
    path = write_report(out, METRICS, title="Eval: tiny", records=recs, predictions=preds, baseline=BASELINE,
                        notes=notes)
    assert path == out / "report.md"
    md = path.read_text()
    assert md.startswith("# Eval: tiny\n")
    assert "- Counting beats the majority baseline.\n" in md and "- Detection is weak at IoU 0.5.\n" in md
    assert "| task | metric | value | majority baseline |" in md
    cells = _cells(md)
    for task, metric, v, ci in _rows(METRICS):
        want = str(v) if metric == "n" else f"{v:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"
        assert cells[(task, metric)][0] == want, (task, metric)
        assert f"| {task} | {metric} | {want} |" in md
    assert cells[("count", "mae")] == ["0.450 [0.300, 0.600]", "1.100 [0.800, 1.400]"]
    assert cells[("locate", "top1")] == ["0.700 [0.550, 0.825]", "—"]
    for name in ("bars.png", "confusion.png", "examples.png"):
        assert f"]({name})" in md
        _png(out / name)
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left

    # deterministic: a second report from the same inputs is byte-identical
    again = tmp_path / "again"
    write_report(again, METRICS, title="Eval: tiny", records=recs, predictions=preds, baseline=BASELINE, notes=notes)
    for name in ("report.md", "bars.png", "confusion.png", "examples.png"):
        assert (out / name).read_bytes() == (again / name).read_bytes(), name

    # rewritten without predictions or baseline: the stale figures go, nothing else breaks
    write_report(out, {"count": METRICS["count"]}, title="Only count")
    md = path.read_text()
    assert "majority baseline" not in md and "## Notes" not in md and "| count | acc | 0.625 [0.500, 0.750] |" in md
    assert sorted(p.name for p in out.iterdir()) == ["bars.png", "report.md"]
    write_report(out, {}, title="Nothing")
    assert "(no metrics)" in path.read_text() and not (out / "bars.png").exists()


def test_write_comparison_verdicts_and_missing_task(tmp_path):
    b = {k: v for k, v in METRICS.items() if k != "caption"}
    c = {"count": METRICS["count"], "locate": METRICS["locate"]}
    diff = lambda d, lo, hi: {"a": 0.5 + d, "b": 0.5, "diff": d, "diff_ci": [lo, hi]}
    paired_b = {"count": {"acc": diff(0.1, 0.05, 0.2), "mae": diff(-0.5, -0.8, -0.2)},
                "locate": {"acc100": diff(-0.2, -0.3, -0.1), "acc50": diff(0.02, -0.04, 0.08)},
                "detect": {"f1@0.5": diff(0.0, -0.1, 0.1)}}
    paired_c = {"count": {"acc": diff(-0.1, -0.2, -0.05), "mae": diff(0.3, 0.1, 0.5)}}
    path = write_comparison(tmp_path, ["base", "b", "c"], [METRICS, b, c], [paired_b, paired_c], title="Ablation",
                            baseline=BASELINE, notes=["b is better at counting."])
    assert path == tmp_path / "compare.md"
    md = path.read_text()
    assert md.startswith("# Ablation\n") and "- b is better at counting.\n" in md
    assert ("| task | metric | base | b | Δ b − base | verdict b | c | Δ c − base | verdict c | majority baseline |"
            in md)
    cells = _cells(md)
    assert cells[("count", "acc")] == ["0.625 [0.500, 0.750]", "0.625 [0.500, 0.750]", "+0.100 [+0.050, +0.200]",
                                       "better", "0.625 [0.500, 0.750]", "-0.100 [-0.200, -0.050]", "worse",
                                       "0.350 [0.200, 0.500]"]
    assert cells[("count", "mae")][2:4] == ["-0.500 [-0.800, -0.200]", "better"]
    assert cells[("count", "mae")][5:7] == ["+0.300 [+0.100, +0.500]", "worse"]
    assert cells[("locate", "acc100")][2:4] == ["-0.200 [-0.300, -0.100]", "worse"]
    assert cells[("locate", "acc50")][2:4] == ["+0.020 [-0.040, +0.080]", "no significant difference"]
    assert cells[("detect", "f1@0.5")][2:4] == ["+0.000 [-0.100, +0.100]", "no significant difference"]
    # c has no detect, b and c have no caption: their cells, differences and verdicts read —
    assert cells[("detect", "f1@0.5")][4:7] == ["—", "—", "—"]
    assert cells[("caption", "cider")] == ["1.234 [0.980, 1.500]"] + ["—"] * 7
    assert cells[("count", "n")] == ["40", "40", "—", "—", "40", "—", "—", "40"]
    assert "](compare.png)" in md
    _png(tmp_path / "compare.png")

    # paired may also hold one entry per run (None for the reference); a wrong length is an error
    same = write_comparison(tmp_path / "x", ["base", "b", "c"], [METRICS, b, c], [None, paired_b, paired_c],
                            title="Ablation", baseline=BASELINE, notes=["b is better at counting."]).read_text()
    assert same == md
    with pytest.raises(ValueError):
        write_comparison(tmp_path / "y", ["base", "b"], [METRICS, b], [paired_b, paired_c, None], title="t")


def test_undefined_figures_read_na():
    # scoring writes None (and a None interval) for a figure it cannot define, e.g. precision without predictions
    m = {"detect": {"n": 3, "f1@0.5": None, "f1@0.5_ci": None, "precision@0.5": None, "precision@0.5_ci": None,
                    "per_class": {"ship": {"f1@0.25": None, "f1@0.25_ci": None}}},
         "classify": {"n": 2, "acc": 0.5, "acc_ci": [0.0, 1.0], "per_class": {"ship": None},
                      "per_class_ci": {"ship": None}}}
    cells = _cells(metrics_table(["run"], [m]))
    assert cells[("detect", "f1@0.5")] == ["n/a"] and cells[("detect", "precision@0.5")] == ["n/a"]
    assert cells[("detect", "f1@0.25[ship]")] == ["n/a"] and cells[("classify", "acc[ship]")] == ["n/a"]
    assert cells[("classify", "acc")] == ["0.500 [0.000, 1.000]"]


def test_comparison_reads_run_minus_first_whichever_way_paired_was_called(tmp_path):
    first = {"count": {"n": 10, "acc": 0.5, "acc_ci": [0.2, 0.8], "mae": 1.0, "mae_ci": [0.5, 1.5]}}
    run = {"count": {"n": 10, "acc": 0.7, "acc_ci": [0.4, 0.9], "mae": 0.6, "mae_ci": [0.3, 0.9]}}
    forward = {"count": {"acc": {"n": 10, "a": 0.7, "b": 0.5, "diff": 0.2, "diff_ci": [0.1, 0.3]},
                         "mae": {"n": 10, "a": 0.6, "b": 1.0, "diff": -0.4, "diff_ci": [-0.7, 0.1]}}}
    backward = {"count": {"acc": {"n": 10, "a": 0.5, "b": 0.7, "diff": -0.2, "diff_ci": [-0.3, -0.1]},
                          "mae": {"n": 10, "a": 1.0, "b": 0.6, "diff": 0.4, "diff_ci": [-0.1, 0.7]}}}
    md = write_comparison(tmp_path / "f", ["first", "run"], [first, run], [forward], title="t").read_text()
    cells = _cells(md)
    assert cells[("count", "acc")][2:] == ["+0.200 [+0.100, +0.300]", "better"]
    assert cells[("count", "mae")][2:] == ["-0.400 [-0.700, +0.100]", "no significant difference"]
    assert write_comparison(tmp_path / "b", ["first", "run"], [first, run], [backward], title="t").read_text() == md
