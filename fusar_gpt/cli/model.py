"""``fusar-gpt demo``, ``train`` and ``import-official``: the commands that train or load a model."""

from __future__ import annotations

import json

EXAMPLES = {
    "demo": """examples:
  fusar-gpt demo                          # ~10-15 min on 2 cores; report in runs/demo/compare/compare.md
  fusar-gpt demo --out /tmp/demo --json
  fusar-gpt demo --quick                  # the same path in about a minute (numbers meaningless)
  fusar-gpt demo --rebuild-base           # re-make assets/demo-base (stage 0 on another world, ~15 min)
  fusar-gpt demo --ablations              # + sum, concat, one-stage on the same world (reuses the demo's runs)""",
    "train": """examples:
  fusar-gpt train configs/tiny-cpu/stage1.yaml --data ds/ --out runs/s1            # stage I (TLM + LoRA)
  fusar-gpt train configs/tiny-cpu/stage2.yaml --init runs/s1 --out runs/s2       # stage II (LoRA; TLM frozen)
  fusar-gpt train configs/tiny-cpu/stage1.yaml --out runs/s1 --resume             # continue after a crash
  fusar-gpt train configs/tiny-cpu/stage1.yaml --set train.lr=5e-5 --set train.batch_size=4
  accelerate launch --config_file configs/accelerate/ddp.yaml -m fusar_gpt train \\
      configs/qwen2.5-vl-7b/stage1.yaml --data ds/ --out runs/7b-s1                # several GPUs""",
    "import-official": """examples:
  fusar-gpt import-official checkpoints/stage2/detection --out runs/official-det
  fusar-gpt import-official old_ckpt --out runs/legacy --sigma 2   # legacy dir without tlm_config.json""",
}


def add_demo_parser(sub, fmt) -> None:
    d = sub.add_parser("demo", help="the whole pipeline on a synthetic world: FUSAR-GPT vs no-AEF, scored",
                       description="Synthesise a world, build the dataset, start from the committed base model "
                                   "(assets/demo-base: the random small preset after our stage-0 stand-in "
                                   "pretraining on a world of another seed), train FUSAR-GPT (stage I + II) and the "
                                   "no-AEF baseline from it, evaluate both on the test split and compare them with "
                                   "paired 95%% intervals, each against the majority answer too (~13 min on 2 CPU "
                                   "cores). Re-running reuses finished steps.",
                       epilog=EXAMPLES["demo"], formatter_class=fmt)
    d.add_argument("--out", default="runs/demo", help="working folder (default runs/demo)")
    d.add_argument("--quick", action="store_true", help="a tiny version for tests (~1 min, results meaningless)")
    d.add_argument("--rebuild-base", action="store_true",
                   help="re-make the committed base model (assets/demo-base) with its recorded recipe, then stop")
    d.add_argument("--ablations", action="store_true",
                   help="the paper's fusion ablation at small scale: tlm, sum, concat, none and one-stage")
    d.add_argument("--json", action="store_true", help="print the summary as JSON")


def add_train_parser(sub, fmt) -> None:
    t = sub.add_parser("train", help="train a stage (I: knowledge injection, II: task execution) from a recipe",
                       description="One training loop for both stages; the recipe (YAML) says what trains, the "
                                   "learning rate, epochs and data. Checkpoints are atomic and --resume is exact.",
                       epilog=EXAMPLES["train"], formatter_class=fmt)
    t.add_argument("recipe", help="recipe YAML (see configs/)")
    t.add_argument("--stage", type=int, choices=[1, 2], help="override the recipe's stage")
    t.add_argument("--data", help="dataset folder or manifest.jsonl (overrides data.manifest)")
    t.add_argument("--out", help="run directory (overrides the recipe's out)")
    t.add_argument("--init", help="stage-1 run directory that stage 2 continues")
    t.add_argument("--max-steps", type=int, help="stop after this many optimizer steps (overrides epochs)")
    t.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint of --out")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any recipe key, e.g. train.lr=5e-5 (repeatable)")
    t.add_argument("--json", action="store_true", help="print the summary as JSON")


def add_import_official_parser(sub, fmt) -> None:
    i = sub.add_parser("import-official", help="convert an official FUSAR-GPT checkpoint into a run directory",
                       description="Read vec64_film.pt (tensors only, never full unpickling) + tlm_config.json "
                                   "(+ a peft adapter) and write RUN/tlm.safetensors, RUN/tlm.json, RUN/adapter/.",
                       epilog=EXAMPLES["import-official"], formatter_class=fmt)
    i.add_argument("src", help="official checkpoint directory")
    i.add_argument("--out", required=True, help="new run directory")
    i.add_argument("--sigma", type=float, help="Gaussian sigma; required for legacy dirs without tlm_config.json")
    i.add_argument("--missing", default="identity", choices=["identity", "null", "error"],
                   help="policy for images with no valid anchor (default: identity)")
    i.add_argument("--json", action="store_true", help="print the result as JSON")


def cmd_demo(args) -> int:
    from ..demo import format_summary, rebuild_base, run_demo

    if args.rebuild_base:
        print(rebuild_base(progress=not args.json))
        return 0
    if args.ablations:
        from ..ablations import format_ablations, run_ablations

        result = run_ablations(args.out, quick=args.quick,
                               progress=not args.json)
        print(json.dumps(result) if args.json else format_ablations(result))
        return 0
    summary = run_demo(args.out, quick=args.quick, progress=not args.json)
    print(json.dumps(summary) if args.json else format_summary(summary))
    return 0


def cmd_train(args) -> int:
    import yaml

    from ..config import load_recipe
    from ..train import resolve_paths, train

    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE")
        try:
            overrides[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise ValueError(f"--set {item!r}: the value is not YAML ({' '.join(str(err).split())})") from None
    if args.stage is not None:
        overrides["stage"] = args.stage
    if args.max_steps is not None:
        overrides["train.max_steps"] = args.max_steps
    recipe = resolve_paths(load_recipe(args.recipe, overrides), out=args.out, data=args.data, init=args.init)
    summary = train(recipe, resume=args.resume, progress=not args.json)
    if summary.get("rank", 0):  # under torchrun the main process alone reports (its lines would interleave)
        return 0
    loss = summary.get("loss", float("nan"))
    print(json.dumps(summary) if args.json else
          f"{summary['run']}: {summary['steps']}/{summary['total_steps']} steps, loss {loss:.4f}"
          + (f", val loss {summary['val_loss']:.4f}" if "val_loss" in summary else ""))
    return 0


def cmd_import_official(args) -> int:
    from ..model.checkpoint import import_official, load_tlm

    run = import_official(args.src, args.out, sigma=args.sigma, missing=args.missing)
    tlm = load_tlm(run)
    info = {"run": str(run), "hidden_size": tlm.hidden_size, "sigma": tlm.sigma,
            "adapter": (run / "adapter").exists()}
    print(json.dumps(info) if args.json else
          f"imported {args.src} -> {run} (hidden size {tlm.hidden_size}, sigma {tlm.sigma}, "
          f"adapter {'yes' if info['adapter'] else 'no'})")
    return 0
