"""The stage trainer in this process, one rank (DeepSpeed on its CPU accelerator, ZeRO-2): what a stage
freezes, what it logs from step 1, what it exports, and how it fails. Multi-rank runs: test_distributed.py."""

import json
import re
from pathlib import Path

import pytest
import torch

from pipeline import checkpoint
from pipeline.backends import backend_class
from pipeline.config import CONFIG_ROOT, ConfigError, load_config
from pipeline.metrics import read_metrics
from pipeline.model.qwenvl import QwenVL
from pipeline.schema import StageConfig
from stages.hooks import Hook, default_hooks
from stages.train import NonFiniteLoss, Trainer

pytestmark = pytest.mark.slow
TINY = ["data.image_size=56", "model.adapter.num_queries=16", "train.global_batch_size=4", "train.micro_batch_size=2",
        "data.num_workers=0", "logging.wandb=disabled", "logging.sample_every=0", "train.checkpoint_every=2"]  # fmt: skip


def stage_cfg(stage: str, out: Path, shards: str, *extra: str) -> StageConfig:
    overrides = [f"data.shards={shards}", f"run.output_dir={out}", "train.max_steps=3", *TINY, *extra]
    return load_config(StageConfig, CONFIG_ROOT / f"{stage}.yaml", overrides)


def trainer(cfg: StageConfig) -> Trainer:
    return Trainer(cfg, backend_class().init_distributed())  # a process group of one, kept for the next test


@pytest.mark.parametrize(
    ("stage", "frozen"),
    [("stage0", {"vision", "adapter"}), ("stage1", {"llm"}), ("stage2", set()), ("stage3", {"vision"})],
)
def test_each_stage_trains_exactly_its_groups(tmp_path, world_shards, stage, frozen):
    t = trainer(stage_cfg(stage, tmp_path, world_shards, "train.init_from=null"))
    model = t.backend.model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    t.train()
    for name, param in model.named_parameters():
        if name.split(".")[0] in frozen:
            assert torch.equal(param, before[name]), f"{name} of a frozen group changed"
    for group in {"vision", "adapter", "llm"} - frozen:
        assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters() if n.startswith(group))
    state = (
        t.backend.engine.optimizer.optimizer.state.values()
    )  # ZeRO's flat fp32 partition of the trainable ones
    trainable = sum(p.numel() for n, p in model.named_parameters() if n.split(".")[0] not in frozen)
    assert sum(s["exp_avg"].numel() for s in state) == trainable
    # fp32: every weight once; a master copy and two moments per trainable one
    held = t.backend.state_bytes()
    everything = sum(p.numel() for p in model.parameters())
    assert held["param_bytes"] == pytest.approx(4 * everything, rel=0.01)
    assert held["optimizer_bytes"] == pytest.approx(12 * trainable, rel=0.01)


def test_truncated_samples_are_counted_in_the_metrics(tmp_path, world_shards):
    cfg = stage_cfg("stage1", tmp_path, world_shards, "data.max_length=30")  # image span 18, then the caption
    trainer(cfg).train()
    rows = read_metrics(tmp_path / "default" / "stage1" / "metrics.jsonl")
    counts = [r.get("truncated/caption", 0) for r in rows]
    assert counts[-1] > 0 and counts == sorted(counts)  # cumulative
    assert counts[-1] <= sum(r["samples_per_s"] * r["step_s"] for r in rows) + 1e-6


def test_metrics_from_step_1_samples_export_and_wandb(tmp_path, world_shards):
    cfg = stage_cfg("stage2", tmp_path, world_shards, "train.init_from=null", "logging.wandb=offline",
                    "logging.sample_every=3", "logging.sample_count=2", f"eval.shards={world_shards}",
                    "eval.limit=2", "eval.max_new_tokens=4")  # fmt: skip
    t = trainer(cfg)
    t.train()
    out = tmp_path / "default" / "stage2"
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3]
    first = rows[0]
    for key in ("loss", "lr/vision", "lr/adapter", "lr/llm", "grad_norm", "samples_per_s", "tokens_per_s", "mfu",
                "data_wait_share", "memory_gb", "step_s"):  # fmt: skip
        assert first[key] is not None and first[key] >= 0, key
    assert 0 < first["padding_share"] < 1  # the mix's lengths differ: some of every batch is padding
    task_mix = {k: v for k, v in first.items() if k.startswith("mix/") and not k.startswith("mix/source/")}
    assert len(task_mix) > 1 and abs(sum(task_mix.values()) - 1) < 1e-9
    assert first["mix/source/default"] == 1.0 and first["loss/source/default"] == pytest.approx(
        first["loss"]
    )  # one source
    assert first["lr/llm"] == pytest.approx(5e-5 / 4)  # step 1 of a 4-step warmup to the paper's 5e-5
    assert (out / "loss.png").stat().st_size > 10_000
    samples = (out / "samples.jsonl").read_text().splitlines()
    assert len(samples) == 2 and '"generated"' in samples[0]

    scores = json.loads((out / "final" / "eval.json").read_text())  # held-out eval of the export
    assert (
        {"cider", "vqa_acc", "grounded_acc", "grounding_acc", "ocr_acc", "chat_acc"}
        <= set(scores["blind"])
        <= set(scores)
    )
    (row,) = read_metrics(out / "eval.jsonl")
    assert row["step"] == 3 and "eval/vqa_acc" in row and "blind/vqa_acc" in row
    model, tokenizer, exported = QwenVL.from_pretrained(out / "final")
    assert exported.run.stage == "stage2" and len(tokenizer) == len(t.tokenizer)
    trained = t.backend.model.state_dict()
    assert all(torch.equal(v, trained[k]) for k, v in model.state_dict().items())

    log = next((out / "wandb").glob("offline-run-*/run-*.wandb")).read_bytes()
    for key in (
        b"loss/",
        b"grad_norm",
        b"mfu",
        b"tokens_per_s",
        b"vit_layer_decay",
        b"global_batch_size",
        b"eval/cider",
    ):
        assert key in log, key  # logged metrics and the resolved config


def test_non_finite_loss_stops_with_the_step_and_samples_and_keeps_the_checkpoint(tmp_path, world_shards):
    cfg = stage_cfg("stage2", tmp_path, world_shards, "train.init_from=null", "train.optimizer.lr=1e30",
                    "train.optimizer.warmup_steps=0", "train.checkpoint_every=1", "train.max_steps=5")  # fmt: skip
    t = trainer(cfg)
    with pytest.raises(NonFiniteLoss, match=r"step 2: non-finite loss in the batch of samples \['\w+"):
        t.train()
    root = tmp_path / "default" / "stage2" / "checkpoints"
    assert checkpoint.latest(root).name == "step-00000001"
    assert not (tmp_path / "default" / "stage2" / "final").exists()


def test_bad_inputs_name_the_key(tmp_path, world_shards):
    with pytest.raises(ConfigError, match=r"train.init_from.*stage1/final does not exist.*previous stage"):
        trainer(stage_cfg("stage2", tmp_path, world_shards))
    with pytest.raises(ConfigError, match=r"data.shards.*not found.*make prep"):
        trainer(stage_cfg("stage1", tmp_path, str(tmp_path / "none-{0..3}.tar")))
    t = trainer(stage_cfg("stage1", tmp_path, world_shards, "train.max_steps=2"))
    t.train()
    folder = checkpoint.latest(tmp_path / "default" / "stage1" / "checkpoints")
    wider = stage_cfg(
        "stage1", tmp_path, world_shards, "model.llm.arch.hidden_size=192", f"train.resume={folder}"
    )
    with pytest.raises(ValueError, match=re.escape(str(folder)) + ".*does not fit"):
        trainer(wider)


def test_hooks_run_after_every_step_and_at_the_end_after_the_export(tmp_path, world_shards):
    calls = []

    class Record(Hook):
        def on_step(self, trainer, batch):
            calls.append(("step", trainer.step, len(batch["keys"])))

        def on_end(self, trainer):
            calls.append(("end", trainer.step, (trainer.final_dir / "model.safetensors").is_file()))

    cfg = stage_cfg("stage1", tmp_path, world_shards, "train.init_from=null")
    trainer_ = Trainer(cfg, backend_class().init_distributed(), hooks=[*default_hooks(), Record()])
    trainer_.train()
    assert calls == [("step", 1, 2), ("step", 2, 2), ("step", 3, 2), ("end", 3, True)]


@pytest.fixture(scope="module")
def two_sets(tmp_path_factory) -> tuple[str, str]:
    """As real data comes: a caption-only set (LAION-like, 300) and a referring-only one (RefCOCO-like, 60)."""
    from data_prep.synthetic.shards import one_task_shards

    root = tmp_path_factory.mktemp("two_sets")
    return (one_task_shards(root / "laion", 300, "caption", per_shard=50, seed=1),
            one_task_shards(root / "refcoco", 60, "ref", per_shard=20, seed=2))  # fmt: skip


@pytest.mark.parametrize(("weights", "share"), [((1, 1), 0.5), ((3, 1), 0.25)])
def test_a_two_source_mix_holds_its_weights_in_the_metrics(tmp_path, two_sets, caplog, weights, share):
    sources = (f"data.sources=[{{name: laion, shards: '{two_sets[0]}', weight: {weights[0]}}}, "
               f"{{name: refcoco, shards: '{two_sets[1]}', weight: {weights[1]}}}]")  # fmt: skip
    cfg = load_config(StageConfig, CONFIG_ROOT / "stage2.yaml", [
        sources, "data.tasks={caption: 1, ref: 1}", f"run.output_dir={tmp_path}", *TINY, "train.init_from=null",
        "train.max_steps=16", "train.global_batch_size=32", "train.micro_batch_size=16", "train.checkpoint_every=16",
    ])  # fmt: skip
    with caplog.at_level("INFO", logger="stages"):
        trainer(cfg).train()
    rows = read_metrics(tmp_path / "default" / "stage2" / "metrics.jsonl")
    last = rows[-1]
    assert last["mix/source/laion"] + last["mix/source/refcoco"] == pytest.approx(1.0)
    assert abs(last["mix/source/refcoco"] - share) <= 0.05, last  # over 512 samples
    assert last["mix/source/refcoco"] == pytest.approx(last["mix/ref"])  # each source feeds its one task
    assert all("loss/source/laion" in r and "loss/source/refcoco" in r for r in rows)
    assert last["epochs/source/refcoco"] >= 2 and last["epochs/source/laion"] >= 1
    summary = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("data by source"))
    refs = round(512 * last["mix/source/refcoco"])
    assert f"refcoco {refs} samples" in summary and f"laion {512 - refs} samples" in summary


def test_benchmarks_at_the_stage_end_go_to_eval_jsonl(tmp_path, world_shards):
    from data_prep.synthetic.benchmarks import write_benchmarks

    files = write_benchmarks(world_shards, tmp_path / "bench")
    benchmarks = (f"eval.benchmarks=[{{name: vqav2, images: '{files['images']}', questions: '{files['questions']}', "
                  f"annotations: '{files['annotations']}', limit: 4}}, {{name: refcoco, images: '{files['images']}', "
                  f"refs: '{files['refs']}', instances: '{files['instances']}', split: val, limit: 3}}]")  # fmt: skip
    trainer(
        stage_cfg("stage2", tmp_path, world_shards, "train.init_from=null", benchmarks, "train.max_steps=1")
    ).train()
    out = tmp_path / "default" / "stage2"
    rows = read_metrics(out / "eval.jsonl")
    assert [sorted(k for k in r if k.startswith("bench")) for r in rows] == [
        ["bench/vqav2/vqa_acc", "bench_blind/vqav2/vqa_acc"],
        ["bench/refcoco-val/ref_acc", "bench_blind/refcoco-val/ref_acc"],
    ]
    assert rows[0]["items"] == {"vqav2": 4} and rows[0]["step"] == 1
    assert (out / "final" / "benchmarks" / "results.md").is_file()
    assert (
        len(json.loads((out / "final" / "benchmarks" / "refcoco-val" / "predictions.json").read_text())) == 3
    )
    with pytest.raises(ConfigError, match=r"eval.benchmarks\[0\].*vqav2 needs annotations"):
        stage_cfg(
            "stage2", tmp_path, world_shards, "eval.benchmarks=[{name: vqav2, images: x, questions: y}]"
        )


def test_the_fused_loss_under_zero3_is_a_config_error(tmp_path, world_shards):
    # refused on any device, so that a config tried on a laptop does not fail first on the cluster
    cfg = stage_cfg("stage2", tmp_path, world_shards, "train.init_from=null", "deepspeed.zero_stage=3",
                    "train.kernels=[fused_cross_entropy]")  # fmt: skip
    with pytest.raises(ConfigError, match="train.kernels.*ZeRO-3.*zero_stage=2"):
        trainer(cfg)
