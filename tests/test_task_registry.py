"""The task registry: every task declares every part, and every module follows the registry's one task order."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from fusar_gpt.config import STAGE_TASKS
from fusar_gpt.data.tasks import (
    PAPER_TASKS,
    REGISTRY,
    REPORT_ORDER,
    TASKS,
    FrameObj,
    SceneInfo,
    Task,
    build_qa,
    task_of_question,
)
from fusar_gpt.evaluate import MAX_NEW_TOKENS
from fusar_gpt.scoring import paired, per_record, score

OBJS = [FrameObj((10, 10, 40, 30), "ship", "tanker"), FrameObj((140, 140, 160, 160), "ship", "cargo"),
        FrameObj((200, 20, 230, 60), "plane", "a320"), FrameObj((60, 220, 90, 250), "plane", "b737")]
SCENE = SceneInfo(landcover={"water": 0.5, "built": 0.3, "trees": 0.2}, layout=["water"] * 5 + ["built"] * 4,
                  sensor="Sentinel-1", date="2024-05-01")


def records(seeds=range(6)):
    out = []
    for s in seeds:
        for j, qa in enumerate(build_qa(OBJS[: 1 + s % 4], 300, TASKS, seed=s, scene=SCENE)):
            out.append({"id": f"{s}-{j}", "task": qa.task, "question": qa.question, "answer": qa.answer,
                        "meta": qa.meta})
    return out


def test_every_task_declares_every_part():
    assert TASKS == tuple(REGISTRY) == tuple(t.name for t in REGISTRY.values())
    required = [f.name for f in dataclasses.fields(Task) if f.default is dataclasses.MISSING]
    assert {"questions", "answers", "parse", "truth", "outcomes", "columns", "figures", "max_new_tokens"} <= set(
        required)
    for name, t in REGISTRY.items():
        assert t.name == name
        assert t.questions and all(isinstance(q, str) and q for q in t.questions), name
        assert all(callable(getattr(t, f)) for f in ("answers", "parse", "truth", "outcomes", "columns")), name
        assert t.metrics and all(callable(fn) for fn in t.figures.values()), name
        assert isinstance(t.max_new_tokens, int) and t.max_new_tokens > 0, name
        assert (t.per_class is None) == (not t.per_class_metrics), name
        assert set(t.per_class_metrics) <= set(t.metrics), name
        assert callable(t.baseline_key) and isinstance(t.baseline_key({}), tuple), name


def test_one_task_order_everywhere():
    assert set(REPORT_ORDER) == set(TASKS) and len(REPORT_ORDER) == len(TASKS)
    assert PAPER_TASKS == tuple(t for t in TASKS if REGISTRY[t].stage is not None)
    assert STAGE_TASKS == {s: tuple(t for t in TASKS if REGISTRY[t].stage == s) for s in (1, 2)}
    assert sum(STAGE_TASKS.values(), ()) == tuple(sorted(PAPER_TASKS, key=lambda t: REGISTRY[t].stage))
    assert tuple(MAX_NEW_TOKENS) == TASKS
    assert MAX_NEW_TOKENS == {t: REGISTRY[t].max_new_tokens for t in TASKS}
    recs = records()[::-1]  # record order must not set the task order
    preds = {r["id"]: r["answer"] for r in recs}
    assert tuple(per_record(recs, preds)) == TASKS
    metrics = score(recs, preds, n_boot=5)
    assert tuple(metrics) == TASKS
    for task, res in metrics.items():
        assert [k for k in res if k in REGISTRY[task].metrics] == list(REGISTRY[task].metrics)
    assert tuple(paired(recs, preds, {}, n_boot=5)) == TASKS


def test_build_qa_answers_read_back_by_their_own_parsers():
    recs = records()
    assert {r["task"] for r in recs} == set(TASKS)
    for r in recs:
        t = REGISTRY[r["task"]]
        choices = r["meta"].get("choices", ())
        truth = t.truth(r["answer"], choices)
        assert t.parse(r["answer"], choices) == truth, r
        assert task_of_question(r["question"]) == r["task"], r


def test_perfect_answers_score_perfectly_and_columns_fit_figures():
    recs = records()
    preds = {r["id"]: r["answer"] for r in recs}
    rows = per_record(recs, preds)
    for task, rs in rows.items():
        t = REGISTRY[task]
        widths = {len(t.columns(r)) for r in rs}
        assert len(widths) == 1, task
        sums = np.asarray([t.columns(r) for r in rs], float).sum(axis=0)
        for name, fn in t.figures.items():
            value = float(fn(sums))
            if name == "mae":
                assert value == 0.0
            elif name != "cider":  # CIDEr is on a 0-10 scale with set-dependent idf
                assert math.isclose(value, 1.0), (task, name, value)


@pytest.mark.parametrize("task", TASKS)
def test_truth_parser_rejects_garbage(task):
    with pytest.raises(ValueError):
        REGISTRY[task].truth("", ("ship", "plane"))
