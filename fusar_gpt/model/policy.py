"""Training policy as data: what trains in each ``trainable`` mode, and at which learning rate.

Two small tables decide it, both on FusarGPT parameter names (``re.match``): :data:`TRAINS` says which
parameters a mode trains, :data:`GROUPS` which optimizer group (and so which learning rate) a trained
parameter joins. Where a parameter sits decides its learning rate, whatever the mode: a trained vision-tower
weight always runs at ``lr x vision_lr_scale``, a TLM weight at ``lr x tlm_lr_scale``. :func:`apply_policy` is
the one place that reads them. The LoRA adapter's placement (:func:`add_lora`) lives here too: the ``lora``
pattern below is what it creates.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..config import RecipeError, TrainConfig

if TYPE_CHECKING:
    from .fusar import FusarGPT

TLM = r"(?:.*\.)?tlm\."           # FusarGPT.tlm
LORA = r"backbone\..*lora_"        # the adapter's tensors (lora_A, lora_B, ...) inside the backbone
VISION = r".*\.visual\."           # the Qwen2.5-VL vision tower and its merger
BACKBONE = r"backbone\."           # every Qwen2.5-VL weight

TRAINS: dict[str, tuple[str, ...]] = {  # trainable mode -> patterns of the parameters that train
    "tlm+lora": (TLM, LORA),   # stage 1 as in the paper's figure and official code
    "tlm": (TLM,),             # stage 1 as the paper's text says (the MLP only)
    "lora": (LORA,),           # stage 2: the TLM is frozen
    "backbone": (BACKBONE,),   # the whole Qwen2.5-VL (a stand-in pretraining of a random preset); no TLM, no LoRA
}
# optimizer groups, in order: (name, pattern, TrainConfig field scaling train.lr); a trained parameter joins the
# first group whose pattern matches, the group without a pattern takes the rest (LoRA, or the LLM's weights)
GROUPS: tuple[tuple[str, str | None, str | None], ...] = (
    ("base", None, None),
    ("vision", VISION, "vision_lr_scale"),
    ("tlm", TLM, "tlm_lr_scale"),
)

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class Trained:
    """What :func:`apply_policy` set up: the trained parameter names (sorted) and the optimizer's param groups
    by group name (non-empty groups only, in :data:`GROUPS` order; each ``{"params": [...], "lr": ...}``)."""

    names: list[str]
    groups: dict[str, dict] = field(default_factory=dict)


def adds_lora(mode: str) -> bool:
    """Whether the mode trains a LoRA adapter (so a model without one needs :func:`add_lora`)."""
    return LORA in _patterns(mode)


def whole_backbone(mode: str) -> bool:
    """Whether the mode trains the Qwen2.5-VL weights themselves (the run saves RUN/model)."""
    return BACKBONE in _patterns(mode)


def trains_whole_backbone(model: FusarGPT) -> bool:
    """Whether ``model`` is set up as :func:`whole_backbone` modes set it: no adapter, backbone weights trained."""
    return not hasattr(model.backbone, "peft_config") and any(
        p.requires_grad and re.match(BACKBONE, n) for n, p in model.named_parameters())


def apply_policy(model: FusarGPT, mode: str, train: TrainConfig | None = None) -> Trained:
    """Set ``requires_grad`` on every parameter of ``model`` per ``mode``'s row of :data:`TRAINS`;
    return the trained names and the optimizer groups, at the learning rates of ``train`` (default: its
    defaults). The vision tower and the base LLM train only in ``backbone`` mode."""
    patterns = _patterns(mode)
    train = train or TrainConfig()
    names = [n for n, _ in model.named_parameters()]
    if BACKBONE in patterns and hasattr(model.backbone, "peft_config"):
        raise RecipeError(f"trainable: {mode!r} cannot continue a run that carries a LoRA adapter")
    if LORA in patterns and not any(re.match(LORA, n) for n in names):
        raise RecipeError(f"trainable: {mode!r} trains the LoRA adapter, but the model has none (add_lora first)")
    members: dict[str, list] = {}
    for name, p in model.named_parameters():
        p.requires_grad_(any(re.match(pat, name) for pat in patterns))
        if p.requires_grad:
            group = next((g for g, pat, _ in GROUPS if pat and re.match(pat, name)), GROUPS[0][0])
            members.setdefault(group, []).append(p)
    groups = {g: {"params": members[g], "lr": train.lr * (getattr(train, scale) if scale else 1.0)}
              for g, _, scale in GROUPS if g in members}
    return Trained(sorted(n for n, p in model.named_parameters() if p.requires_grad), groups)


def _patterns(mode: str) -> tuple[str, ...]:
    if mode not in TRAINS:
        raise RecipeError(f"trainable: {mode!r} is not one of {', '.join(TRAINS)}")
    return TRAINS[mode]


def lora_target_regex(targets: Sequence[str] = LORA_TARGETS) -> str:
    """peft ``target_modules`` regex matching the language model's projections only.

    Plain names such as ``gate_proj`` would also match the vision tower's MLP; anchoring the
    pattern on ``language_model.layers`` keeps LoRA off every vision module.
    """
    names = "|".join(re.escape(t) for t in targets)
    return rf"^(?:.*\.)?language_model\.layers\.\d+\.(?:self_attn|mlp)\.(?:{names})$"


def add_lora(model: FusarGPT, r: int = 8, alpha: int = 32, dropout: float = 0.05,
             targets: Sequence[str] = LORA_TARGETS) -> FusarGPT:
    """Wrap the backbone with a fresh LoRA adapter on the LLM's q/k/v/o/gate/up/down projections."""
    from peft import LoraConfig, get_peft_model

    if hasattr(model.backbone, "peft_config"):
        raise ValueError("the backbone already carries a LoRA adapter")
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=lora_target_regex(targets),
                        bias="none", task_type="CAUSAL_LM")
    model.backbone = get_peft_model(model.backbone, config)
    model.train(model.training)  # new LoRA dropout modules start in train mode; follow the model's mode
    return model
