"""ONE training loop for both stages: the stage is data (what trains, lr, epochs, data mix). What each
``trainable`` mode trains, and each parameter's learning rate, is the table in model/policy.py; the base
weights (a preset's RUN/base) come from model/base.py; the run's paths, chip spec and model from train_setup.py.

Runs unchanged from one CPU process to many GPUs under ``accelerate launch`` / ``torchrun``. The
recipe's ``batch_size`` is the GLOBAL batch: every process takes its slice of the same batch, and
the loss is a mean over the supervised tokens of the whole global batch, so N processes compute
exactly what one process with the full batch would. Data order is a seeded permutation per epoch
and the position is part of every checkpoint, which makes ``--resume`` exact.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedType
from tqdm import tqdm
from transformers import get_scheduler

from .config import Recipe, RecipeError, save_recipe
from .data.dataset import Conversations, ManifestDataset
from .inputs import InputProcessor
from .losses import token_loss
from .model.base import build_base
from .model.checkpoint import latest_checkpoint, safe_torch_load, save_checkpoint
from .model.policy import whole_backbone
from .run_log import log_row, rng_state, set_rng_state, tensorboard, truncate_log
from .train_setup import build_model, build_trainable, resolve_paths, run_spec  # noqa: F401  (re-exported)


class Batches:
    """Global batches in a seeded per-epoch order; each process collates only its slice."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int, world: int):
        if n < batch_size:
            raise RecipeError(f"train.batch_size: {batch_size} is larger than the {n} training records")
        if batch_size % world:
            raise RecipeError(f"train.batch_size: {batch_size} does not split over {world} processes")
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.per_epoch = n // batch_size  # the incomplete last batch is dropped

    def indices(self, micro: int) -> list[int]:
        epoch, k = divmod(micro, self.per_epoch)
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 1000 + epoch))
        batch = order[k * self.batch_size:(k + 1) * self.batch_size].tolist()
        share = self.batch_size // self.world
        return batch[self.rank * share:(self.rank + 1) * share]


def train(recipe: Recipe, *, resume: bool = False, progress: bool = True, stop_after: int | None = None) -> dict:
    """Train per the recipe into ``recipe.out``; returns the summary (also the last line of log.jsonl).

    ``stop_after`` ends the run after that many optimizer steps as if interrupted (a checkpoint is
    written); ``resume=True`` continues from the newest complete checkpoint, exactly.
    """
    # one process may train several runs (the demo, notebooks): each gets its own precision settings;
    # the process group itself (PartialState) is kept
    AcceleratorState._reset_state()
    # several processes (torchrun) on a machine without CUDA: accelerate only forms the gloo process group when
    # told cpu=True; without it every process silently trained alone, on the same data, into the same folder
    multi_cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    accelerator = Accelerator(cpu=multi_cpu, mixed_precision=recipe.train.mixed_precision,
                              gradient_accumulation_steps=recipe.train.grad_accum,
                              kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    _configure_deepspeed(accelerator, recipe)
    run = Path(recipe.out)
    ckpt = latest_checkpoint(run) if resume else None
    if resume and ckpt is None:
        raise RecipeError(f"--resume: {run} has no complete checkpoint to resume from")
    if accelerator.is_main_process:
        run.mkdir(parents=True, exist_ok=True)
        build_base(recipe, progress=progress)  # a preset's RUN/base, built once; the others find it built
    accelerator.wait_for_everyone()
    torch.manual_seed(recipe.train.seed)
    model, trained = build_trainable(recipe, weights_from=ckpt)
    if accelerator.is_main_process:
        save_recipe(recipe, run / "config.yaml")
        run_spec(recipe).save(run)
    t = recipe.train
    data = ManifestDataset(recipe.data.manifest, split=recipe.data.train_split, tasks=recipe.tasks)
    if recipe.data.turns_per_image > 1:
        data = Conversations(data, recipe.data.turns_per_image, seed=t.seed)
    batches = Batches(len(data), t.batch_size, t.seed, accelerator.process_index, accelerator.num_processes)
    steps_per_epoch = max(batches.per_epoch // t.grad_accum, 1)
    total = t.max_steps or max(1, math.ceil(t.epochs * steps_per_epoch))
    optimizer = torch.optim.AdamW(list(trained.groups.values()), lr=t.lr, weight_decay=t.weight_decay)
    schedule = "constant_with_warmup" if t.schedule == "constant" else t.schedule  # else transformers' own names
    scheduler = get_scheduler(schedule, optimizer, num_warmup_steps=math.ceil(t.warmup_ratio * total),
                              num_training_steps=total)
    model, optimizer = accelerator.prepare(model, optimizer)
    processor = model.processor if hasattr(model, "processor") else accelerator.unwrap_model(model).processor
    collate = InputProcessor(processor, max_length=recipe.data.max_length)
    step = 0
    if ckpt is not None:
        state = safe_torch_load(ckpt / "trainer_state.pt")
        if state["optimizer"] is not None and not _sharded(accelerator):
            optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step = state["step"]
        set_rng_state(state["rng"])
        truncate_log(run / "log.jsonl", step, accelerator.is_main_process)
    val = _val_data(recipe)
    board = tensorboard(run, recipe) if accelerator.is_main_process else None
    bar = None
    if progress and accelerator.is_main_process:
        desc = recipe.trains if whole_backbone(recipe.trains) else f"stage {recipe.stage}"
        bar = tqdm(total=total, initial=step, desc=desc, unit="step")
    last = {}
    end = min(total, stop_after) if stop_after else total
    while step < end:
        t0, seen, tokens, loss_acc = time.perf_counter(), 0, 0, 0.0
        for micro in range(t.grad_accum):
            idx = batches.indices(step * t.grad_accum + micro)
            batch = collate([data[i] for i in idx]).to(accelerator.device)
            # accumulate() skips the gradient all-reduce until the last micro-batch; backward() divides
            # the loss by grad_accum (and under DeepSpeed steps the engine at the boundary)
            with accelerator.accumulate(model), accelerator.autocast():
                loss, mean, n_tok = token_loss(model, batch, accelerator, recipe.train.loss_per)
                accelerator.backward(loss)
            loss_acc += mean / t.grad_accum
            seen += t.batch_size
            tokens += n_tok
        norm = accelerator.clip_grad_norm_(model.parameters(), t.max_grad_norm) if t.max_grad_norm else None
        _check_finite(step + 1, loss_acc, norm, recipe)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        dt = time.perf_counter() - t0
        last = {"step": step, "epoch": round(step / steps_per_epoch, 4), "loss": loss_acc,
                "lr": scheduler.get_last_lr()[0], "samples_per_s": round(seen / dt, 3),
                "tokens_per_s": round(tokens / dt, 1)}
        if step % t.log_every == 0 or step == end:
            log_row(run / "log.jsonl", last, accelerator.is_main_process, board)
        if bar is not None:
            bar.update()
            bar.set_postfix(loss=f"{loss_acc:.4f}", samples_s=f"{seen / dt:.2f}")
        if val is not None and t.eval_every and step % t.eval_every == 0:
            val_loss = evaluate_loss(model, val, collate, recipe, accelerator)
            log_row(run / "log.jsonl", {"step": step, "val_loss": val_loss}, accelerator.is_main_process, board)
        if (t.save_every and step % t.save_every == 0) or step == end:
            _save(model, optimizer, scheduler, run, step, recipe, accelerator)
    if bar is not None:
        bar.close()
    summary = dict(last)
    if val is not None and step == total:
        summary["val_loss"] = evaluate_loss(model, val, collate, recipe, accelerator)
        log_row(run / "log.jsonl", {"step": step, "val_loss": summary["val_loss"]}, accelerator.is_main_process, board)
    if board is not None:
        board.close()
    summary.update(run=str(run), steps=step, total_steps=total, finished=step == total,
                   processes=accelerator.num_processes, rank=accelerator.process_index)
    return summary


class Diverged(RecipeError):
    """The loss or the gradient went non-finite: training stops before the step is applied, so no NaN weight is
    ever saved (the last checkpoint, if any, is intact)."""


def _check_finite(step: int, loss: float, grad_norm, recipe: Recipe) -> None:
    bad = "loss" if not math.isfinite(loss) else (
        "gradient norm" if grad_norm is not None and not math.isfinite(float(grad_norm)) else None)
    if bad:
        t = recipe.train
        raise Diverged(f"step {step}: the {bad} is not finite, training stopped before applying it (nothing from "
                       f"this step is saved); likely too large a step: train.lr = {t.lr:g}, train.tlm_lr_scale = "
                       f"{t.tlm_lr_scale:g}, train.max_grad_norm = {t.max_grad_norm}")


def _sharded(accelerator) -> bool:
    return accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)


def _configure_deepspeed(accelerator, recipe: Recipe) -> None:
    """DeepSpeed needs its micro-batch, accumulation and clipping up front (there is no prepared loader)."""
    plugin = accelerator.state.deepspeed_plugin
    if plugin is None:
        return
    t = recipe.train
    cfg = plugin.deepspeed_config
    cfg["train_micro_batch_size_per_gpu"] = t.batch_size // accelerator.num_processes
    cfg["gradient_accumulation_steps"] = t.grad_accum
    cfg["train_batch_size"] = t.batch_size * t.grad_accum
    cfg["gradient_clipping"] = float(t.max_grad_norm or 0.0)


def _val_data(recipe: Recipe):
    if not recipe.data.val_split:
        return None
    try:
        data = ManifestDataset(recipe.data.manifest, split=recipe.data.val_split, tasks=recipe.tasks)
    except ValueError:
        return None  # no validation records for these tasks
    return data if len(data) else None


@torch.no_grad()
def evaluate_loss(model, data, collate, recipe: Recipe, accelerator) -> float:
    """Mean loss per supervised token over the validation split (every process takes its slice)."""
    was = model.training
    model.eval()
    total, count = 0.0, 0
    share = max(recipe.train.batch_size // accelerator.num_processes, 1)
    rank, world = accelerator.process_index, accelerator.num_processes
    for start in range(0, len(data), share * world):
        idx = list(range(start + rank * share, min(start + (rank + 1) * share, len(data))))
        if not idx:
            idx = [len(data) - 1]  # keep collectives in step; this duplicate is weighted out below
        batch = collate([data[i] for i in idx]).to(accelerator.device)
        with accelerator.autocast():
            _, mean, n = token_loss(model, batch, accelerator)
        total, count = total + mean * n, count + n
    model.train(was)
    return total / max(count, 1)


def _save(model, optimizer, scheduler, run: Path, step: int, recipe: Recipe, accelerator) -> None:
    """Checkpoint from the main process. Under FSDP/DeepSpeed the full weights are gathered first
    (a collective: every process joins) and the sharded optimizer state is not kept, so a resumed
    sharded run restarts the Adam moments; single-process and DDP resume exactly."""
    accelerator.wait_for_everyone()
    sharded = _sharded(accelerator)
    full = accelerator.get_state_dict(model) if sharded else None
    if accelerator.is_main_process:
        state = {"step": step, "optimizer": None if sharded else optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "rng": rng_state(), "recipe": recipe.name}
        save_checkpoint(accelerator.unwrap_model(model), run, step, state, keep=recipe.train.keep_checkpoints,
                        state_dict=full)
    accelerator.wait_for_everyone()
