"""The ``fusar-gpt`` command line: thin argument parsing over library functions.

The sub-commands' parsers and handlers live in ``fusar_gpt.cli`` (one module per theme); this module wires them
together, in the order ``fusar-gpt --help`` lists them, and turns bad input into one ``error:`` line (exit 2).
"""

from __future__ import annotations

import argparse
import sys

from . import __version__
from .cli import data, geo, infer, model, scoring

_ALL_EXAMPLES = {**model.EXAMPLES, **geo.EXAMPLES, **data.EXAMPLES, **scoring.EXAMPLES, **infer.EXAMPLES}
EXAMPLES = {name: _ALL_EXAMPLES[name] for name in ("demo", "aef", "synth", "build", "train", "score", "eval",
                                                   "compare", "ask", "detect-scene", "serve", "export",
                                                   "import-official")}


def _parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(
        prog="fusar-gpt", formatter_class=fmt,
        description="FUSAR-GPT: SAR vision-language model with AlphaEarth priors fused by TLM.",
        epilog="examples:\n  fusar-gpt demo\n"
               "  fusar-gpt aef sample --aef ROOT --bbox 4.49,43.57,4.55,43.61 --year 2024\n"
               "  fusar-gpt ask runs/s2 scene.tif \"How many ships?\" --aef ROOT\n"
               "  fusar-gpt import-official SRC --out RUN\n\n"
               "Run 'fusar-gpt COMMAND --help' for a command's options.")
    p.add_argument("--version", action="version", version=f"fusar-gpt {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    model.add_demo_parser(sub, fmt)
    geo.add_parsers(sub, fmt)
    data.add_parsers(sub, fmt)
    model.add_train_parser(sub, fmt)
    scoring.add_parsers(sub, fmt)
    infer.add_parsers(sub, fmt)
    model.add_import_official_parser(sub, fmt)
    model.add_chip_spec_parser(sub, fmt)
    return p


COMMANDS = {"demo": model.cmd_demo, "synth": data.cmd_synth, "build": data.cmd_build, "train": model.cmd_train,
            "eval": scoring.cmd_eval, "score": scoring.cmd_score, "compare": scoring.cmd_compare, "aef": geo.cmd_aef,
            "import-official": model.cmd_import_official, "ask": infer.cmd_ask, "detect-scene": infer.cmd_detect_scene,
            "serve": infer.cmd_serve, "export": infer.cmd_export, "chip-spec": model.cmd_chip_spec}


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
    except KeyboardInterrupt:  # Ctrl-C: one line and the shell's code for SIGINT, not a traceback
        print(f"fusar-gpt {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
