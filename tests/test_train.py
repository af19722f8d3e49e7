"""The training loop: what each stage trains (by tensor name), exact resume, 2-process equivalence."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fusar_gpt.config import RecipeError, load_recipe
from fusar_gpt.geo.anchors import Anchors
from fusar_gpt.train import build_model, resolve_paths, train

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, synth_world):
    from fusar_gpt.data.build import BuildConfig, build

    root = tmp_path_factory.mktemp("train-data")
    os.environ["FUSAR_GPT_CACHE"] = str(root / "cache")
    world = synth_world[0]  # the session's synthetic world (conftest), read-only
    build(BuildConfig(images=str(world / "images"), annotations=str(world / "annotations.json"),
                      aef=str(world / "aef"), out=str(root / "ds"), frame=224, split_by="scene"),
          progress=False)
    # one training image with no valid anchor at all (open sea): the null prior must learn from it
    first = next(json.loads(ln) for ln in (root / "ds" / "manifest.jsonl").read_text().splitlines()
                 if json.loads(ln)["split"] == "train")
    a = Anchors.load(root / "ds" / first["aef"])
    Anchors(np.full_like(a.features, np.nan), a.positions, np.zeros_like(a.mask), a.lonlat, year=a.year).save(
        root / "ds" / first["aef"])
    return root / "ds"


def _recipe(path, out, data, **overrides):
    base = {"model.preset": "tiny", "train.log_every": 1, "data.max_length": 2048}
    return resolve_paths(load_recipe(path, {**base, **overrides}), out=str(out), data=str(data))


def _params(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _changed(before, after) -> set[str]:
    assert before.keys() == after.keys()
    return {n for n in before if not torch.equal(before[n], after[n])}


def _losses(run) -> dict[int, float]:
    rows = [json.loads(ln) for ln in (Path(run) / "log.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def test_stage1_then_stage2_train_exactly_the_right_tensors_and_the_loss_falls(dataset, tmp_path):
    r1 = _recipe(CONFIGS / "tiny-cpu" / "stage1.yaml", tmp_path / "s1", dataset,
                 **{"train.max_steps": 12, "train.batch_size": 4, "train.lr": 1e-3, "train.tlm_lr_scale": 3.0})
    summary = train(r1, progress=False)
    assert summary["finished"] and summary["steps"] == 12
    from fusar_gpt.model.checkpoint import safe_torch_load

    groups = safe_torch_load(tmp_path / "s1" / "trainer_state.pt")["optimizer"]["param_groups"]
    # LoRA (2 layers x 7 projections x A, B) at lr, then the TLM at lr x tlm_lr_scale
    assert [(len(g["params"]), g["initial_lr"]) for g in groups] == [(28, pytest.approx(1e-3)),
                                                                     (5, pytest.approx(3e-3))]
    losses = _losses(tmp_path / "s1")
    assert np.mean([losses[s] for s in (11, 12)]) < np.mean([losses[s] for s in (1, 2)]) - 0.1
    torch.manual_seed(r1.train.seed)
    start = _params(build_model(r1))  # the same initialisation the run started from
    after1 = _params(build_model(r1, weights_from=tmp_path / "s1"))
    changed = _changed(start, after1)
    tlm = {n for n in start if n.startswith("tlm.")}
    lora = {n for n in start if "lora_" in n}
    assert tlm and lora and "tlm.null_prior" in tlm
    assert changed == tlm | lora

    r2 = resolve_paths(load_recipe(CONFIGS / "tiny-cpu" / "stage2.yaml",
                                   {"train.max_steps": 4, "train.batch_size": 4, "train.lr": 3e-3}),
                       out=str(tmp_path / "s2"), init=str(tmp_path / "s1"))
    assert r2.model.base == r1.model.base and r2.data.manifest == r1.data.manifest  # taken from the stage-1 run
    train(r2, progress=False)
    after2 = _params(build_model(r2, weights_from=tmp_path / "s2"))
    assert _changed(after1, after2) == lora
    cfg = (tmp_path / "s2" / "config.yaml").read_text()
    assert "stage: 2" in cfg and str(tmp_path / "s1") in cfg


def test_resume_gives_the_same_losses_as_an_uninterrupted_run(dataset, tmp_path):
    args = {"train.max_steps": 6, "train.batch_size": 2, "train.save_every": 3, "train.lr": 2e-3}
    train(_recipe(CONFIGS / "tiny-cpu" / "stage1.yaml", tmp_path / "full", dataset, **args), progress=False)
    stopped = train(_recipe(CONFIGS / "tiny-cpu" / "stage1.yaml", tmp_path / "cut", dataset, **args),
                    progress=False, stop_after=3)
    assert stopped["steps"] == 3 and not stopped["finished"]
    # killed mid-write: a torn last log line and a half-saved checkpoint folder; resume copes with both
    with (tmp_path / "cut" / "log.jsonl").open("a") as fh:
        fh.write('{"step": 4, "lo')
    (tmp_path / "cut" / "checkpoints" / ".step-00000004-x1y2").mkdir()
    resumed = train(_recipe(CONFIGS / "tiny-cpu" / "stage1.yaml", tmp_path / "cut", dataset, **args),
                    progress=False, resume=True)
    assert resumed["finished"]
    full, cut = _losses(tmp_path / "full"), _losses(tmp_path / "cut")
    assert sorted(cut) == list(range(1, 7))  # the log holds each step once
    for step in (4, 5, 6):
        assert abs(full[step] - cut[step]) <= 1e-6, (step, full[step], cut[step])
    assert (tmp_path / "cut" / "checkpoints" / "step-00000006").exists()
    assert not list((tmp_path / "cut" / "checkpoints").glob(".step-*"))


def test_resume_without_a_checkpoint_is_a_clear_error(dataset, tmp_path):
    with pytest.raises(RecipeError, match="no complete checkpoint"):
        train(_recipe(CONFIGS / "tiny-cpu" / "stage1.yaml", tmp_path / "none", dataset), progress=False, resume=True)


def test_a_diverging_run_stops_with_one_line_and_saves_no_nan_weights(dataset, tmp_path):
    """lr 1e12 blows the weights up within a step or two: training stops naming the step and the keys, and every
    checkpoint written (each step, before the blow-up) holds finite weights only."""
    from safetensors.torch import load_file

    from fusar_gpt.train import Diverged

    args = {"train.max_steps": 6, "train.batch_size": 2, "train.save_every": 1, "train.lr": 1e12,
            "train.warmup_ratio": 0.0, "train.schedule": "constant"}
    with pytest.raises(Diverged) as err:
        train(_recipe(CONFIGS / "tiny-cpu" / "stage1.yaml", tmp_path / "nan", dataset, **args), progress=False)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("step ") and "train.lr = 1e+12" in msg
    saved = list((tmp_path / "nan").rglob("*.safetensors"))
    for f in saved:
        assert all(torch.isfinite(v).all() for v in load_file(str(f)).values()), f


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one_process_with_the_doubled_batch(dataset, tmp_path):
    sets = ["--set", "model.preset=tiny", "--set", "lora.dropout=0", "--set", "train.batch_size=4",
            "--set", "train.lr=3e-3", "--set", "data.val_split=null", "--set", "train.log_every=1",
            "--max-steps", "3", "--json"]
    common = [str(CONFIGS / "tiny-cpu" / "stage1.yaml"), "--data", str(dataset)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = tmp_path / "one"
    # the one-process reference runs here (the same command, in-process, one thread as each torchrun worker has):
    # only the two-process run needs processes of its own
    from fusar_gpt.__main__ import main

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", *common, "--out", str(one), *sets]) == 0
    finally:
        torch.set_num_threads(threads)
    two = tmp_path / "two"
    (two).mkdir()
    # the same random base weights for both runs
    import shutil

    shutil.copytree(one / "base", two / "base")
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", str(_free_port()), "-m", "fusar_gpt", "train", *common, "--out", str(two),
                          *sets, "--set", f"model.base={two / 'base'}"],
                         env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    # really one process group of two (on CPU accelerate needs cpu=True for it; without it both processes
    # trained alone on the same data, the losses matched anyway and they raced on the same checkpoint folder)
    summaries = [json.loads(ln) for ln in out.stdout.splitlines() if ln.startswith("{")]
    assert summaries and all(s["processes"] == 2 for s in summaries)
    l1, l2 = _losses(one), _losses(two)
    assert sorted(l1) == sorted(l2) == [1, 2, 3]
    for s in (1, 2, 3):
        assert abs(l1[s] - l2[s]) < 1e-4, (s, l1[s], l2[s])
    from safetensors.torch import load_file

    w1, w2 = load_file(str(one / "tlm.safetensors")), load_file(str(two / "tlm.safetensors"))
    for k in w1:
        torch.testing.assert_close(w1[k], w2[k], atol=1e-5, rtol=1e-4)


def test_accumulation_bf16_checkpointing_linear_schedule_and_validation_run(dataset, tmp_path):
    r = _recipe(CONFIGS / "tiny-cpu" / "stage1.yaml", tmp_path / "opts", dataset,
                **{"train.max_steps": 3, "train.batch_size": 2, "train.grad_accum": 2, "train.mixed_precision": "bf16",
                   "model.gradient_checkpointing": True, "train.schedule": "linear", "train.eval_every": 2,
                   "train.warmup_ratio": 0.3})
    summary = train(r, progress=False)
    rows = [json.loads(ln) for ln in (tmp_path / "opts" / "log.jsonl").read_text().splitlines()]
    steps = [row for row in rows if "loss" in row]
    assert [row["step"] for row in steps] == [1, 2, 3] and all(np.isfinite(row["loss"]) for row in steps)
    assert [row["step"] for row in rows if "val_loss" in row] == [2, 3] and np.isfinite(summary["val_loss"])
    # linear schedule with one warm-up step: the lr rises, then decays to zero at the last step
    assert steps[0]["lr"] == pytest.approx(r.train.lr) and steps[1]["lr"] == pytest.approx(r.train.lr / 2)
    assert steps[2]["lr"] == 0.0
    assert all(row["samples_per_s"] > 0 and row["tokens_per_s"] > 0 for row in steps)


def test_tensorboard_without_the_package_is_a_clear_error(dataset, tmp_path, monkeypatch):
    import builtins

    real = builtins.__import__

    def fake(name, *args, **kwargs):
        if name == "torch.utils.tensorboard":
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake)
    r = _recipe(CONFIGS / "tiny-cpu" / "stage1.yaml", tmp_path / "tb", dataset,
                **{"train.max_steps": 1, "train.batch_size": 2, "train.tensorboard": True})
    with pytest.raises(RecipeError, match="train.tensorboard"):
        train(r, progress=False)


def test_stage0_trains_the_whole_backbone_in_conversations_resumes_exactly_and_feeds_stage1(dataset, tmp_path):
    from fusar_gpt.model.backbone import load_backbone

    args = {"train.max_steps": 4, "train.batch_size": 2, "train.save_every": 2, "train.lr": 2e-3,
            "model.vision_warmup_steps": 3}
    r0 = _recipe(CONFIGS / "tiny-cpu" / "stage0.yaml", tmp_path / "s0", dataset, **args)
    assert r0.trains == "backbone" and r0.data.turns_per_image == 8
    torch.manual_seed(r0.train.seed)
    start = _params(build_model(r0))
    assert all(n.startswith("backbone.") for n, p in build_model(r0).named_parameters() if p.requires_grad)
    train(r0, progress=False)
    assert (tmp_path / "s0" / "model" / "config.json").exists()
    from fusar_gpt.model.checkpoint import safe_torch_load

    groups = safe_torch_load(tmp_path / "s0" / "trainer_state.pt")["optimizer"]["param_groups"]
    assert [g["initial_lr"] for g in groups] == pytest.approx([2e-3, 2e-3 * r0.train.vision_lr_scale])
    assert r0.train.vision_lr_scale < 1
    warm = json.loads((tmp_path / "s0" / "base" / "warmup.json").read_text())  # the random base was warmed up
    assert warm["steps"] == 3 and warm["classes"] and not list((tmp_path / "s0").glob(".base*"))
    trained, _ = load_backbone(str(tmp_path / "s0" / "model"))
    after = {f"backbone.{n}": p for n, p in trained.named_parameters()}
    changed = _changed({n: start[n] for n in after}, after)
    assert any(".visual." in n for n in changed) and any("language_model" in n for n in changed)
    # evaluating the run uses its trained weights (RUN/model), not the warmed-up base it started from
    from fusar_gpt.model.loader import load_model

    evaluated = dict(load_model(tmp_path / "s0")[0].named_parameters())
    assert all(torch.equal(evaluated[n], after[n]) for n in changed)
    # one image's records ride in one conversation: fewer sequences per epoch than records
    log = [json.loads(ln) for ln in (tmp_path / "s0" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 4
    # stopped after 2 and resumed: the same losses as the uninterrupted run (full weights restored)
    r0b = _recipe(CONFIGS / "tiny-cpu" / "stage0.yaml", tmp_path / "cut", dataset, **args)
    train(r0b, progress=False, stop_after=2)
    train(_recipe(CONFIGS / "tiny-cpu" / "stage0.yaml", tmp_path / "cut", dataset, **args), progress=False,
          resume=True)
    full, cut = _losses(tmp_path / "s0"), _losses(tmp_path / "cut")
    for step in (3, 4):
        assert abs(full[step] - cut[step]) <= 1e-6, (step, full[step], cut[step])
    # stage I starts from the stage-0 model: base weights by path, TLM + LoRA on top
    r1 = _recipe(CONFIGS / "tiny-cpu" / "stage1.yaml", tmp_path / "s1", dataset,
                 **{"train.max_steps": 2, "train.batch_size": 2, "model.base": str(tmp_path / "s0" / "model"),
                    "model.preset": None, "data.turns_per_image": 4})
    train(r1, progress=False)
    assert (tmp_path / "s1" / "adapter").exists() and not (tmp_path / "s1" / "model").exists()
    m1 = build_model(r1, weights_from=tmp_path / "s1")
    assert torch.equal(dict(m1.named_parameters())["backbone.base_model.model.model.visual.patch_embed.proj.weight"],
                       after["backbone.model.visual.patch_embed.proj.weight"])


def test_backbone_training_refuses_a_tlm(dataset, tmp_path):
    with pytest.raises(RecipeError, match="tlm.fusion: none"):
        _recipe(CONFIGS / "tiny-cpu" / "stage0.yaml", tmp_path / "x", dataset, **{"tlm.fusion": "tlm"})


def test_loss_per_answer_weighs_every_answer_the_same():
    from types import SimpleNamespace

    from fusar_gpt.losses import answer_weights, token_loss

    target = torch.tensor([[-100, 5, 6, -100, -100, 7, -100], [8, 9, 10, 11, -100, -100, -100]])
    weights, n = answer_weights(target)
    assert int(n) == 3  # two answers in the first row (two turns), one in the second
    assert weights.tolist() == [[0, .5, .5, 0, 0, 1, 0], [.25, .25, .25, .25, 0, 0, 0]]
    torch.manual_seed(0)
    logits = torch.randn(2, 8, 12)
    labels = torch.cat([torch.full((2, 1), -100), target], dim=1)  # labels[:, 1:] is the target
    model = lambda **_: SimpleNamespace(logits=logits)
    acc = SimpleNamespace(num_processes=1)
    ce = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 12), target.reshape(-1), ignore_index=-100,
                                           reduction="none").reshape(2, 7)
    by_hand = (ce[0, 1:3].mean() + ce[0, 5] + ce[1, :4].mean()) / 3
    loss, mean, tokens = token_loss(model, {"labels": labels}, acc, per="answer")
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-6) and mean == pytest.approx(by_hand.item(), rel=1e-6)
    assert tokens == 7
    loss, _, tokens = token_loss(model, {"labels": labels}, acc)
    assert loss.item() == pytest.approx(ce[target != -100].mean().item(), rel=1e-6) and tokens == 7


def test_loss_per_sqrt_weighs_an_answer_by_the_root_of_its_length():
    from fusar_gpt.losses import answer_weights

    target = torch.tensor([[-100, 5, 6, -100, 7, 7, 7, 7, -100]])
    weights, total = answer_weights(target, 0.5)
    s2 = 2 ** -0.5
    assert weights[0].tolist() == pytest.approx([0, s2, s2, 0, .5, .5, .5, .5, 0])
    assert float(total) == pytest.approx(2 ** 0.5 + 2)  # the 2-token answer weighs sqrt(2), the 4-token one 2
    assert float(weights.sum()) == pytest.approx(float(total))
