"""The committed demo base (assets/demo-base) is what its record says: our stage-0 recipe on the `small` preset,
trained on a world of another seed than the demo's, stored in bfloat16, loadable by the loader real weights use."""

from __future__ import annotations

import json

import torch
from safetensors import safe_open

from fusar_gpt.config import load_recipe
from fusar_gpt.demo_settings import BASE, BASE_DIR, CONFIGS, STAGE0, DemoSettings, base_record
from fusar_gpt.model.backbone import load_backbone, preset_config


def test_the_base_record_matches_the_recipe_that_rebuild_base_runs():
    recorded = json.loads((BASE_DIR / "base.json").read_text())
    assert recorded == json.loads(json.dumps(base_record(BASE)))  # `make base` would run exactly this
    assert recorded["recipe"] == STAGE0 and recorded["settings"]["seed"] != DemoSettings().seed  # unseen world
    recipe = load_recipe(CONFIGS / STAGE0, recorded["overrides"])
    assert recipe.trains == "backbone" and recipe.tlm.fusion == "none"  # no AEF in the base: both models fair
    assert recipe.model.preset == "small" and recipe.train.max_steps == BASE.stage0_steps


def test_the_base_weights_have_the_small_preset_shape_in_bfloat16_and_load():
    cfg = json.loads((BASE_DIR / "config.json").read_text())
    want = preset_config("small")
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads"):
        assert cfg["text_config"][key] == getattr(want.text_config, key), key
    for key in ("depth", "hidden_size", "num_heads", "intermediate_size"):
        assert cfg["vision_config"][key] == getattr(want.vision_config, key), key
    with safe_open(str(BASE_DIR / "model.safetensors"), "pt") as f:
        tensors = [f.get_tensor(k) for k in f.keys()]
    assert tensors and all(t.dtype == torch.bfloat16 and torch.isfinite(t).all() for t in tensors)
    model, processor = load_backbone(str(BASE_DIR))
    assert sum(p.numel() for p in model.parameters()) == sum(t.numel() for t in tensors)
    assert processor.tokenizer("What is the dominant land cover in this image?")["input_ids"]
    pieces = processor.tokenizer.tokenize('[{"bbox_2d": [137, 52, 198, 77], "label": "ship"}]')
    assert [p.lstrip("\u0120") for p in pieces if any(c.isdigit() for c in p)] == list("21375219877")  # Qwen's digits
