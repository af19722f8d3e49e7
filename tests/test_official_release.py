"""The authors' whole release (stage1/ + one stage-2 folder per task) imported as one run, and each question answered
by its task's adapter: ask, eval's predict, the server's batcher. The release is faked at tiny scale with the real
file names, peft's own saved keys (LoRA on the language model's q/k/v/o/gate/up/down and, in stage1, on the vision
tower's blocks) and export_official's vec64_film.pt; each folder's lora_B is its own, so that which adapter ran
shows in the answer, and a spy on generate says which one was active."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict
from PIL import Image
from safetensors.torch import load_file

import fusar_gpt.model.loader as loader
from fusar_gpt.__main__ import main
from fusar_gpt.chip import ChipSpec, load_chip, read_spec
from fusar_gpt.data.dataset import load_manifest
from fusar_gpt.data.tasks import task_of_question
from fusar_gpt.evaluate import predict
from fusar_gpt.geo.anchors import Anchors
from fusar_gpt.infer import answer
from fusar_gpt.model.backbone import load_backbone
from fusar_gpt.model.checkpoint import CheckpointError, load_tlm
from fusar_gpt.model.export import export_run
from fusar_gpt.model.fusar import FusarGPT
from fusar_gpt.model.official import export_official, import_official
from fusar_gpt.model.policy import lora_target_regex
from fusar_gpt.model.routing import RoutingError, route
from fusar_gpt.model.tlm import TLM
from fusar_gpt.serve import BackgroundServer, ServeConfig, make_app
from fusar_gpt.serve_batcher import Batcher, Job

from .infer_helpers import chat_body, data_url, noise_image, request

DETECT_Q = ("This is a SAR image. Please carefully check the image and detect the following object: plane. Output "
            "each detected target’s bbox coordinates in JSON format. The format of the bbox coordinates is: "
            "[{\"bbox_2d\": [x1, y1, x2, y2], \"label\": \"plane\"}]. If there are no such targets in the image, "
            "simply respond with None.")
COUNT_Q = "How many ships are in this image?"
VAGUE_Q = "What do you make of this?"
FOLDERS = {"stage1": "caption", "stage2/localization": "locate", "stage2/counting": "count",
           "stage2/classification": "classify", "stage2/detection": "detect"}
VISION = r"^(?:.*\.)?visual\.blocks\.\d+\.(?:attn\.qkv|attn\.proj|mlp\.(?:gate_proj|up_proj|down_proj))$"
PROCESSOR_FILES = ("preprocessor_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
TOKENS = 12


def lora(backbone, target: str):
    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=target, bias="none",
                        task_type="CAUSAL_LM")
    return get_peft_model(backbone, config)


@pytest.fixture(scope="module")
def release(tmp_path_factory, tiny_dir):
    """RELEASE/{stage1, stage2/<task>}: stage1 with LoRA on the language model AND the vision tower's blocks, the
    stage-2 folders on the language model; every folder its own lora_B, one shared TLM, no tlm_config.json."""
    root = tmp_path_factory.mktemp("release") / "RELEASE"
    base, _ = load_backbone(tiny_dir)
    torch.manual_seed(0)
    tlm = TLM(base.config.text_config.hidden_size)
    with torch.no_grad():
        for p in tlm.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    stage1 = lora(base, f"(?:{lora_target_regex()})|(?:{VISION})")
    stage2 = lora(load_backbone(tiny_dir)[0], lora_target_regex())
    for k, folder in enumerate(FOLDERS):
        peft = stage1 if folder == "stage1" else stage2
        torch.manual_seed(10 + k)
        with torch.no_grad():
            for name, p in peft.named_parameters():
                if "lora_B" in name:
                    p.normal_(0.0, 1.0)
        out = root / folder
        peft.save_pretrained(str(out))
        export_official(tlm, out)
        (out / "tlm_config.json").unlink()  # the released folders carry none
        for name in PROCESSOR_FILES:
            shutil.copy2(Path(tiny_dir) / name, out / name)
    return root, tlm


@pytest.fixture(scope="module")
def imported(release, tiny_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("imported")
    run = import_official(release[0], root / "run", base=tiny_dir)
    png, npz = root / "chip.png", root / "chip.npz"
    Image.fromarray(np.stack([noise_image(3)] * 3, axis=-1)).save(png)
    rng = np.random.default_rng(4)
    f = rng.normal(size=(16, 64)).astype(np.float32)
    Anchors(f / np.linalg.norm(f, axis=1, keepdims=True), rng.random((16, 2)), np.ones(16, bool)).save(npz)
    return {"run": run, "png": png, "npz": npz, "root": root}


def single(tiny_dir, run: Path, task: str) -> FusarGPT:
    """The run's TLM on a base with only ``task``'s adapter (peft's plain single-adapter load)."""
    base, proc = load_backbone(tiny_dir)
    return FusarGPT(PeftModel.from_pretrained(base, str(run / "adapters" / task)), load_tlm(run), proc).eval()


def spy_active(model) -> list:
    """Record which adapter is active at every generate call."""
    active, generate = [], model.generate

    def spied(*args, **kwargs):
        active.append(model.backbone.active_adapter)
        return generate(*args, **kwargs)

    model.generate = spied
    return active


def test_the_release_imports_whole_through_the_cli(release, tiny_dir, tmp_path, capsys, monkeypatch):
    src, tlm = release
    monkeypatch.chdir(Path(tiny_dir).parent)
    assert main(["import-official", str(src), "--out", str(tmp_path / "run"), "--base", Path(tiny_dir).name,
                 "--json"]) == 0
    out, err = capsys.readouterr()
    info = json.loads(out)
    assert info["adapters"] == ["caption", "count", "locate", "classify", "detect"] and info["loadable"]
    assert "notice" in err and "sigma 2.0" in err and len(err.strip().splitlines()) == 1
    run = tmp_path / "run"
    for folder, task in FOLDERS.items():  # copied as they are, byte for byte (vision-tower LoRA included)
        for name in ("adapter_config.json", "adapter_model.safetensors"):
            assert (run / "adapters" / task / name).read_bytes() == (src / folder / name).read_bytes()
    again = load_tlm(run)
    assert again.sigma == 2.0 and again.missing == "identity"
    assert all(torch.equal(a, b) for a, b in zip(again.mlp.state_dict().values(), tlm.mlp.state_dict().values()))
    assert read_spec(run) == ChipSpec(frame=504, eight_bit="rgb")
    base = yaml.safe_load((run / "config.yaml").read_text())["model"]["base"]
    assert Path(base).is_absolute() and Path(base) == Path(tiny_dir).resolve()  # resolved: loads from anywhere
    provenance = json.loads((run / "import.json").read_text())
    assert provenance["layout"] == "release" and provenance["adapters"]["detect"] == "stage2/detection"
    assert not list(tmp_path.glob(".*"))  # no temporary leftovers


def test_every_adapter_loads_as_it_is_and_stage1_keeps_its_vision_lora(release, imported):
    model, _ = loader.load_model(imported["run"])
    for folder, task in FOLDERS.items():
        saved = load_file(str(release[0] / folder / "adapter_model.safetensors"))
        got = get_peft_model_state_dict(model.backbone, adapter_name=task)
        assert set(got) == set(saved) and all(torch.equal(got[k], saved[k]) for k in saved)
        assert any(".visual." in k for k in saved) == (task == "caption")
    qkv = model.base.model.visual.blocks[0].attn.qkv  # the vision LoRA applies when (and only when) stage1 answers
    x = torch.randn(5, qkv.base_layer.in_features)
    with torch.no_grad():
        for _ in route(model, ["Describe this image."], ["caption"]):
            assert not torch.allclose(qkv(x), qkv.base_layer(x))
        for _ in route(model, [COUNT_Q]):
            assert torch.equal(qkv(x), qkv.base_layer(x))


def test_ask_routes_each_question_to_its_task_adapter(imported, tiny_dir, capsys, monkeypatch):
    assert task_of_question(DETECT_Q) == "detect" and task_of_question(COUNT_Q) == "count"
    run, png, npz = imported["run"], imported["png"], imported["npz"]
    seen: list = []
    real = loader.load_model

    def spying(path, device="cpu"):
        model, spec = real(path, device)
        seen.append(spy_active(model))
        return model, spec

    monkeypatch.setattr(loader, "load_model", spying)
    answers = {}
    for q in (DETECT_Q, COUNT_Q):
        assert main(["ask", str(run), str(png), q, "--anchors", str(npz), "--max-new-tokens", str(TOKENS),
                     "--json"]) == 0
        answers[q] = json.loads(capsys.readouterr().out)["answer"]
    assert seen == [["detect"], ["count"]]
    item = load_chip(png, read_spec(run), anchors=npz)
    count_only = single(tiny_dir, run, "count")
    detect_only = single(tiny_dir, run, "detect")
    assert answer(detect_only, [item], [DETECT_Q], max_new_tokens=TOKENS)[0] == answers[DETECT_Q]
    assert answer(count_only, [item], [COUNT_Q], max_new_tokens=TOKENS)[0] == answers[COUNT_Q]
    # and the adapters do differ: the count adapter would have answered the detection question otherwise
    assert answer(count_only, [item], [DETECT_Q], max_new_tokens=TOKENS)[0] != answers[DETECT_Q]


def test_a_question_whose_task_cannot_be_told_is_refused_until_task_names_it(imported, capsys, monkeypatch):
    run, png, npz = imported["run"], imported["png"], imported["npz"]
    loads: list = []
    real = loader.load_model

    def spying(path, device="cpu"):
        model, spec = real(path, device)
        loads.append(spy_active(model))
        return model, spec

    monkeypatch.setattr(loader, "load_model", spying)
    for extra, needle in (([], "--task"), (["--task", "landcover"], "no adapter for the landcover task"),
                          (["--task", "nonsense"], "--task must be one of")):
        assert main(["ask", str(run), str(png), VAGUE_Q, "--anchors", str(npz), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and "\n" not in err
    assert loads == []  # refused before any weight loaded
    assert main(["ask", str(run), str(png), VAGUE_Q, "--anchors", str(npz), "--task", "count",
                 "--max-new-tokens", "4"]) == 0
    assert loads == [["count"]]


def test_eval_predict_and_the_server_batcher_route_each_batch_by_adapter(imported, tiny_dir):
    run, root = imported["run"], imported["root"]
    Image.fromarray(np.stack([noise_image(5)] * 3, axis=-1)).save(root / "b.png")
    rows = [{"id": "d1", "image": "chip.png", "aef": "chip.npz", "question": DETECT_Q, "answer": "None"},  # no task
            {"id": "c1", "image": "chip.png", "aef": "chip.npz", "question": COUNT_Q, "answer": "1", "task": "count"},
            {"id": "d2", "image": "b.png", "question": DETECT_Q, "answer": "None"},
            {"id": "v1", "image": "b.png", "question": VAGUE_Q, "answer": "1"}]
    (root / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    records = load_manifest(root / "m.jsonl")
    model, spec = loader.load_model(run)
    with pytest.raises(RoutingError, match="--task"):
        predict(model, records, spec=spec, progress=False)
    active = spy_active(model)
    limits = {"count": 6, "detect": 6}
    got = predict(model, records[:3], spec=spec, progress=False, max_new_tokens=limits)
    assert sorted(active) == ["count", "detect"]  # one generate per adapter, each batch of one adapter
    for task, ids in (("detect", ["d1", "d2"]), ("count", ["c1"])):
        alone = predict(single(tiny_dir, run, task), [r for r in records if r["id"] in ids], spec=spec,
                        progress=False, max_new_tokens=limits)
        assert alone == {i: got[i] for i in ids}
    active.clear()
    assert set(predict(model, records[3:], spec=spec, progress=False, task="count", max_new_tokens=limits)) == {"v1"}
    assert active == ["count"]  # eval --task: the task of records that name none

    item = load_chip(imported["png"], spec, anchors=imported["npz"])
    jobs = [Job(item, q, TOKENS, None) for q in (COUNT_Q, DETECT_Q, COUNT_Q)]
    batcher = Batcher(model, wait_s=0)
    try:
        active.clear()
        results = batcher.generate(jobs)
        assert active == ["count", "detect"] and batcher.generate_calls == 2
    finally:
        batcher.close()
    for task, ids in (("count", [0, 2]), ("detect", [1])):
        ref = Batcher(single(tiny_dir, run, task), wait_s=0)
        try:
            assert ref.generate([jobs[i] for i in ids]) == [results[i] for i in ids]
        finally:
            ref.close()

    config = ServeConfig(model_name="official", no_auth=True, chip=spec, max_tokens=16, default_max_tokens=4)
    app = make_app(model, config)
    try:
        with BackgroundServer(app) as port:
            url = data_url(noise_image(6))
            status, body, _ = request(port, body=chat_body(url, VAGUE_Q, model="official", no_aef=True), token=None)
            assert status == 400 and '"task"' in body["error"]["message"]
            status, body, _ = request(port, body=chat_body(url, COUNT_Q, model="official", no_aef=True,
                                                           task="nonsense"), token=None)
            assert status == 400 and "task must be one of" in body["error"]["message"]
            status, body, _ = request(port, body=chat_body(url, VAGUE_Q, model="official", no_aef=True,
                                                           task="count"), token=None)
            assert status == 200, body
    finally:
        app.state.batcher.close()


def test_a_release_whose_folders_differ_or_that_lacks_its_base_is_refused(release, tiny_dir, tmp_path):
    src = tmp_path / "RELEASE"
    shutil.copytree(release[0], src)
    with pytest.raises(CheckpointError, match=re.escape("--base")):
        import_official(src, tmp_path / "r0")
    film = src / "stage2" / "counting" / "vec64_film.pt"
    state = torch.load(film, weights_only=True)
    state["film_mlp"]["2.bias"] = state["film_mlp"]["2.bias"] + 1e-3  # one tensor of one folder retrained
    torch.save(state, film)
    with pytest.raises(CheckpointError) as err:
        import_official(src, tmp_path / "r1", base=tiny_dir)
    message = str(err.value)
    assert str(src / "stage1" / "vec64_film.pt") in message and str(film) in message and "2.bias" in message
    assert "\n" not in message
    torch.save(torch.load(src / "stage1" / "vec64_film.pt", weights_only=True), film)
    (src / "stage2" / "detection" / "tlm_config.json").write_text(json.dumps(
        {"format": "tlm_original_train_patch_resize_v1", "sigma": 3.0, "hidden_mult": 4, "image_size": 504,
         "vec_dim": 64}))
    with pytest.raises(CheckpointError, match="sigma 2.0 vs 3.0"):
        import_official(src, tmp_path / "r2", base=tiny_dir)
    (src / "stage2" / "detection" / "tlm_config.json").unlink()
    (src / "stage2" / "segmentation").mkdir()
    with pytest.raises(CheckpointError, match="segmentation: not a task folder"):
        import_official(src, tmp_path / "r3", base=tiny_dir)
    (src / "stage2" / "segmentation").rmdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        import_official(src, tmp_path / "r4", base=tmp_path)
    assert not any((tmp_path / f"r{i}").exists() for i in range(5))
    run = import_official(src, tmp_path / "r5", base=tiny_dir)  # put right, it imports
    with pytest.raises(ValueError, match="one adapter per task"):  # an export would merge whichever was active
        export_run(run, tmp_path / "exported")


def test_a_single_folder_still_imports_and_with_base_loads_as_a_run(release, imported, tiny_dir, tmp_path):
    folder = release[0] / "stage2" / "detection"
    plain = import_official(folder, tmp_path / "plain", sigma=2.0)  # as before: TLM + adapter/, no config.yaml
    assert (plain / "adapter" / "adapter_model.safetensors").read_bytes() == \
        (folder / "adapter_model.safetensors").read_bytes()
    assert not (plain / "config.yaml").exists() and not (plain / "adapters").exists()
    run = import_official(folder, tmp_path / "det", sigma=2.0, base=tiny_dir)
    model, spec = loader.load_model(run)
    assert spec == ChipSpec(frame=504, eight_bit="rgb")
    item = load_chip(imported["png"], spec, anchors=imported["npz"])
    routed, _ = loader.load_model(imported["run"])
    assert answer(model, [item], [DETECT_Q], max_new_tokens=TOKENS) == \
        answer(routed, [item], [DETECT_Q], max_new_tokens=TOKENS)
