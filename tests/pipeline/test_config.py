import json
from pathlib import Path

import pytest

from pipeline.config import CONFIG_ROOT, ConfigError, load_config, save_config, to_overrides
from pipeline.schema import ModelConfig, StageConfig

STAGES = sorted(CONFIG_ROOT.glob("stage*.yaml"))
MODELS = sorted(p.stem for p in (CONFIG_ROOT / "model").glob("*.yaml"))


@pytest.mark.parametrize("stage", STAGES, ids=lambda p: p.stem)
@pytest.mark.parametrize("model", MODELS)
def test_every_shipped_config_loads(stage, model):
    cfg = load_config(StageConfig, stage, [f"model={model}"])
    assert cfg.model.name == model and cfg.run.stage == stage.stem
    assert (CONFIG_ROOT.parent / cfg.deepspeed.config).is_file()


def test_stage_configs_follow_the_recipe():
    s1, s2, s3 = (
        load_config(StageConfig, CONFIG_ROOT / f"stage{i}.yaml", ["scale=paper"]) for i in (1, 2, 3)
    )
    assert s1.train.trainable == ["vision", "adapter"]
    assert s2.train.trainable == ["vision", "adapter", "llm"]
    assert s3.train.trainable == ["adapter", "llm"]
    assert (s1.data.image_size, s2.data.image_size, s3.data.image_size) == (224, 448, 448)
    lrs = [
        (s.train.optimizer.lr, s.train.optimizer.min_lr, s.train.optimizer.warmup_steps) for s in (s1, s2, s3)
    ]
    assert lrs == [(2e-4, 1e-6, 500), (5e-5, 1e-5, 400), (1e-5, 1e-6, 3000)]
    assert [s.train.global_batch_size for s in (s1, s2, s3)] == [30720, 4096, 128]
    assert [s.train.max_steps for s in (s1, s2, s3)] == [50000, 19000, 8000]
    for s in (s1, s2, s3):
        opt = s.train.optimizer
        assert (opt.betas, opt.eps, opt.weight_decay, opt.grad_clip, opt.schedule) == (
            [0.9, 0.98],
            1e-6,
            0.05,
            1.0,
            "cosine",
        )
    assert [s.train.optimizer.vit_layer_decay for s in (s1, s2, s3)] == [0.95, 1.0, 1.0]
    assert set(s2.data.tasks) == {"caption", "vqa", "grounded_caption", "ref", "ocr", "text"}
    assert s3.data.tasks == {"chatml": 1.0}


@pytest.mark.parametrize("name", ["zero2", "zero3"])
def test_deepspeed_configs(name):
    ds = json.loads((CONFIG_ROOT / "deepspeed" / f"{name}.json").read_text())
    assert ds["zero_optimization"]["stage"] == int(name[-1])


def test_overrides_and_group_switch():
    cfg = load_config(StageConfig, CONFIG_ROOT / "stage1.yaml",
                      ["model=small", "train.max_steps=50", "data.tasks={caption: 1, vqa: 2}", "run.name=exp"])  # fmt: skip
    assert cfg.model.llm.name_or_path == "Qwen/Qwen2.5-0.5B" and cfg.model.llm.arch == {}
    assert cfg.train.max_steps == 50 and cfg.run.name == "exp"
    assert cfg.data.tasks == {"caption": 1.0, "vqa": 2.0}
    # a group can also be a YAML file path
    cfg = load_config(
        StageConfig, CONFIG_ROOT / "stage1.yaml", [f"model={CONFIG_ROOT / 'model' / 'tiny.yaml'}"]
    )
    assert cfg.model.name == "tiny"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("source", "overrides", "expected"),
    [
        ("train:\n  max_step: 5\n", [], r"cfg\.yaml: key 'train\.max_step'"),
        ("train:\n  max_steps: lots\n", [], r"cfg\.yaml: key 'train\.max_steps'"),
        ("", ["train.optimizer.lr=fast"], r"command line: key 'train\.optimizer\.lr'"),
        ("", ["logging.wandbb=offline"], r"command line: key 'logging\.wandbb'"),
        ("", ["train.trainable=[vision,decoder]"], r"key 'train\.trainable'.*decoder"),
        ("", ["data.tasks={captions: 1}"], r"key 'data\.tasks\.captions'"),
        ("", ["train.global_batch_size=10", "train.micro_batch_size=4"], r"key 'train\.global_batch_size'"),
        ("", ["train.max_steps"], r"not of the form key=value"),
        ("defaults: {model: huge}\n", [], r"config group 'model': no preset 'huge'.*tiny"),
        ("- a list\n", [], r"top level must be a mapping"),
        ("train: [unclosed\n", [], r"invalid YAML"),
    ],
)
def test_errors_name_the_key_and_source(tmp_path, source, overrides, expected):
    with pytest.raises(ConfigError, match=expected):
        load_config(StageConfig, write(tmp_path, source), overrides)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        load_config(StageConfig, tmp_path / "nope.yaml")


def test_saved_config_loads_back_identically(tmp_path):
    cfg = load_config(StageConfig, CONFIG_ROOT / "stage2.yaml", ["train.max_steps=7", "model=qwenvl-paper"])
    path = save_config(cfg, tmp_path / "run" / "config.yaml")
    assert load_config(StageConfig, path) == cfg
    assert not list(path.parent.glob("*.tmp"))


def test_model_presets_load_on_their_own():
    for name in MODELS:
        cfg = load_config(ModelConfig, CONFIG_ROOT / "model" / f"{name}.yaml")
        assert cfg.name == name and cfg.adapter.num_queries > 0


def test_a_mapping_replaces_a_free_form_dict_but_dotted_keys_set_one_entry(tmp_path):
    path = write(tmp_path, "data:\n  tasks: {vqa: 2.0}\n")
    assert load_config(StageConfig, path).data.tasks == {"vqa": 2.0}  # the schema's default caption is gone
    assert load_config(StageConfig, path, ["data.tasks.ocr=1"]).data.tasks == {"vqa": 2.0, "ocr": 1.0}
    assert load_config(StageConfig, path, ["data.tasks={ocr: 1}"]).data.tasks == {"ocr": 1.0}
    tiny = load_config(
        StageConfig, CONFIG_ROOT / "stage1.yaml", ["model.llm.arch.hidden_size=256"]
    ).model.llm.arch
    assert tiny["hidden_size"] == 256 and tiny["model_type"] == "qwen2"


def test_scale_overlays_the_stage_file_and_stages_chain_by_run_name():
    tiny = load_config(StageConfig, CONFIG_ROOT / "stage2.yaml", ["run.name=exp"])
    assert (tiny.train.max_steps, tiny.train.global_batch_size, tiny.train.optimizer.warmup_steps) == (
        40,
        16,
        4,
    )
    assert tiny.train.optimizer.lr == 5e-5 and tiny.data.image_size == 448  # the overlay leaves the rest
    assert tiny.train.init_from == "runs/exp/stage1/final"
    assert tiny.train.accumulation(2) == 2
    assert (
        load_config(StageConfig, CONFIG_ROOT / "stage3.yaml", ["run.output_dir=/x"]).train.init_from
        == "/x/default/stage2/final"
    )
    # the command line still wins over the overlay
    assert load_config(StageConfig, CONFIG_ROOT / "stage1.yaml", ["train.max_steps=7"]).train.max_steps == 7


def test_a_mapping_becomes_command_line_overrides_that_load_back_to_the_same_values():
    tree = {"data": {"tasks": {"vqa": 2, "caption": 5.0e-5}, "image_size": 112, "images": False},
            "train": {"init_from": None, "trainable": ["llm"], "optimizer": {"min_lr": 5.0e-5}}}  # fmt: skip
    overrides = to_overrides(StageConfig, tree)
    assert overrides[0] == "data.tasks={vqa: 2, caption: 5.0e-05}"  # the mapping whole, in its order
    cfg = load_config(StageConfig, CONFIG_ROOT / "stage1.yaml", overrides)
    assert list(cfg.data.tasks.items()) == [("vqa", 2.0), ("caption", 5.0e-5)]
    assert (cfg.data.image_size, cfg.data.images, cfg.train.init_from) == (112, False, None)
    assert cfg.train.trainable == ["llm"] and cfg.train.optimizer.min_lr == 5.0e-5
    with pytest.raises(ConfigError, match="key 'train.optimizer.lrr': not a key of OptimizerConfig"):
        to_overrides(StageConfig, {"train": {"optimizer": {"lrr": 1.0}}})
