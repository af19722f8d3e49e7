"""The training policy table (model/policy.py) decides what trains in each mode, and at which learning rate."""

from __future__ import annotations

import pytest
import torch

from fusar_gpt.config import TrainConfig
from fusar_gpt.model.backbone import load_backbone
from fusar_gpt.model.fusar import FusarGPT
from fusar_gpt.model.policy import (
    TRAINS,
    add_lora,
    adds_lora,
    apply_policy,
    trains_whole_backbone,
    whole_backbone,
)
from fusar_gpt.model.tlm import TLM
from fusar_gpt.recipe_rules import TRAINABLE, RecipeError

LR, VISION, TLM_SCALE = 1e-3, 0.25, 3.0


def test_the_table_has_one_row_per_recipe_mode():
    assert tuple(TRAINS) == TRAINABLE
    assert [m for m in TRAINABLE if adds_lora(m)] == ["tlm+lora", "lora"]
    assert [m for m in TRAINABLE if whole_backbone(m)] == ["backbone"]
    with pytest.raises(RecipeError, match="trainable: 'mlp' is not one of tlm\\+lora, tlm, lora, backbone"):
        adds_lora("mlp")


def _lrs(trained) -> dict[str, tuple[int, float]]:
    return {g: (len(v["params"]), v["lr"]) for g, v in trained.groups.items()}


def test_each_mode_trains_exactly_its_parameters_in_its_optimizer_groups(tiny_dir):
    backbone, proc = load_backbone(tiny_dir)
    model = FusarGPT(backbone, TLM(backbone.config.text_config.hidden_size), proc)
    cfg = TrainConfig(lr=LR, vision_lr_scale=VISION, tlm_lr_scale=TLM_SCALE)
    names = [n for n, _ in model.named_parameters()]
    tlm = sorted(n for n in names if n.startswith("tlm."))
    everything = sorted(n for n in names if n.startswith("backbone."))
    visual = [n for n in everything if ".visual." in n]
    assert tlm and visual and len(visual) < len(everything)

    # backbone: the whole Qwen2.5-VL, the vision tower at its own scale; never the TLM
    trained = apply_policy(model, "backbone", cfg)
    assert trained.names == everything
    assert _lrs(trained) == {"base": (len(everything) - len(visual), LR), "vision": (len(visual), LR * VISION)}
    assert trains_whole_backbone(model)
    # tlm: the paper's text, no adapter needed
    trained = apply_policy(model, "tlm", cfg)
    assert trained.names == tlm and _lrs(trained) == {"tlm": (len(tlm), LR * TLM_SCALE)}
    assert not trains_whole_backbone(model)
    for mode in ("tlm+lora", "lora"):
        with pytest.raises(RecipeError, match="add_lora"):
            apply_policy(model, mode, cfg)

    add_lora(model, r=4)
    lora = sorted(n for n, _ in model.named_parameters() if "lora_" in n)
    assert lora and all(n.startswith("backbone.") and ".visual." not in n for n in lora)
    trained = apply_policy(model, "tlm+lora", cfg)
    assert trained.names == sorted(tlm + lora)
    assert list(trained.groups) == ["base", "tlm"]  # the order AdamW (and every saved optimizer state) has them
    assert _lrs(trained) == {"base": (len(lora), LR), "tlm": (len(tlm), LR * TLM_SCALE)}
    trained = apply_policy(model, "lora", cfg)
    assert trained.names == lora and _lrs(trained) == {"base": (len(lora), LR)}
    assert not trains_whole_backbone(model)
    with pytest.raises(RecipeError, match="cannot continue a run that carries a LoRA adapter"):
        apply_policy(model, "backbone", cfg)

    # what the trainer builds from it: exactly the trained tensors, at the groups' learning rates
    trained = apply_policy(model, "tlm+lora", cfg)
    optimizer = torch.optim.AdamW(list(trained.groups.values()), lr=LR)
    by_id = {id(p): n for n, p in model.named_parameters()}
    assert sorted(by_id[id(p)] for g in optimizer.param_groups for p in g["params"]) == trained.names
    assert [g["lr"] for g in optimizer.param_groups] == [LR, LR * TLM_SCALE]
    assert sorted(n for n, p in model.named_parameters() if p.requires_grad) == trained.names


def test_default_learning_rates_are_the_train_config_defaults(tiny_dir):
    backbone, proc = load_backbone(tiny_dir)
    model = FusarGPT(backbone, TLM(backbone.config.text_config.hidden_size), proc)
    default = TrainConfig()
    assert _lrs(apply_policy(model, "tlm")) == {"tlm": (5, default.lr * default.tlm_lr_scale)}
