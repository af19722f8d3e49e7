"""The backbone factory and loader: a real Qwen2.5-VL saved and re-loaded via from_pretrained."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import Qwen2_5_VLForConditionalGeneration

from fusar_gpt.inputs import build_inputs
from fusar_gpt.model.backbone import (
    PRESETS,
    SPECIAL_TOKENS,
    SarImageProcessor,
    count_parameters,
    load_backbone,
    load_processor,
    make_backbone,
    preset_config,
    train_tokenizer,
)

from .conftest import random_image


def test_tiny_is_a_real_qwen25vl_of_about_1m_params(tiny, tiny_dir):
    model, proc = tiny
    assert isinstance(model, Qwen2_5_VLForConditionalGeneration)
    assert 0.5e6 < count_parameters(model) < 1.5e6
    assert hasattr(model.model, "visual") and hasattr(model.model, "language_model")
    assert model.config.text_config.vocab_size == len(proc.tokenizer)  # every id the model emits decodes
    for name in ("config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json"):
        assert (tiny_dir / name).exists(), name


def test_special_tokens_and_chat_template(tiny):
    model, proc = tiny
    tok = proc.tokenizer
    for t in SPECIAL_TOKENS:
        assert len(tok.encode(t, add_special_tokens=False)) == 1, t
    assert model.config.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>")
    assert model.config.vision_start_token_id == tok.convert_tokens_to_ids("<|vision_start|>")
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "How many ships?"}]}]
    text = proc.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                    "<|vision_start|><|image_pad|><|vision_end|>How many ships?<|im_end|>\n<|im_start|>assistant\n")
    sample = 'Detect ships: [{"bbox_2d": [1, 2, 30, 40], "label": "tanker"}] é'
    assert tok.decode(tok.encode(sample, add_special_tokens=False)) == sample  # byte-level: lossless


def test_processor_is_image_only_and_emits_mm_token_type_ids(tiny, tmp_path):
    _, proc = tiny
    assert SarImageProcessor.get_attributes() == ["image_processor", "tokenizer"]
    batch = build_inputs(proc, [random_image(280, 224, 0)], ["Where are the ships?"])
    assert batch["image_grid_thw"].tolist() == [[1, 20, 16]]
    n_img = int((batch["input_ids"] == proc.image_token_id).sum())
    assert n_img == 20 * 16 // 4
    assert int(batch["mm_token_type_ids"].sum()) == n_img  # image tokens are typed 1
    proc.save_pretrained(tmp_path)
    again = load_processor(tmp_path)
    assert torch.equal(build_inputs(again, [random_image(280, 224, 0)], ["Where are the ships?"])["input_ids"],
                       batch["input_ids"])


def test_loader_reads_the_real_qwen_directory_layout(tiny_dir, tmp_path):
    """Real checkpoints name the torchvision image processor and keep the template in chat_template.json."""
    import shutil

    real = tmp_path / "qwen-layout"
    shutil.copytree(tiny_dir, real)
    (real / "preprocessor_config.json").write_text(json.dumps({
        "min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "temporal_patch_size": 2, "merge_size": 2,
        "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
        "image_processor_type": "Qwen2VLImageProcessor", "processor_class": "Qwen2_5_VLProcessor"}))
    cfg = json.loads((real / "tokenizer_config.json").read_text())
    template = cfg.pop("chat_template", None) or (real / "chat_template.jinja").read_text()
    (real / "chat_template.jinja").unlink(missing_ok=True)
    (real / "tokenizer_config.json").write_text(json.dumps(cfg))
    (real / "chat_template.json").write_text(json.dumps({"chat_template": template}))
    model, proc = load_backbone(real, dtype=torch.float32)
    assert proc.image_processor.merge_size == 2 and proc.chat_template == template
    batch = build_inputs(proc, [random_image(224, 224, 1)], ["Count the planes."])
    assert model(**batch).logits.shape[-1] == model.config.text_config.vocab_size


def test_presets_have_consistent_shapes():
    for name, preset in PRESETS.items():
        cfg = preset_config(name)
        text = cfg.text_config
        head_dim = text.hidden_size // text.num_attention_heads
        assert sum(text.rope_parameters["mrope_section"]) == head_dim // 2, name
        assert cfg.vision_config.out_hidden_size == text.hidden_size
        assert preset.shape_only == name.startswith("qwen2.5-vl")
    seven = preset_config("qwen2.5-vl-7b")
    assert (seven.text_config.hidden_size, seven.text_config.num_hidden_layers, seven.text_config.vocab_size) == (
        3584, 28, 152064)
    assert seven.vision_config.depth == 32 and seven.vision_config.hidden_size == 1280


def test_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="only small presets"):
        make_backbone("qwen2.5-vl-7b", tmp_path / "x")
    with pytest.raises(ValueError, match="unknown backbone preset"):
        preset_config("qwen9")
    with pytest.raises(FileNotFoundError, match="not found"):
        load_backbone(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_backbone(tmp_path / "empty")


def test_same_seed_same_weights(tmp_path):
    a = load_backbone(make_backbone("tiny", tmp_path / "a", seed=3))[0]
    b = load_backbone(make_backbone("tiny", tmp_path / "b", seed=3))[0]
    for (na, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(pa, pb), na


def test_the_tokenizer_splits_numbers_into_digits_as_qwen_does():
    """A box coordinate is three digit tokens (Qwen2's pre-tokenisation), never one token per number: the model then
    learns ten digits with an order instead of hundreds of unrelated number tokens (this is what let the demo's
    small model learn to draw boxes)."""
    tok = train_tokenizer(["[{\"bbox_2d\": [137, 52, 198, 77], \"label\": \"ship\"}] There are 12 ships."] * 50,
                          vocab_size=600)
    text = '[{"bbox_2d": [137, 52, 198, 77], "label": "ship"}]'
    ids = tok(text)["input_ids"]
    pieces = tok.convert_ids_to_tokens(ids)
    digits = [p for p in pieces if any(c.isdigit() for c in p)]
    assert digits and all(len(p.lstrip("\u0120")) == 1 for p in digits), pieces
    assert "".join(digits) == "2" + "1375219877"  # bbox_2d's 2, then each coordinate's digits one by one
    assert tok.decode(ids) == text

