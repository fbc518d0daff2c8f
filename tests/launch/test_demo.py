"""`make demo`'s chain, shortened: a small world, every stage a few steps under the deepspeed launcher, the
report and the export; a second run reuses every phase."""

import json
import os
import subprocess
import sys

import pytest

from data_prep.sources import PrepConfig
from launch.demo import SYNTHETIC, DemoConfig, check_prepared, scorer_tower, stage_of
from pipeline.config import CONFIG_ROOT, ConfigError, load_config, save_config
from pipeline.model.qwenvl import QwenVL
from pipeline.schema import StageConfig
from tests.conftest import REPO

SHORT = (
    "{train: {max_steps: 2, global_batch_size: 4, micro_batch_size: 4}, data: {image_size: 56, num_workers: 0},"
    " model: {adapter: {num_queries: 16}}, logging: {wandb: disabled}, eval: {max_new_tokens: 12}}"
)
KEYS = {"cider", "vqa_acc", "grounded_acc", "grounding_acc", "ocr_acc", "chat_acc"}
PHASES = list(load_config(DemoConfig, CONFIG_ROOT / "demo.yaml").stages)


def demo(tmp_path, *extra: str) -> subprocess.CompletedProcess:
    """The demo's chain, every phase shortened; stage2-ref reads a set of one-object images the demo makes."""
    one = tmp_path / "one"
    overrides = [f"output_dir={tmp_path / 'runs'}", f"data={tmp_path / 'world'}", f"heldout={tmp_path / 'heldout'}",
                 "prep={synthetic: {num_samples: 120}, samples_per_shard: 60, filters: {clip: {enabled: false}}}",
                 f"datasets={{{one}: {{synthetic: {{num_samples: 40, max_objects: 1}}}}}}",
                 "heldout_samples=40", "ranks=1", "vision_init=none", "eval_limit=3", "final_eval_limit=4",
                 "report_images=2",
                 *(f"stages.{s}={SHORT}" for s in PHASES),
                 f"stages.stage2-ref.data={{shards: '{one}/shards/*.tar', tasks: {{ref: 1}}}}", *extra]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    done = subprocess.run([sys.executable, "-m", "launch.demo", *overrides], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=1500)  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return done


def test_the_demo_config_names_real_stage_keys_and_runs_its_phases_in_order():
    cfg = load_config(DemoConfig, CONFIG_ROOT / "demo.yaml")
    assert [stage_of(p) for p in cfg.stages] == ["stage0", "stage1", "stage2", "stage2", "stage3"]
    for phase in cfg.stages:
        loaded = load_config(StageConfig, CONFIG_ROOT / f"{stage_of(phase)}.yaml", cfg.stage_overrides(phase))
        assert loaded.run.stage == phase  # a further phase of a stage writes its own folder
    assert loaded.data.tasks == {"chatml": 2, "caption": 1, "vqa": 1, "ref": 1}  # a free-form mapping, whole
    # the curriculum's first phase reads one of the demo's further sets, which the prep's keys make
    ref = load_config(StageConfig, CONFIG_ROOT / "stage2.yaml", cfg.stage_overrides("stage2-ref"))
    folder = ref.data.shards.split("/shards/")[0]
    assert ref.data.tasks["ref"] > sum(ref.data.tasks.values()) / 2
    assert "synthetic.max_objects=1" in cfg.prep_overrides(folder)
    for bad in ("stages={stage9: {}}", "stages={stage2-Ref: {}}", "stages={stage2: {}, stage1-more: {}}"):
        with pytest.raises(ConfigError, match="key 'stages'"):
            load_config(DemoConfig, CONFIG_ROOT / "demo.yaml", [bad])
    with pytest.raises(ConfigError, match="key 'final_eval_limit': must be > 0"):
        load_config(DemoConfig, CONFIG_ROOT / "demo.yaml", ["final_eval_limit=0"])
    typo = load_config(DemoConfig, CONFIG_ROOT / "demo.yaml", ["datasets={x: {synthetic: {max_object: 1}}}"])
    with pytest.raises(ConfigError, match=r"key 'datasets.x': key 'synthetic.max_object'"):
        typo.prep_overrides("x")


def test_the_demo_takes_stage_keys_as_the_command_line_does_and_checks_them_first():
    cfg = load_config(DemoConfig, CONFIG_ROOT / "demo.yaml", ["stages.stage2.train.max_steps=7"])
    assert "train.max_steps=7" in cfg.stage_overrides("stage2")
    assert "train.optimizer.lr=0.0005" in cfg.stage_overrides("stage2")  # the file's other keys are kept
    typo = load_config(DemoConfig, CONFIG_ROOT / "demo.yaml", ["stages.stage1.train.max_step=7"])
    with pytest.raises(
        ConfigError, match=r"key 'stages.stage1': key 'train.max_step': not a key of TrainConfig"
    ):
        typo.stage_overrides("stage1")
    bad = load_config(DemoConfig, CONFIG_ROOT / "demo.yaml", ["stages.stage1.train.max_steps=0"])
    with pytest.raises(ConfigError, match=r"stages.stage1.*train.max_steps.*> 0"):
        bad.stage_overrides("stage1")


@pytest.mark.slow
def test_the_chain_writes_every_output_and_a_second_run_reuses_it(tmp_path, tokenizer_dir):
    first = demo(tmp_path)
    run = tmp_path / "runs" / "demo"
    for stage in PHASES:
        assert (run / stage / "final" / "model.safetensors").is_file(), stage
        assert KEYS <= json.loads((run / stage / "final" / "eval.json").read_text()).keys(), stage
    result = json.loads((run / "eval.json").read_text())
    assert KEYS <= result.keys() and KEYS <= result["blind"].keys()
    # the final model is scored on more items than the stages before it
    assert result["samples"]["cider"] == 4
    assert json.loads((run / "stage2" / "final" / "eval.json").read_text())["samples"]["cider"] == 3
    assert list(result["stages"]) == PHASES
    assert result["checkpoint"].endswith("stage3/final")
    for plot in ("losses.png", "eval.png", "heldout_grid.png"):
        assert (run / "plots" / plot).stat().st_size > 5000, plot
    report = (run / "report.md").read_text()
    assert "| stage3 |" in report and "plots/heldout_grid.png" in report
    phases = json.loads((run / "phases.json").read_text())
    assert list(phases) == ["prep", f"prep {tmp_path / 'one'}", "heldout", *PHASES, "report", "export"]
    assert "grounding acc" in (run / "hf" / "README.md").read_text()
    model, _, cfg = QwenVL.from_pretrained(run / "hf")
    assert cfg.run.stage == "stage3" and model.image_size == (56, 56)
    # each phase started from the export of the one before (stage2-ref from stage1's, stage2 from stage2-ref's)
    for before, stage in zip(PHASES, PHASES[1:], strict=False):
        cfg_text = (run / stage / "config.yaml").read_text()
        assert f"{before}/final" in cfg_text, stage
    ref = (run / "stage2-ref" / "config.yaml").read_text()
    assert "stage: stage2-ref" in ref and f"{tmp_path / 'one'}/shards/*.tar" in ref
    last = json.loads((run / "stage2-ref" / "metrics.jsonl").read_text().splitlines()[-1])
    assert [k for k in last if k.startswith("mix/") and "/source/" not in k] == ["mix/ref"]
    assert "held-out, final model" in first.stdout

    second = demo(tmp_path)
    assert second.stdout.count("done before, reused") == 3 + len(PHASES), second.stdout
    assert json.loads((run / "phases.json").read_text())["stage2"]["reused"] is True


def test_the_scorer_becomes_the_tower_only_if_its_architecture_is_the_stages(tmp_path, capsys):
    scorer = tmp_path / "scorer"
    scorer.mkdir()
    (scorer / "scorer.json").write_text(json.dumps({"arch": "tiny-ViT-14", "weights": "model.safetensors",
                                                    "image_size": 112}))  # fmt: skip
    (tmp_path / "summary.json").write_text(json.dumps({"clip": {"scorer": str(scorer)}}))
    cfg = load_config(DemoConfig, CONFIG_ROOT / "demo.yaml", [f"data={tmp_path}"])
    assert scorer_tower(cfg, "stage0") == (scorer / "model.safetensors", ["model.vision.stem=patch"])
    assert "interpolated" not in capsys.readouterr().out  # stage 0 trains at the scorer's 112 px
    wider = load_config(
        DemoConfig, CONFIG_ROOT / "demo.yaml", [f"data={tmp_path}", "stages.stage0.data.image_size=224"]
    )
    scorer_tower(wider, "stage0")
    assert "224 px, the scorer at 112" in capsys.readouterr().out
    other = load_config(
        DemoConfig,
        CONFIG_ROOT / "demo.yaml",
        [f"data={tmp_path}", "stages.stage0.model.vision.arch=ViT-B-32"],
    )
    with pytest.raises(
        ConfigError, match="scorer .* is a tiny-ViT-14, but stage0's model.vision.arch is ViT-B-32"
    ):
        scorer_tower(other, "stage0")
    # a conv-stem scorer: every stage builds its stem
    (scorer / "scorer.json").write_text(json.dumps({"arch": "tiny-ViT-14", "weights": "model.safetensors",
                                                    "image_size": 112, "stem": "conv", "stem_channels": [16, 32],
                                                    "stem_grid_layers": 2}))  # fmt: skip
    assert scorer_tower(cfg, "stage0")[1] == ["model.vision.stem=conv", "model.vision.stem_channels=[16,32]",
                                              "model.vision.stem_grid_layers=2"]  # fmt: skip


def test_a_prepared_folder_made_with_other_settings_is_not_reused(tmp_path):
    folder = tmp_path / "world"
    folder.mkdir()
    (folder / "summary.json").write_text("{}")
    save_config(load_config(PrepConfig, SYNTHETIC, [f"output_dir={folder}", "filters.clip.workers=3"]),
                folder / "config.yaml")  # fmt: skip
    check_prepared(str(folder), ["filters.clip.workers=1"], "data")  # how it ran does not matter
    with pytest.raises(ConfigError, match=r"key 'data': .* filters.clip.stem='patch' \(the demo's: 'conv'\)"):
        check_prepared(str(folder), ["filters.clip.stem=conv"], "data")
    with pytest.raises(ConfigError, match=r"synthetic.max_objects=4 \(the demo's: 1\)"):
        check_prepared(str(folder), ["synthetic.max_objects=1"], "datasets.x")
    check_prepared(str(tmp_path / "absent"), ["filters.clip.stem=conv"], "data")  # nothing there yet
