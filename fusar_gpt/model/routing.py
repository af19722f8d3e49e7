"""Which adapter answers a question, for a model that carries one adapter per task.

The authors release one stage-II adapter per task (and the stage-I one); an imported release keeps them all on
ONE base (peft multi-adapter, ``RUN/adapters/<task>/``), because four copies of a 7B base would not fit where
one does, and the adapters are a few megabytes each. A question is then answered by its task's adapter: the task
its record names, else the one given (``--task``), else the one its wording tells
(:func:`fusar_gpt.data.tasks.task_of_question`). This module is the one place that decides and switches, so
``ask``, ``eval``, ``detect-scene`` and ``serve`` cannot disagree. A model with one adapter (or none) is left
alone: every question is one group and nothing is switched, exactly as before.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from ..data.tasks import TASKS, task_of_question
from ..text import one_line

ASK_TASK = "pass --task TASK"  # how a command-line user names the task (the server says it its own way)


class RoutingError(ValueError):
    """A question no adapter of the model is for; the message says how to name its task."""


def task_adapters(model) -> tuple[str, ...]:
    """The per-task adapters ``model``'s backbone carries, in registry order (empty for a run with one adapter:
    its peft adapter is called ``default``, not after a task)."""
    config = getattr(getattr(model, "backbone", None), "peft_config", None) or {}
    return tuple(t for t in TASKS if t in config)


def adapter_of(model, question: str, task: str | None = None, *, how: str = ASK_TASK) -> str | None:
    """The adapter of ``model`` that answers ``question`` (:func:`choose_adapter` over its task adapters); None for
    a model without task adapters."""
    return choose_adapter(task_adapters(model), question, task, how=how)


def choose_adapter(adapters: Sequence[str], question: str, task: str | None = None, *,
                   how: str = ASK_TASK) -> str | None:
    """Which of ``adapters`` (task names) answers ``question``: ``task`` (its record's or the user's), else the task
    its wording tells; None when there are no adapters to choose from. A question whose task cannot be told, or
    whose task has no adapter, is a :class:`RoutingError` saying ``how`` to name one. Takes names, not a model, so
    a command can refuse a question before it loads any weight."""
    if not adapters:
        return None
    if task is not None and task not in TASKS:
        raise RoutingError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    found = task or task_of_question(question)
    shown = one_line(question)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    if found is None:
        raise RoutingError(f"cannot tell which task the question {shown!r} asks, and this model answers with one "
                           f"adapter per task ({', '.join(adapters)}): {how}")
    if found not in adapters:
        raise RoutingError(f"this model has no adapter for the {found} task of the question {shown!r} (it has "
                           f"{', '.join(adapters)}): {how}")
    return found


def route(model, questions: Sequence[str], tasks: Sequence[str | None] | None = None, *,
          how: str = ASK_TASK) -> Iterator[list[int]]:
    """Index groups of ``questions``, one per adapter (in order of first appearance), each yielded after its adapter
    is made the active one, so the caller generates each group as it gets it. Every question is routed before this
    returns, so one that cannot be fails before anything is generated. Without task adapters: one group of all."""
    tasks = [None] * len(questions) if tasks is None else list(tasks)
    if len(tasks) != len(questions):
        raise ValueError(f"{len(questions)} questions but {len(tasks)} tasks")
    groups: dict[str | None, list[int]] = {}
    for i, (question, task) in enumerate(zip(questions, tasks)):
        groups.setdefault(adapter_of(model, question, task, how=how), []).append(i)
    return _activating(model, groups)


def _activating(model, groups: dict[str | None, list[int]]) -> Iterator[list[int]]:
    for adapter, indices in groups.items():
        if adapter is not None:
            model.backbone.set_adapter(adapter, inference_mode=True)  # inference_mode: switching never unfreezes
        yield indices
