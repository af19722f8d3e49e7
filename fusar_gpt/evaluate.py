"""Evaluate a trained run: batched generation over a manifest split, then the scorer and the report.

The scorer (``scoring.py``) needs only predictions and the manifest, so any model's answers can be
scored the same way; this module produces our model's answers. Generation is greedy and batched
(left-padded prompts), and answers are grouped by task so that each batch stops at that task's
answer length.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from .chip import ChipSpec, dataset_spec
from .data.dataset import ManifestDataset
from .data.manifest import ManifestError, load_manifest
from .data.tasks import REGISTRY, fill_tasks
from .geo import GeoError
from .inputs import InputProcessor
from .io_atomic import write_json, write_jsonl
from .model.loader import load_model
from .model.routing import route
from .report import metrics_table, write_comparison, write_report
from .scoring import majority_predictions, paired, read_predictions, score
from .text import one_line

# enough for the canonical answers of each task (captions and box lists are the long ones): the registry's budgets
MAX_NEW_TOKENS = {name: t.max_new_tokens for name, t in REGISTRY.items()}


@torch.no_grad()
def predict(model, records: Sequence[dict], *, spec: ChipSpec | None = None, batch_size: int = 8,
            progress: bool = True, max_new_tokens: dict | None = None, errors: dict | None = None,
            task: str | None = None) -> dict[str, str]:
    """Greedy answers for manifest records (as returned by ``load_manifest``): {id: answer}. GeoTIFF images named
    by records are made into chips with ``spec`` (the model's; None = each record's frame, defaults). With ``errors`` (a
    dict), a record whose image or anchors cannot be read (missing, corrupt, 16-bit, a decompression bomb, a torn
    .npz) is left out, its one-line reason stored under its id, and every other record is answered; without it,
    the first such record raises. ``task`` is the task of records that carry none. A model with one adapter per
    task answers each record with its task's (:func:`fusar_gpt.model.routing.route`)."""
    limits = {**MAX_NEW_TOKENS, **(max_new_tokens or {})}
    data = ManifestDataset(list(records), spec=spec)
    collate = InputProcessor(model.processor, train=False)
    tasks = [r.get("task") or task for r in records]
    groups = route(model, [r["question"] for r in records], tasks)  # routed (or refused) before any generation
    bar = tqdm(total=len(records), desc="generating", unit="answer") if progress else None
    device = next(model.parameters()).device
    out: dict[str, str] = {}
    for group in groups:
        for chunk in _chunks(group, tasks, batch_size):
            items, kept = [], []
            for i in chunk:
                try:
                    items.append(data[i])
                    kept.append(i)
                except (ManifestError, GeoError) as err:
                    if errors is None:
                        raise
                    errors[str(records[i]["id"])] = one_line(err)
            if items:
                batch = collate(items).to(device)
                tokens = model.generate(**batch, max_new_tokens=limits.get(tasks[kept[0]], 64), do_sample=False)
                new = tokens[:, batch["input_ids"].shape[1]:]
                for i, text in zip(kept, model.processor.batch_decode(new, skip_special_tokens=True)):
                    out[str(records[i]["id"])] = text.strip()
            if bar is not None:
                bar.update(len(chunk))
    if bar is not None:
        bar.close()
    return out


def _chunks(indices: Sequence[int], tasks: Sequence[str | None], batch_size: int) -> list[list[int]]:
    """``indices`` sorted by task, cut into batches of one task each: a batch stops at its task's answer length."""
    chunks: list[list[int]] = []
    for i in sorted(indices, key=lambda i: (str(tasks[i]), i)):
        if chunks and len(chunks[-1]) < batch_size and tasks[chunks[-1][0]] == tasks[i]:
            chunks[-1].append(i)
        else:
            chunks.append([i])
    return chunks


def spec_differences(spec: ChipSpec, manifest) -> list[str]:
    """The fields in which the dataset's build spec differs from the model's (none for official manifests)."""
    built = dataset_spec(manifest)
    return [] if built is None else spec.differences(built)


def write_predictions(path, predictions: dict[str, str], errors: dict[str, str] | None = None) -> None:
    """``{"id", "answer"}`` lines, then an ``{"id", "error"}`` line per record that could not be answered (which
    ``score`` counts as unanswered, so wrong). Written under a temporary name and renamed."""
    write_jsonl(path, [{"id": k, "answer": v} for k, v in predictions.items()]
                + [{"id": k, "error": v} for k, v in (errors or {}).items()])


def evaluate_run(run, manifest, *, split: str | None = "test", tasks: Sequence[str] | None = None,
                 batch_size: int = 8, out=None, progress: bool = True, baseline_split: str | None = "train",
                 n_boot: int = 1000, limit: int | None = None, per_task: dict[str, int] | None = None,
                 task: str | None = None) -> dict:
    """Generate on ``split``, score, and write predictions.jsonl, metrics.json and report.md into ``out``
    (default: the run directory). The majority-answer baseline comes from ``baseline_split``. ``limit`` keeps the
    first records, ``per_task`` the first n records of each task named (manifest order, so the same every run).
    Records without a task (the authors' manifests) get ``task``, else their question's (refused when neither
    tells): scoring needs it, and so does a model with one adapter per task."""
    records = fill_tasks(load_manifest(manifest, split=split, tasks=tasks), task, manifest)
    if limit:
        records = records[:limit]
    if per_task:
        seen: dict[str, int] = {}
        keep = []
        for r in records:
            seen[r["task"]] = seen.get(r["task"], 0) + 1
            if seen[r["task"]] <= per_task.get(r["task"], len(records)):
                keep.append(r)
        records = keep
    if not records:
        raise ValueError(f"{manifest}: no records for split {split!r} and tasks {tasks}")
    out = Path(out or run)
    out.mkdir(parents=True, exist_ok=True)
    model, spec = load_model(run)
    differs = spec_differences(spec, manifest)
    if differs:
        print(f"eval: warning: {manifest} was built with another chip spec than {run}'s chip.json "
              f"({'; '.join(differs)}); its GeoTIFF records are made with the model's, its PNGs are as built",
              file=sys.stderr)
    errors: dict[str, str] = {}
    predictions = predict(model, records, spec=spec, batch_size=batch_size, progress=progress, errors=errors)
    write_predictions(out / "predictions.jsonl", predictions, errors)
    if errors:
        first = next(iter(errors.items()))
        print(f"eval: {len(errors)} of {len(records)} records could not be read and count as wrong (first: "
              f"{first[0]}: {first[1]}); the reasons are in {out / 'predictions.jsonl'}", file=sys.stderr)
    metrics = score(records, predictions, n_boot=n_boot)
    baseline = None
    if baseline_split:
        train = load_manifest(manifest, split=baseline_split, tasks=tasks)
        if train:
            baseline = score(records, majority_predictions(train, records), n_boot=n_boot)
    result = {"run": str(run), "manifest": str(manifest), "split": split, "n": len(records), "unreadable": len(errors),
              "metrics": metrics, "majority_baseline": baseline, "chip_spec_differs": differs}
    write_json(out / "metrics.json", result, indent=2)
    write_report(out, metrics, title=f"Evaluation of {Path(run).name} on {split}", records=records,
                 predictions=predictions, baseline=baseline)
    return result


def compare_runs(runs: Sequence, *, out=".", names: Sequence[str] | None = None, title: str = "Ablation",
                 notes: Sequence[str] = ()) -> dict:
    """Ablation table across evaluated runs with paired differences against the first run.

    Every run must have been evaluated on the same manifest and split: paired differences are
    only meaningful on the same records.
    """
    runs = [Path(r) for r in runs]
    names = list(names) if names else [r.name for r in runs]
    if len(names) != len(runs):
        raise ValueError(f"{len(names)} names for {len(runs)} runs")
    results = []
    for r in runs:
        if not (r / "metrics.json").exists() or not (r / "predictions.jsonl").exists():
            raise FileNotFoundError(f"{r} has no metrics.json + predictions.jsonl: run 'fusar-gpt eval' first")
        results.append(json.loads((r / "metrics.json").read_text()))
    first = results[0]
    for r, res in zip(runs[1:], results[1:]):
        if (res["manifest"], res["split"]) != (first["manifest"], first["split"]):
            raise ValueError(f"{r} was evaluated on {res['manifest']} ({res['split']}), not on the first run's "
                             f"{first['manifest']} ({first['split']})")
    records = load_manifest(first["manifest"], split=first["split"])
    preds = [read_predictions(r / "predictions.jsonl") for r in runs]
    ids = set(preds[0])
    records = [rec for rec in records if str(rec["id"]) in ids]
    diffs = [None] + [paired(records, p, preds[0]) for p in preds[1:]]  # diff = run - first run
    metrics = [res["metrics"] for res in results]
    baseline = first.get("majority_baseline")
    report = write_comparison(out, names, metrics, diffs, title=title, baseline=baseline, notes=notes)
    return {"names": names, "table": metrics_table(names, metrics, baseline=baseline), "report": str(report),
            "paired": diffs[1:], "metrics": metrics}
