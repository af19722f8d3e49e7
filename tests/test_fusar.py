"""FusarGPT on a real tiny Qwen2.5-VL: batching, generation, threads, LoRA and stages."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from fusar_gpt.inputs import build_inputs
from fusar_gpt.model.backbone import load_backbone
from fusar_gpt.model.fusar import FusarGPT, Priors
from fusar_gpt.model.policy import add_lora, apply_policy, lora_target_regex
from fusar_gpt.model.tlm import TLM

from .conftest import random_anchors, random_image

PROJ = {"self_attn": ("q_proj", "k_proj", "v_proj", "o_proj"), "mlp": ("gate_proj", "up_proj", "down_proj")}
SIZES = [(224, 224), (280, 224), (504, 504)]
QUESTIONS = ["How many ships are there?", "Where are the planes?", "Detect all ships."]


def fusar(backbone, processor, seed=0, **tlm_kw) -> FusarGPT:
    torch.manual_seed(seed)
    return FusarGPT(backbone, TLM(backbone.config.text_config.hidden_size, **tlm_kw), processor).eval()


@pytest.fixture
def fresh(tiny_dir):
    """A private copy of the tiny backbone, for tests that wrap it with LoRA."""
    return load_backbone(tiny_dir)


def three_images():
    images = [random_image(h, w, i) for i, (h, w) in enumerate(SIZES)]
    anchors = [random_anchors(64, 1), random_anchors(16, 2), random_anchors(9, 3, valid=np.zeros(9, bool))]
    return images, anchors


def per_image_logits(model, proc, images, anchors):
    out = []
    for im, q, a in zip(images, QUESTIONS, anchors):
        batch = build_inputs(proc, [im], [q])
        out.append(model(**batch, priors=Priors.stack([a])).logits[0])
    return out


@torch.no_grad()
def test_batch_of_mixed_sizes_equals_each_image_alone(tiny):
    backbone, proc = tiny
    model = fusar(backbone, proc)
    images, anchors = three_images()
    batch = build_inputs(proc, images, QUESTIONS)
    logits = model(**batch, priors=Priors.stack(anchors)).logits
    alone = per_image_logits(model, proc, images, anchors)
    for i, ref in enumerate(alone):  # left padding: each prompt sits at the end of its row
        assert (logits[i, -len(ref):] - ref).abs().max() <= 1e-4, SIZES[i]
    plain = backbone(**batch).logits  # and the priors do change the answer distribution
    assert (logits - plain).abs().max() > 1e-3


@torch.no_grad()
def test_zeroed_last_layer_leaves_logits_unchanged(tiny):
    backbone, proc = tiny
    model = fusar(backbone, proc)
    model.tlm.mlp[2].weight.zero_()
    model.tlm.mlp[2].bias.zero_()
    images, anchors = three_images()
    batch = build_inputs(proc, images, QUESTIONS)
    assert torch.allclose(model(**batch, priors=Priors.stack(anchors)).logits, backbone(**batch).logits, atol=1e-6)


def test_generate_batch_with_beams_matches_single(tiny):
    backbone, proc = tiny
    model = fusar(backbone, proc)
    images, anchors = three_images()
    kw = dict(max_new_tokens=5, num_beams=2, do_sample=False)
    batched = model.answer(images[:2], QUESTIONS[:2], Priors.stack(anchors[:2]), **kw)
    single = [model.answer([im], [q], Priors.stack([a]), **kw)[0]
              for im, q, a in zip(images[:2], QUESTIONS[:2], anchors[:2])]
    assert len(batched) == 2 and batched == single
    batch = build_inputs(proc, images[:2], QUESTIONS[:2])
    out = model.generate(**batch, priors=Priors.stack(anchors[:2]), num_return_sequences=2, **kw)
    assert out.shape[0] == 4 and out.shape[1] > batch["input_ids"].shape[1]


def test_two_threads_with_different_priors_get_their_own_answers(tiny):
    backbone, proc = tiny
    model = fusar(backbone, proc)
    batch = build_inputs(proc, [random_image(224, 224, 9)], ["How many ships?"])
    priors = {"a": Priors.stack([random_anchors(16, 11)]), "b": Priors.stack([random_anchors(16, 12)])}

    def run(name):
        out = model.generate(**batch, priors=priors[name], max_new_tokens=4, do_sample=False,
                             return_dict_in_generate=True, output_logits=True)
        return torch.stack(out.logits)

    expected = {name: run(name) for name in priors}
    assert (expected["a"] - expected["b"]).abs().max() > 1e-3  # the priors really differ in effect
    results, errors = {}, []
    start = threading.Barrier(2)

    def worker(name):
        try:
            start.wait()
            results[name] = [run(name) for _ in range(3)]
        except Exception as err:  # surfaced below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(n,)) for n in priors]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for name in priors:
        for got in results[name]:
            assert torch.allclose(got, expected[name], atol=1e-5), name


def test_missing_mm_token_type_ids_is_refused(tiny):
    backbone, proc = tiny
    batch = build_inputs(proc, [random_image(224, 224, 0)], ["Count."])
    batch.pop("mm_token_type_ids")
    with pytest.raises(ValueError, match="mm_token_type_ids"):
        fusar(backbone, proc)(**batch)


def expected_lora_names(n_layers: int) -> list[str]:
    return sorted(f"backbone.base_model.model.model.language_model.layers.{i}.{block}.{proj}.lora_{ab}.default.weight"
                  for i in range(n_layers) for block, projs in PROJ.items() for proj in projs for ab in "AB")


def test_lora_wraps_only_language_model_projections(fresh):
    backbone, proc = fresh
    model = fusar(backbone, proc)
    images, anchors = three_images()
    batch = build_inputs(proc, images[:2], QUESTIONS[:2])
    with torch.no_grad():
        before = model(**batch, priors=Priors.stack(anchors[:2])).logits
    add_lora(model, r=4, alpha=16)
    assert not any(m.training for m in model.modules())  # LoRA dropout follows the model's eval mode
    names = sorted(n for n, _ in model.named_parameters() if "lora_" in n)
    assert names == expected_lora_names(backbone.config.text_config.num_hidden_layers)
    assert not any("visual" in n for n in names)
    assert model.backbone.peft_config["default"].r == 4
    with torch.no_grad():  # LoRA B starts at zero: the wrapped model answers as before
        assert torch.allclose(model(**batch, priors=Priors.stack(anchors[:2])).logits, before, atol=1e-6)
    assert len(model.answer(images[:2], QUESTIONS[:2], Priors.stack(anchors[:2]), max_new_tokens=3, num_beams=2)) == 2
    with pytest.raises(ValueError, match="already"):
        add_lora(model)


def test_regex_keeps_vision_mlp_out():
    import re

    pattern = re.compile(lora_target_regex())
    assert pattern.match("model.language_model.layers.3.mlp.gate_proj")
    assert pattern.match("base_model.model.model.language_model.layers.0.self_attn.q_proj")
    assert not pattern.match("model.visual.blocks.0.mlp.gate_proj")
    assert not pattern.match("model.visual.merger.mlp.0")


def test_stages_set_exactly_the_right_trainable_parameters(fresh):
    backbone, proc = fresh
    model = fusar(backbone, proc)
    with pytest.raises(ValueError, match="add_lora"):
        apply_policy(model, "lora")
    tlm_names = sorted(f"tlm.{n}" for n, _ in model.tlm.named_parameters())
    assert tlm_names == ["tlm.mlp.0.bias", "tlm.mlp.0.weight", "tlm.mlp.2.bias", "tlm.mlp.2.weight", "tlm.null_prior"]
    assert apply_policy(model, "tlm").names == tlm_names  # the paper's text: TLM only, no adapter needed
    add_lora(model)
    lora = expected_lora_names(backbone.config.text_config.num_hidden_layers)
    assert apply_policy(model, "tlm+lora").names == sorted(tlm_names + lora)
    assert apply_policy(model, "tlm").names == tlm_names
    assert apply_policy(model, "lora").names == lora
    assert not any(p.requires_grad for n, p in model.named_parameters() if "visual" in n or n.startswith("tlm."))
    with pytest.raises(ValueError, match="trainable: 'stage 3' is not one of"):
        apply_policy(model, "stage 3")


def test_stage_one_step_updates_only_trainables(fresh):
    backbone, proc = fresh
    model = fusar(backbone, proc)
    add_lora(model)
    trainable = apply_policy(model, "tlm+lora").names
    model.train()
    images, anchors = three_images()
    batch = build_inputs(proc, images[:2], QUESTIONS[:2], answers=["3", "top-left"])
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model(**batch, priors=Priors.stack(anchors[:2]), labels=labels).loss.backward()
    opt.step()
    changed = sorted(n for n, p in model.named_parameters() if not torch.equal(p, before[n]))
    assert set(changed) <= set(trainable) and "tlm.mlp.2.weight" in changed
    assert any("lora_B" in n for n in changed)
