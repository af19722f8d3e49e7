"""The ``fusar-gpt`` command line: thin argument parsing over library functions."""

from __future__ import annotations

import argparse
import json
import sys

from . import __version__

EXAMPLES = {
    "demo": """examples:
  fusar-gpt demo                      # build the small backbone, attach TLM, answer one question
  fusar-gpt demo --json               # the same, machine-readable
  fusar-gpt demo --keep runs/smoke    # keep the generated backbone directory""",
    "import-official": """examples:
  fusar-gpt import-official checkpoints/stage2/detection --out runs/official-det
  fusar-gpt import-official old_ckpt --out runs/legacy --sigma 2   # legacy dir without tlm_config.json""",
}


def _parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(
        prog="fusar-gpt", formatter_class=fmt,
        description="FUSAR-GPT: SAR vision-language model with AlphaEarth priors fused by TLM.",
        epilog="examples:\n  fusar-gpt demo\n  fusar-gpt import-official SRC --out RUN\n\n"
               "Run 'fusar-gpt COMMAND --help' for a command's options.")
    p.add_argument("--version", action="version", version=f"fusar-gpt {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    d = sub.add_parser("demo", help="smoke pipeline: small backbone + TLM answers one question (random weights)",
                       description="Build the small Qwen2.5-VL backbone, save and reload it, attach a TLM and answer "
                                   "a question about a generated SAR-like image with generated AEF-like anchors.",
                       epilog=EXAMPLES["demo"], formatter_class=fmt)
    d.add_argument("--preset", default="small", choices=["tiny", "small"], help="backbone size (default: small)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--keep", metavar="DIR", help="write the backbone here instead of a temporary directory")
    d.add_argument("--json", action="store_true", help="print the report as JSON")

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
    return p


def _demo(args) -> int:
    from .demo import format_report, run_smoke

    report = run_smoke(args.keep, preset=args.preset, seed=args.seed)
    print(json.dumps(report) if args.json else format_report(report))
    return 0


def _import_official(args) -> int:
    from .model.checkpoint import import_official, load_tlm

    run = import_official(args.src, args.out, sigma=args.sigma, missing=args.missing)
    tlm = load_tlm(run)
    info = {"run": str(run), "hidden_size": tlm.hidden_size, "sigma": tlm.sigma,
            "adapter": (run / "adapter").exists()}
    print(json.dumps(info) if args.json else
          f"imported {args.src} -> {run} (hidden size {tlm.hidden_size}, sigma {tlm.sigma}, "
          f"adapter {'yes' if info['adapter'] else 'no'})")
    return 0


COMMANDS = {"demo": _demo, "import-official": _import_official}


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return COMMANDS[args.command](args)
    except (ValueError, FileNotFoundError) as err:
        print(f"fusar-gpt {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
