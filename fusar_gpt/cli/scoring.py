"""``fusar-gpt score``, ``eval`` and ``compare``: metrics, reports and ablation tables."""

from __future__ import annotations

import json
import sys
from pathlib import Path

EXAMPLES = {
    "score": """examples:
  fusar-gpt score --predictions preds.jsonl --manifest ds/manifest.jsonl --split test
  fusar-gpt score --predictions preds.jsonl --manifest ds/manifest.jsonl --json   # one JSON object""",
    "eval": """examples:
  fusar-gpt eval --run runs/s2 --manifest ds/manifest.jsonl              # test split -> RUN/report.md
  fusar-gpt eval --run runs/s2 --manifest ds/ --split val --batch-size 16 --out reports/val
  fusar-gpt eval --run runs/official --manifest ds/       # an imported release: each record on its task's adapter
  fusar-gpt eval --run runs/official --manifest mine.jsonl --task count   # the task of records that name none""",
    "compare": """examples:
  fusar-gpt compare runs/fusar-s2 runs/no-aef-s2 runs/sum-s2 --out reports/ablations""",
}


def add_parsers(sub, fmt) -> None:
    sc = sub.add_parser("score", help="score a predictions JSONL against a manifest (no model needed)",
                        description="Metrics of DESIGN.md §3 with 95%% bootstrap intervals. Predictions are "
                                    "{\"id\", \"answer\"} lines; records without a prediction count as wrong.",
                        epilog=EXAMPLES["score"], formatter_class=fmt)
    sc.add_argument("--predictions", required=True, help="JSONL of {id, answer}")
    sc.add_argument("--manifest", required=True, help="manifest.jsonl (or the dataset folder)")
    sc.add_argument("--split", help="score this split (default: every split the predictions answer; all of its "
                                    "records count, unanswered ones as wrong)")
    sc.add_argument("--strict", action="store_true", help="refuse prediction ids that are not in the manifest "
                                                          "(default: report and ignore them)")
    sc.add_argument("--task", help="the task of records that carry none (the authors' manifests; default: "
                                   "read from the question when it is one of our templates)")
    sc.add_argument("--json", action="store_true", help="print exactly one JSON object")

    ev = sub.add_parser("eval", help="generate answers with a trained run, then score and write a report",
                        description="Batched greedy generation on a manifest split; writes predictions.jsonl, "
                                    "metrics.json and report.md (with plots) next to each other.",
                        epilog=EXAMPLES["eval"], formatter_class=fmt)
    ev.add_argument("--run", required=True, help="run directory (after stage II)")
    ev.add_argument("--manifest", required=True, help="manifest.jsonl or the dataset folder")
    ev.add_argument("--split", default="test", help="split to evaluate (default test)")
    ev.add_argument("--tasks", help="comma list of tasks (default: all in the split)")
    ev.add_argument("--task", help="the task of records that carry none (the authors' manifests; default: read "
                                   "from the question); it also picks the adapter of a run with one per task")
    ev.add_argument("--batch-size", type=int, default=8)
    ev.add_argument("--limit", type=int, help="only the first N records (quick checks)")
    ev.add_argument("--out", help="output folder (default: the run directory)")
    ev.add_argument("--json", action="store_true", help="print the metrics as JSON")

    cp = sub.add_parser("compare", help="ablation table across evaluated runs, paired differences vs the first",
                        epilog=EXAMPLES["compare"], formatter_class=fmt)
    cp.add_argument("runs", nargs="+", help="evaluated run directories (each with metrics.json, predictions.jsonl)")
    cp.add_argument("--names", help="comma list of names for the table (default: folder names)")
    cp.add_argument("--out", default=".", help="where compare.md and compare.png go (default: here)")
    cp.add_argument("--json", action="store_true", help="print the comparison as JSON")


def _manifest_path(path: str) -> str:
    p = Path(path)
    return str(p / "manifest.jsonl") if p.is_dir() else str(p)


def cmd_score(args) -> int:
    from ..data.manifest import load_manifest
    from ..data.tasks import fill_tasks
    from ..report import metrics_table
    from ..scoring import read_predictions, score

    preds = read_predictions(args.predictions)
    if not preds:
        raise ValueError(f"{args.predictions}: no predictions in the file")
    records = load_manifest(_manifest_path(args.manifest), split=args.split)
    known = {str(r["id"]) for r in records}
    unmatched = [i for i in preds if i not in known]
    if len(unmatched) == len(preds):
        raise ValueError(f"{args.predictions}: none of its {len(preds)} prediction ids is in {args.manifest}"
                         + (f" (split {args.split})" if args.split else "") + f" (first: {unmatched[0]!r})")
    if unmatched:
        where = f"the {args.split} split of {args.manifest}" if args.split else args.manifest
        print(f"{args.predictions}: {len(unmatched)} prediction id(s) not in {where} (first: {unmatched[0]!r})"
              + ("; refused (--strict)" if args.strict else "; ignored"), file=sys.stderr)
        if args.strict:
            return 2
    records = fill_tasks(records, args.task, args.manifest)
    if args.split is None:  # every record of each split the predictions answer (unanswered ones count wrong)
        splits = {r.get("split") for r in records if str(r["id"]) in preds}
        records = [r for r in records if r.get("split") in splits] if splits else records
    metrics = score(records, preds)
    print(json.dumps(metrics) if args.json else metrics_table(["predictions"], [metrics]))
    return 0


def cmd_eval(args) -> int:
    from ..evaluate import evaluate_run
    from ..report import metrics_table

    tasks = [t.strip() for t in args.tasks.split(",")] if args.tasks else None
    result = evaluate_run(args.run, _manifest_path(args.manifest), split=args.split, tasks=tasks,
                          batch_size=args.batch_size, out=args.out, progress=not args.json, limit=args.limit,
                          task=args.task)
    if args.json:
        print(json.dumps(result))
    else:
        print(metrics_table(["model"], [result["metrics"]], baseline=result["majority_baseline"]))
        print(f"report: {args.out or args.run}/report.md")
    return 0


def cmd_compare(args) -> int:
    from ..evaluate import compare_runs

    names = args.names.split(",") if args.names else None
    result = compare_runs(args.runs, out=args.out, names=names)
    print(json.dumps(result) if args.json else result["table"] + f"\nreport: {result['report']}")
    return 0
