"""Put a trained model to work: ``ask`` one question about one image, or answer a folder or manifest in batches.

A question is only FUSAR-GPT's question when the image reaches the model as the run's training images did, so
every input goes through :func:`fusar_gpt.chip.load_chip` with the model's own chip spec (``chip.json`` in the
model directory, handed back by :func:`fusar_gpt.model.loader.load_model`), and the place and year come from
wherever they are: a GeoTIFF's own georeference and acquisition date, a lon/lat box and a year given for a plain
PNG/JPEG, or a ready ``.npz`` anchor file. ``detect.py`` (whole scenes) and ``serve.py`` (HTTP) share it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .chip import CHIP_MAX_PIXELS, ChipSpec, ModelChip, load_chip
from .data.manifest import load_manifest
from .evaluate import predict, write_predictions
from .geo.plain import PLAIN_SUFFIXES, InputTooLarge
from .inputs import to_priors
from .io_atomic import write_jsonl
from .model.routing import adapter_of, route
from .text import one_line
from .vocab import RASTER_SUFFIXES

IMAGE_SUFFIXES = PLAIN_SUFFIXES
DEFAULT_MAX_NEW_TOKENS = 256


def load_one(image, spec: ChipSpec, *, max_pixels: int = CHIP_MAX_PIXELS, **geo) -> ModelChip:
    """:func:`fusar_gpt.chip.load_chip` under the one-chip cap (checked on the header, before any pixel is read);
    an image above it is refused in one line that points to ``detect-scene``."""
    try:
        return load_chip(image, spec, max_pixels=max_pixels, **geo)
    except InputTooLarge as err:
        raise InputTooLarge(f"{one_line(err)} for one chip (the model sees {spec.frame} px a side): "
                            f"tile a whole scene with `fusar-gpt detect-scene`, or raise --max-pixels") from None


def answer(model, items: Sequence[ModelChip], questions: Sequence[str], *, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
           batch_size: int = 8, progress: bool = False, tasks: Sequence[str | None] | None = None) -> list[str]:
    """Greedy answers, ``batch_size`` inputs per ``generate`` call (any object with FusarGPT's ``answer``). A model
    with one adapter per task answers each question with its task's (``tasks[i]``, else read from the question:
    :func:`fusar_gpt.model.routing.route`), a batch never mixing two."""
    if len(items) != len(questions):
        raise ValueError(f"{len(items)} images but {len(questions)} questions")
    if batch_size < 1 or max_new_tokens < 1:
        raise ValueError("batch size and max new tokens must be positive")
    from tqdm import tqdm

    prior_dim = getattr(getattr(model, "tlm", None), "prior_dim", 64)
    out: list[str] = [""] * len(items)
    with tqdm(total=len(items), desc="answering", unit="answer", disable=not progress) as bar:
        for group in route(model, questions, tasks):
            for s in range(0, len(group), batch_size):
                part = group[s:s + batch_size]
                priors = to_priors([items[i].anchors for i in part], prior_dim)
                texts = model.answer([items[i].image for i in part], [questions[i] for i in part], priors,
                                     max_new_tokens=max_new_tokens, do_sample=False)
                for i, text in zip(part, texts):
                    out[i] = text
                bar.update(len(part))
    return out


def ask(model, spec: ChipSpec, image, question: str, *, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        task: str | None = None, max_pixels: int = CHIP_MAX_PIXELS, **geo) -> dict:
    """One answer about one image (``geo`` as for :func:`fusar_gpt.chip.load_chip`), with where and when. ``task``
    picks the adapter of a model with one per task (default: the question's)."""
    if not isinstance(question, str) or not question.strip():
        raise ValueError("the question is empty")
    item = load_one(image, spec, max_pixels=max_pixels, **geo)
    text = answer(model, [item], [question], max_new_tokens=max_new_tokens, tasks=[task])[0]
    return {"question": question, "answer": text, **item.info}


def list_images(folder) -> list[Path]:
    """Every GeoTIFF/PNG/JPEG under ``folder`` (recursively, sorted); none is an error."""
    folder = Path(folder)
    suffixes = RASTER_SUFFIXES + IMAGE_SUFFIXES
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
    if not paths:
        raise ValueError(f"{folder}: no GeoTIFF, PNG or JPEG images in it")
    return paths


def ask_folder(model, spec: ChipSpec, folder, question: str, out, *, store=None, year: int | None = None,
               no_aef: bool = False, batch_size: int = 8, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
               progress: bool = False, task: str | None = None, max_pixels: int = CHIP_MAX_PIXELS) -> dict:
    """One question about every GeoTIFF/PNG/JPEG under ``folder``, in batches, to a JSONL file at ``out``.

    A PNG/JPEG takes its anchors from a ``.npz`` of the same name beside it. An image that cannot be used
    (unreadable, no place or year) gets an ``error`` line instead of an answer, as the builder's quarantine
    does: one bad file must not throw away the answers of the others. The file appears only when complete.
    ``task`` picks the adapter of a model with one per task (default: the question's).
    """
    folder = Path(folder)
    paths = list_images(folder)
    if not isinstance(question, str) or not question.strip():
        raise ValueError("a folder needs a question (the same one is asked of every image)")
    adapter_of(model, question, task)  # a question no adapter is for fails before any image is read
    rows: list[dict] = []
    ready: list[tuple[int, ModelChip]] = []

    def flush():
        texts = answer(model, [p for _, p in ready], [question] * len(ready), max_new_tokens=max_new_tokens,
                       batch_size=batch_size, tasks=[task] * len(ready))
        for (k, p), text in zip(ready, texts):
            rows[k] = {"question": question, "answer": text, **p.info, "image": rows[k]["image"]}
        ready.clear()

    from tqdm import tqdm

    for path in tqdm(paths, desc="answering", unit="image", disable=not progress):
        rel = path.relative_to(folder).as_posix()
        rows.append({"image": rel})
        side = path.with_suffix(".npz")
        try:
            anchors = side if (path.suffix.lower() in IMAGE_SUFFIXES and side.exists() and not no_aef) else None
            ready.append((len(rows) - 1, load_one(path, spec, store=store, year=year, no_aef=no_aef,
                                                anchors=anchors, max_pixels=max_pixels)))
        except ValueError as err:
            rows[-1]["error"] = one_line(err)
        if len(ready) == batch_size:
            flush()
    if ready:
        flush()
    write_jsonl(out, rows)
    errors = sum("error" in r for r in rows)
    return {"images": len(rows), "answered": len(rows) - errors, "errors": errors, "out": str(out)}


def ask_manifest(model, manifest, out, *, spec: ChipSpec | None = None, split: str | None = None,
                 batch_size: int = 8, progress: bool = False, task: str | None = None) -> dict:
    """Every record of a manifest (its own image, anchors and question) -> ``{id, answer}`` lines that
    ``fusar-gpt score`` reads. Same batched generation as ``fusar-gpt eval``; ``task`` is the task of records that
    carry none (it picks their adapter)."""
    records = load_manifest(manifest, split=split)
    if not records:
        raise ValueError(f"{manifest}: no records" + (f" in split {split!r}" if split else ""))
    errors: dict[str, str] = {}
    predictions = predict(model, records, spec=spec, batch_size=batch_size, progress=progress, errors=errors,
                          task=task)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    write_predictions(out, predictions, errors)
    return {"records": len(records), "answered": len(predictions), "errors": len(errors), "out": str(out)}
