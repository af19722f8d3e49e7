"""Where-probe: can a random ``tiny`` preset learn WHERE a target is, with and without the patch position code?

Not a speed figure: a learning experiment that backs the choice in ``fusar_gpt/model/positions.py``. Each image is
112 px of 4-look speckle with one bright disc (radius 5 px) in one quadrant; the question is "which quadrant holds
the bright target?" (chance 0.25). The whole FusarGPT (fusion none) trains with AdamW, batch 8, on ``--train``
images per quadrant, then answers 16 held-out images per quadrant greedily. ``--presence`` asks "is there a bright
target?" instead (half the images have none): the control that the model can see the disc at all.

Measured 2026-12-07 on 2 CPU cores (see BENCHMARKS.md): with the code 64/64 after 2,000 steps (about 4 minutes);
without it, chance.

Usage: python benchmarks/position_probe.py [--steps 2000] [--lr 3e-4] [--train 32] [--no-positions] [--presence]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fusar_gpt.data.dataset import ManifestDataset, load_manifest
from fusar_gpt.data.tasks import parse_label
from fusar_gpt.evaluate import predict
from fusar_gpt.inputs import InputProcessor
from fusar_gpt.model.backbone import load_backbone, load_processor, make_backbone
from fusar_gpt.model.fusar import FusarGPT
from fusar_gpt.model.positions import MARK
from fusar_gpt.model.tlm import TLM

FRAME = 112
QUADRANTS = ("top-left", "top-right", "bottom-left", "bottom-right")
WHERE = "Which quadrant holds the bright target? Answer top-left, top-right, bottom-left or bottom-right."
WHETHER = "Is there a bright target? Answer yes or no."


def write_world(root: Path, per_class: int, presence: bool, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    yy, xx = np.mgrid[0:FRAME, 0:FRAME]
    records = []
    for split, n in (("train", per_class), ("test", 16)):
        for k in range(n):
            for q, quadrant in enumerate(QUADRANTS):
                img = np.clip(rng.gamma(4.0, 1 / 4.0, (FRAME, FRAME)) * 60, 0, 255)
                half = FRAME // 2
                y = rng.integers((q // 2) * half + 6, (q // 2) * half + half - 6)
                x = rng.integers((q % 2) * half + 6, (q % 2) * half + half - 6)
                answer = ("yes" if q % 2 == 0 else "no") if presence else quadrant
                if answer != "no":
                    img[(yy - y) ** 2 + (xx - x) ** 2 <= 25] = 250
                rid = f"{split}-{q}-{k}"
                Image.fromarray(img.astype(np.uint8)).save(root / "images" / f"{rid}.png")
                choices = ["yes", "no"] if presence else list(QUADRANTS)
                records.append({"id": rid, "image": f"images/{rid}.png", "coordinate_size": FRAME,
                                "question": WHETHER if presence else WHERE, "answer": answer, "task": "classify",
                                "split": split, "meta": {"level": "coarse", "choices": choices, "class": answer}})
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in records))
    return manifest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--train", type=int, default=32, help="training images per quadrant")
    ap.add_argument("--no-positions", action="store_true", help="remove the position mark before loading")
    ap.add_argument("--presence", action="store_true", help="ask whether, not where")
    args = ap.parse_args()
    torch.manual_seed(0)
    root = Path(tempfile.mkdtemp(prefix="position-probe-"))
    manifest = write_world(root, args.train, args.presence)
    base = make_backbone("tiny", root / "base", seed=0)
    if args.no_positions:
        cfg = json.loads((base / "config.json").read_text())
        del cfg["vision_config"][MARK]
        (base / "config.json").write_text(json.dumps(cfg))
    backbone, processor = load_backbone(base, dtype=torch.float32)
    model = FusarGPT(backbone, TLM(backbone.config.text_config.hidden_size, fusion="none"), processor)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    data, collate = ManifestDataset(manifest, split="train"), InputProcessor(load_processor(base), train=True)
    rng, order, t0 = np.random.default_rng(0), [], time.perf_counter()
    model.train()
    for step in range(args.steps):
        if len(order) < 8:
            order += rng.permutation(len(data)).tolist()
        loss = model(**collate([data[i] for i in order[:8]])).loss
        del order[:8]
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 250 == 0 or step == args.steps - 1:
            print(f"step {step:5d}  loss {loss.item():.3f}", flush=True)
    model.eval()
    test = load_manifest(manifest, split="test")
    answers = predict(model, test, batch_size=64, progress=False)
    said = [parse_label(answers[r["id"]], r["meta"]["choices"]) for r in test]
    right = sum(a == r["answer"] for a, r in zip(said, test))
    print(json.dumps({"positions": not args.no_positions, "question": "presence" if args.presence else "quadrant",
                      "steps": args.steps, "lr": args.lr, "correct": right, "n": len(test),
                      "answers": dict(Counter(map(str, said))), "seconds": round(time.perf_counter() - t0, 1)}))


if __name__ == "__main__":
    main()
