"""The fusar-gpt command line: only working commands, examples in --help, exit 2 on bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fusar_gpt.__main__ import COMMANDS, main
from fusar_gpt.model.checkpoint import load_tlm
from fusar_gpt.model.official import export_official
from fusar_gpt.model.tlm import TLM


def test_help_lists_exactly_the_working_commands(capsys):
    main([])
    listed = capsys.readouterr().out
    for name in COMMANDS:
        assert name in listed
        with pytest.raises(SystemExit) as exit_info:
            main([name, "--help"])
        assert exit_info.value.code == 0
        assert "examples:" in capsys.readouterr().out
    assert set(COMMANDS) == {"demo", "synth", "build", "train", "eval", "score", "compare", "aef", "import-official",
                             "ask", "detect-scene", "serve", "export", "chip-spec"}


def test_console_script_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "fusar_gpt", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("fusar-gpt ")


def test_import_official_command(tmp_path, capsys):
    export_official(TLM(24, sigma=2.0), tmp_path / "src")
    assert main(["import-official", str(tmp_path / "src"), "--out", str(tmp_path / "run"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["hidden_size"] == 24 and info["adapter"] is False
    assert load_tlm(tmp_path / "run").missing == "identity"
    from fusar_gpt.chip import ChipSpec, read_spec

    # the authors' inputs: their 504 frame, colour PNGs kept as they are
    assert read_spec(tmp_path / "run") == ChipSpec(frame=504, eight_bit="rgb")
    assert main(["import-official", str(tmp_path / "src"), "--out", str(tmp_path / "r224"), "--frame", "224"]) == 0
    assert read_spec(tmp_path / "r224").frame == 224
    assert main(["import-official", str(tmp_path / "src"), "--out", str(tmp_path / "bad"), "--frame", "500"]) == 2
    assert "multiple of 28" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_bad_input_exits_2_with_one_line(tmp_path, capsys):
    assert main(["import-official", str(tmp_path / "nope"), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fusar-gpt import-official: error:") and "\n" not in err


def test_quick_demo_runs_the_whole_pipeline(quick_demo):
    out, summary = quick_demo
    lines = (out / "dataset" / "manifest.jsonl").read_text().splitlines()
    evaluated = set(summary["settings"]["eval_tasks"])
    assert evaluated == {"count", "locate", "classify", "landcover", "detect", "caption"}
    n_test = sum(json.loads(ln)["split"] == "test" and json.loads(ln)["task"] in evaluated for ln in lines)
    assert "majority baseline" in summary["table"] and "fusar-gpt" in summary["table"]
    assert summary["findings"] and all(isinstance(f, str) for f in summary["findings"])
    assert any("majority-answer baseline" in f for f in summary["findings"])
    assert set(summary["vs_majority"]) == {"fusar-gpt", "no-aef"} == set(summary["per_class"])
    assert summary["vs_no_aef"] and all(set(d) == {"n", "a", "b", "diff", "diff_ci"} and len(d["diff_ci"]) == 2
                                        for d in summary["vs_no_aef"].values())
    assert all(" " in k for k in summary["vs_no_aef"])  # "task metric" keys, as vs_majority's
    # stage I reported apart: its training, and for FUSAR-GPT its answers with and without the anchors
    assert set(summary["stage1"]) == {"fusar-gpt", "no-aef"} and all("train" in v for v in summary["stage1"].values())
    taught = summary["stage1"]["fusar-gpt"]["with_vs_without_anchors"]
    assert all(set(d) == {"n", "a", "b", "diff", "diff_ci"} for d in taught.values())
    # stage 0 trained the whole backbone; both models start from its standalone model directory
    assert (out / "stage0" / "model" / "config.json").exists()
    for name in ("fusar-gpt", "no-aef"):
        cfg = (out / name / "stage1" / "config.yaml").read_text()
        assert str((out / "stage0" / "model").resolve()) in cfg
        for stage in ("stage1", "stage2"):
            assert (out / name / stage / "tlm.json").exists() and (out / name / stage / "log.jsonl").exists()
        ev = out / name / "eval"
        assert (ev / "predictions.jsonl").exists() and (ev / "report.md").exists() and (ev / "bars.png").exists()
        metrics = json.loads((ev / "metrics.json").read_text())
        assert metrics["n"] == min(24, n_test) > 0 and metrics["majority_baseline"]
    compare = Path(summary["report"]).read_text()
    assert "no-aef" in compare and "Δ" in compare and (out / "compare" / "compare.png").exists()
    assert json.loads((out / "no-aef" / "stage1" / "tlm.json").read_text())["fusion"] == "none"


def test_aef_use_answers_again_without_the_anchors(quick_demo):
    from fusar_gpt.data.dataset import load_manifest
    from fusar_gpt.demo_aef import aef_use
    from fusar_gpt.evaluate import predict
    from fusar_gpt.model.loader import load_model

    out, summary = quick_demo
    assert summary["aef_use"] is None or summary["aef_use"]["changed"] <= summary["aef_use"]["n"]
    run = out / "fusar-gpt" / "stage2"
    records = [r for r in load_manifest(out / "dataset" / "manifest.jsonl", tasks=["classify"]) if r["aef"]][:6]
    assert records
    model, _ = load_model(run)
    bare = predict(model, [dict(r, aef=None) for r in records], batch_size=8, progress=False)
    # answers equal to the anchor-free ones: nothing changed, and the note says the SAR alone decides
    lines, fig = aef_use(run, records, bare, batch_size=8, n_boot=50)
    by = fig["by_task"]["classify"]
    assert fig["n"] == len(records) and fig["changed"] == 0 and by["acc_with"] == by["acc_without"]
    assert "SAR image alone" in lines[0]
    # every answer different from the anchor-free one: all changed
    lines, fig = aef_use(run, records, {str(r["id"]): "no such class" for r in records}, batch_size=8, n_boot=50)
    assert fig["changed"] == len(records) == fig["by_task"]["classify"]["changed"]
    assert fig["by_task"]["classify"]["acc_with"] == 0 and "SAR image alone" not in lines[0]


def test_score_and_compare_commands_on_the_demo_runs(quick_demo, tmp_path, capsys):
    out, _ = quick_demo
    manifest = out / "dataset" / "manifest.jsonl"
    truth = [json.loads(ln) for ln in manifest.read_text().splitlines()]
    test = [r for r in truth if r["split"] == "test"]
    perfect = tmp_path / "perfect.jsonl"
    perfect.write_text("".join(json.dumps({"id": r["id"], "answer": r["answer"]}) + "\n" for r in test))
    assert main(["score", "--predictions", str(perfect), "--manifest", str(out / "dataset"), "--split", "test",
                 "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert set(metrics) == {r["task"] for r in test}
    assert metrics["count"]["acc"] == 1.0 and metrics["locate"]["acc100"] == 1.0 and metrics["classify"]["acc"] == 1.0
    assert metrics["detect"]["f1@0.5"] == 1.0 and metrics["caption"]["bleu4"] == pytest.approx(1.0)
    assert set(metrics["count"]) == {"n", "missing", "acc", "acc_ci", "mae", "mae_ci", "acc_within1", "acc_within1_ci"}
    assert metrics["count"]["missing"] == 0
    assert main(["compare", str(out / "fusar-gpt" / "eval"), str(out / "no-aef" / "eval"), "--out",
                 str(tmp_path / "cmp"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["names"] == ["eval", "eval"] and (tmp_path / "cmp" / "compare.md").exists()
    assert main(["compare", str(out / "fusar-gpt"), "--out", str(tmp_path / "x")]) == 2  # not an evaluated dir


def _aef_world(root):
    import numpy as np

    from fusar_gpt.geo.aef_tiles import tile_origin, write_tile

    zone, epsg, west, north = tile_origin(4.52, 43.59, 64)
    codes = np.random.default_rng(0).integers(-127, 128, (64, 64, 64)).astype(np.int8)
    codes[:, :, :32] = -128  # the western half is nodata
    write_tile(root / "2019" / zone / "t.tiff", codes, crs=f"EPSG:{epsg}", west=west, north=north, block_size=64)
    from fusar_gpt.geo.aef import to_lonlat

    lon, lat = to_lonlat(f"EPSG:{epsg}", np.array([west + 20, west + 620]), np.array([north - 620, north - 20]))
    return f"{lon[0]},{lat[0]},{lon[1]},{lat[1]}"


def test_aef_index_and_sample_commands(tmp_path, capsys, monkeypatch):
    import numpy as np

    from fusar_gpt.geo.anchors import Anchors

    monkeypatch.setenv("FUSAR_GPT_CACHE", str(tmp_path / "cache"))
    bbox = _aef_world(tmp_path / "aef")
    assert main(["aef", "index", str(tmp_path / "aef"), "--write", "csv", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["tiles"] == 1 and info["years"] == [2019] and info["zones"] == ["31N"]
    assert (tmp_path / "aef" / "aef_index.csv").exists()
    out = tmp_path / "a.npz"
    assert main(["aef", "sample", "--aef", str(tmp_path / "aef"), "--bbox", bbox, "--year", "2024", "--grid", "4",
                 "--out", str(out)]) == 0
    line = capsys.readouterr().out
    assert "AEF 2019 (asked 2024)" in line and "8/16 nodes valid" in line
    saved = Anchors.load(out)
    assert saved.year == 2019 and saved.mask.reshape(4, 4)[:, 2:].all() and not saved.mask.reshape(4, 4)[:, :2].any()
    assert main(["aef", "sample", "--aef", str(tmp_path / "aef"), "--bbox", bbox, "--year", "2019", "--grid", "4",
                 "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["aef_year"] == 2019 and got["valid"] == 8
    feats = np.array([[np.nan if v is None else v for v in row] for row in got["anchors"]["features"]], np.float32)
    assert np.array_equal(feats, saved.features, equal_nan=True)


@pytest.mark.parametrize("argv,message", [
    (["--bbox", "4.5,43.5,4.6,43.6"], "--year is required"),
    (["--bbox", "4.5,43.5,4.6,93.6", "--year", "2020"], "latitude range"),
    (["--bbox", "4.5,43.5", "--year", "2020"], "4 numbers"),
    (["--image", "missing.tif"], "missing.tif"),
])
def test_aef_sample_bad_input_is_one_line_exit_2(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.setenv("FUSAR_GPT_CACHE", str(tmp_path / "cache"))
    _aef_world(tmp_path / "aef")
    assert main(["aef", "sample", "--aef", str(tmp_path / "aef"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("fusar-gpt aef: error:")


def test_aef_root_without_tiles_is_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["aef", "index", str(tmp_path / "empty"), "--cache-dir", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert "no AEF tiles for any year" in err and err.count("\n") == 1


def test_synth_and_build_commands(tmp_path, capsys, monkeypatch):
    import functools

    from fusar_gpt.data import synth

    monkeypatch.setenv("FUSAR_GPT_CACHE", str(tmp_path / "cache"))
    # the command's own arguments all reach make_world; only the AEF tile size (no flag, 512 px by default, writing
    # the tiles is most of the time) is made the smallest the scenes fit in
    monkeypatch.setattr(synth, "make_world", functools.partial(synth.make_world, tile_px=128, block_size=128))
    world = tmp_path / "world"
    assert main(["synth", str(world), "--scenes", "3", "--sites", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["scenes"] == 3
    args = ["build", "--images", str(world / "images"), "--annotations", str(world / "annotations.json"),
            "--aef", str(world / "aef"), "--out", str(tmp_path / "ds"), "--frame", "224", "--tasks", "count,detect"]
    assert main(args + ["--shard", "0/2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["shard"] == "0/2"
    assert main(args + ["--shard", "1/2"]) == 0
    assert "--merge" in capsys.readouterr().out
    assert main(["build", "--merge", str(tmp_path / "ds")]) == 0
    line = capsys.readouterr().out
    empty = tmp_path / "empty"
    assert main(["synth", str(empty), "--scenes", "2", "--sites", "2", "--max-targets", "0", "--clutter", "0",
                 "--pixel-m", "1", "2", "--image-px", "160", "200", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["annotations"] == 0
    params = json.loads((empty / "world.json").read_text())["parameters"]
    assert params["clutter"] == 0.0 and params["pixel_m"] == [1.0, 2.0] and params["image_px"] == [160, 200]
    import rasterio

    for tif in sorted((empty / "images").glob("*.tif")):  # the demo's scene sizes reach the files
        with rasterio.open(tif) as src:
            assert 160 <= src.width <= 200 and 160 <= src.height <= 200
            assert 1.0 <= abs(src.transform.a) <= 2.0
    assert main(["synth", str(tmp_path / "bad"), "--clutter", "-1"]) == 2
    assert "clutter" in capsys.readouterr().err
    assert main(["synth", str(tmp_path / "bad"), "--min-targets", "3", "--max-targets", "2"]) == 2
    assert "min_targets" in capsys.readouterr().err
    assert "records (count" in line and "0 quarantined" in line
    assert (tmp_path / "ds" / "manifest.jsonl").read_text().count("\n") == 3 * 4  # 2 classes x (count, detect)


@pytest.mark.parametrize("argv,message", [
    (["build", "--images", "x"], "--annotations, --out required"),
    (["build", "--merge", "nowhere"], "no plan.json"),
    (["build", "--images", "x", "--annotations", "a", "--aef", "r", "--out", "o", "--shard", "3"], "i/n"),
    (["build", "--images", "x", "--annotations", "a", "--aef", "r", "--out", "o", "--tasks", "dance"], "unknown task"),
])
def test_build_bad_arguments_are_one_line_exit_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_chance_findings_use_paired_intervals_against_the_majority_answer():
    from fusar_gpt.demo_findings import chance_findings

    rec = lambda i, task, answer, cls="ship": {"id": f"{task}{i}", "task": task, "answer": answer,
                                               "meta": {"class": cls}}
    records = [rec(i, "count", "0" if i < 30 else "2") for i in range(40)]
    records += [rec(i, "locate", "None") for i in range(40)]
    majority = {r["id"]: ("0" if r["task"] == "count" else "None") for r in records}
    model = dict(majority)
    for i in range(30, 40):
        model[f"count{i}"] = "2"      # right where the majority answer is wrong
    model["locate0"] = "center"       # one locate answer worse than the majority
    lines, table = chance_findings("m", records, model, majority, n_boot=500)
    assert lines[0].startswith("m beats the majority-answer baseline on: count acc 1.000 vs 0.750 (+0.250")
    assert lines[1].startswith("m does NOT beat the majority-answer baseline on: locate acc100 0.975 vs 1.000")
    assert table["count acc"]["diff_ci"][0] > 0 and table["locate acc100"]["diff_ci"][1] <= 0
    assert chance_findings("m", records, majority, majority, n_boot=100)[0] == [
        "m does NOT beat the majority-answer baseline on: count acc 0.750 vs 0.750 (+0.000, 95% interval "
        "[+0.000, +0.000]); locate acc100 1.000 vs 1.000 (+0.000, 95% interval [+0.000, +0.000])."]


def test_demo_world_never_shrinks_its_scenes_into_the_frame():
    """The demo's scenes keep their pixels (README, "The demo"): scenes larger than the frame are shrunk, and the
    random vision tower then finds the ship's token only about half the time (BENCHMARKS, "Vision warm-up")."""
    from fusar_gpt.demo_settings import QUICK, DemoSettings

    s = DemoSettings()
    assert s.image_px[1] <= s.frame and s.min_targets == s.max_targets == 1
    assert QUICK.image_px == s.image_px  # the quick demo in the tests writes the same kind of world


def test_ablations_reuse_the_demo_runs_and_compare_every_variant_with_tlm(quick_demo, capsys):
    out, _ = quick_demo
    before = (out / "fusar-gpt" / "eval" / "predictions.jsonl").stat().st_mtime_ns
    assert main(["demo", "--ablations", "--quick", "--out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (out / "fusar-gpt" / "eval" / "predictions.jsonl").stat().st_mtime_ns == before  # reused, not retrained
    assert set(result["figures"]) == {"tlm", "sum", "concat", "none", "one-stage"}
    assert set(result["vs_tlm"]) == {"sum", "concat", "none", "one-stage"}
    for name, fusion in (("sum", "sum"), ("concat", "concat"), ("one-stage", "tlm")):
        assert json.loads((out / name / "stage2" / "tlm.json").read_text())["fusion"] == fusion
    assert not (out / "one-stage" / "stage1").exists()  # one stage: every task at once
    d = result["vs_tlm"]["sum"]["count acc"]
    assert d["diff"] == pytest.approx(d["a"] - d["b"]) and d["b"] == result["figures"]["tlm"]["count acc"]
    table = (out / "ablations.md").read_text()
    assert "| count acc" in table and "one-stage" in table


def test_score_counts_every_record_of_the_split_and_reports_missing_and_unknown_ids(tmp_path, capsys):
    """5 count records, 4 predictions (2 right): n 5, acc 0.4, missing 1 (not n 4, acc 0.5); the train split the
    predictions do not touch stays out; an id the manifest lacks is reported, and refused with --strict."""
    img = tmp_path / "x.png"
    img.write_bytes(b"")  # never opened: scoring count needs no pixels
    rows = [{"id": f"c{i}", "task": "count", "answer": str(i), "question": "How many ships?", "image": str(img),
             "coordinate_size": 224, "split": "test", "meta": {"class": "ship"}} for i in range(5)]
    rows += [dict(rows[0], id="t0", split="train")]
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    preds = tmp_path / "preds.jsonl"
    answers = {"c0": "0", "c1": "1", "c2": "7", "c3": "8"}  # c4 unanswered
    preds.write_text("".join(json.dumps({"id": k, "answer": v}) + "\n" for k, v in answers.items()))
    for split in ([], ["--split", "test"]):
        assert main(["score", "--predictions", str(preds), "--manifest", str(manifest), "--json", *split]) == 0
        m = json.loads(capsys.readouterr().out)["count"]
        assert (m["n"], m["acc"], m["missing"]) == (5, 0.4, 1)
    with preds.open("a") as f:
        f.write(json.dumps({"id": "ghost", "answer": "3"}) + "\n")
    assert main(["score", "--predictions", str(preds), "--manifest", str(manifest), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["count"]["n"] == 5 and "1 prediction id(s) not in" in captured.err
    assert "'ghost'" in captured.err
    assert main(["score", "--predictions", str(preds), "--manifest", str(manifest), "--strict"]) == 2
    assert "refused (--strict)" in capsys.readouterr().err
    # nothing to score is an error, not "everything wrong"
    preds.write_text(json.dumps({"id": "ghost", "answer": "3"}) + "\n")
    assert main(["score", "--predictions", str(preds), "--manifest", str(manifest)]) == 2
    assert "none of its 1 prediction ids is in" in capsys.readouterr().err
    preds.write_text("")
    assert main(["score", "--predictions", str(preds), "--manifest", str(manifest)]) == 2
    assert "no predictions in the file" in capsys.readouterr().err


def test_train_set_value_that_is_not_yaml_is_one_line(capsys):
    assert main(["train", "configs/tiny-cpu/stage1.yaml", "--set", "train.lr=[1, 2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--set 'train.lr=[1, 2'" in err and "not YAML" in err


def test_eval_and_ask_keep_the_other_answers_when_a_record_is_unreadable(quick_demo, tmp_path, capsys):
    """One missing and one corrupt image among four records: both commands answer the other two, write an error
    line for each bad one and say how many; score counts the bad ones as unanswered (wrong)."""
    out, _ = quick_demo
    recs = [r for r in (json.loads(ln) for ln in (out / "dataset" / "manifest.jsonl").read_text().splitlines())
            if r["aef"]][:4]
    for r in recs:
        r["image"], r["aef"] = str(out / "dataset" / r["image"]), str(out / "dataset" / r["aef"])
        r["split"] = "test"
    recs[1]["image"] = str(tmp_path / "gone.png")
    (tmp_path / "torn.png").write_bytes(Path(recs[0]["image"]).read_bytes()[:100])
    recs[2]["image"] = str(tmp_path / "torn.png")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in recs))
    run = out / "fusar-gpt" / "stage2"
    assert main(["eval", "--run", str(run), "--manifest", str(manifest), "--out", str(tmp_path / "ev"),
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    missing = lambda m: sum(d["missing"] for d in m.values())
    assert result["n"] == 4 and result["unreadable"] == 2 and missing(result["metrics"]) == 2
    lines = [json.loads(ln) for ln in (tmp_path / "ev" / "predictions.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in lines if "error" in r) == sorted([recs[1]["id"], recs[2]["id"]])
    assert main(["ask", str(run), str(manifest), "--out", str(tmp_path / "a.jsonl"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["answered"] == 2 and summary["errors"] == 2
    assert main(["score", "--predictions", str(tmp_path / "a.jsonl"), "--manifest", str(manifest), "--json"]) == 0
    assert missing(json.loads(capsys.readouterr().out)) == 2


def test_score_takes_official_records_task_from_the_question_or_task(tmp_path, capsys):
    """The authors' records carry no task: ours is read from the question's template, else --task decides."""
    boxes = [{"bbox_2d": [10, 10, 50, 50], "label": "ship"}]
    recs = [{"id": "a", "image": "x.png", "question": "<image>How many ships are in this image?", "answer": 2},
            {"id": "b", "image": "x.png", "question": "Detect all ships in this image and output their bounding "
                                                       "boxes in JSON.", "answer": boxes},
            {"id": "c", "image": "x.png", "question": "Where are the vessels?", "answer": "3"}]
    manifest = tmp_path / "official.json"
    manifest.write_text(json.dumps(recs[:2]))
    preds = tmp_path / "p.jsonl"
    preds.write_text("".join(json.dumps(p) + "\n" for p in ({"id": "a", "answer": "2"},
                                                            {"id": "b", "answer": json.dumps(boxes)},
                                                            {"id": "c", "answer": "3"})))
    assert main(["score", "--predictions", str(preds), "--manifest", str(manifest), "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["count"]["acc"] == 1.0 and m["detect"]["f1@0.5"] == 1.0
    manifest.write_text(json.dumps(recs))
    assert main(["score", "--predictions", str(preds), "--manifest", str(manifest)]) == 2
    assert "record 'c' has no task" in capsys.readouterr().err
    manifest.write_text(json.dumps(recs[2:]))
    assert main(["score", "--predictions", str(preds), "--manifest", str(manifest), "--task", "count",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["count"]["n"] == 1


def test_eval_warns_naming_the_fields_when_the_dataset_was_built_with_another_chip_spec(quick_demo, tmp_path,
                                                                                         capsys):
    out, _ = quick_demo
    run = out / "fusar-gpt" / "stage2"
    assert (run / "chip.json").exists()  # train put the dataset's spec into the run
    ds = tmp_path / "ds"
    shutil.copytree(out / "dataset", ds)
    summary = json.loads((ds / "build.json").read_text())
    summary["chip"]["stretch"] = [-30.0, 0.0]
    (ds / "build.json").write_text(json.dumps(summary))
    assert main(["eval", "--run", str(run), "--manifest", str(ds), "--limit", "2", "--out", str(tmp_path / "ev"),
                 "--json"]) == 0
    captured = capsys.readouterr()
    assert "another chip spec" in captured.err and "stretch: None != [-30.0, 0.0]" in captured.err
    assert json.loads(captured.out.strip().splitlines()[-1])["chip_spec_differs"] == ["stretch: None != [-30.0, 0.0]"]
