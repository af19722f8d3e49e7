"""``fusar-gpt demo``, ``train``, ``import-official``, ``chip-spec``: commands that train, load or describe a model."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from ..geo.bands import POLS
from ..geo.raster_tags import SCALES
from ..recipe_rules import MISSING
from ..text import one_line
from ..vocab import EIGHT_BIT, SAMPLING

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
  fusar-gpt import-official RELEASE --out runs/official --base /models/Qwen2.5-VL-7B-Instruct
      # the whole release (stage1/ + stage2/{localization,counting,classification,detection}/): one run,
      # one TLM, one adapter per task; ask, eval and serve route each question to its task's adapter
  fusar-gpt import-official RELEASE/stage2/detection --out runs/official-det --sigma 2 --base /models/Qwen2.5-VL-7B
  fusar-gpt import-official old_ckpt --out runs/legacy --sigma 2   # legacy dir without tlm_config.json
  fusar-gpt import-official ckpt --out runs/official --frame 504     # the frame its inputs are made at""",
    "chip-spec": """examples:
  fusar-gpt chip-spec runs/s2                              # show how the model's inputs are made
  fusar-gpt chip-spec runs/old-run --dataset ds/           # add chip.json from the dataset it was trained on
  fusar-gpt chip-spec runs/imported --frame 504 --eight-bit rgb   # an imported official checkpoint
  fusar-gpt chip-spec runs/s2 --frame 224 --stretch -25,5 --force # replace it (changes every answer)""",
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
    i = sub.add_parser("import-official", help="convert an official FUSAR-GPT checkpoint (or the whole release) into "
                                               "a run directory",
                       description="Read vec64_film.pt (tensors only, never full unpickling) + tlm_config.json "
                                   "(+ a peft adapter) and write RUN/tlm.safetensors, RUN/tlm.json, RUN/adapter/. "
                                   "The authors' release (stage1/ + stage2/<task>/) becomes one run with its one TLM "
                                   "(refused if the folders' differ) and RUN/adapters/{caption,count,locate,classify,"
                                   "detect}/, loaded together on one base; each question is answered by its task's "
                                   "adapter (ask --task picks one).",
                       epilog=EXAMPLES["import-official"], formatter_class=fmt)
    i.add_argument("src", help="official checkpoint directory, or the release directory (stage1/, stage2/)")
    i.add_argument("--out", required=True, help="new run directory")
    i.add_argument("--base", help="the Qwen2.5-VL directory it was trained on, named in RUN/config.yaml so that ask, "
                                  "eval and serve load the run (required for a release)")
    i.add_argument("--sigma", type=float, help="Gaussian sigma; required for legacy dirs without tlm_config.json "
                                               "(a release's folders default to 2.0, with a notice)")
    i.add_argument("--missing", default="identity", choices=MISSING,
                   help="policy for images with no valid anchor (default: identity)")
    i.add_argument("--frame", type=int, help="model frame of its inputs, written to chip.json (default: the "
                                             "checkpoint's image_size, 504)")
    i.add_argument("--json", action="store_true", help="print the result as JSON")


def add_chip_spec_parser(sub, fmt) -> None:
    c = sub.add_parser("chip-spec", help="show or set how a model's inputs are made (MODEL/chip.json)",
                       description="A model directory's chip.json (frame, anchor grid, AEF sampling, dB stretch, "
                                   "bands/polarisation, year policy, 8-bit mode) is how ask, detect-scene, serve "
                                   "and eval make its inputs. train and export write it; this command shows it, or "
                                   "adds it to a directory that lacks one.",
                       epilog=EXAMPLES["chip-spec"], formatter_class=fmt)
    c.add_argument("model", help="run, export or imported-checkpoint directory")
    c.add_argument("--dataset", help="take the spec from this dataset's build.json")
    c.add_argument("--frame", type=int, help="model frame in pixels (a multiple of 28)")
    c.add_argument("--grid", type=int, default=8, help="anchor grid side (default 8)")
    c.add_argument("--sampling", default="point", choices=SAMPLING, help="AEF sampling (default point)")
    c.add_argument("--stretch", help="fixed dB range LOW,HIGH (default: each image's 2-98 %% percentiles)")
    c.add_argument("--bands", help="band choice as in build --bands (i,q | N | N,M)")
    c.add_argument("--pol", choices=POLS, help="polarisation as in build --pol")
    c.add_argument("--scale", choices=SCALES, help="pixel values as in build --scale")
    c.add_argument("--eight-bit", default="gray", choices=EIGHT_BIT,
                   help="PNG/JPEG inputs: one grey channel (as build writes them) or colour as is (default gray)")
    c.add_argument("--force", action="store_true", help="replace an existing chip.json")
    c.add_argument("--json", action="store_true", help="print the spec as JSON")


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
            raise ValueError(f"--set {item!r}: the value is not YAML ({one_line(err)})") from None
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
    from ..model.checkpoint import RUN_CONFIG, load_tlm, task_adapter_dirs
    from ..model.official import import_official

    run = import_official(args.src, args.out, sigma=args.sigma, missing=args.missing, frame=args.frame,
                          base=args.base)
    tlm = load_tlm(run)
    adapters = list(task_adapter_dirs(run))
    info = {"run": str(run), "hidden_size": tlm.hidden_size, "sigma": tlm.sigma,
            "adapter": (run / "adapter").exists() or bool(adapters), "adapters": adapters,
            "loadable": (run / RUN_CONFIG).exists()}
    kind = f"adapters {', '.join(adapters)}" if adapters else f"adapter {'yes' if info['adapter'] else 'no'}"
    print(json.dumps(info) if args.json else
          f"imported {args.src} -> {run} (hidden size {tlm.hidden_size}, sigma {tlm.sigma}, {kind})"
          + ("" if info["loadable"] else "; give --base to make it a run that ask/eval/serve load"))
    return 0


def cmd_chip_spec(args) -> int:
    from ..chip import CHIP_FILE, ChipSpec, dataset_spec, read_spec

    folder = Path(args.model)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such model directory")
    if args.dataset and args.frame is not None:
        raise ValueError("--dataset and --frame contradict each other: give one")
    if args.dataset is None and args.frame is None:
        spec = read_spec(folder)
    else:
        if (folder / CHIP_FILE).exists() and not args.force:
            raise ValueError(f"{folder / CHIP_FILE} exists; --force replaces it (and changes the model's inputs)")
        if args.dataset:
            spec = dataset_spec(args.dataset)
            if spec is None:
                raise FileNotFoundError(f"{args.dataset}: no build.json (only a dataset made by fusar-gpt build "
                                        f"records its chip spec; give --frame instead)")
        else:
            stretch = None
            if args.stretch:
                try:
                    stretch = tuple(float(v) for v in args.stretch.split(","))
                except ValueError:
                    raise ValueError(f"--stretch {args.stretch!r}: expected LOW,HIGH in dB") from None
            spec = ChipSpec.from_dict({"frame": args.frame, "grid": args.grid, "sampling": args.sampling,
                                       "stretch": stretch, "bands": args.bands, "pol": args.pol,
                                       "scale": args.scale,
                                       "eight_bit": args.eight_bit}, "chip-spec")
        spec.save(folder)
    print(json.dumps(spec.to_dict()) if args.json else
          "\n".join(f"{k}: {v}" for k, v in spec.to_dict().items()))
    return 0
