"""The AEF mechanism end to end: a question only the anchors can answer.

FUSAR-GPT's claim is that the AlphaEarth prior, fused into the visual tokens, carries knowledge the
SAR pixels do not. Unit tests of the TLM check its equations; this test checks that the prior
actually reaches the answer along the path a user's data takes: a manifest on disk (PNG images,
``.npz`` anchors written by :class:`Anchors`), :class:`ManifestDataset`, :class:`InputProcessor`, a tiny
FusarGPT trained in stage 1 (TLM + LoRA), and greedy generation through ``evaluate.predict``.

Every scene's SAR image is speckle drawn from one and the same distribution whatever its land
cover, so the image says nothing about the class; its anchors are real AEF vectors (from
``shared/data/aef_samples``) of the dominant class, with a few of other classes mixed in. A model
whose fusion works (``tlm``, ``sum``, ``concat``) learns to name the dominant land cover of held-out
scenes; the same model without the prior (``none``) cannot beat chance. If the prior is cut off
anywhere on its way (not loaded, not collated, zeroed, or the fused tokens ignored), the fusion
cases fall to chance too and this test fails.
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from fusar_gpt.data.dataset import ManifestDataset, load_manifest
from fusar_gpt.data.landcover import DW_CLASSES
from fusar_gpt.data.synth.samples import load_samples
from fusar_gpt.data.tasks import parse_label
from fusar_gpt.evaluate import predict
from fusar_gpt.geo.aef import dequantize
from fusar_gpt.geo.anchors import Anchors
from fusar_gpt.inputs import InputProcessor
from fusar_gpt.model.backbone import load_backbone, load_processor
from fusar_gpt.model.fusar import FusarGPT
from fusar_gpt.model.policy import add_lora, apply_policy
from fusar_gpt.model.tlm import TLM

CLASSES = ("water", "trees", "crops", "built")
QUESTION = "What is the dominant land cover in this image? Answer water, trees, crops or built."
FRAME = 56            # px: a 4 x 4 patch grid, 2 x 2 merged visual tokens
GRID = 4              # anchors per side
OTHERS = 3            # anchors of the GRID**2 drawn from the other classes (the dominant class keeps the rest)
N_TRAIN = 16          # scenes per class
N_TEST = 16           # held-out scenes per class
STEPS = 120
BATCH = 8
LR = 1e-3
SEED = 0
CHANCE = 1 / len(CLASSES)


def speckle(rng: np.random.Generator) -> np.ndarray:
    """4-look gamma speckle of unit mean, identical in distribution for every land cover, as 8-bit."""
    intensity = rng.gamma(shape=4.0, scale=1 / 4.0, size=(FRAME, FRAME))
    return np.clip(intensity * 96.0, 0, 255).astype(np.uint8)


def scene_anchors(rng: np.random.Generator, vectors: dict[str, np.ndarray], cls: str) -> Anchors:
    """A GRID x GRID anchor grid: real AEF vectors of ``cls`` but for OTHERS nodes of other classes."""
    n = GRID * GRID
    owner = [cls] * n
    others = [c for c in CLASSES if c != cls]
    for k in rng.choice(n, OTHERS, replace=False):
        owner[k] = others[rng.integers(len(others))]
    feats = np.stack([vectors[c][rng.integers(len(vectors[c]))] for c in owner])
    yy, xx = np.meshgrid(np.linspace(0, 1, GRID), np.linspace(0, 1, GRID), indexing="ij")
    pos = np.stack([yy.ravel(), xx.ravel()], axis=1)
    return Anchors(feats, pos, np.ones(n, bool), year=2024)


def write_world(root, seed: int = SEED):
    """A manifest in our format: train and test scenes, balanced over CLASSES; returns its path."""
    rng = np.random.default_rng(seed)
    pool = load_samples()
    vectors = {c: dequantize(pool.codes[pool.labels == DW_CLASSES.index(c)]).astype(np.float32) for c in CLASSES}
    (root / "images").mkdir(parents=True)
    records = []
    for split, per_class in (("train", N_TRAIN), ("test", N_TEST)):
        for k in range(per_class):
            for cls in CLASSES:
                rid = f"{split}-{cls}-{k:02d}"
                Image.fromarray(speckle(rng)).save(root / "images" / f"{rid}.png")
                scene_anchors(rng, vectors, cls).save(root / "anchors" / f"{rid}.npz")
                records.append({
                    "id": rid, "image": f"images/{rid}.png", "aef": f"anchors/{rid}.npz",
                    "coordinate_size": FRAME, "question": QUESTION, "answer": cls, "task": "classify",
                    "split": split, "meta": {"level": "landcover", "choices": list(CLASSES), "class": cls,
                                             "year": 2024, "aef_year": 2024},
                })
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in records))
    return manifest


def training_batches(tiny_dir, manifest, seed: int = SEED, steps: int = STEPS) -> list:
    """The stage-1 schedule: ``steps`` collated batches of the train split, reshuffled every epoch.

    Collated once and shared by every fusion: a batch carries the priors whatever the model does with them.
    """
    data = ManifestDataset(manifest, split="train")
    collate = InputProcessor(load_processor(tiny_dir), train=True)
    rng = np.random.default_rng(seed)
    order: list[int] = []
    batches = []
    for _ in range(steps):
        if len(order) < BATCH:
            order += rng.permutation(len(data)).tolist()
        batches.append(collate([data[i] for i in order[:BATCH]]))
        del order[:BATCH]
    return batches


def train_and_score(tiny_dir, manifest, batches, fusion: str, seed: int = SEED) -> tuple[float, Counter]:
    """Stage-1 training (TLM + LoRA) on ``batches``, then greedy answers on the test split: their accuracy and
    how often each answer (parsed, None if none) was given."""
    torch.manual_seed(seed)
    backbone, processor = load_backbone(tiny_dir)
    model = FusarGPT(backbone, TLM(backbone.config.text_config.hidden_size, fusion=fusion), processor)
    add_lora(model)
    trainable = set(apply_policy(model, "tlm+lora").names)
    optimizer = torch.optim.AdamW([p for n, p in model.named_parameters() if n in trainable], lr=LR)
    model.train()
    for batch in batches:
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    test = load_manifest(manifest, split="test")
    answers = predict(model, test, batch_size=len(test), progress=False)
    said = [parse_label(answers[r["id"]], r["meta"]["choices"]) for r in test]
    return float(np.mean([a == r["answer"] for a, r in zip(said, test)])), Counter(said)


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_dir):
    """The manifest and its training schedule, shared by all four cases."""
    manifest = write_world(tmp_path_factory.mktemp("aef-mechanism"))
    return manifest, training_batches(tiny_dir, manifest)


@pytest.mark.parametrize("fusion", ["tlm", "sum", "concat"])
def test_fusion_learns_the_anchors_only_answer(tiny_dir, world, fusion):
    acc, said = train_and_score(tiny_dir, *world, fusion)
    assert acc >= 0.9, (f"{fusion}: accuracy {acc:.3f} on a question only the AEF anchors answer (want >= 0.9); "
                        f"answers given: {dict(said)}")


def test_without_the_prior_the_model_stays_at_chance(tiny_dir, world):
    acc, said = train_and_score(tiny_dir, *world, "none")
    assert abs(acc - CHANCE) <= 0.1, (f"none: accuracy {acc:.3f}, expected chance {CHANCE:.2f} +- 0.1; "
                                      f"answers given: {dict(said)}")
