"""Supervised answers per second: one question per sequence (the official format) vs several questions
about the same image in one conversation (``data.turns_per_image``), in one run.

Data: a synthetic world built into a dataset (frame 224, count / locate / classify records: the short
answers, where the shared image and prompt cost the most). Model: the ``small`` preset with the whole backbone trainable
(``configs/tiny-cpu/stage0.yaml``, built by ``fusar_gpt.train.build_model``). One step =
``Collator`` + ``token_loss`` + backward + clipping + AdamW, exactly the training loop's work.

Both ways see the same images in each round: ``--images`` images per round, either as all their
records one per sequence (in batches of ``--batch``) or as conversations of up to ``--turns`` turns
(batches of ``--batch`` conversations). Rounds are interleaved so drift hits both alike; the first
``--warmup`` rounds are not timed; figures are medians over ``--repeats`` rounds.

Usage: python benchmarks/turns_throughput.py [--turns 8] [--images 8] [--batch 8] [--repeats 5] [--json]
       python benchmarks/turns_throughput.py --dry-run   # every code path at toy size, times meaningless
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from fusar_gpt.config import load_recipe
from fusar_gpt.data.build import BuildConfig, build
from fusar_gpt.data.dataset import Conversations, ManifestDataset
from fusar_gpt.data.synth import make_world
from fusar_gpt.inputs import InputProcessor
from fusar_gpt.train import build_model, resolve_paths

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TASKS = ["count", "locate", "classify"]


ONE_PROCESS = SimpleNamespace(num_processes=1)  # what token_loss needs of an Accelerator on one process


def _step(model, optimizer, collate, items) -> int:
    from fusar_gpt.losses import token_loss

    batch = collate(items)
    loss, _, n_tok = token_loss(model, batch, ONE_PROCESS)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return n_tok


def run(turns: int = 8, images: int = 8, batch: int = 8, repeats: int = 5, warmup: int = 1, preset: str = "small",
        dry_run: bool = False) -> dict:
    if dry_run:
        turns, images, batch, repeats, warmup, preset = 3, 2, 2, 1, 0, "tiny"
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_world(tmp / "world", scenes=max(4, images * (repeats + warmup)), seed=3, sites=4, tile_px=256,
                   block_size=256)
        build(BuildConfig(images=str(tmp / "world" / "images"), annotations=str(tmp / "world" / "annotations.json"),
                          aef=str(tmp / "world" / "aef"), out=str(tmp / "ds"), frame=224, split=(1.0, 0.0, 0.0),
                          split_by="scene", tasks=tuple(TASKS)), progress=False)
        recipe = resolve_paths(load_recipe(CONFIGS / "tiny-cpu" / "stage0.yaml",
                                           {"model.preset": preset, "model.vision_warmup_steps": 0}),
                               out=str(tmp / "run"), data=str(tmp / "ds"))
        torch.manual_seed(0)
        model = build_model(recipe)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        collate = InputProcessor(model.processor)
        data = ManifestDataset(recipe.data.manifest, split="train", tasks=TASKS)
        conv = Conversations(data, turns, seed=0)
        by_image: dict[str, list[int]] = {}
        for k, unit in enumerate(conv.units):
            by_image.setdefault(data.records[unit[0]]["image"], []).append(k)
        names = sorted(by_image)
        times = {"one": [], "turns": []}
        answers = {"one": 0, "turns": 0}
        for rnd in range(warmup + repeats):
            chosen = [names[(rnd * images + i) % len(names)] for i in range(images)]
            singles = [data[j] for n in chosen for k in by_image[n] for j in conv.units[k]]
            convs = [conv[k] for n in chosen for k in by_image[n]]
            for way, items in (("one", singles), ("turns", convs)):
                t0 = time.perf_counter()
                for s in range(0, len(items), batch):
                    _step(model, optimizer, collate, items[s:s + batch])
                if rnd >= warmup:
                    times[way].append(time.perf_counter() - t0)
                    answers[way] += len(singles)
        out = {way: {"answers_per_s": round(answers[way] / sum(times[way]), 2),
                     "round_s_median": round(statistics.median(times[way]), 3)} for way in times}
    ratio = out["turns"]["answers_per_s"] / out["one"]["answers_per_s"]
    return {"preset": preset, "frame": 224, "turns": turns, "images_per_round": images, "batch": batch,
            "repeats": repeats, "one_per_sequence": out["one"], "conversations": out["turns"],
            "ratio": round(ratio, 2), "dry_run": dry_run, "machine": f"{platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} cores, torch {torch.__version__}", "seconds": round(time.perf_counter() - t_start, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--turns", type=int, default=8)
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    r = run(a.turns, a.images, a.batch, a.repeats, a.warmup, a.preset, a.dry_run)
    if a.json:
        print(json.dumps(r))
    else:
        print(f"{r['preset']} preset, frame 224, {r['machine']}")
        print(f"one question per sequence: {r['one_per_sequence']['answers_per_s']} answers/s")
        print(f"conversations of <= {r['turns']} turns: {r['conversations']['answers_per_s']} answers/s")
        print(f"ratio: {r['ratio']}x  ({r['seconds']} s)")


if __name__ == "__main__":
    main()
