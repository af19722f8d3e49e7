"""The task registry: each question family declared once, and the one task order every module follows.

A :class:`Task` names its question templates, its answer builder, the parser of model answers and the strict
parser of the reference answer, how it is scored (per-record outcomes, their columns and the figures over them,
per-class figures, the majority-baseline key) and its generation budget. ``TASKS`` is the registry's order: build,
scoring (metrics key order and each task's bootstrap stream, seeded by its position), evaluation and recipe
validation all use it, so a new task goes at the end. ``REPORT_ORDER``, the reading order of report tables, is
derived from it (captions moved last), never written out a second time. The builders live in ``questions.py`` /
``captions.py``, the parsers in ``parsers.py`` and the outcomes in ``fusar_gpt/outcomes.py``; their public names are
importable from here too.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from types import MappingProxyType

from ..outcomes import (
    CAPTION_FIGURES,
    COUNT_FIGURES,
    DETECT_FIGURES,
    LABEL_FIGURES,
    LOCATE_FIGURES,
    Figures,
    Outcomes,
    caption_columns,
    caption_outcomes,
    classify_outcomes,
    count_columns,
    count_outcomes,
    detect_columns,
    detect_outcomes,
    label_columns,
    landcover_outcomes,
    locate_columns,
    locate_outcomes,
)
from ..text import one_line
from .captions import COVER_NAMES, caption_answers, caption_text, dominant_cover, landcover_answers  # noqa: F401
from .parsers import (  # noqa: F401
    asked_class,
    cells_in_order,
    parse_boxes,
    parse_cells,
    parse_count,
    parse_label,
    tokens,
    truth_boxes,
    truth_caption,
    truth_cells,
    truth_count,
    truth_label,
)
from .questions import (  # noqa: F401
    CAPTION_QUESTIONS,
    CELLS,
    CLASSIFY_QUESTIONS,
    COUNT_QUESTIONS,
    DETECT_QUESTIONS,
    FINE_QUESTIONS,
    LANDCOVER_QUESTIONS,
    LANDCOVER_WORDS,
    LOCATE_QUESTIONS,
    QA,
    Ask,
    FrameObj,
    SceneInfo,
    cell_of,
    classify_answers,
    count_answers,
    detect_answers,
    format_boxes,
    locate_answers,
    plural,
)

Builder = Callable[[Sequence[FrameObj], int, Ask], list[QA]]


def _by_class(meta: Mapping) -> tuple:
    return (meta.get("class"),)


def _by_level(meta: Mapping) -> tuple:
    """Fine classify: its level and coarse class; coarse: its level only (there ``meta["class"]`` is the answer)."""
    level = meta.get("level")
    return level, meta.get("class") if level == "fine" else None


def _text_only(parse: Callable) -> Callable:
    return lambda text, choices=(): parse(text)


@dataclass(frozen=True)
class Task:
    """One question family. ``parse(text, choices)`` reads a model answer (None = unparseable); ``truth(answer,
    choices)`` reads a reference answer strictly (ValueError); ``choices`` matter to the label tasks only.
    ``outcomes(records, predictions)`` gives one JSON-able row per record, ``columns(row)`` the numbers it adds to
    the sums, and ``figures`` each metric (in output order) as a function of those sums. ``per_class`` is the row
    field per-class figures group by, with ``per_class_metrics`` (one metric: written flat, ``per_class`` and
    ``per_class_ci``; several: nested per label). ``baseline_key(meta)`` groups training answers for the
    majority baseline. ``stage``: the paper's training stage that asks it (None: not a paper task, opt-in)."""

    name: str
    questions: tuple[str, ...]
    answers: Builder
    parse: Callable[..., object]
    truth: Callable[..., object]
    outcomes: Outcomes
    columns: Callable[[dict], list]
    figures: Figures
    max_new_tokens: int
    stage: int | None = None
    per_class: str | None = None
    per_class_metrics: tuple[str, ...] = ()
    baseline_key: Callable[[Mapping], tuple] = _by_class

    @property
    def metrics(self) -> tuple[str, ...]:
        return tuple(self.figures)


_REGISTRY = (
    Task("caption", CAPTION_QUESTIONS, caption_answers, _text_only(tokens), _text_only(truth_caption),
         caption_outcomes, caption_columns, CAPTION_FIGURES, max_new_tokens=192, stage=1),
    Task("count", COUNT_QUESTIONS, count_answers, _text_only(parse_count), _text_only(truth_count),
         count_outcomes, count_columns, COUNT_FIGURES, max_new_tokens=8, stage=2),
    Task("locate", LOCATE_QUESTIONS, locate_answers, _text_only(parse_cells), _text_only(truth_cells),
         locate_outcomes, locate_columns, LOCATE_FIGURES, max_new_tokens=32, stage=2),
    Task("classify", CLASSIFY_QUESTIONS + FINE_QUESTIONS, classify_answers, parse_label,
         partial(truth_label, task="classify"), classify_outcomes, label_columns, LABEL_FIGURES, max_new_tokens=12,
         stage=2, per_class="true", per_class_metrics=("acc",), baseline_key=_by_level),
    Task("detect", DETECT_QUESTIONS, detect_answers, _text_only(parse_boxes), _text_only(truth_boxes),
         detect_outcomes, detect_columns, DETECT_FIGURES, max_new_tokens=160, stage=2, per_class="class",
         per_class_metrics=("f1@0.25", "f1@0.5")),
    Task("landcover", LANDCOVER_QUESTIONS, landcover_answers, parse_label, partial(truth_label, task="landcover"),
         landcover_outcomes, label_columns, LABEL_FIGURES, max_new_tokens=8, per_class="true",
         per_class_metrics=("acc",)),
)
REGISTRY: Mapping[str, Task] = MappingProxyType({t.name: t for t in _REGISTRY})
TASKS = tuple(REGISTRY)
PAPER_TASKS = tuple(t.name for t in _REGISTRY if t.stage is not None)  # the paper's five; landcover is ours
# report tables read exact answers first: the registry's order with the free-text task (captions) moved last
REPORT_ORDER = tuple(sorted(TASKS, key=lambda t: t == "caption"))


def stage_tasks(stage: int) -> tuple[str, ...]:
    """The tasks the paper trains in ``stage`` (1: captions, 2: the four question families), registry order."""
    return tuple(t.name for t in _REGISTRY if t.stage == stage)


def _check(objects, frame, tasks, classes, max_classify) -> list[FrameObj]:
    if not isinstance(frame, numbers.Integral) or isinstance(frame, bool) or frame <= 0:
        raise ValueError(f"frame must be a positive integer, got {frame!r}")
    bad = [t for t in tasks if t not in TASKS]
    if bad or len(set(tasks)) != len(tasks):
        raise ValueError(f"tasks must be distinct names from {', '.join(TASKS)}, got {list(tasks)}")
    if not all(isinstance(c, str) and c for c in classes) or len(set(classes)) != len(classes):
        raise ValueError(f"classes must be distinct non-empty names, got {list(classes)}")
    if not isinstance(max_classify, int) or max_classify < 0:
        raise ValueError(f"max_classify must be a non-negative integer, got {max_classify!r}")
    out = []
    for o in objects:
        box = tuple(getattr(o, "box", ()))
        if len(box) != 4 or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in box):
            raise ValueError(f"object box must be 4 integers in the model frame, got {box!r}")
        label, subtype = getattr(o, "label", None), getattr(o, "subtype", None)
        if not isinstance(label, str) or not label or (subtype is not None and not isinstance(subtype, str)):
            raise ValueError(f"object needs a non-empty label and a str or None subtype, got {o!r}")
        out.append(FrameObj(tuple(int(v) for v in box), label, subtype or None))
    return out


def build_qa(objects: Sequence[FrameObj], frame: int, tasks: Sequence[str] = PAPER_TASKS, *, seed,
             scene: SceneInfo | None = None, classes: Sequence[str] = ("ship", "plane"),
             subtypes: Mapping[str, Sequence[str]] | None = None, max_classify: int = 3) -> list[QA]:
    """All question/answer turns of one image, task by task in ``tasks`` order.

    landcover asks once when the scene's land-cover shares are known (:func:`dominant_cover`), else not at all.
    count, locate and detect ask once per class in ``classes`` (absent classes give ``0`` / ``None``: the
    negatives a detector needs). classify asks about up to ``max_classify`` objects whose label is in
    ``classes`` (a seeded choice): coarse when there are two or more classes, fine when the object has a
    subtype and there are two or more options: ``subtypes[label]`` (pass it dataset-wide), else the subtypes
    seen in this image. A subtype missing from ``subtypes[label]`` is a ValueError. ``seed`` is any str/int.
    """
    tasks, classes = tuple(tasks), tuple(classes)
    objs = _check(objects, frame, tasks, classes, max_classify)
    ask = Ask(seed, scene, classes, subtypes, max_classify)
    return [qa for task in tasks for qa in REGISTRY[task].answers(objs, frame, ask)]


def _template_re(template: str) -> re.Pattern:
    parts = re.split(r"\{[a-z_]*\}", one_line(template.lower()))
    return re.compile(".+?".join(re.escape(p) for p in parts) + r"\s*")


_TASK_RES = [(t.name, _template_re(q)) for t in _REGISTRY for q in t.questions]


def _normal(question: str) -> str:
    return one_line(question.replace("<image>", " ").lower())


def task_of_question(question) -> str | None:
    """The task of a question asked with one of our templates (as ``build`` writes them) or with the authors'
    detection prompt, or None: what scores a record that carries no ``task`` (the authors' manifests have none)."""
    if not isinstance(question, str):
        return None
    q = _normal(question)
    found = {task for task, rx in _TASK_RES if rx.fullmatch(q)}
    if not found and asked_class(q):
        return "detect"
    return found.pop() if len(found) == 1 else None


def fill_tasks(records: Sequence[dict], task: str | None = None, source: object = "") -> list[dict]:
    """Records without a ``task`` (the authors' manifests) get ``task`` or the one their question names
    (:func:`task_of_question`); one that neither decides is a one-line error naming it and ``source``. Scoring needs
    every record's task, and a model with one adapter per task needs it to pick the adapter."""
    check_task(task)
    out = []
    for r in records:
        if r.get("task") is None:
            found = task or task_of_question(r["question"])
            if found is None:
                raise ValueError(f"{source}: record {r['id']!r} has no task and its question "
                                 f"{r['question'][:60]!r} is not one of ours; give --task")
            r = {**r, "task": found}
        out.append(r)
    return out


def check_task(task: str | None) -> None:
    """Refuse a ``--task`` (or a request's ``task``) that names no task of the registry; None is no choice."""
    if task is not None and task not in TASKS:
        raise ValueError(f"--task must be one of {', '.join(TASKS)}, got {task!r}")
