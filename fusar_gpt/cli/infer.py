"""``fusar-gpt ask``, ``detect-scene``, ``serve`` and ``export``: the commands that put a trained model to work."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ..recipe_rules import DTYPES
from ..vocab import CHIP_MAX_PIXELS

EXAMPLES = {
    "ask": """examples:
  fusar-gpt ask runs/s2 scene.tif "How many ships are in this image?" --aef /data/aef   # place + year from the file
  fusar-gpt ask runs/s2 chip.png "Where are the planes?" --aef /data/aef --bbox 4.49,43.57,4.55,43.61 --year 2024
  fusar-gpt ask runs/s2 chip.png "Count the ships." --anchors chip.npz --json
  fusar-gpt ask runs/s2 chip.png "Count the ships." --no-aef                    # without the AEF prior
  fusar-gpt ask runs/s2 scenes/ "How many ships?" --aef /data/aef --out answers.jsonl --batch-size 16
  fusar-gpt ask runs/s2 ds/manifest.jsonl --split test --out preds.jsonl     # each record's own question
  fusar-gpt ask runs/official chip.png "How many ships are in this image?" --no-aef   # -> the count adapter
  fusar-gpt ask runs/official chip.png "Ships here?" --no-aef --task count   # a question whose task it cannot tell""",
    "detect-scene": """examples:
  fusar-gpt detect-scene runs/s2 S1A_scene.tif --aef /data/aef --classes ship,plane --out dets.geojson
  fusar-gpt detect-scene exported/ big.tif --aef /data/aef --out d.geojson --coco d.json --tile 504 --overlap 64""",
    "serve": """examples:
  FUSAR_GPT_API_KEY=secret fusar-gpt serve runs/s2 --aef /data/aef --image-root /data/scenes
  fusar-gpt serve exported/ --aef /data/aef --host 0.0.0.0 --port 8000 --api-key secret --max-batch 16
  fusar-gpt serve runs/s2 --no-auth --no-aef-store      # loopback only, for local experiments""",
    "export": """examples:
  fusar-gpt export runs/s2 --merge exported/          # LoRA merged, TLM and chip.json beside it
  fusar-gpt export runs/s2 --merge exported-bf16/ --dtype bfloat16""",
}


def _device(name: str | None) -> str:
    if name:
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _add_geo(p, aef_required: bool = False) -> None:
    p.add_argument("--aef", help="AEF root ({year}/{zone}/*.tiff, or any GDAL path with --aef-index)")
    p.add_argument("--aef-index", help="local copy of the bucket's aef_index.parquet/.csv")
    p.add_argument("--year", type=int, help="acquisition year (overrides the GeoTIFF's date)")
    p.add_argument("--no-aef", action="store_true", help="no AEF prior (the model's missing-prior policy applies)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")


def add_parsers(sub, fmt) -> None:
    a = sub.add_parser("ask", help="answer a question about an image (or a folder / manifest, in batches)",
                       description="The image is prepared as the run's training images were (stretch, frame) and "
                                   "gets the AEF anchors of its place and year: from a GeoTIFF's georeference and "
                                   "date, from --bbox and --year for a PNG/JPEG, or from --anchors. A folder or a "
                                   "manifest.jsonl is answered in batches into --out (JSONL).",
                       epilog=EXAMPLES["ask"], formatter_class=fmt)
    a.add_argument("run", help="run directory or exported model (fusar-gpt export)")
    a.add_argument("image", help="GeoTIFF, PNG or JPEG; or a folder of them; or a manifest (.jsonl, or the "
                                           "authors' .json list)")
    a.add_argument("question", nargs="?", help="the question (a manifest brings its own)")
    a.add_argument("--bbox", help="lon_min,lat_min,lon_max,lat_max of a PNG/JPEG (or of a GeoTIFF without "
                                  "georeference)")
    a.add_argument("--anchors", help="ready anchors .npz (features, positions[, mask])")
    _add_geo(a)
    a.add_argument("--max-new-tokens", type=int, default=256, help="answer length limit (default 256)")
    a.add_argument("--out", help="JSONL output for a folder or manifest")
    a.add_argument("--split", help="manifest split to answer (default: every record)")
    a.add_argument("--batch-size", type=int, default=8, help="images per generate call (default 8)")
    a.add_argument("--task", help="the question's task (count, locate, classify, detect, caption, landcover): picks "
                                  "the adapter of a run with one per task (an imported release; default: the task "
                                  "the question's wording names, or a manifest record's own)")
    a.add_argument("--max-pixels", type=int, default=CHIP_MAX_PIXELS,
                   help="refuse an image (or a folder's) above this many pixels, read from its header (default 1e8: "
                        "a chip is a few thousand px a side; a whole scene is for detect-scene)")
    a.add_argument("--json", action="store_true", help="print the result as JSON")

    d = sub.add_parser("detect-scene", help="detect targets over a whole SAR scene -> GeoJSON (EPSG:4326)",
                       description="Tile the scene with overlap, detect each class per tile in batches, map the boxes "
                                   "to scene pixels, merge duplicates across tiles (IoU suppression) and write a "
                                   "GeoJSON FeatureCollection of lon/lat polygons (label, tile of origin).",
                       epilog=EXAMPLES["detect-scene"], formatter_class=fmt)
    d.add_argument("run", help="run directory or exported model")
    d.add_argument("scene", help="georeferenced SAR GeoTIFF (any size; read tile by tile)")
    d.add_argument("--classes", default="ship,plane", help="comma list (default ship,plane)")
    d.add_argument("--out", required=True, help="GeoJSON output")
    d.add_argument("--coco", help="also write COCO detections in scene pixels here")
    d.add_argument("--tile", type=int, help="tile size in scene pixels (default: the model frame)")
    d.add_argument("--overlap", type=int, default=64, help="tile overlap in pixels (default 64)")
    d.add_argument("--max-tiles", type=int, default=20_000, help="refuse a scene that needs more tiles than this "
                                                                 "(default 20000: about a 40000 px square scene)")
    d.add_argument("--iou", type=float, default=0.5, help="IoU at which two boxes are one object (default 0.5)")
    d.add_argument("--batch-size", type=int, default=8, help="prompts (tile x class) per generate call")
    d.add_argument("--max-new-tokens", type=int, default=512, help="answer length limit per tile (default 512)")
    _add_geo(d)
    d.add_argument("--json", action="store_true", help="print the summary as JSON")

    s = sub.add_parser("serve", help="OpenAI-compatible HTTP API with dynamic batching",
                       description="POST /v1/chat/completions, GET /v1/models, GET /health. A bearer token is "
                                   "required (--api-key or $FUSAR_GPT_API_KEY) unless --no-auth on loopback. "
                                   "Concurrent requests share generate calls.",
                       epilog=EXAMPLES["serve"], formatter_class=fmt)
    s.add_argument("run", help="run directory or exported model")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--api-key", help="bearer token (default: $FUSAR_GPT_API_KEY)")
    s.add_argument("--no-auth", action="store_true", help="no token (loopback hosts only)")
    s.add_argument("--aef", help="AEF root for requests that send bbox + year or a GeoTIFF")
    s.add_argument("--aef-index", help="local copy of the bucket's aef_index.parquet/.csv")
    s.add_argument("--no-aef-store", action="store_true", help="serve without an AEF root (requests send anchors "
                                                               "or no_aef)")
    s.add_argument("--image-root", help="server-side image paths must lie under this folder (default: refused)")
    s.add_argument("--model-name", help="the id clients use (default: the directory name)")
    s.add_argument("--max-batch", type=int, default=8, help="requests per generate call (default 8)")
    s.add_argument("--max-batch-tokens", type=int,
                   help="tokens per generate call: rows x (longest prompt + longest max_tokens), as padded (default: "
                        "--max-batch requests of a 64-token question at the default max_tokens)")
    s.add_argument("--batch-wait-ms", type=float, default=5.0, help="how long a batch waits for company (default 5)")
    s.add_argument("--max-body-mb", type=float, default=32.0, help="request body limit (default 32 MB)")
    s.add_argument("--max-image-pixels", type=int, default=10000 * 10000, help="image size limit (default 1e8)")
    s.add_argument("--max-tokens", type=int, default=1024, help="cap on a request's max_tokens (default 1024)")
    s.add_argument("--max-prompt-tokens", type=int, default=512,
                   help="cap on a question's tokens, checked before it is queued (default 512)")
    s.add_argument("--body-timeout", type=float, default=30.0,
                   help="seconds a client may take to send its request body (default 30)")
    s.add_argument("--timeout", type=float, default=120.0, help="seconds per request (default 120)")
    s.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")

    e = sub.add_parser("export", help="standalone model directory: LoRA merged, TLM beside it",
                       description="Merge the run's LoRA into the backbone and write a plain Qwen2.5-VL directory "
                                   "with tlm.safetensors/tlm.json, chip.json (how inputs are made) and "
                                   "export.json beside the weights; "
                                   "ask, detect-scene and serve load it like a run.",
                       epilog=EXAMPLES["export"], formatter_class=fmt)
    e.add_argument("run", help="run directory")
    e.add_argument("--merge", required=True, metavar="OUT", help="new output directory")
    e.add_argument("--dtype", choices=DTYPES, help="cast the merged weights (default: as loaded)")
    e.add_argument("--json", action="store_true", help="print export.json")


def _store(args):
    if args.no_aef or not args.aef:
        return None
    from ..geo.aef import AEFStore

    return AEFStore(args.aef, index=args.aef_index)


def _check_geo(args) -> None:
    if args.no_aef and (args.aef or getattr(args, "anchors", None)):
        raise ValueError("--no-aef contradicts --aef/--anchors: give one")
    if getattr(args, "anchors", None) and args.aef:
        raise ValueError("--anchors and --aef are two sources of the same prior: give one")


def _quiet_loading(args) -> None:
    """With --json, stdout is one JSON object and stderr only errors: no weight-loading progress bars."""
    if getattr(args, "json", False):
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def cmd_ask(args) -> int:
    from .. import infer
    from ..data.tasks import check_task
    from ..geo import check_bbox
    from ..model.loader import check_model_dir, load_model

    _check_geo(args)
    spec = check_model_dir(args.run)
    src = Path(args.image)
    if args.max_new_tokens < 1 or args.batch_size < 1 or args.max_pixels < 1:
        raise ValueError("--max-new-tokens, --batch-size and --max-pixels must be positive")
    if not src.exists():
        raise FileNotFoundError(f"{src}: no such image, folder or manifest")
    bbox = check_bbox(args.bbox.split(","), "--bbox") if args.bbox else None
    manifest = src.suffix.lower() in (".jsonl", ".json")  # .json: the authors' list of records
    many = src.is_dir() or manifest
    if many and not args.out:
        raise ValueError(f"{src} holds many inputs: give --out answers.jsonl")
    if manifest and args.question:
        raise ValueError("a manifest brings its own questions: drop the question")
    if not many and args.out:
        raise ValueError("--out is for a folder or a manifest; one answer is printed")
    if not args.question and not manifest:
        raise ValueError("give the question after the image")
    from ..data.record import MAX_QUESTION_CHARS

    if args.question and len(args.question) > MAX_QUESTION_CHARS:  # before any weight loads
        raise ValueError(f"the question is {len(args.question)} characters, above the cap of {MAX_QUESTION_CHARS}")
    from ..model.checkpoint import task_adapter_dirs
    from ..model.routing import choose_adapter

    check_task(args.task)
    if args.question:  # a question no adapter is for fails before any weight loads
        choose_adapter(tuple(task_adapter_dirs(args.run)), args.question, args.task)
    if src.is_dir():
        infer.list_images(src)  # an empty folder fails before the model loads
    store = _store(args)
    item = None if many else infer.load_one(src, spec, store=store, bbox=bbox, year=args.year, anchors=args.anchors,
                                            no_aef=args.no_aef, max_pixels=args.max_pixels)  # before any weight loads
    _quiet_loading(args)
    model, spec = load_model(args.run, _device(args.device))
    if manifest:
        result = infer.ask_manifest(model, src, args.out, spec=spec, split=args.split, batch_size=args.batch_size,
                                    progress=not args.json, task=args.task)
    elif src.is_dir():
        result = infer.ask_folder(model, spec, src, args.question, args.out, store=store, year=args.year,
                                  no_aef=args.no_aef, batch_size=args.batch_size,
                                  max_new_tokens=args.max_new_tokens, progress=not args.json, task=args.task,
                                  max_pixels=args.max_pixels)
    else:
        text = infer.answer(model, [item], [args.question], max_new_tokens=args.max_new_tokens, tasks=[args.task])[0]
        print(json.dumps({"question": args.question, "answer": text, **item.info}) if args.json else text)
        if not text and not args.json:  # a blank line alone reads like a failure to read the image
            print(f"fusar-gpt ask: note: the model gave an empty answer for {src.name} (the image was read: "
                  f"{item.info['valid_anchors']} valid anchors); --json shows what was read", file=sys.stderr)
        return 0
    print(json.dumps(result) if args.json else
          f"{result['answered']} answered, {result['errors']} refused (see their 'error' lines) -> {result['out']}")
    return 0


def cmd_detect_scene(args) -> int:
    from ..detect import check_inputs, detect_scene
    from ..model.loader import check_model_dir, load_model

    _check_geo(args)
    spec = check_model_dir(args.run)
    if args.batch_size < 1 or args.max_new_tokens < 1:
        raise ValueError("--batch-size and --max-new-tokens must be positive")
    if not args.no_aef and not args.aef:
        raise ValueError("give --aef ROOT (the scene's place and year select the anchors), or --no-aef")
    check_inputs(args.scene, args.out, args.coco, args.classes.split(","), args.tile, args.overlap,
                 spec.frame, args.max_tiles)  # bad input fails before the model loads
    store = _store(args)
    _quiet_loading(args)
    model, spec = load_model(args.run, _device(args.device))
    result = detect_scene(model, spec, args.scene, args.out, classes=args.classes.split(","), store=store,
                          no_aef=args.no_aef, year=args.year, tile=args.tile, overlap=args.overlap,
                          batch_size=args.batch_size, iou=args.iou, coco=args.coco,
                          max_new_tokens=args.max_new_tokens, progress=not args.json, max_tiles=args.max_tiles)
    print(json.dumps(result) if args.json else
          f"{result['detections']} detections ({result['raw_detections']} before merging) over {result['tiles']} "
          f"tiles -> {result['out']}")
    return 0


def cmd_serve(args) -> int:
    from ..model.loader import check_model_dir
    from ..serve import API_KEY_ENV, ServeConfig, serve

    if not args.aef and not args.no_aef_store:
        raise ValueError("give --aef ROOT (requests with bbox + year or a GeoTIFF need it), or --no-aef-store")
    if args.aef and args.no_aef_store:
        raise ValueError("--aef and --no-aef-store contradict each other")
    if args.image_root and not Path(args.image_root).is_dir():
        raise FileNotFoundError(f"--image-root {args.image_root}: no such folder")
    config = ServeConfig(model_name=args.model_name or Path(args.run).resolve().name,
                         api_key=args.api_key or os.environ.get(API_KEY_ENV) or None, no_auth=args.no_auth,
                         host=args.host, image_root=args.image_root, max_body_bytes=int(args.max_body_mb * 2**20),
                         max_image_pixels=args.max_image_pixels, max_tokens=args.max_tokens,
                         max_prompt_tokens=args.max_prompt_tokens, body_timeout_s=args.body_timeout,
                         default_max_tokens=min(256, args.max_tokens), timeout_s=args.timeout,
                         max_batch=args.max_batch, max_batch_tokens=args.max_batch_tokens,
                         batch_wait_ms=args.batch_wait_ms)
    config.check()
    check_model_dir(args.run)
    print(f"fusar-gpt serve: loading {args.run} ...", file=sys.stderr)
    serve(args.run, config, port=args.port, aef=args.aef, aef_index=args.aef_index, device=_device(args.device))
    return 0


def cmd_export(args) -> int:
    from ..chip import read_spec
    from ..model.export import export_run

    _quiet_loading(args)
    info = export_run(args.run, args.merge, dtype=args.dtype)
    frame = read_spec(args.merge).frame
    print(json.dumps({**info, "frame": frame}) if args.json else
          f"exported {args.run} -> {args.merge} (LoRA {'merged' if info['lora_merged'] else 'none'}, frame {frame})")
    return 0
