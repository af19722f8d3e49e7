"""Several questions about one image trained as one conversation: exact per-turn labels, grouping, training."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from fusar_gpt.data.dataset import Conversations, ManifestDataset
from fusar_gpt.inputs import IGNORE_INDEX, InputProcessor

from .conftest import random_anchors, random_image

QA = [("How many ships?", "3"), ("Which cells hold a ship?", "top-left, center"),
      ("Classify the target in the box [1, 2, 30, 40]: ship or plane?", "ship"),
      ("Where are the planes?", "None"), ("How many planes?", "0")]


@pytest.fixture
def conv_dir(tmp_path):
    """Two images: im0 with five records, im1 with two; one val record that must never be grouped in."""
    (tmp_path / "images").mkdir()
    (tmp_path / "anchors").mkdir()
    recs = []
    for i, n in enumerate((5, 2)):
        Image.fromarray(random_image(56, 84, i)).save(tmp_path / f"images/im{i}.png")
        f, p, m = random_anchors(6, seed=i)
        np.savez(tmp_path / f"anchors/im{i}.npz", features=f, positions=p, mask=m)
        for k in range(n):
            q, a = QA[k]
            recs.append({"id": f"im{i}-{k}", "image": f"images/im{i}.png", "aef": f"anchors/im{i}.npz",
                         "coordinate_size": 56, "question": q, "answer": a, "task": "count", "split": "train"})
    recs.append(dict(recs[0], id="val-0", split="val"))
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    return tmp_path


def test_grouping_covers_every_record_once_per_image_and_is_seeded(conv_dir):
    data = ManifestDataset(conv_dir / "manifest.jsonl", split="train")
    conv = Conversations(data, turns=3, seed=1)
    ids = [data.records[j]["id"] for u in conv.units for j in u]
    assert sorted(ids) == sorted(r["id"] for r in data.records) and len(ids) == 7
    assert sorted(len(u) for u in conv.units) == [2, 2, 3]  # im0: 3 + 2, im1: 2
    for u in conv.units:
        assert len({data.records[j]["image"] for j in u}) == 1
    assert conv.units == Conversations(data, turns=3, seed=1).units
    assert any(Conversations(data, turns=3, seed=s).units != conv.units for s in range(2, 6))
    item = conv[0]
    assert [r for r, _ in item["turns"]] == [data.records[j]["question"] for j in conv.units[0]]
    assert item["ids"] == [data.records[j]["id"] for j in conv.units[0]]
    with pytest.raises(ValueError, match="turns must be a positive integer"):
        Conversations(data, turns=0)


def test_captions_are_conversations_of_their_own(conv_dir):
    """A caption answers every other question about its image; it never shares a conversation (and ``alone``
    names more such tasks)."""
    path = conv_dir / "manifest.jsonl"
    recs = [json.loads(ln) for ln in path.read_text().splitlines()]
    recs.append(dict(recs[0], id="im0-cap", task="caption", question="Describe the image.",
                     answer="Three ships, top-left and center."))
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    data = ManifestDataset(path, split="train")
    cap = next(j for j, r in enumerate(data.records) if r["id"] == "im0-cap")
    for seed in range(6):
        units = Conversations(data, turns=8, seed=seed).units
        assert [cap] in units and sum(cap in u for u in units) == 1
        assert sorted(len(u) for u in units) == [1, 2, 5]  # the caption; im1's two; im0's five counts
    assert sorted(len(u) for u in Conversations(data, turns=8, seed=0, alone=()).units) == [2, 6]
    data.records[0]["task"] = "detect"
    assert sorted(len(u) for u in Conversations(data, turns=8, seed=0, alone=("caption", "detect")).units) == \
        [1, 1, 2, 4]


def test_every_turn_supervises_exactly_its_answer(tiny, conv_dir):
    _, proc = tiny
    data = ManifestDataset(conv_dir / "manifest.jsonl", split="train")
    conv = Conversations(data, turns=5, seed=0)
    items = [conv[i] for i in range(len(conv))]
    batch = InputProcessor(proc)(items)
    tok = proc.tokenizer
    for b, item in enumerate(items):
        sup = (batch["labels"][b] != IGNORE_INDEX).nonzero().flatten().tolist()
        spans, cur = [], [sup[0]]
        for t in sup[1:]:
            if t == cur[-1] + 1:
                cur.append(t)
            else:
                spans.append(cur)
                cur = [t]
        spans.append(cur)
        assert [tok.decode(batch["input_ids"][b, s]) for s in spans] == [a + "<|im_end|>" for _, a in item["turns"]]
        row = batch["input_ids"][b]
        assert int((row == proc.image_token_id).sum()) > 0  # one image, at the start of the first turn
        text = tok.decode(row[batch["attention_mask"][b].bool()])
        assert text.count("<|vision_start|>") == 1
        assert text.index("<|vision_start|>") < text.index(item["turns"][0][0])
        # the questions and the image tokens themselves are never supervised
        assert not (batch["labels"][b] == proc.image_token_id).any()


def test_a_conversation_trains_the_same_answers_as_its_single_turns(tiny, conv_dir):
    """The first turn of a conversation is exactly the single-turn record: same tokens, same loss."""
    from fusar_gpt.model.fusar import FusarGPT
    from fusar_gpt.model.tlm import TLM

    backbone, proc = tiny
    torch.manual_seed(0)
    model = FusarGPT(backbone, TLM(backbone.config.text_config.hidden_size), proc).eval()
    data = ManifestDataset(conv_dir / "manifest.jsonl", split="train")
    single = dict(data[0])
    one = InputProcessor(proc)([single])
    conv = dict(data[0], turns=[(single["question"], single["answer"])] + [QA[4]])
    two = InputProcessor(proc)([conv])
    n = one["input_ids"].shape[1]
    assert torch.equal(two["input_ids"][0, :n - 1], one["input_ids"][0, :n - 1])  # up to the closing newline
    with torch.no_grad():
        a, b = model(**one).logits, model(**two).logits
    assert torch.allclose(a[0, :n - 1], b[0, :n - 1], atol=1e-5)  # causal: later turns change nothing before
