"""``fusar-gpt export``: a standalone directory (LoRA merged, TLM beside it) that answers exactly as the run,
and that ask and serve load like a run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fusar_gpt.__main__ import main
from fusar_gpt.chip import ChipSpec, load_chip, read_spec
from fusar_gpt.infer import answer
from fusar_gpt.inputs import build_inputs
from fusar_gpt.model.backbone import load_backbone
from fusar_gpt.model.export import export_run
from fusar_gpt.model.fusar import FusarGPT, Priors
from fusar_gpt.model.loader import load_model
from fusar_gpt.serve import BackgroundServer, ServeConfig, make_app

from .infer_helpers import chat_body, data_url, make_run, noise_image, request

QUESTIONS = ["How many ships are in this image?", "Where are the planes?", "Describe this SAR image."]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_dir):
    root = tmp_path_factory.mktemp("export")
    run = make_run(root, tiny_dir, frame=224, grid=4, stretch=[-25.0, 5.0])
    info = export_run(run, root / "exported")
    return {"root": root, "run": run, "out": root / "exported", "info": info}


def _inputs(settings, n=6):
    rng = np.random.default_rng(0)
    items = []
    for k in range(n):
        f = rng.normal(size=(16, 64)).astype(np.float32)
        anchors = (f / np.linalg.norm(f, axis=1, keepdims=True), rng.random((16, 2)).astype(np.float32),
                   np.arange(16) % (k + 2) != 0)
        items.append((noise_image(k, (120, 90 + 10 * k)), anchors))
    return items


def test_layout_merged_lora_and_settings(exported):
    out = exported["out"]
    assert {"config.json", "tlm.safetensors", "tlm.json", "export.json", "chip.json", "tokenizer.json"} <= {
        p.name for p in out.iterdir()}
    assert not (out / "adapter").exists() and not list(out.glob(".*"))
    assert exported["info"]["lora_merged"] is True
    assert read_spec(out).to_dict() == {**ChipSpec().to_dict(), "frame": 224, "grid": 4, "stretch": [-25.0, 5.0]}
    backbone, _ = load_backbone(out)  # a plain Qwen2.5-VL directory: no LoRA tensors left
    assert not any("lora_" in n for n, _ in backbone.named_parameters())


@torch.no_grad()
def test_exported_model_answers_exactly_as_the_run(exported):
    run_model, run_settings = load_model(exported["run"])
    exp_model, exp_settings = load_model(exported["out"])
    assert exp_settings == run_settings == ChipSpec(frame=224, grid=4, stretch=(-25.0, 5.0))
    items = _inputs(run_settings)
    images = [im for im, _ in items]
    priors = Priors.stack([a for _, a in items])
    for q in QUESTIONS:
        a = run_model.answer(images, [q] * len(images), priors, max_new_tokens=12, do_sample=False)
        b = exp_model.answer(images, [q] * len(images), priors, max_new_tokens=12, do_sample=False)
        assert a == b
    batch = build_inputs(run_model.processor, images, [QUESTIONS[0]] * len(images))
    la, lb = run_model(**batch, priors=priors).logits, exp_model(**batch, priors=priors).logits
    torch.testing.assert_close(lb, la, atol=1e-4, rtol=1e-4)
    # the merge mattered: the base alone (no LoRA) is a different model on the same input
    base, proc = load_backbone(_base_dir(exported))
    plain = FusarGPT(base, exp_model.tlm, proc).eval()
    assert not torch.allclose(plain(**batch, priors=priors).logits, la, atol=1e-3)


def _base_dir(exported):
    import yaml

    return yaml.safe_load((exported["run"] / "config.yaml").read_text())["model"]["base"]


def test_ask_and_serve_load_the_export(exported, tmp_path, capsys):
    png = tmp_path / "c.png"
    from PIL import Image

    Image.fromarray(noise_image(9)).save(png)
    assert main(["ask", str(exported["out"]), str(png), QUESTIONS[0], "--no-aef", "--max-new-tokens", "10",
                 "--json"]) == 0
    got = json.loads(capsys.readouterr().out)["answer"]
    run_model, settings = load_model(exported["run"])
    want = answer(run_model, [load_chip(png, settings, no_aef=True)], [QUESTIONS[0]], max_new_tokens=10)[0]
    assert got == want
    model, settings = load_model(exported["out"])
    app = make_app(model, ServeConfig(model_name="exp", api_key="k", chip=settings))
    try:
        with BackgroundServer(app) as port:
            status, body, _ = request(port, body={**chat_body(data_url(noise_image(9)), no_aef=True, max_tokens=10),
                                                  "model": "exp"}, token="k")
    finally:
        app.state.batcher.close()
    assert status == 200 and body["choices"][0]["message"]["content"] == want


def test_export_refuses_bad_targets_without_leftovers(exported, tmp_path, capsys):
    assert main(["export", str(exported["run"]), "--merge", str(exported["out"])]) == 2  # exists, not empty
    err = capsys.readouterr().err.strip()
    assert err.startswith("fusar-gpt export: error:") and "not an empty directory" in err
    assert main(["export", str(tmp_path / "nothing"), "--merge", str(tmp_path / "o")]) == 2
    assert "no such run" in capsys.readouterr().err
    assert not (tmp_path / "o").exists() and not list(exported["root"].glob(".exported.*"))
    assert main(["export", str(exported["run"]), "--merge", str(tmp_path / "o2"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["lora_merged"] is True


def test_a_run_loads_in_its_recipes_dtype_whatever_its_base_is_stored_in(tmp_path, tiny_dir):
    """A base stored in bfloat16 (as the demo's committed one is, to be small) is loaded in the run's
    ``model.dtype``: a float32 run answers in float32 (on a CPU without bf16 units, bfloat16 is emulated: 5x
    slower answers, measured), and the same run asked for bfloat16 gets bfloat16."""
    import yaml

    backbone, processor = load_backbone(str(tiny_dir))
    stored = tmp_path / "base-bf16"
    backbone.to(torch.bfloat16).save_pretrained(str(stored))
    processor.save_pretrained(str(stored))
    run = make_run(tmp_path, stored)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    for dtype, want in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        cfg["model"]["dtype"] = dtype
        (run / "config.yaml").write_text(yaml.safe_dump(cfg))
        model, _ = load_model(run)
        base = {p.dtype for n, p in model.backbone.named_parameters() if "lora_" not in n}
        assert base == {want}, dtype  # (peft keeps its own LoRA weights in float32 either way)
