"""Typed schema of a training run. Stages differ only by the values in configs/stageN.yaml.

Defaults here are the Qwen-VL recipe's shared settings (../shared/RECIPE.md); the stage files set
what differs per stage. Every value is checked in ``__post_init__`` with its full key in the message.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from pipeline.benchmarks.files import BenchFiles
from pipeline.config import TINY_TOWER, ConfigError

MODULE_GROUPS = ("vision", "adapter", "llm")
WANDB_MODES = ("online", "offline", "disabled")
PRECISIONS = ("bf16", "fp16", "fp32")
TOWERS = ("vision", "llm")  # the transformer towers (activation checkpointing, compile)
KERNELS = ("fused_cross_entropy", "rms_norm", "swiglu", "rope")  # train.kernels: Liger's, on CUDA
PIXELS = ("uint8", "float32")  # data.pixels: what the loader workers send


def task_names() -> tuple[str, ...]:
    """The tasks of the registry (``pipeline.data.tasks``), read when a config is checked."""
    from pipeline.data.tasks import TASKS

    return tuple(TASKS)


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"key '{key}': {message}")


@dataclass
class VisionConfig:
    arch: str = TINY_TOWER  # open_clip architecture; configs/model/open_clip/*.json are registered too
    pretrained: str | None = None  # open_clip pretrained tag or a local checkpoint file; None = random init
    # patch: the ViT's patchify; conv: early 3x3 convolutions in its place (the same token grid), which learn
    # shapes from far fewer images than a patchify does
    stem: str = "patch"
    stem_channels: list[int] = field(default_factory=lambda: [16, 32])  # the conv stem's 3x3 layers
    stem_grid_layers: int = 2  # then 3x3 convolutions over the token grid

    def __post_init__(self) -> None:
        _check(self.stem in ("patch", "conv"), "model.vision.stem", "choose from ('patch', 'conv')")
        _check(bool(self.stem_channels) and all(c > 0 for c in self.stem_channels), "model.vision.stem_channels",
               "one or more positive channel counts")  # fmt: skip
        _check(self.stem_grid_layers >= 0, "model.vision.stem_grid_layers", "must be >= 0")


@dataclass
class AdapterConfig:
    num_queries: int = 256  # learnable queries = image tokens per image in the LLM (paper: 256); a square
    num_heads: int | None = None  # cross-attention heads; None = LLM width / 128 (Qwen-VL), at least 1


@dataclass
class LLMConfig:
    name_or_path: str | None = None  # HF hub name or local folder; None builds a fresh model from `arch`
    arch: dict[str, Any] = field(default_factory=dict)  # transformers config kwargs (model_type + sizes)
    trust_remote_code: bool = False  # only ever true when the user sets it


@dataclass
class ModelConfig:
    name: str = "tiny"
    vision: VisionConfig = field(default_factory=VisionConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    tokenizer: str = ".cache/tokenizer"  # HF tokenizer name or folder (the offline one by default)

    def __post_init__(self) -> None:
        n = self.adapter.num_queries
        _check(
            n > 0 and math.isqrt(n) ** 2 == n, "model.adapter.num_queries", "must be a square (64, 144, 256)"
        )
        heads = self.adapter.num_heads
        _check(heads is None or heads > 0, "model.adapter.num_heads", "must be > 0")


SOURCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")  # it becomes part of metric keys
DEFAULT_SHARDS = "data/synthetic/shards/{000000..000009}.tar"


@dataclass
class SourceConfig:
    """One dataset of a mixture (``data.sources``)."""

    name: str = ""  # in metrics as mix/source/<name> and loss/source/<name>
    shards: str = ""  # brace-expanded webdataset URLs or local globs; `::` joins several sets
    weight: float = 1.0  # relative share of the samples drawn (the paper's counts in millions work)
    tasks: list[str] | None = None  # the tasks drawn from it; None = those of data.tasks its samples have


@dataclass
class DataConfig:
    shards: str | None = DEFAULT_SHARDS  # one source: brace-expanded webdataset URLs (or local globs)
    # several sources, each sample drawn from one by weight (then a task within it); replaces `shards`
    sources: list[SourceConfig] = field(default_factory=list)
    root: str = "data"  # where prepared datasets live: ${data.root}/<dataset>/shards in mixture files
    tasks: dict[str, float] = field(default_factory=lambda: {"caption": 1.0})  # task -> mixing weight
    max_skips_in_a_row: int = 1000  # unusable samples in a row from a source: the run stops, naming it
    image_size: int = 224  # stage resolution (paper: 224 in stage 1, 448 in stages 2-3)
    images: bool = True  # false: every sample without its image span (text alone; no image decoded)
    max_length: int = 512  # tokens per sample; a sample whose image span would be cut is dropped
    num_workers: int = 2  # dataloader workers per rank
    group_by_length: int = 1  # batches per window sorted by token length (less padding); 1 = off
    packing: bool = (
        False  # samples of a window packed into rows of max_length tokens, no attention across them
    )
    pixels: str = "uint8"  # uint8: workers send 8-bit pixels, normalised on the device (a quarter of the bytes); float32
    open_shards: int = (
        4  # shards each worker reads at once, drawing samples from them at random (the shuffle)
    )

    def __post_init__(self) -> None:
        _check(bool(self.tasks), "data.tasks", "at least one task is needed")
        for task, weight in self.tasks.items():
            _check(task in task_names(), f"data.tasks.{task}", f"unknown task; choose from {task_names()}")
            _check(weight > 0, f"data.tasks.{task}", "mixing weight must be > 0")
        _check(self.image_size > 0, "data.image_size", "must be > 0")
        _check(self.max_length > 0, "data.max_length", "must be > 0")
        _check(self.num_workers >= 0, "data.num_workers", "must be >= 0")
        _check(self.group_by_length >= 1, "data.group_by_length", "must be >= 1 (1 = off)")
        _check(self.pixels in PIXELS, "data.pixels", f"choose from {PIXELS}")
        _check(self.open_shards > 0, "data.open_shards", "must be > 0")
        _check(self.max_skips_in_a_row > 0, "data.max_skips_in_a_row", "must be > 0")
        if self.sources:
            _check(self.shards in (None, DEFAULT_SHARDS), "data.shards",
                   "set data.shards or data.sources, not both (a single source is data.sources' shorthand)")  # fmt: skip
            self.shards = None
        else:
            _check(bool(self.shards), "data.shards", "no shards: set data.shards or data.sources")
        names = set()
        for i, source in enumerate(self.sources):
            key = f"data.sources[{i}]"
            _check(bool(SOURCE_NAME.fullmatch(source.name)), f"{key}.name",
                   f"{source.name!r}: a name of letters, digits and _.+- is needed")  # fmt: skip
            _check(source.name not in names, f"{key}.name", f"{source.name!r} names two sources")
            names.add(source.name)
            _check(bool(source.shards.strip()), f"{key}.shards", f"source {source.name!r} has no shards")
            _check(source.weight > 0 and math.isfinite(source.weight), f"{key}.weight",
                   f"source {source.name!r}: must be > 0")  # fmt: skip
            _check(source.tasks is None or bool(source.tasks), f"{key}.tasks",
                   f"source {source.name!r}: name at least one task, or leave it out for data.tasks")  # fmt: skip
            for task in source.tasks or ():
                _check(
                    task in task_names(),
                    f"{key}.tasks",
                    f"source {source.name!r}: unknown task {task!r}; choose from {task_names()}",
                )

    def mixture(self) -> list[SourceConfig]:
        """The sources read: ``data.sources``, or ``data.shards`` as the one source named ``default``."""
        return self.sources or [SourceConfig("default", self.shards or "", 1.0, None)]

    def source_tasks(self, source: SourceConfig) -> dict[str, float]:
        """The task weights of one source: data.tasks' weights for its tasks (1.0 for one data.tasks lacks)."""
        if source.tasks is None:
            return self.tasks
        return {task: self.tasks.get(task, 1.0) for task in source.tasks}


@dataclass
class OptimizerConfig:
    lr: float = 2e-4  # peak learning rate
    min_lr: float = 1e-6  # end of the cosine decay
    warmup_steps: int = 500  # linear warmup from 0
    schedule: str = "cosine"
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-6
    weight_decay: float = 0.05  # not on norms, biases, position embeddings and the resampler queries
    grad_clip: float = 1.0  # max global gradient norm; 0 = off
    vit_layer_decay: float = 1.0  # layer-wise LR decay of the ViT (paper stage 1: 0.95); 1.0 = off
    lr_scale: dict[str, float] = field(default_factory=dict)  # module group -> LR multiplier; absent = 1.0

    def __post_init__(self) -> None:
        _check(self.lr > 0, "train.optimizer.lr", "must be > 0")
        _check(0 <= self.min_lr <= self.lr, "train.optimizer.min_lr", "must be in [0, lr]")
        _check(self.warmup_steps >= 0, "train.optimizer.warmup_steps", "must be >= 0")
        _check(self.schedule in ("cosine", "constant"), "train.optimizer.schedule", "cosine or constant")
        _check(len(self.betas) == 2, "train.optimizer.betas", "needs two values")
        _check(0 < self.vit_layer_decay <= 1, "train.optimizer.vit_layer_decay", "must be in (0, 1]")
        _check(self.weight_decay >= 0, "train.optimizer.weight_decay", "must be >= 0")
        _check(self.grad_clip >= 0, "train.optimizer.grad_clip", "must be >= 0")
        for group, scale in self.lr_scale.items():
            _check(
                group in MODULE_GROUPS,
                f"train.optimizer.lr_scale.{group}",
                f"not one of {list(MODULE_GROUPS)}",
            )
            _check(scale > 0, f"train.optimizer.lr_scale.{group}", "must be > 0")


RESUME_MODES = ("auto", "never")


@dataclass
class TrainConfig:
    trainable: list[str] = field(default_factory=lambda: ["vision", "adapter"])  # the rest is frozen
    max_steps: int = 50_000  # optimizer steps
    global_batch_size: int = 30_720  # samples per optimizer step, all ranks together
    micro_batch_size: int = 8  # samples per rank per forward; accumulation = global / (micro * ranks)
    precision: str = "bf16"  # bf16 | fp16 | fp32; a run without CUDA uses fp32 (and says so)
    init_from: str | None = None  # a final/ folder (or a .safetensors file) to start from; None = fresh
    resume: str = "auto"  # auto: this stage's latest checkpoint if any; never; or a checkpoint folder
    checkpoint_every: int = 1000  # optimizer steps between checkpoints (the last step is always saved)
    keep_last: int = 2  # checkpoints kept, newest first; older ones are deleted
    activation_checkpointing: list[str] = field(
        default_factory=list
    )  # towers (vision, llm) recomputed in backward
    # speed levers that apply on CUDA only (a run elsewhere says it ignores them); off until measured on
    # the GPU (python -m bench gpu gives each one's gain)
    kernels: list[str] = field(default_factory=list)  # Liger's: fused_cross_entropy, rms_norm, swiglu, rope
    compile: list[str] = field(default_factory=list)  # towers (vision, llm) compiled block by block
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)

    def __post_init__(self) -> None:
        _check(bool(self.trainable), "train.trainable", f"name at least one of {MODULE_GROUPS}")
        for group in self.trainable:
            _check(
                group in MODULE_GROUPS,
                "train.trainable",
                f"unknown group {group!r}; choose from {MODULE_GROUPS}",
            )
        _check(self.max_steps > 0, "train.max_steps", "must be > 0")
        _check(self.micro_batch_size > 0, "train.micro_batch_size", "must be > 0")
        _check(
            self.global_batch_size % self.micro_batch_size == 0,
            "train.global_batch_size",
            "must be a multiple of train.micro_batch_size",
        )
        _check(self.precision in PRECISIONS, "train.precision", f"choose from {PRECISIONS}")
        for tower in self.activation_checkpointing:
            _check(tower in TOWERS, "train.activation_checkpointing", f"{tower!r}: vision or llm")
        for tower in self.compile:
            _check(tower in TOWERS, "train.compile", f"{tower!r}: vision or llm")
        for kernel in self.kernels:
            _check(kernel in KERNELS, "train.kernels", f"unknown kernel {kernel!r}; choose from {KERNELS}")
        _check(self.checkpoint_every > 0, "train.checkpoint_every", "must be > 0")
        _check(self.keep_last > 0, "train.keep_last", "must be > 0")
        _check(bool(self.resume), "train.resume", "auto, never or a checkpoint folder")

    def accumulation(self, world_size: int) -> int:
        """Micro-batches per rank per optimizer step; the global batch must split evenly over the ranks."""
        per_step = self.micro_batch_size * world_size
        _check(
            self.global_batch_size % per_step == 0,
            "train.global_batch_size",
            f"{self.global_batch_size} is not a multiple of train.micro_batch_size ({self.micro_batch_size})"
            f" x {world_size} ranks",
        )
        return self.global_batch_size // per_step


@dataclass
class DeepSpeedConfig:
    config: str = "configs/deepspeed/zero2.json"  # ZeRO settings; "auto" values are filled from train.*
    zero_stage: int | None = None  # overrides zero_optimization.stage of the JSON

    def __post_init__(self) -> None:
        _check(self.zero_stage in (None, 0, 1, 2, 3), "deepspeed.zero_stage", "must be 0, 1, 2 or 3")


@dataclass
class LoggingConfig:
    wandb: str = "offline"  # online | offline | disabled; a local metrics.jsonl is always written
    project: str = "qwenvl-pipeline"
    entity: str | None = None
    log_every: int = 10  # optimizer steps between console lines (metrics.jsonl gets every step)
    sample_every: int = 500  # optimizer steps between tables of images with generated text (0 = never)
    sample_count: int = 4  # samples per table
    peak_tflops: float | None = None  # per device, for MFU; None = the device table (CPU: measured matmul)

    def __post_init__(self) -> None:
        _check(self.wandb in WANDB_MODES, "logging.wandb", f"choose from {WANDB_MODES}")
        _check(self.log_every > 0, "logging.log_every", "must be > 0")
        _check(self.sample_every >= 0, "logging.sample_every", "must be >= 0")
        _check(self.peak_tflops is None or self.peak_tflops > 0, "logging.peak_tflops", "must be > 0")


@dataclass
class BenchmarkConfig(BenchFiles):
    """One of the paper's benchmarks, read from its own files at the stage end."""

    name: str = ""  # vqav2 | okvqa | textvqa | vizwiz | gqa | refcoco | refcoco+ | refcocog | coco_caption | flickr30k | nocaps
    limit: int | None = 200  # its first N items; None = all


@dataclass
class EvalConfig:
    """Evaluation of the stage's final/ export at the stage end (stages.hooks.Evaluate), each score with the
    image-blind twin: held-out shards (pipeline.eval) and the paper's benchmarks (pipeline.benchmarks)."""

    shards: str | None = None  # brace-expanded held-out shards; null = no evaluation at the stage end
    limit: int = 100  # items per task
    batch_size: int = 16
    max_new_tokens: int = 64
    benchmarks: list[BenchmarkConfig] = field(
        default_factory=list
    )  # scored at the stage end, with the blind twin

    def __post_init__(self) -> None:
        for key in ("limit", "batch_size", "max_new_tokens"):
            _check(getattr(self, key) > 0, f"eval.{key}", "must be > 0")
        from pipeline.benchmarks.suites import SUITES  # lazily: the schema imports nothing heavy

        for i, b in enumerate(self.benchmarks):
            _check(
                b.name in SUITES, f"eval.benchmarks[{i}].name", f"{b.name!r}: choose from {sorted(SUITES)}"
            )
            missing = [n for n in SUITES[b.name].needs if getattr(b, n) is None]
            _check(not missing, f"eval.benchmarks[{i}]", f"{b.name} needs {', '.join(missing)}")
            _check(
                b.limit is None or b.limit > 0, f"eval.benchmarks[{i}].limit", "must be > 0 (or null: all)"
            )


@dataclass
class RunConfig:
    name: str = "default"  # outputs under <output_dir>/<name>/<stage>/; stages of one name chain
    stage: str = "stage1"
    output_dir: str = "runs"
    seed: int = 0

    def __post_init__(self) -> None:
        for key in ("name", "stage"):
            value = getattr(self, key)
            _check(bool(value) and "/" not in value and value not in (".", ".."), f"run.{key}",
                   f"{value!r} must be a plain folder name")  # fmt: skip


@dataclass
class StageConfig:
    """Everything one stage run needs; saved next to every checkpoint and logged to wandb."""

    run: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
