"""Scoring: every metric on fixed strings worked out by hand, bootstrap intervals, paired differences, baseline."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fusar_gpt.scoring import (
    iou,
    lcs,
    majority_predictions,
    paired,
    per_record,
    read_predictions,
    score,
    tokens,
)


def rec(rid, task, answer, **meta):
    return {"id": rid, "task": task, "answer": answer, "meta": meta, "question": "q", "image": "x.png",
            "aef": None, "coordinate_size": 224, "split": "test"}


def boxes(*items):
    return json.dumps([{"bbox_2d": list(b), "label": lab} for b, lab in items])


def approx(x):
    return pytest.approx(x, abs=1e-12)


# ---------------------------------------------------------------- count
COUNT = [rec("c1", "count", "3", **{"class": "ship"}), rec("c2", "count", "3", **{"class": "ship"}),
         rec("c3", "count", "2", **{"class": "ship"}), rec("c4", "count", "0", **{"class": "plane"}),
         rec("c5", "count", "4", **{"class": "ship"}), rec("c6", "count", "1", **{"class": "plane"})]
COUNT_PRED = {"c1": "3", "c2": "There are four ships.", "c3": "five", "c4": "No planes.", "c5": "many"}  # c6 missing


def test_count_exact_within1_mae():
    rows = per_record(COUNT, COUNT_PRED)["count"]
    assert [r["pred"] for r in rows] == [3, 4, 5, 0, None, None]
    assert [r["correct"] for r in rows] == [True, False, False, True, False, False]
    assert [r["within1"] for r in rows] == [True, True, False, True, False, False]
    s = score(COUNT, COUNT_PRED, n_boot=200)["count"]
    assert s["n"] == 6
    assert s["acc"] == approx(2 / 6)  # c1, c4 (number word "No planes." = 0)
    assert s["acc_within1"] == approx(3 / 6)  # + c2 (four vs 3); unparseable c5 and missing c6 are wrong
    assert s["mae"] == approx((0 + 1 + 3 + 0) / 4)  # over the 4 parseable answers only
    assert s["mae_ci"][0] <= s["mae"] <= s["mae_ci"][1]


def test_count_without_any_parseable_answer_has_no_mae():
    s = score(COUNT[:2], {"c1": "lots"}, n_boot=50)["count"]
    assert s["acc"] == 0 and s["acc_within1"] == 0 and s["mae"] is None and s["mae_ci"] is None


# ---------------------------------------------------------------- locate
LOCATE = [rec("l1", "locate", "None"), rec("l2", "locate", "None"), rec("l3", "locate", "top-left, center"),
          rec("l4", "locate", "top"), rec("l5", "locate", "top"), rec("l6", "locate", "center"),
          rec("l7", "locate", "None")]
LOCATE_PRED = {"l1": "None", "l2": "top", "l3": "The center and the upper left.", "l4": "top, left",
               "l5": "left, right and top", "l6": "bananas"}  # l7 missing


def test_locate_figures_case_by_case():
    rows = per_record(LOCATE, LOCATE_PRED)["locate"]
    assert [r["pred"] for r in rows] == [[], ["top"], ["top-left", "center"], ["top", "left"],
                                         ["top", "left", "right"], None, None]
    assert [r["first"] for r in rows] == [None, "top", "center", "top", "left", None, None]  # order of mention
    # l1: G and P empty -> 1/1/1. l2: G empty, P not -> 0/0/0. l3: exact set, first "center" in G -> 1/1/1.
    # l4: |P&G|/|P|G| = 1/2, exactly 0.5 -> acc50 1, not exact, first "top" in G -> 0/1/1.
    # l5: 1/3 < 0.5 -> 0; first mentioned "left" not in G (canonical order would start at "top") -> 0/0/0.
    # l6 unparseable, l7 missing: wrong on all three even though l7's truth is empty.
    assert [(r["acc100"], r["acc50"], r["top1"]) for r in rows] == [
        (1, 1, 1), (0, 0, 0), (1, 1, 1), (0, 1, 1), (0, 0, 0), (0, 0, 0), (0, 0, 0)]
    s = score(LOCATE, LOCATE_PRED, n_boot=100)["locate"]
    assert (s["n"], s["acc100"], s["acc50"], s["top1"]) == (7, approx(2 / 7), approx(3 / 7), approx(3 / 7))


def test_locate_empty_answer_text_means_none():
    s = score([rec("a", "locate", "None"), rec("b", "locate", "left")], {"a": "", "b": ""}, n_boot=10)["locate"]
    assert (s["acc100"], s["acc50"], s["top1"]) == (0.5, 0.5, 0.5)


# ---------------------------------------------------------------- classify
FINE = ["cargo", "fishing", "tanker"]
CLASSIFY = [rec("k1", "classify", "ship", level="coarse", choices=["ship", "plane"], **{"class": "ship"}),
            rec("k2", "classify", "plane", level="coarse", choices=["ship", "plane"], **{"class": "plane"}),
            rec("k3", "classify", "cargo", level="fine", choices=FINE, **{"class": "ship"}),
            rec("k4", "classify", "tanker", level="fine", choices=FINE, **{"class": "ship"}),
            rec("k5", "classify", "tanker", level="fine", choices=FINE, **{"class": "ship"}),
            rec("k6", "classify", "ship", level="coarse", choices=["ship", "plane"], **{"class": "ship"})]
CLASSIFY_PRED = {"k1": "It is a ship.", "k2": "ship", "k3": "This looks like a Cargo vessel.",
                 "k4": "a submarine", "k5": "TANKER.", "k6": "tanker"}  # k6: a label, but not among the choices


def test_classify_overall_and_per_true_class():
    rows = per_record(CLASSIFY, CLASSIFY_PRED)["classify"]
    assert [(r["true"], r["pred"]) for r in rows] == [("ship", "ship"), ("plane", "ship"), ("cargo", "cargo"),
                                                      ("tanker", None), ("tanker", "tanker"), ("ship", None)]
    s = score(CLASSIFY, CLASSIFY_PRED, n_boot=100)["classify"]
    assert s["n"] == 6 and s["acc"] == approx(3 / 6)
    assert s["per_class"] == {"cargo": 1.0, "plane": 0.0, "ship": 0.5, "tanker": 0.5}
    assert set(s["per_class_ci"]) == set(s["per_class"]) and s["per_class_ci"]["plane"] == [0.0, 0.0]


def test_classify_choices_fall_back_to_truth_labels_of_the_level():
    recs = [rec("a", "classify", "ship", level="coarse"), rec("b", "classify", "plane", level="coarse")]
    rows = per_record(recs, {"a": "Surely a plane, not a ship", "b": "PLANE"})["classify"]
    assert [r["pred"] for r in rows] == ["plane", "plane"]


def test_classify_truth_outside_choices_is_an_error():
    with pytest.raises(ValueError, match="'k9'"):
        score([rec("k9", "classify", "boat", level="coarse", choices=["ship", "plane"])], {})


def test_landcover_scores_like_classify_over_the_dynamic_world_words():
    recs = [rec("l1", "landcover", "water"), rec("l2", "landcover", "crops"), rec("l3", "landcover", "grass"),
            rec("l4", "landcover", "shrub and scrub")]
    preds = {"l1": "Mostly water.", "l2": "grass", "l3": "Grass, with some crops", "l4": "shrub_and_scrub"}
    rows = per_record(recs, preds)["landcover"]
    assert [r["pred"] for r in rows] == ["water", "grass", "grass", "shrub and scrub"]
    s = score(recs, preds, n_boot=50)["landcover"]
    assert s["n"] == 4 and s["acc"] == approx(3 / 4)
    assert s["per_class"] == {"crops": 0.0, "grass": 1.0, "shrub and scrub": 1.0, "water": 1.0}
    assert majority_predictions(recs[:3] + [rec("l5", "landcover", "water")], recs[:1]) == {"l1": "water"}
    with pytest.raises(ValueError, match="'l9'"):
        score([rec("l9", "landcover", "lava")], {})


# ---------------------------------------------------------------- detect
# Worked by hand. Truth (asked class ship): A = [0,0,10,10], B = [50,50,70,70], C = [226,226,246,246] (wholly
# outside the 224 frame). Predictions: p1 = A exactly (IoU 1); p2 = A again (duplicate); p3 = [50,50,70,58] with
# an empty label (-> ship): IoU with B = 20*8 / 400 = 0.4; p4 = [228,228,248,248]: IoU with C =
# 18*18 / (400 + 400 - 324) = 324/476 = 0.68 (raw coordinates; clipped to the frame both would be empty).
#   t = 0.25: TP 3 (A, B, C), FP 1 (p2), FN 0 -> P 3/4, R 1,   F1 = 2*3/(2*3 + 1 + 0) = 6/7
#   t = 0.5:  TP 2 (A, C),    FP 2 (p2, p3), FN 1 (B) -> P 1/2, R 2/3, F1 = 2*2/(4 + 2 + 1) = 4/7
# d2: truth None, answer "None" -> nothing. d3 (plane): one true box, unparseable answer -> FN 1 at both t.
#   all, t = 0.25: TP 3, FP 1, FN 1 -> F1 6/8; t = 0.5: TP 2, FP 2, FN 2 -> P 1/2, R 1/2, F1 4/8.
DETECT = [rec("d1", "detect", boxes(((0, 0, 10, 10), "ship"), ((50, 50, 70, 70), "ship"),
                                    ((226, 226, 246, 246), "ship")), **{"class": "ship"}),
          rec("d2", "detect", "None", **{"class": "ship"}),
          rec("d3", "detect", boxes(((100, 100, 140, 120), "plane")), **{"class": "plane"})]
DETECT_PRED = {
    "d1": 'Here you go:\n```json\n[{"bbox_2d": [0, 0, 10, 10], "label": "ship"},\n'
          ' {"bbox_2d": [0, 0, 10, 10], "label": "ship"},\n {"bbox_2d": [50, 50, 70, 58], "label": ""},\n'
          ' {"bbox_2d": [228, 228, 248, 248], "label": "Ship"}]\n```',
    "d2": "None", "d3": "I cannot see [1, 2, 3"}


def test_iou_raw_and_degenerate():
    assert iou([50, 50, 70, 58], [50, 50, 70, 70]) == approx(0.4)
    assert iou([228, 228, 248, 248], [226, 226, 246, 246]) == approx(324 / 476)
    assert iou([5, 5, 5, 10], [5, 5, 5, 10]) == 0.0 and iou([0, 0, 10, 10], [10, 0, 20, 10]) == 0.0


def test_detect_hand_worked_case():
    rows = {r["id"]: r for r in per_record(DETECT, DETECT_PRED)["detect"]}
    assert (rows["d1"]["tp@0.25"], rows["d1"]["fp@0.25"], rows["d1"]["fn@0.25"]) == (3, 1, 0)
    assert (rows["d1"]["tp@0.5"], rows["d1"]["fp@0.5"], rows["d1"]["fn@0.5"]) == (2, 2, 1)
    assert [rows["d2"][k] for k in ("tp@0.5", "fp@0.5", "fn@0.5", "tp@0.25", "fp@0.25", "fn@0.25")] == [0] * 6
    assert (rows["d3"]["n_pred"], rows["d3"]["tp@0.25"], rows["d3"]["fn@0.25"], rows["d3"]["fn@0.5"]) == (0, 0, 1, 1)
    s = score(DETECT, DETECT_PRED, n_boot=200)["detect"]
    assert s["n"] == 3
    assert s["f1@0.25"] == approx(6 / 8) and s["f1@0.5"] == approx(4 / 8)
    assert s["precision@0.5"] == approx(1 / 2) and s["recall@0.5"] == approx(1 / 2)
    ship, plane = s["per_class"]["ship"], s["per_class"]["plane"]
    assert ship["f1@0.25"] == approx(6 / 7) and ship["f1@0.5"] == approx(4 / 7)
    assert plane["f1@0.25"] == 0.0 and plane["f1@0.5"] == 0.0 and plane["f1@0.5_ci"] == [0.0, 0.0]
    only_d1 = score(DETECT[:1], DETECT_PRED, n_boot=10)["detect"]
    assert only_d1["precision@0.5"] == approx(1 / 2) and only_d1["recall@0.5"] == approx(2 / 3)


def test_detect_labels_must_agree_and_empty_label_takes_the_asked_class():
    truth = [rec("p", "detect", boxes(((0, 0, 20, 20), "plane")), **{"class": "plane"})]
    got = lambda text: per_record(truth, {"p": text})["detect"][0]["tp@0.5"]
    assert got('[{"bbox_2d": [0, 0, 20, 20], "label": "ship"}]') == 0  # wrong label: an FP and an FN
    assert got('[{"bbox_2d": [0, 0, 20, 20], "label": ""}]') == 1
    assert got("[0, 0, 20, 20]") == 1  # a bare list has label "" too


def test_detect_undefined_ratios():
    empty = [rec("n", "detect", "None", **{"class": "ship"})]
    s = score(empty, {"n": "no ships"}, n_boot=20)["detect"]  # nothing to find, nothing claimed: no errors
    assert (s["f1@0.5"], s["precision@0.5"], s["recall@0.5"]) == (1.0, 1.0, 1.0)
    s = score(empty, {"n": "[3, 3, 9, 9]"}, n_boot=20)["detect"]  # one false positive, no truths
    assert (s["f1@0.5"], s["precision@0.5"], s["recall@0.5"]) == (0.0, 0.0, 0.0)
    s = score(DETECT[2:], {}, n_boot=20)["detect"]  # missing answer: no boxes -> a miss
    assert (s["f1@0.25"], s["precision@0.5"], s["recall@0.5"]) == (0.0, 0.0, 0.0)


# ---------------------------------------------------------------- caption
def test_tokens_lowercase_words_and_numbers():
    assert tokens("The 3.5 km, built-up area (35%)!") == ["the", "3.5", "km", "built", "up", "area", "35"]


def cap(pairs):
    recs = [rec(f"t{i}", "caption", ref) for i, (ref, _) in enumerate(pairs)]
    return score(recs, {f"t{i}": hyp for i, (_, hyp) in enumerate(pairs) if hyp is not None}, n_boot=50)["caption"]


REF1 = "A large ship is in the top left of the image."
REF2 = "Two planes are parked near the runway at the bottom."


def test_caption_identical_and_disjoint():
    s = cap([(REF1, REF1), (REF2, REF2.upper())])
    # identical: every n-gram precision 1 and no brevity penalty; LCS = both lengths; each CIDEr-D n-gram cosine is
    # 1 (both sentences have n-grams the other lacks, so their idf is not 0) -> 10 * mean(1, 1, 1, 1) = 10.
    assert s["bleu4"] == approx(1.0) and s["rougeL"] == approx(1.0) and s["cider"] == approx(10.0)
    s = cap([(REF1, "green fields under clear skies"), (REF2, None)])
    assert (s["bleu4"], s["rougeL"], s["cider"]) == (0.0, 0.0, 0.0)
    s = cap([(REF1, REF1), (REF2, None)])  # CIDEr is a mean over records: (10 + 0) / 2
    assert s["cider"] == approx(5.0) and s["rougeL"] == approx(0.5)
    assert cap([(REF1, REF1)])["cider"] == 0.0  # one record: every n-gram is in every reference, idf 0


def test_caption_bleu_and_rouge_by_hand():
    # 11 tokens each, one word changed: n-gram precisions 10/11, 8/10, 6/9, 4/8; no brevity penalty;
    # LCS 10 -> P = R = 10/11 and ROUGE-L F = 10/11.
    s = cap([("a large ship is in the top left of the image", "A large ship is NEAR the top-left of the image!")])
    assert s["bleu4"] == approx((10 / 11 * 8 / 10 * 6 / 9 * 4 / 8) ** 0.25)
    assert s["rougeL"] == approx(10 / 11)
    # a 6-token prefix of a 7-token reference: all precisions 1, brevity penalty exp(1 - 7/6);
    # ROUGE-L with P = 1, R = 6/7, beta 1.2: (1 + 1.44) P R / (R + 1.44 P).
    s = cap([("the ship is in the top left", "the ship is in the top")])
    assert s["bleu4"] == approx(math.exp(1 - 7 / 6))
    assert s["rougeL"] == approx(2.44 * (6 / 7) / (6 / 7 + 1.44))
    # corpus-level BLEU pools the counts: 3-token hypotheses have no 4-grams, the 5-token one has 2 (both right).
    s = cap([("one two three four five", "one two three four five"), ("six seven eight nine", "six seven eight")])
    assert s["bleu4"] == approx(math.exp(1 - 9 / 8))


def test_caption_clipped_counts_and_cider_by_hand():
    row = per_record([rec("r", "caption", "the ship is here")], {"r": "the the the ship is"})["caption"][0]
    assert row["matches"] == [3, 2, 1, 0] and row["totals"] == [5, 4, 3, 2]  # "the" x3 clipped to the 1 in the ref
    # CIDEr-D on two records; idf = ln 2 - ln df, so "a" (in both references) weighs 0 and every other n-gram L.
    # Record 1, hypothesis "a b c d d" (5 words) vs reference "a b c d" (4):
    #   n=1: ref (b, c, d) = L each, norm L*sqrt(3); hyp d has tf 2 -> 2L, norm L*sqrt(6);
    #        clipped dot = L^2 + L^2 + min(2L, L) L = 3 L^2 -> 3 / sqrt(18) = 1/sqrt(2)
    #   n=2: ref ab, bc, cd; hyp + dd (df 0 counts as 1) -> 3 / (sqrt(3) * 2) = sqrt(3)/2
    #   n=3: 2 / (sqrt(2) sqrt(3));  n=4: 1 / sqrt(2);  length penalty exp(-(5 - 4)^2 / (2 * 6^2)).
    # Record 2 is its own reference: 10. CIDEr = mean of the two.
    first = 10 * math.exp(-1 / 72) * (1 / math.sqrt(2) + math.sqrt(3) / 2 + 2 / math.sqrt(6) + 1 / math.sqrt(2)) / 4
    s = cap([("a b c d", "a b c d d"), ("a e f g", "a e f g")])
    assert s["cider"] == approx((first + 10) / 2)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from("abcd"), max_size=12), st.lists(st.sampled_from("abcd"), max_size=12))
def test_lcs_matches_dynamic_programming(a, b):
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            table[i + 1][j + 1] = table[i][j] + 1 if x == y else max(table[i][j + 1], table[i + 1][j])
    assert lcs(a, b) == table[-1][-1]


# ---------------------------------------------------------------- truths, ids
@pytest.mark.parametrize("bad", [rec("x1", "count", "three"), rec("x1", "locate", "center, top"),
                                 rec("x1", "detect", "[{'bbox_2d': [0, 0, 1, 1]}]"), rec("x1", "caption", "...")])
def test_truth_that_does_not_parse_names_the_record(bad):
    with pytest.raises(ValueError, match="'x1'"):
        score([bad], {})


def test_unknown_task_and_duplicate_record_ids():
    with pytest.raises(ValueError, match="task"):
        score([rec("a", "vqa", "x")], {})
    with pytest.raises(ValueError, match="twice"):
        score([rec("a", "count", "1"), rec("a", "count", "2")], {})


# ---------------------------------------------------------------- bootstrap
def mixed(n, seed=0):
    """n records per task with predictions right about 2/3 of the time (deterministic)."""
    recs, preds = [], {}
    for i in range(n):
        ok = (i * 7 + seed) % 3 != 0
        c = "ship" if i % 2 else "plane"
        recs += [rec(f"c{i}", "count", str(i % 5), **{"class": c}), rec(f"l{i}", "locate", "top, center"),
                 rec(f"k{i}", "classify", c, level="coarse", choices=["ship", "plane"], **{"class": c}),
                 rec(f"d{i}", "detect", boxes(((10, 10, 50, 50), c)), **{"class": c}),
                 rec(f"t{i}", "caption", f"there are {i % 5} {c}s near the {'top' if i % 3 else 'bottom'} of it")]
        preds.update({f"c{i}": str(i % 5 + (0 if ok else 2)), f"l{i}": "center, top" if ok else "left",
                      f"k{i}": c if ok else "unsure", f"d{i}": boxes(((12, 10, 50, 52), c)) if ok else "None",
                      f"t{i}": f"there are {i % 5} {c}s near the top" if ok else "nothing to say"})
    return recs, preds


def figures(s):
    for task, d in s.items():
        for k, v in d.items():
            if k.endswith("_ci") and k != "per_class_ci":
                yield task, k[:-3], d[k[:-3]], v
        for label, v in d.get("per_class", {}).items():
            if isinstance(v, dict):
                yield from ((task, f"{label} {k}", v[k], v[f"{k}_ci"]) for k in v if not k.endswith("_ci"))
            else:
                yield task, label, v, d["per_class_ci"][label]


def test_intervals_contain_the_point_and_fractions_are_fractions():
    s = score(*mixed(60), n_boot=500)
    assert list(s) == ["caption", "count", "locate", "classify", "detect"]
    found = list(figures(s))
    assert len(found) == 3 + 3 + 3 + (1 + 2) + (4 + 2 * 2)  # caption, count, locate, classify, detect
    for task, name, point, (lo, hi) in found:
        assert lo <= point <= hi, (task, name)
        if name not in ("mae", "cider"):
            assert 0 <= lo <= hi <= 1, (task, name)
    assert 0 < s["caption"]["cider"] <= 10 and s["count"]["mae"] == approx(2 * 20 / 60)


def test_intervals_shrink_with_more_records_and_are_deterministic():
    small, large = score(*mixed(30), n_boot=400), score(*mixed(600), n_boot=400)
    for (task, name, _, ci_s), (_, _, _, ci_l) in zip(figures(small), figures(large)):
        if ci_s[1] > ci_s[0]:
            assert ci_l[1] - ci_l[0] < ci_s[1] - ci_s[0], (task, name)
    recs, preds = mixed(40)
    assert score(recs, preds, n_boot=300, seed=3) == score(recs, preds, n_boot=300, seed=3)
    assert score(recs, preds, n_boot=300, seed=3) != score(recs, preds, n_boot=300, seed=4)


def test_interval_is_the_95_percent_one_and_tasks_resample_independently():
    recs = [rec(f"k{i}", "classify", "ship", level="coarse", choices=["ship", "plane"]) for i in range(100)]
    preds = {f"k{i}": "ship" if i % 2 else "plane" for i in range(100)}
    lo, hi = score(recs, preds, n_boot=2000)["classify"]["acc_ci"]
    assert 0.17 < hi - lo < 0.23  # 2 * 1.96 * sqrt(0.5 * 0.5 / 100) = 0.196 (an 80% interval would be 0.128)
    more = recs + [rec("c0", "count", "1"), rec("c1", "count", "2")]
    assert score(more, preds, n_boot=300)["classify"] == score(recs, preds, n_boot=300)["classify"]


def test_bad_bootstrap_arguments():
    with pytest.raises(ValueError, match="n_boot"):
        score(COUNT, COUNT_PRED, n_boot=0)


# ---------------------------------------------------------------- paired
def test_paired_identical_runs_differ_by_exactly_zero():
    recs, preds = mixed(50)
    p = paired(recs, preds, dict(preds), n_boot=300)
    assert set(p) == {"caption", "count", "locate", "classify", "detect"}
    assert set(p["detect"]) == {"f1@0.25", "f1@0.5", "precision@0.5", "recall@0.5"}
    for task, figs in p.items():
        for name, d in figs.items():
            assert d["diff"] == 0 and d["diff_ci"] == [0.0, 0.0] and d["a"] == d["b"], (task, name)
            assert d["n"] == 50 and d["a"] == score(recs, preds, n_boot=10)[task][name]


def test_paired_run_better_on_every_record_has_a_positive_interval():
    recs, worse = mixed(80)
    _, better = mixed(80, seed=1)
    for i in range(80):  # "better": right wherever "worse" is right, and on more records
        if (i * 7) % 3 != 0:
            for t in "clkdt":
                better[f"{t}{i}"] = worse[f"{t}{i}"]
    p = paired(recs, better, worse, n_boot=500)
    for task, name in [("count", "acc"), ("locate", "acc100"), ("locate", "top1"), ("classify", "acc"),
                       ("detect", "f1@0.5"), ("caption", "rougeL"), ("caption", "cider"), ("caption", "bleu4")]:
        d = p[task][name]
        assert d["diff"] == approx(d["a"] - d["b"]) and d["diff"] > 0 and d["diff_ci"][0] > 0, (task, name)
    assert p["count"]["mae"]["diff_ci"][1] < 0  # fewer errors -> lower MAE: a - b is negative
    swapped = paired(recs, worse, better, n_boot=500)
    assert swapped["classify"]["acc"]["diff_ci"] == [-x for x in p["classify"]["acc"]["diff_ci"][::-1]]


# ---------------------------------------------------------------- majority baseline
def test_majority_baseline_per_task_and_class():
    train = [rec("a1", "count", "2", **{"class": "ship"}), rec("a2", "count", "2", **{"class": "ship"}),
             rec("a3", "count", "3", **{"class": "ship"}), rec("a4", "count", "1", **{"class": "plane"}),
             rec("a5", "count", "0", **{"class": "plane"}), rec("a6", "count", "21", **{"class": "boat"}),
             rec("a7", "count", "12", **{"class": "boat"}),
             rec("b1", "classify", "ship", level="coarse", **{"class": "ship"}),
             rec("b2", "classify", "ship", level="coarse", **{"class": "ship"}),
             rec("b3", "classify", "plane", level="coarse", **{"class": "plane"}),
             rec("b4", "classify", "tanker", level="fine", **{"class": "ship"}),
             rec("b5", "classify", "tanker", level="fine", **{"class": "ship"}),
             rec("b6", "classify", "cargo", level="fine", **{"class": "ship"})]
    test = [rec("x1", "count", "5", **{"class": "ship"}), rec("x2", "count", "5", **{"class": "plane"}),
            rec("x3", "count", "5", **{"class": "tank"}), rec("x4", "count", "5", **{"class": "boat"}),
            rec("y1", "classify", "plane", level="coarse", **{"class": "plane"}),
            rec("y2", "classify", "cargo", level="fine", **{"class": "ship"}),
            rec("y3", "classify", "f16", level="fine", **{"class": "plane"}),
            rec("z1", "caption", "a scene")]
    got = majority_predictions(train, test)
    assert majority_predictions(train[::-1], test) == got
    assert got == {"x1": "2",  # ship counts 2, 2, 3
                   "x2": "0",  # plane counts tie 1 : 1 -> the smallest answer
                   "x3": "2",  # unseen class -> task-level: 2 x2 beats 3, 1, 0, 21, 12
                   "x4": "12",  # tie 21 : 12 -> the smallest string
                   "y1": "ship",  # coarse: by level only (the class is the answer), ship 2 : plane 1
                   "y2": "tanker",  # fine ship subtypes: tanker 2 : cargo 1
                   "y3": "ship",  # no fine plane in train -> task-level: ship 2, tanker 2 tie -> "ship"
                   "z1": ""}  # no caption in train


# ---------------------------------------------------------------- prediction files
def write(tmp_path, lines):
    path = tmp_path / "pred.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_read_predictions(tmp_path):
    path = write(tmp_path, ['{"id": "a", "answer": "3"}', "", '{"id": 7, "answer": "None", "extra": 1}'])
    assert read_predictions(path) == {"a": "3", "7": "None"}


@pytest.mark.parametrize("lines, line, what", [
    (['{"id": "a", "answer": "3"}', '{"id": "b", "answer": '], 2, "not valid JSON"),
    (['{"answer": "3"}'], 1, "'id'"),
    (['{"id": "a", "answer": 3}'], 1, "'answer'"),
    (['["a", "3"]'], 1, "JSON object"),
    (['{"id": "a", "answer": "3"}', '{"id": "b", "answer": "1"}', '{"id": "a", "answer": "4"}'], 3, "duplicate"),
])
def test_read_predictions_errors_name_file_and_line(tmp_path, lines, line, what):
    path = write(tmp_path, lines)
    with pytest.raises(ValueError) as err:
        read_predictions(path)
    msg = str(err.value)
    assert msg.startswith(f"{path} line {line}:") and what in msg and "\n" not in msg
    if what == "duplicate":
        assert "line 1" in msg
    with pytest.raises(ValueError, match="cannot read"):
        read_predictions(tmp_path / "missing.jsonl")


def test_terrain_words_are_whole_class_names():
    from fusar_gpt.scoring import terrain_words

    text = "The terrain is about 60% water, 30% shrub and scrub, with small amounts of built-up areas and treeslike."
    assert terrain_words(text) == {"water", "shrub and scrub", "built"}
    assert terrain_words("A ship at sea.") == set() and terrain_words(None) == set()


def test_paired_values_interval_by_hand():
    from fusar_gpt.scoring import paired_values

    d = paired_values([1, 1, 1, 0], [0, 0, 1, 0], n_boot=400)
    assert (d["n"], d["a"], d["b"], d["diff"]) == (4, 0.75, 0.25, 0.5)
    lo, hi = d["diff_ci"]
    assert 0 <= lo <= 0.5 <= hi <= 1
    same = paired_values([0.3, 0.7], [0.3, 0.7], n_boot=50)
    assert same["diff"] == 0 and same["diff_ci"] == [0.0, 0.0]
    with pytest.raises(ValueError, match="equal-length"):
        paired_values([1, 2], [1])
