"""Manifest datasets and batches on the real tiny Qwen2.5-VL: exact label masks, loss, priors, errors."""

from __future__ import annotations

import copy
import json
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from fusar_gpt.data.dataset import ManifestDataset, ManifestError, frame_size, load_manifest
from fusar_gpt.inputs import IGNORE_INDEX, Batch, InputProcessor
from fusar_gpt.model.fusar import FusarGPT
from fusar_gpt.model.tlm import TLM

from .conftest import random_anchors, random_image

ANSWERS = ["3", 'Detect: [{"bbox_2d": [12, 40, 88, 120], "label": "ship"}]',
           "Bright point scatterers along the quay;\ndark specular water, é.", "top-left, center"]
SIZES = [(56, 56), (84, 112), (112, 56), (56, 84)]  # (h, w): mixed, so the processor packs different grids


def write_png(path, h, w, seed, rgb=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = random_image(h, w, seed)
    Image.fromarray(np.stack([arr] * 3, -1) if rgb else arr).save(path)


def write_manifest(path, records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


@pytest.fixture
def dataset_dir(tmp_path):
    """Our format: 4 records, grey and RGB PNGs of mixed sizes, single- and multi-year anchors with nodata."""
    records = []
    for i, ((h, w), answer) in enumerate(zip(SIZES, ANSWERS)):
        write_png(tmp_path / f"images/im{i}.png", h, w, i, rgb=i % 2 == 1)
        rec = {"id": f"r{i}", "image": f"images/im{i}.png", "aef": f"anchors/im{i}.npz", "coordinate_size": 56,
               "question": f"Question {i} about ships?", "answer": answer, "task": ["count", "detect"][i % 2],
               "split": "train" if i < 3 else "val", "meta": {"sensor": "S1"}}
        f, p, m = random_anchors(5 + 3 * i, seed=10 + i)
        (tmp_path / "anchors").mkdir(exist_ok=True)
        if i == 1:  # nodata: a NaN row flagged valid and a row flagged invalid both end up masked
            f[2] = np.nan
            m[4] = False
        if i == 2:  # multi-year; the record names the year used
            years = np.array([2019, 2020, 2021])
            ff = np.stack([f + k for k in range(3)])
            np.savez(tmp_path / f"anchors/im{i}.npz", features=ff, positions=p, mask=np.ones((3, len(f)), bool),
                     years=years)
            rec["meta"]["aef_year"] = 2020
        else:
            np.savez(tmp_path / f"anchors/im{i}.npz", features=f, positions=p, mask=m, year=2020)
        records.append(rec)
    write_manifest(tmp_path / "manifest.jsonl", records)
    return tmp_path


def items_of(root, **kw):
    ds = ManifestDataset(root / "manifest.jsonl", **kw)
    return [ds[i] for i in range(len(ds))]


def fusar(tiny):
    backbone, proc = tiny
    torch.manual_seed(0)
    return FusarGPT(backbone, TLM(backbone.config.text_config.hidden_size), proc).eval()


# ------------------------------------------------------------------------------------------------ labels
@pytest.mark.parametrize("side", ["right", "left"])
def test_labels_are_exactly_the_answer_and_end_of_turn(tiny, dataset_dir, side):
    _, proc = tiny
    items = items_of(dataset_dir)
    batch = InputProcessor(proc, padding_side=side)(items)
    tok = proc.tokenizer
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    assert labels.shape == ids.shape and len({int(n) for n in mask.sum(1)}) > 1  # rows really are padded
    for b, item in enumerate(items):
        sup = (labels[b] != IGNORE_INDEX).nonzero().flatten()
        assert (sup[1:] - sup[:-1] == 1).all()  # one contiguous span
        assert torch.equal(labels[b, sup], ids[b, sup])
        assert tok.decode(labels[b, sup]) == item["answer"] + "<|im_end|>"
        first, last = int(sup[0]), int(sup[-1])
        before = tok.decode(ids[b, :first][mask[b, :first].bool()])
        assert before.endswith("<|im_start|>assistant\n") and item["question"] in before
        assert tok.decode(ids[b, last + 1:last + 2]) == "\n"  # the newline after <|im_end|> is not supervised
        assert not mask[b, sup].eq(0).any() and not (ids[b, sup] == proc.image_token_id).any()
    pads = mask == 0
    assert (pads[:, 0] if side == "left" else pads[:, -1]).any()
    assert (labels[pads] == IGNORE_INDEX).all()


def test_loss_is_mean_ce_over_answer_tokens_and_padding_side_free(tiny, dataset_dir):
    _, proc = tiny
    model = fusar(tiny)
    items = items_of(dataset_dir)
    right = InputProcessor(proc)(items)
    left = InputProcessor(proc, padding_side="left")(items)
    with torch.no_grad():
        out = model(**right)
        out_left = model(**left)
    assert torch.isfinite(out.loss)
    logits, labels = out.logits[:, :-1].float(), right["labels"][:, 1:]
    manual = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX)
    n_sup = int((labels != IGNORE_INDEX).sum())
    assert n_sup == sum(len(proc.tokenizer.encode(a + "<|im_end|>")) for a in ANSWERS)
    assert torch.allclose(out.loss, manual, atol=1e-6)
    assert torch.allclose(out.loss, out_left.loss, atol=1e-5)  # masking is right on either padding side


def test_batch_fields_mm_types_and_mixed_grids(tiny, dataset_dir):
    _, proc = tiny
    items = items_of(dataset_dir)
    batch = InputProcessor(proc)(items)
    assert set(batch) == {"input_ids", "attention_mask", "mm_token_type_ids", "pixel_values", "image_grid_thw",
                          "labels", "priors"}
    is_img = batch["input_ids"] == proc.image_token_id
    assert torch.equal(batch["mm_token_type_ids"].bool(), is_img) and is_img.any(1).all()
    grids = batch["image_grid_thw"]
    assert grids.shape == (4, 3) and len({tuple(g) for g in grids.tolist()}) > 1
    assert batch["pixel_values"].shape[0] == int(grids.prod(-1).sum())
    assert is_img.sum(1).tolist() == (grids.prod(-1) // 4).tolist()


def test_record_ids_travel_beside_the_model_inputs(tiny, dataset_dir):
    _, proc = tiny
    ds = ManifestDataset(dataset_dir / "manifest.jsonl")
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=InputProcessor(proc))
    batches = list(loader)
    assert [b.ids for b in batches] == [["r0", "r1"], ["r2", "r3"]]
    b = batches[0]
    assert "ids" not in b and b.answers == ANSWERS[:2] and b.tasks == ["count", "detect"]
    for again in (b.to("cpu"), copy.copy(b), pickle.loads(pickle.dumps(b))):
        assert isinstance(again, Batch) and again.ids == ["r0", "r1"] and set(again) == set(b)
        assert torch.equal(again["input_ids"], b["input_ids"])


def test_eval_batches_are_left_padded_prompts_without_labels(tiny, dataset_dir):
    _, proc = tiny
    items = items_of(dataset_dir)
    batch = InputProcessor(proc, train=False)(items)
    assert "labels" not in batch and batch.answers == ANSWERS and batch.ids == ["r0", "r1", "r2", "r3"]
    assert (batch["attention_mask"][:, -1] == 1).all() and (batch["attention_mask"][:, 0] == 0).any()
    for row in batch["input_ids"]:
        assert proc.tokenizer.decode(row).endswith("<|im_end|>\n<|im_start|>assistant\n")
    out = fusar(tiny).generate(**batch, max_new_tokens=2, do_sample=False)
    assert out.shape[0] == 4 and out.shape[1] > batch["input_ids"].shape[1]
    with pytest.raises(ValueError, match="left-padded"):
        InputProcessor(proc, train=False, padding_side="right")


# ------------------------------------------------------------------------------------------------ priors
def test_priors_round_trip_the_npz_files(tiny, dataset_dir):
    _, proc = tiny
    batch = InputProcessor(proc)(items_of(dataset_dir))
    pri = batch["priors"]
    assert pri.features.shape == (4, 14, 64) and pri.mask.shape == (4, 14)
    for b in range(4):
        with np.load(dataset_dir / f"anchors/im{b}.npz") as z:
            f, p, m = z["features"], z["positions"], z["mask"]
        if b == 2:  # multi-year: meta aef_year 2020 is index 1
            f, m = f[1], m[1]
        s = len(p)
        valid = m & np.isfinite(f).all(1)
        assert np.array_equal(pri.mask[b, :s].numpy(), valid)
        assert not pri.mask[b, s:].any()  # padding rows masked
        assert np.array_equal(pri.features[b, :s].numpy()[valid], f[valid])
        assert np.array_equal(pri.positions[b, :s].numpy(), p)
        assert torch.isfinite(pri.features[b]).all()
    assert pri.mask[1].sum() == 8 - 2  # one NaN row and one row flagged invalid


def test_multi_year_defaults_to_last_year_and_rejects_unknown_year(dataset_dir):
    recs = load_manifest(dataset_dir / "manifest.jsonl")
    del recs[2]["meta"]["aef_year"]
    ds = ManifestDataset(recs)
    a = ds[2]["anchors"]
    assert a.year == 2021 and not a.multi_year
    recs[2]["meta"]["aef_year"] = 1999
    with pytest.raises(ManifestError, match="1999"):
        ds[2]


def test_official_records_without_anchors_give_null_priors(tiny, tmp_path):
    _, proc = tiny
    write_png(tmp_path / "a.png", 56, 56, 0)
    write_png(tmp_path / "b.png", 84, 56, 1)
    np.savez(tmp_path / "b.npz", features=random_anchors(4, 0)[0], positions=random_anchors(4, 0)[1])
    write_manifest(tmp_path / "m.jsonl", [
        {"id": 7, "image": "a.png", "coordinate_size": [56, 56], "question": "How many ships?", "answer": "2"},
        {"id": "o2", "image": str(tmp_path / "b.png"), "aef": "b.npz", "coordinate_size": 56,
         "question": "Where are the ships?", "answer": "top"},
        {"id": "o3", "image": "a.png", "aef": "", "coordinate_size": 56, "question": "Q", "answer": "None"},
    ])
    recs = load_manifest(tmp_path / "m.jsonl")
    assert [r["id"] for r in recs] == ["7", "o2", "o3"]
    assert all(r["task"] is None and r["split"] is None and r["meta"] == {} for r in recs)
    assert frame_size(recs[0]) == (56, 56) and recs[0]["aef"] is None and recs[2]["aef"] is None
    assert load_manifest(tmp_path / "m.jsonl", split="train") == []
    items = [ManifestDataset(recs)[i] for i in range(3)]
    assert items[0]["anchors"] is None and items[1]["anchors"].mask.all()
    assert items[0]["image"].mode == "RGB" and items[1]["image"].size == (56, 84)
    pri = InputProcessor(proc)(items)["priors"]
    assert pri.mask.sum(1).tolist() == [0, 4, 0]


def test_split_and_task_filters(dataset_dir):
    path = dataset_dir / "manifest.jsonl"
    assert [r["id"] for r in load_manifest(path, split="train")] == ["r0", "r1", "r2"]
    assert [r["id"] for r in load_manifest(path, tasks=["detect"])] == ["r1", "r3"]
    assert [r["id"] for r in load_manifest(path, split="train", tasks="count")] == ["r0", "r2"]
    assert len(ManifestDataset(path, split="val")) == 1
    with pytest.raises(ManifestError, match="splits present: train, val"):
        ManifestDataset(path, split="trian")


def test_geotiff_image_is_scaled_into_its_frame(tmp_path):
    rasterio = pytest.importorskip("rasterio")
    from affine import Affine

    data = np.random.default_rng(0).gamma(1.0, 0.1, (40, 30)).astype(np.float32)
    with rasterio.open(tmp_path / "s.tif", "w", driver="GTiff", width=30, height=40, count=1, dtype="float32",
                       crs="EPSG:32633", transform=Affine(10, 0, 500000, 0, -10, 4000000)) as dst:
        dst.write(data, 1)
    write_manifest(tmp_path / "m.jsonl", [{"id": "g", "image": "s.tif", "aef": None, "coordinate_size": 56,
                                           "question": "Q", "answer": "1"}])
    im = ManifestDataset(tmp_path / "m.jsonl")[0]["image"]
    assert im.mode == "RGB" and im.size == (56, 56) and np.asarray(im).std() > 0


# ------------------------------------------------------------------------------------------------ errors
GOOD = {"id": "x", "image": "a.png", "aef": None, "coordinate_size": 56, "question": "Q", "answer": "A"}


@pytest.mark.parametrize("bad, message", [
    ("{not json", r"m\.jsonl line 3: not valid JSON"),
    ('["a", "list"]', r"line 3: expected a JSON object, got list"),
    ({k: v for k, v in GOOD.items() if k != "question"}, r"m\.jsonl line 3: missing field 'question'$"),
    ({k: v for k, v in GOOD.items() if k != "image"}, r"line 3: missing field 'image'"),
    (dict(GOOD, answer=None), r"line 3: field 'answer' must be a string, got null"),
    (dict(GOOD, question="ship? " * 5000), r"line 3: the question is 30000 characters, above the cap of 16000"),
    (dict(GOOD, coordinate_size=[56]), r"line 3: field 'coordinate_size' must be"),
    (dict(GOOD, coordinate_size=True), r"line 3: field 'coordinate_size' must be"),
    (dict(GOOD, aef=5), r"line 3: field 'aef' must be a path string or null"),
    (dict(GOOD, meta=[1]), r"line 3: field 'meta' must be an object"),
    (dict(GOOD, split=1), r"line 3: field 'split' must be a string or null"),
])
def test_bad_lines_fail_with_file_and_line(tmp_path, bad, message):
    path = write_manifest(tmp_path / "m.jsonl", [GOOD, "", bad, GOOD])
    with pytest.raises(ManifestError, match=message) as err:
        load_manifest(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_the_authors_manifests_load_as_their_code_loads_them(tmp_path):
    """A .json list of records; no coordinate_size (their 504); no id (derived, unique); a box list or a number as
    the answer (JSON text); the <image> placeholder dropped from the question."""
    boxes = [{"bbox_2d": [10, 20, 30, 40], "label": "ship"}]
    recs = [{"image": "a.png", "question": "<image>\nDetect all ships.", "answer": boxes},
            {"image": "a.png", "question": "How many ships? <image>", "answer": 3, "coordinate_size": 224},
            {"id": 7, "image": "b.png", "question": "Q", "answer": "A"}]
    path = tmp_path / "official.json"
    path.write_text(json.dumps(recs))
    got = load_manifest(path)
    assert [r["coordinate_size"] for r in got] == [504, 224, 504]
    assert [r["id"] for r in got] == ["a#1", "a#2", "7"]
    assert got[0]["answer"] == json.dumps(boxes) and got[1]["answer"] == "3"
    assert [r["question"] for r in got[:2]] == ["Detect all ships.", "How many ships?"]
    path.write_text(json.dumps({"records": recs}))
    with pytest.raises(ManifestError, match="must hold a list of records, got dict"):
        load_manifest(path)
    path.write_text(json.dumps(recs)[:-3])
    with pytest.raises(ManifestError, match=r"official\.json: not valid JSON"):
        load_manifest(path)


def test_jsonl_lines_end_at_newline_only_and_a_bom_is_skipped(tmp_path):
    """U+2028 / U+0085 inside a string (what ensure_ascii=False writes) stay in it; a BOM and CRLF are fine."""
    rec = dict(GOOD, question="Ship\u2028near\u0085the quay?")
    path = tmp_path / "m.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + (json.dumps(rec, ensure_ascii=False) + "\r\n").encode() * 2)
    records = load_manifest(path)
    assert len(records) == 2 and records[0]["question"] == "Ship\u2028near\u0085the quay?"


def test_a_json_list_manifest_with_a_bom_loads(tmp_path):
    """The authors' .json list format saved by a Windows editor: the BOM is skipped, not a JSON error."""
    path = tmp_path / "official.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps([GOOD, dict(GOOD, id="two")], ensure_ascii=False).encode())
    assert [r["id"] for r in load_manifest(path)] == [GOOD["id"], "two"]


def test_deeply_nested_json_is_a_one_line_error(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(ManifestError, match=r"m\.jsonl line 2: JSON nested too deeply") as err:
        load_manifest(path)
    assert "\n" not in str(err.value)


def test_missing_files_are_reported_when_read(tmp_path):
    with pytest.raises(ManifestError, match="no such manifest file"):
        load_manifest(tmp_path / "nope.jsonl")
    write_png(tmp_path / "a.png", 56, 56, 0)
    path = write_manifest(tmp_path / "m.jsonl", [GOOD, dict(GOOD, id="y", image="gone.png"),
                                                 dict(GOOD, id="z", aef="anchors/gone.npz")])
    ds = ManifestDataset(path)  # loading checks no file: manifests can be huge
    assert ds[0]["image"].size == (56, 56)
    with pytest.raises(ManifestError, match=r"record 'y': image file .*gone\.png does not exist"):
        ds[1]
    with pytest.raises(ManifestError, match=r"record 'z': anchor file .*gone\.npz does not exist"):
        ds[2]
    (tmp_path / "bad.png").write_bytes(b"not a png")
    write_manifest(path, [dict(GOOD, image="bad.png")])
    with pytest.raises(ManifestError, match=r"bad\.png is not a readable image"):
        ManifestDataset(path)[0]


def test_empty_answers_special_tokens_and_overlong_records_are_refused(tiny, dataset_dir):
    _, proc = tiny
    items = items_of(dataset_dir)
    for answer in ("", "  \n"):
        with pytest.raises(ValueError, match=r"record 'r1': empty answer"):
            InputProcessor(proc)([items[0], dict(items[1], answer=answer)])
    InputProcessor(proc, train=False)([dict(items[1], answer="")])  # evaluation does not supervise: fine
    with pytest.raises(ValueError, match=r"record 'r0': the answer contains the special token <\|im_end\|>"):
        InputProcessor(proc)([dict(items[0], answer="3<|im_end|>more")])
    longest = int(InputProcessor(proc)(items)["attention_mask"].sum(1).max())
    InputProcessor(proc, max_length=longest)(items)
    with pytest.raises(ValueError, match=rf"record 'r\d': {longest} tokens \(\d+ image \+ \d+ text\) exceed "
                                         rf"max_length {longest - 1}"):
        InputProcessor(proc, max_length=longest - 1)(items)
