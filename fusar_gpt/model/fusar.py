"""FusarGPT: a Qwen2.5-VL backbone whose visual tokens are modulated by AEF anchors (TLM).

The priors travel with every call. Images are encoded by the vision tower, fused by the TLM
and handed to the backbone as ``mm_encoder_outputs`` (transformers' pre-encoded image path),
so no hook and no attribute holds per-call state: two threads can generate with different
priors on one model, beam search expands the fused tokens like any pre-encoded image, and a
peft-wrapped backbone works unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPooling

from ..inputs import InputProcessor, Priors
from .tlm import TLM


class FusarGPT(nn.Module):
    """Backbone (plain or peft-wrapped ``Qwen2_5_VLForConditionalGeneration``) + :class:`TLM`."""

    def __init__(self, backbone: nn.Module, tlm: TLM, processor=None) -> None:
        super().__init__()
        hidden = base_model(backbone).config.text_config.hidden_size
        if tlm.hidden_size != hidden:
            raise ValueError(f"TLM hidden size {tlm.hidden_size} does not match the backbone's {hidden}")
        self.backbone = backbone
        self.tlm = tlm.to(next(backbone.parameters()).device)  # beside the backbone; keeps its own dtype
        self.processor = processor

    @property
    def base(self) -> nn.Module:
        return base_model(self.backbone)

    def encode_images(self, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor,
                      priors: Priors | None) -> BaseModelOutputWithPooling:
        """Vision tower -> merged tokens -> TLM; returns a fresh pre-encoded image output."""
        visual = self.base.model.visual
        enc = self.base.model.get_image_features(pixel_values, image_grid_thw, return_dict=True)
        tokens = torch.cat(list(enc.pooler_output), dim=0)
        if priors is None:
            priors = Priors.stack([None] * image_grid_thw.shape[0], self.tlm.prior_dim)
        if len(priors) != image_grid_thw.shape[0]:
            raise ValueError(f"{image_grid_thw.shape[0]} images but priors for {len(priors)}")
        priors = priors.to(tokens.device)
        fused = self.tlm(tokens, image_grid_thw, priors.features, priors.positions, priors.mask,
                         merge_size=visual.spatial_merge_size)
        sizes = (image_grid_thw.prod(-1) // visual.spatial_merge_size**2).tolist()
        return BaseModelOutputWithPooling(last_hidden_state=enc.last_hidden_state,
                                          pooler_output=tuple(torch.split(fused, sizes)))

    def _inputs(self, pixel_values, image_grid_thw, priors, kwargs) -> dict:
        if pixel_values is not None:
            if image_grid_thw is None:
                raise ValueError("pixel_values need image_grid_thw")
            if kwargs.get("mm_token_type_ids") is None:
                raise ValueError("mm_token_type_ids is required: without it Qwen2.5-VL silently uses 1-D positions")
            kwargs["mm_encoder_outputs"] = {"image": self.encode_images(pixel_values, image_grid_thw, priors)}
        kwargs["image_grid_thw"] = image_grid_thw
        return kwargs

    def forward(self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None = None,
                image_grid_thw: torch.Tensor | None = None, priors: Priors | None = None, **kwargs):
        """Backbone forward (logits, loss with ``labels``) with TLM-fused image tokens."""
        return self.backbone(input_ids=input_ids, **self._inputs(pixel_values, image_grid_thw, priors, kwargs))

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None = None,
                 image_grid_thw: torch.Tensor | None = None, priors: Priors | None = None, **kwargs) -> torch.Tensor:
        """``generate`` with TLM-fused image tokens; any decoding options (beams, sampling) pass through."""
        return self.backbone.generate(input_ids=input_ids, **self._inputs(pixel_values, image_grid_thw, priors, kwargs))

    def answer(self, images: Sequence, questions: Sequence[str], priors: Priors | None = None,
               max_new_tokens: int = 64, **gen_kwargs) -> list[str]:
        """One answer per (image, question); images are PIL images or HxW[x3] uint8 arrays."""
        if self.processor is None:
            raise ValueError("answer() needs a processor; load the model with load_backbone()")
        batch = InputProcessor(self.processor, train=False, prior_dim=self.tlm.prior_dim).prompts(images, questions)
        if priors is not None:
            batch["priors"] = priors
        batch = batch.to(next(self.parameters()).device)
        out = self.generate(**batch, max_new_tokens=max_new_tokens, **gen_kwargs)
        new = out[:, batch["input_ids"].shape[1]:]
        return [t.strip() for t in self.processor.batch_decode(new, skip_special_tokens=True)]


def base_model(backbone: nn.Module) -> nn.Module:
    """The ``Qwen2_5_VLForConditionalGeneration`` inside a possibly peft-wrapped backbone."""
    return backbone.get_base_model() if hasattr(backbone, "get_base_model") else backbone
