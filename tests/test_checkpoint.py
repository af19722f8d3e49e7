"""Run-dir TLM/adapter round trips and the official-format import (tensors only, never unpickling)."""

from __future__ import annotations

import argparse
import json
import shutil

import pytest
import torch

from fusar_gpt.inputs import build_inputs
from fusar_gpt.model.checkpoint import (
    CheckpointError,
    load_adapter,
    load_tlm,
    save_adapter,
    save_tlm,
)
from fusar_gpt.model.fusar import FusarGPT, Priors
from fusar_gpt.model.official import OFFICIAL_FORMAT, export_official, import_official
from fusar_gpt.model.policy import add_lora
from fusar_gpt.model.tlm import TLM

from .conftest import random_anchors, random_image

GRID = torch.tensor([[1, 16, 16], [1, 8, 12]])


def tlm_inputs(c, seed=0):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(64 + 24, c, generator=g)
    feats, pos = torch.randn(2, 10, 64, generator=g), torch.rand(2, 10, 2, generator=g)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, 4:] = False
    return tokens, GRID, feats, pos, mask


@pytest.mark.parametrize("fusion", ["tlm", "sum", "concat", "none"])
@torch.no_grad()
def test_tlm_round_trip(tmp_path, fusion):
    torch.manual_seed(1)
    tlm = TLM(48, sigma=3.0, fusion=fusion)
    for p in tlm.parameters():
        p.add_(torch.randn_like(p))
    save_tlm(tlm, tmp_path)
    assert json.loads((tmp_path / "tlm.json").read_text())["fusion"] == fusion
    again = load_tlm(tmp_path)
    args = tlm_inputs(48)
    assert torch.equal(tlm(*args), again(*args))


def write_official(tlm: TLM, path, image_size=504):
    export_official(tlm, path, image_size=image_size)
    return path


@torch.no_grad()
def test_official_import_round_trip_identical_outputs(tmp_path):
    torch.manual_seed(2)
    tlm = TLM(40, sigma=2.5, missing="identity")
    src = write_official(tlm, tmp_path / "official")
    cfg = json.loads((src / "tlm_config.json").read_text())
    assert cfg == {"format": OFFICIAL_FORMAT, "sigma": 2.5, "hidden_mult": 4, "image_size": 504, "vec_dim": 64}
    assert set(torch.load(src / "vec64_film.pt", weights_only=True)) == {"film_mlp"}
    run = import_official(src, tmp_path / "run")
    imported = load_tlm(run)
    args = tlm_inputs(40)
    assert imported.sigma == 2.5 and torch.equal(imported(*args), tlm(*args))
    assert json.loads((run / "import.json").read_text())["coordinate_size"] == 504


def test_official_import_carries_the_adapter(tiny_dir, tmp_path):
    from fusar_gpt.model.backbone import load_backbone

    backbone, proc = load_backbone(tiny_dir)
    torch.manual_seed(3)
    model = FusarGPT(backbone, TLM(backbone.config.text_config.hidden_size), proc).eval()
    add_lora(model, r=4)
    with torch.no_grad():
        for n, p in model.backbone.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)  # a trained-looking adapter
    src = tmp_path / "official"
    save_adapter(model.backbone, src)
    for f in (src / "adapter").iterdir():  # official dirs keep adapter files at the top level
        shutil.move(str(f), src / f.name)
    write_official(model.tlm, src)
    run = import_official(src, tmp_path / "run")
    base, _ = load_backbone(tiny_dir)
    again = FusarGPT(load_adapter(base, run), load_tlm(run), proc).eval()
    batch = build_inputs(proc, [random_image(224, 224, 4)], ["How many ships?"])
    priors = Priors.stack([random_anchors(16, 5)])
    with torch.no_grad():
        assert torch.allclose(model(**batch, priors=priors).logits, again(**batch, priors=priors).logits, atol=1e-6)


def test_pickled_objects_are_refused_and_nothing_is_left(tmp_path):
    tlm = TLM(16)
    src = write_official(tlm, tmp_path / "evil")
    torch.save({"film_mlp": tlm.mlp.state_dict(), "args": argparse.Namespace(lr=1)}, src / "vec64_film.pt")
    with pytest.raises(CheckpointError, match="unpickling"):
        import_official(src, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["evil"]  # no temporary leftovers either


def test_bad_official_dirs_give_clear_errors(tmp_path):
    tlm = TLM(16)
    src = write_official(tlm, tmp_path / "src")
    (src / "tlm_config.json").write_text(json.dumps({"format": "film_v0", "sigma": 2, "vec_dim": 64}))
    with pytest.raises(CheckpointError, match="unknown format 'film_v0'"):
        import_official(src, tmp_path / "r1")
    (src / "tlm_config.json").unlink()
    with pytest.raises(CheckpointError, match="legacy"):
        import_official(src, tmp_path / "r2")
    run = import_official(src, tmp_path / "r3", sigma=2.0)  # legacy dir with the sigma supplied
    assert load_tlm(run).sigma == 2.0
    (src / "vec64_film.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        import_official(src, tmp_path / "r4", sigma=2.0)
    torch.save({"film_mlp": {"0.weight": torch.zeros(7, 64)}}, src / "vec64_film.pt")
    with pytest.raises(CheckpointError, match="lacks"):
        import_official(src, tmp_path / "r5", sigma=2.0)
    with pytest.raises(CheckpointError, match="not empty"):
        import_official(src, run, sigma=2.0)
    assert not any((tmp_path / f"r{i}").exists() for i in (1, 2, 4, 5))


def test_adapter_bin_is_converted_to_safetensors(tmp_path):
    src = write_official(TLM(16), tmp_path / "src")
    (src / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
    torch.save({"base_model.model.x.lora_A.weight": torch.ones(2, 2)}, src / "adapter_model.bin")
    run = import_official(src, tmp_path / "run")
    from safetensors.torch import load_file

    tensors = load_file(str(run / "adapter" / "adapter_model.safetensors"))
    assert torch.equal(tensors["base_model.model.x.lora_A.weight"], torch.ones(2, 2))


def _broken_tlm(run, case):
    save_tlm(TLM(16), run)
    cfg, weights = run / "tlm.json", run / "tlm.safetensors"
    data = weights.read_bytes()
    if case == "truncated weights":
        weights.write_bytes(data[: len(data) // 2])
    elif case == "zero-byte weights":
        weights.write_bytes(b"")
    elif case == "lying header":
        weights.write_bytes((10 ** 12).to_bytes(8, "little") + data[8:])
    elif case == "nan weights":
        from safetensors.torch import load_file, save_file

        state = load_file(str(weights))
        state["null_prior"] = torch.full_like(state["null_prior"], float("nan"))
        save_file(state, str(weights))
    elif case == "unknown key in tlm.json":
        cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "gate": True}))
    elif case == "garbage tlm.json":
        cfg.write_text("{not json")
    elif case == "tlm.json a list":
        cfg.write_text("[1, 2]")


@pytest.mark.parametrize("case", ["truncated weights", "zero-byte weights", "lying header", "nan weights",
                                  "unknown key in tlm.json", "garbage tlm.json", "tlm.json a list"])
def test_a_broken_tlm_is_refused_in_one_line_naming_the_file(tmp_path, case):
    _broken_tlm(tmp_path, case)
    with pytest.raises(CheckpointError) as err:
        load_tlm(tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and ("tlm.json" in msg or "tlm.safetensors" in msg), msg
    assert ("non-finite" in msg) == (case == "nan weights")


def test_load_tlm_refuses_foreign_formats(tmp_path):
    save_tlm(TLM(16), tmp_path)
    cfg = json.loads((tmp_path / "tlm.json").read_text())
    (tmp_path / "tlm.json").write_text(json.dumps({**cfg, "format": "other"}))
    with pytest.raises(CheckpointError, match="unknown TLM format"):
        load_tlm(tmp_path)
    with pytest.raises(CheckpointError, match="holds no TLM"):
        load_tlm(tmp_path / "nothing")


def test_checkpoint_from_a_gathered_state_dict_equals_the_module_path(tiny, tmp_path):
    """FSDP saves from a gathered full state dict; the files must match the plain path's."""
    from safetensors.torch import load_file

    from fusar_gpt.model.checkpoint import latest_checkpoint, save_checkpoint
    from fusar_gpt.model.fusar import FusarGPT
    from fusar_gpt.model.policy import add_lora

    backbone, proc = tiny
    import copy

    model = add_lora(FusarGPT(copy.deepcopy(backbone), TLM(backbone.config.text_config.hidden_size), proc))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n or n.startswith("tlm."):
                p.add_(0.01 * torch.randn_like(p))
    a = save_checkpoint(model, tmp_path / "a", 3, {"step": 3})
    b = save_checkpoint(model, tmp_path / "b", 3, {"step": 3}, state_dict=model.state_dict())
    assert latest_checkpoint(tmp_path / "b") == b
    for name in ("tlm.safetensors", "adapter/adapter_model.safetensors"):
        ta, tb = load_file(str(a / name)), load_file(str(b / name))
        assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
    assert (tmp_path / "b" / "adapter" / "adapter_config.json").exists() and (tmp_path / "b" / "tlm.json").exists()
