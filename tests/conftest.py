"""Shared fixtures: a real tiny Qwen2.5-VL saved to disk and loaded back with from_pretrained, a small synthetic
world, and the quick demo's runs (models that ``train`` made)."""

from __future__ import annotations

import io
import json
import os
from contextlib import redirect_stdout

import numpy as np
import pytest
import torch

from fusar_gpt.__main__ import main
from fusar_gpt.model.backbone import load_backbone, make_backbone


@pytest.fixture(scope="session", autouse=True)
def _landcover_reference_read_once():
    """Each build (about 50 in this suite, in this process) reads the default land-cover reference, 2,880 CSV rows
    (~0.3 s): here it is read once per ``$FUSAR_GPT_LANDCOVER_REF`` value (the same centroids, which nothing
    changes) and handed to every later build. Pool workers and subprocesses still read it themselves."""
    from fusar_gpt.data import build_worker

    read, cache = build_worker.default_reference, {}

    def once():
        key = os.environ.get("FUSAR_GPT_LANDCOVER_REF")
        if key not in cache:
            cache[key] = read()
        return cache[key]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(build_worker, "default_reference", once)
        yield


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    return make_backbone("tiny", tmp_path_factory.mktemp("tiny-backbone"), seed=0)


@pytest.fixture(scope="session")
def tiny(tiny_dir):
    """(model, processor) loaded through the same loader real weights use."""
    torch.manual_seed(0)
    return load_backbone(tiny_dir)


# The small synthetic world several files read (writing its 8 AEF tiles is most of its cost): 8 scenes over 4 sites
# (4 UTM zones, both hemispheres), 2 x 2 blocks per tile (reads that cross block edges), the realistic defaults
# otherwise.
SYNTH_WORLD = dict(scenes=8, seed=0, sites=4, tile_px=256, block_size=128)


@pytest.fixture(scope="session")
def synth_world(tmp_path_factory):
    """``(folder, summary)`` of ``make_world(**SYNTH_WORLD)``, shared by the synth, build, train and remote-AEF
    tests. Read-only: a test that changes it works on a copy."""
    from fusar_gpt.data.synth import make_world

    out = tmp_path_factory.mktemp("synth-world") / "w"
    return out, make_world(out, **SYNTH_WORLD)


@pytest.fixture(scope="session")
def quick_demo(tmp_path_factory):
    """The whole demo path (synth, build, stage 0, 2 x 2 stages, eval, compare) at toy scale, through the CLI:
    ``(folder, summary)``. Session-wide because training is the slow part: the CLI, demo and chip-spec tests share
    its runs (frame 224, as ``train`` writes them); a test that changes one works on a copy."""
    out = tmp_path_factory.mktemp("demo")
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert main(["demo", "--quick", "--out", str(out), "--json"]) == 0
    return out, json.loads(buf.getvalue().strip().splitlines()[-1])


def random_image(h: int, w: int, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random((h, w)) * 255).astype(np.uint8)


def random_anchors(s: int, seed: int, valid: np.ndarray | None = None):
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(s, 64)).astype(np.float32)
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    p = rng.random((s, 2)).astype(np.float32)
    m = np.ones(s, bool) if valid is None else valid
    return f, p, m


def pytest_unconfigure(config):
    """Turn a hang at exit into a failure that names its cause. The interpreter joins every non-daemon thread and
    every non-daemon ``multiprocessing`` child before it exits, so one left behind by a failed test made CI wait
    until its 90-minute limit after the suite had finished. Whatever is left now is named on stderr, child
    processes are killed, and the run ends at once with exit code 1 (or the suite's own non-zero code): a leak is a
    defect even when the tests passed."""
    import sys
    import threading

    import psutil

    threads = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    children = [c for c in psutil.Process().children(recursive=True) if c.is_running()
                and c.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in " ".join(c.cmdline())]
    if not threads and not children:
        return
    for c in children:
        try:
            print(f"conftest: killing left-over process {c.pid}: {' '.join(c.cmdline())[:160]}", file=sys.stderr)
            c.kill()
        except psutil.NoSuchProcess:
            pass
    for t in threads:
        print(f"conftest: left-over thread {t.name} would block the exit", file=sys.stderr)
    sys.stderr.flush()
    sys.stdout.flush()
    os._exit(getattr(config, "_fusar_exitstatus", 0) or 1)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    session.config._fusar_exitstatus = int(exitstatus)
