"""What a training run writes beside its weights: ``log.jsonl`` (and TensorBoard), and the random state a
checkpoint must carry for ``--resume`` to continue exactly where the run stopped."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import numpy as np
import torch

from .config import Recipe, RecipeError
from .io_atomic import write_text


def rng_state() -> dict:
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    random.setstate((s["python"][0], tuple(s["python"][1]), s["python"][2]))
    np.random.set_state((s["numpy"][0], s["numpy"][1].numpy().astype(np.uint32), *s["numpy"][2:]))
    if s["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def tensorboard(run: Path, recipe: Recipe):
    if not recipe.train.tensorboard:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise RecipeError("train.tensorboard: needs the tensorboard package (pip install tensorboard)") from None
    return SummaryWriter(str(run / "tensorboard"))


def log_row(path: Path, row: dict, main: bool, board=None) -> None:
    if main:
        with open(path, "a") as fh:
            fh.write(json.dumps(row) + "\n")
        if board is not None:
            for key, value in row.items():
                if key not in ("step", "epoch"):
                    board.add_scalar(key, value, row["step"])


def truncate_log(path: Path, step: int, main: bool) -> None:
    """Drop log lines after the resumed step: the resumed run writes them again. A torn last line (the process
    was killed mid-write) is dropped with a notice; a bad line before it is an error naming the file."""
    if not (main and path.exists()):
        return
    lines = [ln for ln in path.read_text().split("\n") if ln.strip()]
    keep = []
    for n, ln in enumerate(lines, start=1):
        try:
            row = json.loads(ln)
        except json.JSONDecodeError:
            if n == len(lines):
                print(f"{path}: dropped a torn last line (the run was stopped while writing it)", file=sys.stderr)
                break
            raise RecipeError(f"{path} line {n}: not valid JSON; the log is damaged (move it aside)") from None
        if isinstance(row, dict) and row.get("step", 0) <= step:
            keep.append(ln)
    write_text(path, "".join(ln + "\n" for ln in keep))  # a kill mid-rewrite must not lose the kept rows
