"""Qwen2.5-VL backbone: loading from a local directory, and small real architectures for tests.

Real weights and the tiny test models take the same road: ``load_backbone(dir)`` calls
``from_pretrained`` on a local directory. The factory builds a genuine
``Qwen2_5_VLForConditionalGeneration`` at small sizes, trains a byte-level BPE tokenizer with the
Qwen special tokens and a Qwen-style chat template, saves everything and lets the caller load it
back through that loader, so tests exercise the code path real checkpoints use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoTokenizer,
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
)
from transformers.models.qwen2_5_vl.processing_qwen2_5_vl import Qwen2_5_VLProcessor
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

# Qwen2.5 special tokens, in Qwen's own order (their ids differ in our small vocabularies).
SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]
DEFAULT_SYSTEM = "You are a helpful assistant."
# Qwen chat format: a default system turn, one image placeholder per image part.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if loop.first and message['role'] != 'system' -%}"
    "{{ '<|im_start|>system\\n" + DEFAULT_SYSTEM + "<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)

# Text the default tokenizer is trained on: the words and symbols our tasks produce.
DEFAULT_CORPUS = [
    "How many ships are in this SAR image? Answer with a number.",
    "How many planes are visible? 0 1 2 3 4 5 6 7 8 9 10 11 12",
    "Where are the ships? top-left, top, top-right, left, center, right, bottom-left, bottom, bottom-right",
    'Detect all ships. [{"bbox_2d": [12, 40, 88, 120], "label": "ship"}] None',
    "What is the object in the box? cargo tanker fishing container passenger airliner fighter",
    "The scene shows water, coast, built-up area, bare ground, crops, trees, grass and flooded vegetation.",
    "Bright point scatterers along the quay; dark specular water in the north-west; speckle noise.",
    "Sentinel-1 radar backscatter in dB, VV and VH polarisation, ascending orbit, 10 m pixels.",
    "AlphaEarth embedding anchors describe land cover; open sea has no data.",
    "A container ship is moored at the northern berth while two fishing boats leave the harbour.",
    "Airliners are parked on the apron next to the terminal; a fighter taxis on the runway.",
    "Oil storage tanks appear as bright circles with a double-bounce ring near the refinery.",
    "The river crosses the image from the top-right to the bottom-left corner between farmland.",
    "Wind ruffles the sea surface, so the water looks brighter in the south than in the north.",
    "Counting: one, two, three, four, five, six, seven, eight, nine, ten vessels or aircraft.",
    "Classify the target inside the box: ship or plane; fine classes include bulk carrier, "
    "tanker, container ship, cargo, fishing vessel, tug, ferry, warship, airliner, transport, helicopter.",
    "Localise every target in a 3x3 grid: the image is split into nine equal cells.",
    "Coastline, harbour, breakwater, pier, dock, quay, marina, anchorage, shipping lane, wake.",
    "Runway, taxiway, apron, hangar, terminal building, airfield, airport, helipad.",
    "Urban blocks, industrial estate, forest canopy, wetland, paddy field, desert, mountain ridge, snow.",
    "Synthetic aperture radar, azimuth, range, incidence angle, layover, foreshortening, shadow, "
    "polarimetry, amplitude, intensity, sigma nought, calibration, geocoding, terrain correction.",
    "Gaofen-3, TerraSAR-X, COSMO-SkyMed, RADARSAT-2, ICEYE, Capella, ALOS-2 PALSAR, Sentinel-1A/B.",
    "The year of acquisition was 2017, 2018, 2019, 2020, 2021, 2022, 2023, 2024 or 2025.",
]


@dataclass(frozen=True)
class Preset:
    """Backbone sizes. ``shape_only`` presets carry real Qwen2.5-VL shapes with random weights.

    For saved presets ``vocab_size`` is the BPE target; the model takes the trained tokenizer's
    actual length, which is smaller when the training text is small.
    """

    text: dict
    vision: dict
    vocab_size: int
    shape_only: bool = False
    tie_word_embeddings: bool = False


_REAL_VISION = dict(depth=32, hidden_size=1280, num_heads=16, intermediate_size=3420, window_size=112,
                    fullatt_block_indexes=[7, 15, 23, 31])
_MROPE = {"rope_type": "default", "mrope_section": [16, 24, 24], "rope_theta": 1000000.0}
PRESETS: dict[str, Preset] = {
    # ~1M parameters: unit tests.
    "tiny": Preset(
        text=dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, rope_parameters={"rope_type": "default", "mrope_section": [4, 6, 6],
                                                          "rope_theta": 10000.0}),
        vision=dict(depth=2, hidden_size=64, num_heads=2, intermediate_size=128, window_size=56,
                    fullatt_block_indexes=[1]),
        vocab_size=1024,
    ),
    # ~5M parameters: the demo, trainable on 2 CPU cores in minutes. theta 1e4 (not lower): an answer reads
    # image content across 30-250 tokens that vary with every question's length, and only rotary pairs that
    # barely turn over such spans let it match content; with theta 20 none did (lowest 0.06 rad per token).
    # Where a token sits reaches the LLM in the token's content instead (the vision warm-up's cell targets).
    "small": Preset(
        text=dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=8,
                  num_key_value_heads=2, rope_parameters={"rope_type": "default", "mrope_section": [4, 6, 6],
                                                          "rope_theta": 10000.0}),
        vision=dict(depth=4, hidden_size=128, num_heads=4, intermediate_size=344, window_size=112,
                    fullatt_block_indexes=[1, 3]),
        vocab_size=2048,
    ),
    "qwen2.5-vl-3b": Preset(
        text=dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
                  num_key_value_heads=2, rope_parameters=_MROPE),
        vision=_REAL_VISION, vocab_size=151936, shape_only=True, tie_word_embeddings=True,
    ),
    "qwen2.5-vl-7b": Preset(
        text=dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                  num_key_value_heads=4, rope_parameters=_MROPE),
        vision=_REAL_VISION, vocab_size=152064, shape_only=True,
    ),
}


def preset_config(name: str, token_ids: dict[str, int] | None = None) -> Qwen2_5_VLConfig:
    """A ``Qwen2_5_VLConfig`` for a preset; ``token_ids`` maps special tokens to ids (tokenizer's)."""
    if name not in PRESETS:
        raise ValueError(f"unknown backbone preset {name!r}; choose from {', '.join(PRESETS)}")
    p = PRESETS[name]
    # Without a tokenizer, special tokens sit at the end of the vocabulary, as in real Qwen.
    # Shape-only presets use Qwen2.5's own ids (151643...), which sit at the end of its vocabulary.
    first = 151643 if p.shape_only else p.vocab_size - len(SPECIAL_TOKENS)
    ids = token_ids or {t: first + i for i, t in enumerate(SPECIAL_TOKENS)}
    text = dict(p.text, vocab_size=p.vocab_size, max_position_embeddings=32768, rms_norm_eps=1e-6)
    pad = ids["<|endoftext|>"]
    text.update(bos_token_id=pad, eos_token_id=ids["<|im_end|>"], pad_token_id=pad)
    kw = dict(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
              vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    vision = dict(p.vision, out_hidden_size=p.text["hidden_size"], patch_size=14, spatial_merge_size=2,
                  temporal_patch_size=2, in_channels=3, tokens_per_second=2)
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=p.tie_word_embeddings, **kw)


# Qwen2's pre-tokenisation: words, single digits, punctuation runs and whitespace are split apart before BPE.
# Single digits matter most: a box coordinate "137" is then the tokens 1, 3, 7 (as in Qwen2.5-VL), so the
# model learns 10 digits with an order instead of ~450 unrelated number tokens each seen a handful of times.
QWEN_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
              r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def train_tokenizer(texts: list[str] | None = None, vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on ``texts`` with the Qwen special tokens, pre-tokenisation and chat template."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(texts or DEFAULT_CORPUS), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=SPECIAL_TOKENS[1:], padding_side="left")
    fast.chat_template = CHAT_TEMPLATE
    return fast


class SarImageProcessor(Qwen2_5_VLProcessor):
    """Qwen2.5-VL processor for still images only.

    The stock processor insists on a video processor, which needs torchvision; SAR work never
    feeds video, so this subclass drops that attribute and keeps Qwen's image token expansion
    and ``mm_token_type_ids`` (which Qwen2.5-VL needs for 3-D rotary positions).
    """

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        # ProcessorMixin derives its sub-processors from this signature, which names no video one.
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


def load_processor(path: str | Path, min_pixels: int | None = None, max_pixels: int | None = None,
                   padding_side: str = "left") -> SarImageProcessor:
    """Image-only processor from a local model directory (real Qwen2.5-VL or one we saved)."""
    path = _local_dir(path)
    tokenizer = AutoTokenizer.from_pretrained(path, padding_side=padding_side)
    kw = {k: v for k, v in dict(min_pixels=min_pixels, max_pixels=max_pixels).items() if v is not None}
    image_processor = Qwen2VLImageProcessorPil.from_pretrained(path, **kw)
    template = tokenizer.chat_template or _read_chat_template(path) or CHAT_TEMPLATE
    return SarImageProcessor(image_processor=image_processor, tokenizer=tokenizer, chat_template=template)


def load_backbone(
    path: str | Path, dtype: torch.dtype | str | None = None, device: str | torch.device | None = None,
    attn_implementation: str | None = None,
) -> tuple[Qwen2_5_VLForConditionalGeneration, SarImageProcessor]:
    """Load the backbone and its image-only processor from a local directory via ``from_pretrained``."""
    path = _local_dir(path)
    kw = {"dtype": dtype or "auto"}
    if attn_implementation:
        kw["attn_implementation"] = attn_implementation
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(path, local_files_only=True, **kw)
    if device is not None:
        model.to(device)
    model.eval()
    return model, load_processor(path)


def make_backbone(preset: str, out_dir: str | Path, texts: list[str] | None = None, seed: int = 0) -> Path:
    """Build a random Qwen2.5-VL of ``preset`` size with a trained tokenizer and save it to ``out_dir``.

    Load it back with :func:`load_backbone`. Shape-only presets are refused: their random 3B/7B
    weights are built in memory for benchmarks (:func:`build_random_model`), never written.
    """
    if PRESETS.get(preset) is None or PRESETS[preset].shape_only:
        small = [k for k, v in PRESETS.items() if not v.shape_only]
        raise ValueError(f"make_backbone saves only small presets ({', '.join(small)}), not {preset!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(texts, PRESETS[preset].vocab_size)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    config = preset_config(preset, ids)
    # BPE stops early on a small corpus: size the embedding to the tokenizer so every id decodes.
    config.text_config.vocab_size = len(tokenizer)
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.generation_config.bos_token_id = ids["<|endoftext|>"]
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=1008 * 1008).save_pretrained(out)
    (out / "fusar_preset.json").write_text(json.dumps({"preset": preset, "seed": seed}) + "\n")
    return out


def build_random_model(preset: str, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                       attn_implementation: str = "sdpa") -> Qwen2_5_VLForConditionalGeneration:
    """A randomly initialised backbone of any preset built directly on ``device`` (benchmarks)."""
    config = preset_config(preset)
    config._attn_implementation = attn_implementation
    with torch.device(device):  # allocate and initialise in place, in the target dtype
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=dtype)
    return model


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _local_dir(path: str | Path) -> Path:
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"model directory not found: {p} (weights are loaded from local directories only)")
    if not (p / "config.json").exists() and not (p / "tokenizer_config.json").exists():
        raise FileNotFoundError(f"{p} holds no config.json: not a Hugging Face model directory")
    return p


def _read_chat_template(path: Path) -> str | None:
    for name in ("chat_template.jinja", "chat_template.json"):
        f = path / name
        if f.exists():
            text = f.read_text()
            return json.loads(text)["chat_template"] if name.endswith(".json") else text
    return None
