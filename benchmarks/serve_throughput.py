"""Requests per second of ``fusar-gpt serve``: dynamic batching vs one request per ``generate`` call, in one run.

The same server (a real uvicorn on loopback, the real request path: JSON, base64 PNG, anchors as arrays,
TLM fusion) answers the same burst of concurrent requests two ways, in interleaved rounds: with the
batcher limited to one request per ``generate`` call (one request at a time, as a naive server would),
and with dynamic batching (up to ``--max-batch`` requests per call). Model: the ``small`` preset with random
weights and a random TLM; frame 224, 64 anchors; greedy, ``--max-tokens`` new tokens per answer. The first
``--warmup`` rounds are not timed; figures are medians over ``--repeats`` rounds. Both ways must return the
same answers (greedy decoding is exact per row), which the script checks.

Usage: python benchmarks/serve_throughput.py [--requests 32] [--max-batch 16] [--max-tokens 16] [--repeats 5] [--json]
       python benchmarks/serve_throughput.py --dry-run   # every code path at toy size, times meaningless
"""

from __future__ import annotations

import argparse
import base64
import http.client
import io
import json
import os
import platform
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image

from fusar_gpt.chip import ChipSpec
from fusar_gpt.model.backbone import load_backbone, make_backbone
from fusar_gpt.model.fusar import FusarGPT
from fusar_gpt.model.tlm import TLM
from fusar_gpt.serve import BackgroundServer, ServeConfig, make_app

QUESTIONS = ["How many ships are in this image?", "Where are the planes?", "What is the object at [40, 60, 90, 80]?"]


def _requests(n: int, max_tokens: int, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    bodies = []
    for k in range(n):
        buf = io.BytesIO()
        Image.fromarray((rng.random((224, 224)) * 255).astype(np.uint8)).save(buf, format="PNG")
        f = rng.normal(size=(64, 64))
        i, j = np.meshgrid(np.arange(8) / 7, np.arange(8) / 7, indexing="ij")
        url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
        bodies.append(json.dumps({
            "model": "bench", "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                                      {"type": "text", "text": QUESTIONS[k % len(QUESTIONS)]}]}],
            "anchors": {"features": (f / np.linalg.norm(f, axis=1, keepdims=True)).round(5).tolist(),
                        "positions": np.stack([i.ravel(), j.ravel()], 1).tolist()}}).encode())
    return bodies


def _post(port: int, body: bytes) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    data = json.loads(resp.read())
    conn.close()
    if resp.status != 200:
        raise RuntimeError(f"server answered {resp.status}: {data}")
    return data["choices"][0]["message"]["content"]


def run(requests: int = 32, max_batch: int = 16, max_tokens: int = 16, repeats: int = 5, warmup: int = 1,
        preset: str = "small", dry_run: bool = False) -> dict:
    if dry_run:
        requests, max_batch, max_tokens, repeats, warmup, preset = 6, 4, 4, 1, 0, "tiny"
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        backbone, processor = load_backbone(make_backbone(preset, tmp, seed=0))
        torch.manual_seed(0)
        model = FusarGPT(backbone, TLM(backbone.config.text_config.hidden_size), processor).eval()
        config = ServeConfig(model_name="bench", no_auth=True, chip=ChipSpec(frame=224, grid=8),
                             max_tokens=max_tokens, default_max_tokens=max_tokens, max_batch=max_batch,
                             batch_wait_ms=5.0, max_queue=4 * requests)
        app = make_app(model, config)
        bodies = _requests(requests, max_tokens)
        batcher = app.state.batcher
        times = {"one": [], "dynamic": []}
        calls = {"one": 0, "dynamic": 0}
        answers: dict[str, list[str]] = {}
        try:
            with BackgroundServer(app) as port, ThreadPoolExecutor(requests) as pool:
                for rnd in range(warmup + repeats):
                    for way, size in (("one", 1), ("dynamic", max_batch)):
                        batcher.max_batch = size
                        before = batcher.generate_calls
                        t0 = time.perf_counter()
                        got = list(pool.map(lambda b: _post(port, b), bodies))
                        elapsed = time.perf_counter() - t0
                        if rnd >= warmup:
                            times[way].append(elapsed)
                            calls[way] += batcher.generate_calls - before
                        answers.setdefault(way, got)
        finally:
            batcher.close()
    rate = {way: requests / statistics.median(t) for way, t in times.items()}
    return {"preset": preset, "frame": 224, "anchors": 64, "requests_per_round": requests, "max_batch": max_batch,
            "max_tokens": max_tokens, "repeats": repeats,
            "one_at_a_time": {"requests_per_s": round(rate["one"], 2),
                              "round_s_median": round(statistics.median(times["one"]), 3),
                              "requests_per_generate": round(requests * repeats / calls["one"], 2)},
            "dynamic_batching": {"requests_per_s": round(rate["dynamic"], 2),
                                 "round_s_median": round(statistics.median(times["dynamic"]), 3),
                                 "requests_per_generate": round(requests * repeats / calls["dynamic"], 2)},
            "ratio": round(rate["dynamic"] / rate["one"], 2), "identical_answers": answers["one"] == answers["dynamic"],
            "dry_run": dry_run, "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads)",
            "seconds": round(time.perf_counter() - t_start, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=32, help="concurrent requests per round")
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    r = run(a.requests, a.max_batch, a.max_tokens, a.repeats, a.warmup, a.preset, a.dry_run)
    if a.json:
        print(json.dumps(r))
    else:
        print(f"{r['preset']} preset, frame 224, {r['requests_per_round']} concurrent requests, {r['machine']}")
        for key, name in (("one_at_a_time", "one request per generate"), ("dynamic_batching", "dynamic batching")):
            print(f"{name}: {r[key]['requests_per_s']} requests/s ({r[key]['requests_per_generate']} per call)")
        print(f"ratio: {r['ratio']}x, identical answers: {r['identical_answers']} ({r['seconds']} s)")


if __name__ == "__main__":
    main()
