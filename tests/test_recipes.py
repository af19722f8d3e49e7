"""The shipped recipes and launch configs: every one loads, says what it should, and broken ones fail in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fusar_gpt.config import RecipeError, expand, load_recipe
from fusar_gpt.train import Batches, resolve_paths

CONFIGS = Path(__file__).parents[1] / "configs"
ACCELERATE = CONFIGS / "accelerate"
RECIPES = sorted(p.relative_to(CONFIGS).as_posix() for p in CONFIGS.rglob("*.yaml") if ACCELERATE not in p.parents)
FOUR = ["count", "locate", "classify", "detect"]

# What each recipe must say: (stage, what trains, fusion, tasks). Every recipe file must be listed here.
EXPECTED = {
    "tiny-cpu/stage0.yaml": (2, "backbone", "none", FOUR),
    "tiny-cpu/stage1.yaml": (1, "tlm+lora", "tlm", ["caption"]),
    "tiny-cpu/stage2.yaml": (2, "lora", "tlm", FOUR),
    "qwen2.5-vl-7b/stage1.yaml": (1, "tlm+lora", "tlm", ["caption"]),
    "qwen2.5-vl-7b/stage2.yaml": (2, "lora", "tlm", FOUR),
    "ablations/no-aef/stage1.yaml": (1, "tlm+lora", "none", ["caption"]),
    "ablations/no-aef/stage2.yaml": (2, "lora", "none", FOUR),
    "ablations/sum-fusion/stage1.yaml": (1, "tlm+lora", "sum", ["caption"]),
    "ablations/sum-fusion/stage2.yaml": (2, "lora", "sum", FOUR),
    "ablations/concat-fusion/stage1.yaml": (1, "tlm+lora", "concat", ["caption"]),
    "ablations/concat-fusion/stage2.yaml": (2, "lora", "concat", FOUR),
    "ablations/one-stage.yaml": (2, "tlm+lora", "tlm", ["caption", *FOUR]),
    "ablations/stage1-tlm-only/stage1.yaml": (1, "tlm", "tlm", ["caption"]),
}

# Each ablation = its parent recipe + exactly these keys (flattened, dotted).
ABLATION_CHANGES = {
    "ablations/no-aef/stage1.yaml": ("tiny-cpu/stage1.yaml", {"name", "tlm.fusion"}),
    "ablations/no-aef/stage2.yaml": ("tiny-cpu/stage2.yaml", {"name", "tlm.fusion"}),
    "ablations/sum-fusion/stage1.yaml": ("tiny-cpu/stage1.yaml", {"name", "tlm.fusion"}),
    "ablations/sum-fusion/stage2.yaml": ("tiny-cpu/stage2.yaml", {"name", "tlm.fusion"}),
    "ablations/concat-fusion/stage1.yaml": ("tiny-cpu/stage1.yaml", {"name", "tlm.fusion"}),
    "ablations/concat-fusion/stage2.yaml": ("tiny-cpu/stage2.yaml", {"name", "tlm.fusion"}),
    "ablations/one-stage.yaml": ("tiny-cpu/stage2.yaml", {"name", "trainable", "data.tasks", "train.lr"}),
    "ablations/stage1-tlm-only/stage1.yaml": ("tiny-cpu/stage1.yaml", {"name", "trainable"}),
}


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def test_every_recipe_is_listed():
    assert RECIPES == sorted(EXPECTED), "a recipe was added or removed: list it in EXPECTED"


@pytest.mark.parametrize("rel", RECIPES)
def test_recipe_loads_and_says_what_it_should(rel):
    r = load_recipe(CONFIGS / rel)
    stage, trains, fusion, tasks = EXPECTED[rel]
    assert (r.stage, r.trains, r.tlm.fusion, r.tasks) == (stage, trains, fusion, tasks)
    assert r.init is None  # stage II gets its stage-I run from --init; the one-stage ablation has none
    assert (r.lora.r, r.lora.alpha, r.lora.dropout) == (8, 32, 0.05)  # PAPER.md, both stages
    assert (r.train.warmup_ratio, r.train.schedule, r.train.seed) == (0.05, "cosine", 42)
    assert r.name and r.name != "run"


@pytest.mark.parametrize("rel", sorted(ABLATION_CHANGES))
def test_ablation_changes_only_what_it_tests(rel):
    parent, changed = ABLATION_CHANGES[rel]
    a = _flat(load_recipe(CONFIGS / rel).to_dict())
    p = _flat(load_recipe(CONFIGS / parent).to_dict())
    assert {k for k in a if a[k] != p[k]} == changed


def test_one_stage_ablation_trains_everything_from_scratch_at_stage_one_lr():
    r = load_recipe(CONFIGS / "ablations/one-stage.yaml")
    assert r.init is None and r.trains == "tlm+lora"
    assert r.train.lr == load_recipe(CONFIGS / "tiny-cpu/stage1.yaml").train.lr


@pytest.mark.parametrize("stage", [1, 2])
def test_7b_recipes_carry_the_paper_settings(stage, monkeypatch):
    monkeypatch.setenv("QWEN25_VL_7B", "/models/Qwen2.5-VL-7B-Instruct")
    r = load_recipe(CONFIGS / f"qwen2.5-vl-7b/stage{stage}.yaml")
    t = r.train
    assert (t.lr, t.epochs) == ((1e-4, 30) if stage == 1 else (1e-5, 5))
    assert t.batch_size * t.grad_accum == 16
    assert (r.model.dtype, t.mixed_precision) == ("bfloat16", "bf16")
    assert (r.data.max_length, t.seed, t.warmup_ratio, t.schedule) == (2048, 42, 0.05, "cosine")
    assert r.model.gradient_checkpointing is True and r.model.preset is None
    assert t.save_every > 0 and t.eval_every > 0
    assert r.model.base == "${QWEN25_VL_7B}"  # load_recipe keeps it; expand() reads the environment
    assert expand(r.model.base, "model.base") == "/models/Qwen2.5-VL-7B-Instruct"
    for world in (1, 2, 4):  # the global batch splits over 1, 2 or 4 GPUs
        assert len(Batches(64, t.batch_size, t.seed, 0, world).indices(0)) == t.batch_size // world


def test_7b_stage2_resolves_against_its_stage1_run(tmp_path, monkeypatch):
    monkeypatch.setenv("QWEN25_VL_7B", str(tmp_path / "qwen"))
    s1 = resolve_paths(load_recipe(CONFIGS / "qwen2.5-vl-7b/stage1.yaml"), out=str(tmp_path / "s1"),
                       data=str(tmp_path / "ds" / "manifest.jsonl"))
    assert s1.model.base == str(tmp_path / "qwen")
    (tmp_path / "s1").mkdir()
    (tmp_path / "s1" / "config.yaml").write_text(yaml.safe_dump(s1.to_dict()))
    s2 = resolve_paths(load_recipe(CONFIGS / "qwen2.5-vl-7b/stage2.yaml"), out=str(tmp_path / "s2"),
                       init=str(tmp_path / "s1"))
    assert s2.model.base == s1.model.base and s2.data.manifest == s1.data.manifest
    assert s2.init == str(tmp_path / "s1")


def test_7b_recipe_without_the_weights_variable_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.delenv("QWEN25_VL_7B", raising=False)
    with pytest.raises(RecipeError) as err:
        resolve_paths(load_recipe(CONFIGS / "qwen2.5-vl-7b/stage1.yaml"), out=str(tmp_path / "r"),
                      data=str(tmp_path / "m.jsonl"))
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("model.base:") and "QWEN25_VL_7B" in msg


def test_expand_names_key_and_variable(monkeypatch):
    monkeypatch.delenv("NOPE", raising=False)
    with pytest.raises(RecipeError) as err:
        expand("${NOPE}", "model.base")
    msg = str(err.value)
    assert "\n" not in msg and "model.base" in msg and "NOPE" in msg
    monkeypatch.setenv("NOPE", "/x")
    assert expand("${NOPE}/y", "model.base") == "/x/y"


# ------------------------------------------------------------------------------------------ broken recipes
GOOD = "name: t\nmodel: {preset: tiny}\n"
# case: (recipe text, the key the message must start with)
BROKEN = {
    "unknown key": (GOOD + "train: {lrr: 0.1}\n", "train.lrr"),
    "wrong type": (GOOD + 'train: {batch_size: "eight"}\n', "train.batch_size"),
    "not an integer": (GOOD + "lora: {r: 8.5}\n", "lora.r"),
    "bool for a number": (GOOD + "train: {lr: true}\n", "train.lr"),
    "bool field given a string": (GOOD.replace("tiny}", "tiny, gradient_checkpointing: 'yes'}"),
                                  "model.gradient_checkpointing"),
    "bad choice": (GOOD + "tlm: {fusion: film}\n", "tlm.fusion"),
    "bad trainable": (GOOD + "trainable: mlp\n", "trainable"),
    "bad dtype": (GOOD.replace("tiny}", "tiny, dtype: half}"), "model.dtype"),
    "bad missing policy": (GOOD + "tlm: {missing: zero}\n", "tlm.missing"),
    "bad schedule": (GOOD + "train: {schedule: step}\n", "train.schedule"),
    "bad loss_per": (GOOD + "train: {loss_per: image}\n", "train.loss_per"),
    "bad mixed precision": (GOOD + "train: {mixed_precision: fp16}\n", "train.mixed_precision"),
    "removed key num_workers": (GOOD + "data: {num_workers: 0}\n", "data.num_workers"),  # nothing ever read it
    "bad task": (GOOD + "data: {tasks: [caption, vqa]}\n", "data.tasks"),
    "bad stage": (GOOD + "stage: 3\n", "stage"),
    "bad preset": ("model: {preset: huge}\n", "model.preset"),
    "missing model": ("name: t\ntrain: {lr: 0.1}\n", "model"),
    "warmup ratio 1.5": (GOOD + "train: {warmup_ratio: 1.5}\n", "train.warmup_ratio"),
    "zero lr": (GOOD + "train: {lr: 0}\n", "train.lr"),
    "zero batch": (GOOD + "train: {batch_size: 0}\n", "train.batch_size"),
    "empty non-optional": (GOOD + "train: {lr: null}\n", "train.lr"),
    "tlm-only without a tlm": (GOOD + "trainable: tlm\ntlm: {fusion: none}\n", "trainable"),
    "unknown top-level key": (GOOD + "epochs: 3\n", "epochs"),
    "section not a mapping": (GOOD + "train: 5\n", "train"),
    # accepted before, and trained wrong or crashed later (issue 17's probe)
    "negative grad norm": (GOOD + "train: {max_grad_norm: -1}\n", "train.max_grad_norm"),
    "nan grad norm": (GOOD + "train: {max_grad_norm: .nan}\n", "train.max_grad_norm"),
    "infinite lr": (GOOD + "train: {lr: .inf}\n", "train.lr"),
    "infinite epochs": (GOOD + "train: {epochs: .inf}\n", "train.epochs"),
    "negative hidden mult": (GOOD + "tlm: {hidden_mult: -1}\n", "tlm.hidden_mult"),
    "negative alpha": (GOOD + "lora: {alpha: -32}\n", "lora.alpha"),
    "infinite sigma": (GOOD + "tlm: {sigma: .inf}\n", "tlm.sigma"),
    "negative save_every": (GOOD + "train: {save_every: -1}\n", "train.save_every"),
    "negative eval_every": (GOOD + "train: {eval_every: -5}\n", "train.eval_every"),
    "negative seed": (GOOD + "train: {seed: -1}\n", "train.seed"),
    "huge lora rank": (GOOD + "lora: {r: 100000000}\n", "lora.r"),
    "zero max_length": (GOOD + "data: {max_length: 0}\n", "data.max_length"),
    "negative weight decay": (GOOD + "train: {weight_decay: -1}\n", "train.weight_decay"),
    "nan dropout": (GOOD + "lora: {dropout: .nan}\n", "lora.dropout"),
    "inherit a list": ("inherit: [a.yaml, b.yaml]\n" + GOOD, "inherit"),
    "inherit an int": ("inherit: 3\n" + GOOD, "inherit"),
}
# case: (recipe text, what the message must say besides naming the file)
UNREADABLE = {
    "invalid yaml": (GOOD + "train: {lr: [0.1\n", "is not valid YAML"),
    "not a mapping": ("- name: t\n- model: {}\n", "expected a mapping"),
    "alias bomb": ("a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                   "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n",
                   "aliases (*name) are not allowed"),
}


def _one_line(err) -> str:
    msg = str(err.value)
    assert msg and "\n" not in msg, f"not one line: {msg!r}"
    return msg


@pytest.mark.parametrize("text,key", [BROKEN[k] for k in sorted(BROKEN)], ids=sorted(BROKEN))
def test_broken_recipe_fails_in_one_line_naming_the_key(text, key, tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert _one_line(err).startswith(f"{key}:")


@pytest.mark.parametrize("case", sorted(UNREADABLE))
def test_unreadable_recipe_fails_in_one_line_naming_the_file(case, tmp_path):
    text, says = UNREADABLE[case]
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    msg = _one_line(err)
    assert str(path) in msg and says in msg


def test_each_vocabulary_is_spelled_once():
    """recipe_rules.py defines every recipe vocabulary; the modules that act on one use its tuple."""
    from fusar_gpt.config import ModelConfig, Recipe, TLMConfig
    from fusar_gpt.losses import LOSS_POWER
    from fusar_gpt.model import backbone, tlm
    from fusar_gpt.recipe_rules import FUSIONS, LOSS_PER, MISSING, PRESET_NAMES

    assert tlm.FUSIONS is FUSIONS and tlm.MISSING is MISSING
    assert set(LOSS_POWER) | {"token"} == set(LOSS_PER)  # token: the plain mean, no weighting exponent
    assert set(PRESET_NAMES) == {k for k, v in backbone.PRESETS.items() if not v.shape_only}
    with pytest.raises(RecipeError, match="^tlm.fusion: 'film' is not one of tlm, sum, concat, none$"):
        Recipe(model=ModelConfig(preset="tiny"), tlm=TLMConfig(fusion="film"))  # built in Python: checked alike


def test_good_base_of_the_broken_cases_loads(tmp_path):
    (tmp_path / "r.yaml").write_text(GOOD)
    assert load_recipe(tmp_path / "r.yaml").model.preset == "tiny"


@pytest.mark.parametrize("chain", [("a",), ("a", "b"), ("a", "b", "c")])
def test_inherit_cycle_fails_in_one_line(chain, tmp_path):
    for name, parent in zip(chain, chain[1:] + chain[:1]):
        (tmp_path / f"{name}.yaml").write_text(f"inherit: {parent}.yaml\n{GOOD}")
    with pytest.raises(RecipeError) as err:
        load_recipe(tmp_path / "a.yaml")
    assert _one_line(err).startswith("inherit:")


def test_missing_parent_and_missing_recipe_fail_in_one_line(tmp_path):
    (tmp_path / "a.yaml").write_text("inherit: nowhere.yaml\n" + GOOD)
    for path in (tmp_path / "a.yaml", tmp_path / "absent.yaml"):
        with pytest.raises(RecipeError) as err:
            load_recipe(path)
        assert "does not exist" in _one_line(err)


def test_inherit_is_relative_to_the_file_and_merges_sections(tmp_path):
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "p.yaml").write_text(GOOD + "train: {lr: 0.5, epochs: 2}\n")
    (tmp_path / "child.yaml").write_text("inherit: base/p.yaml\ntrain: {lr: 0.25}\n")
    r = load_recipe(tmp_path / "child.yaml")
    assert (r.train.lr, r.train.epochs, r.model.preset) == (0.25, 2, "tiny")


OVERRIDES = {
    "zero lr": ({"train.lr": 0}, "train.lr"),
    "unknown key": ({"train.lrr": 1}, "train.lrr"),
    "wrong type": ({"train.batch_size": "eight"}, "train.batch_size"),
    "bad choice": ({"tlm.fusion": "film"}, "tlm.fusion"),
    "into a scalar": ({"stage.x": 1}, "stage.x"),
    "warmup": ({"train.warmup_ratio": 1.5}, "train.warmup_ratio"),
}


@pytest.mark.parametrize("case", sorted(OVERRIDES))
def test_bad_override_fails_in_one_line_naming_the_key(case):
    overrides, key = OVERRIDES[case]
    with pytest.raises(RecipeError) as err:
        load_recipe(CONFIGS / "tiny-cpu/stage1.yaml", overrides)
    assert _one_line(err).startswith(f"{key}:")


def test_good_overrides_apply():
    r = load_recipe(CONFIGS / "tiny-cpu/stage1.yaml", {"train.lr": "5e-5", "train.batch_size": 4, "tlm.fusion": "sum"})
    assert (r.train.lr, r.train.batch_size, r.tlm.fusion) == (5e-5, 4, "sum")


# ------------------------------------------------------------------------------------------ accelerate configs
LAUNCH = {"ddp.yaml": "MULTI_GPU", "fsdp.yaml": "FSDP", "deepspeed-zero2.yaml": "DEEPSPEED"}


def test_accelerate_configs_are_the_three_expected():
    assert sorted(p.name for p in ACCELERATE.glob("*.yaml")) == sorted(LAUNCH)


@pytest.mark.parametrize("name", sorted(LAUNCH))
def test_accelerate_config_loads_with_accelerates_own_class(name):
    from accelerate.commands.config.config_args import ClusterConfig
    from accelerate.utils import ComputeEnvironment, DistributedType

    raw = yaml.safe_load((ACCELERATE / name).read_text())
    for key in ("compute_environment", "distributed_type", "num_processes", "num_machines", "machine_rank",
                "mixed_precision"):
        assert key in raw, key
    cfg = ClusterConfig.from_yaml_file(str(ACCELERATE / name))  # refuses unknown keys
    assert cfg.compute_environment == ComputeEnvironment.LOCAL_MACHINE
    assert cfg.distributed_type == DistributedType[LAUNCH[name]]
    assert (cfg.num_processes, cfg.num_machines, cfg.mixed_precision) == (4, 1, "bf16")
    for stage in (1, 2):  # the 7B recipes' global batch splits over this many processes
        r = load_recipe(CONFIGS / f"qwen2.5-vl-7b/stage{stage}.yaml")
        assert r.train.batch_size % cfg.num_processes == 0
    text = (ACCELERATE / name).read_text()
    assert f"accelerate launch --config_file configs/accelerate/{name}" in text
    for flag in ("--num_machines", "--machine_rank", "--main_process_ip", "--main_process_port"):
        assert flag in text, flag


def test_fsdp_config_wraps_qwen_layers_with_original_params():
    from accelerate.commands.config.config_args import ClusterConfig
    from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl

    f = ClusterConfig.from_yaml_file(str(ACCELERATE / "fsdp.yaml")).fsdp_config
    assert f["fsdp_sharding_strategy"] == "FULL_SHARD" and f["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    classes = f["fsdp_transformer_layer_cls_to_wrap"].split(",")
    assert classes == ["Qwen2_5_VLDecoderLayer", "Qwen2_5_VLVisionBlock"]
    for cls in classes:  # the names must exist in the transformers version we run
        assert isinstance(getattr(modeling_qwen2_5_vl, cls), type)
    assert f["fsdp_use_orig_params"] is True


def test_deepspeed_config_is_zero2_and_leaves_accumulation_and_clipping_to_the_recipe():
    from accelerate.commands.config.config_args import ClusterConfig

    d = ClusterConfig.from_yaml_file(str(ACCELERATE / "deepspeed-zero2.yaml")).deepspeed_config
    assert d["zero_stage"] == 2
    assert (d["offload_optimizer_device"], d["offload_param_device"]) == ("none", "none")
    assert "deepspeed_config_file" not in d
    assert "gradient_accumulation_steps" not in d and "gradient_clipping" not in d
    assert "pip install deepspeed" in (ACCELERATE / "deepspeed-zero2.yaml").read_text()


def _launch_args(name: str):
    """What ``accelerate launch --config_file NAME -m fusar_gpt train R`` resolves, without launching."""
    launch = pytest.importorskip("accelerate.commands.launch")
    if not hasattr(launch, "_validate_launch_command"):
        pytest.skip("this accelerate version resolves launch arguments elsewhere")
    parser = launch.launch_command_parser()
    args = parser.parse_args(["--config_file", str(ACCELERATE / name), "-m", "fusar_gpt", "train", "r.yaml"])
    return launch._validate_launch_command(args)


def test_accelerate_launcher_resolves_ddp_and_fsdp_configs():
    from accelerate.utils.launch import prepare_multi_gpu_env

    args, _, _ = _launch_args("ddp.yaml")
    assert args.multi_gpu and not args.use_fsdp and not args.use_deepspeed and args.num_processes == 4
    args, _, _ = _launch_args("fsdp.yaml")
    assert args.use_fsdp and args.mixed_precision == "bf16"
    env = prepare_multi_gpu_env(args)
    assert env["ACCELERATE_USE_FSDP"] == "true" and env["FSDP_SHARDING_STRATEGY"] == "FULL_SHARD"
    assert env["FSDP_TRANSFORMER_CLS_TO_WRAP"] == "Qwen2_5_VLDecoderLayer,Qwen2_5_VLVisionBlock"
    assert (env["FSDP_USE_ORIG_PARAMS"], env["FSDP_SYNC_MODULE_STATES"]) == ("true", "true")


def test_accelerate_builds_a_zero2_deepspeed_config_without_a_json_file(monkeypatch):
    from accelerate.utils import DeepSpeedPlugin
    from accelerate.utils.launch import prepare_deepspeed_cmd_env

    args, defaults, _ = _launch_args("deepspeed-zero2.yaml")
    assert args.use_deepspeed and args.zero_stage == 2
    args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)  # as launch_command does
    _, env = prepare_deepspeed_cmd_env(args)
    for k, v in env.items():
        if k.startswith("ACCELERATE_"):
            monkeypatch.setenv(k, v)
    ds = DeepSpeedPlugin().deepspeed_config  # the dict accelerate hands to deepspeed.initialize
    assert ds["zero_optimization"]["stage"] == 2
    assert ds["zero_optimization"]["offload_optimizer"]["device"] == "none"
    assert ds["gradient_accumulation_steps"] == "auto" and ds["gradient_clipping"] == "auto"
