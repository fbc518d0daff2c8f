"""The settings every data-prep run shares (configs/data/<preset>.yaml; the sources add their own sections).

Filters run in the recipe's order (``data_prep.chain.CHAIN``); each has ``enabled`` and its own thresholds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.config import TINY_TOWER, ConfigError


@dataclass
class TextFilter:
    enabled: bool = True  # strip HTML tags/entities, URLs, e-mails, symbol runs; drop empty/short/long
    min_chars: int = 5
    max_chars: int = 1000


@dataclass
class DecodeFilter:
    enabled: bool = True  # decode every image fully; off: undecodable images are counted as errors


@dataclass
class SizeFilter:
    enabled: bool = True
    min_side: int = 100  # pixels; the shorter side must reach it


@dataclass
class AspectFilter:
    enabled: bool = True
    max_ratio: float = 3.0  # longer side / shorter side


@dataclass
class LanguageFilter:
    enabled: bool = True
    charset: bool = True  # Qwen-VL's rule: only English and Chinese characters, digits, punctuation
    keep: list[str] = field(default_factory=lambda: ["en", "zh"])  # ISO codes kept by language ID
    min_confidence: float = 0.5  # language ID drops only when at least this sure


@dataclass
class DedupFilter:
    enabled: bool = True  # exact: sha256 of image bytes + cleaned caption; the first occurrence stays


@dataclass
class ClipFilter:
    enabled: bool = True
    # open_clip architecture with a pretrained tag or a local checkpoint; "synthetic" trains (once, cached
    # under .cache/clip/) the tiny scorer on clean synthetic pairs
    arch: str = TINY_TOWER  # the embedded default's tower (pipeline.config), which starts from this scorer
    pretrained: str = "synthetic"
    threshold: float | None = None  # cosine similarity; None: the calibrated threshold stored with the scorer
    batch_size: int = 256
    device: str = "auto"  # auto | cpu | cuda
    workers: int = 1  # scoring actors (one model each; one GPU each when GPUs are present)
    train_steps: int = 700  # synthetic scorer: steps of batch 128, about 0.9 s each on 2 cores
    # synthetic scorer as the demo's vision stand-in (data_prep.clip_train.ScorerConfig): patch | conv stem,
    # the weight of its per-patch shape and colour loss (0: contrastive alone), and of the per-patch box
    # regression inside it
    stem: str = "patch"
    dense: float = 0.0
    dense_box: float = 0.0


@dataclass
class Filters:
    text: TextFilter = field(default_factory=TextFilter)
    decode: DecodeFilter = field(default_factory=DecodeFilter)
    size: SizeFilter = field(default_factory=SizeFilter)
    aspect: AspectFilter = field(default_factory=AspectFilter)
    language: LanguageFilter = field(default_factory=LanguageFilter)
    dedup: DedupFilter = field(default_factory=DedupFilter)
    clip: ClipFilter = field(default_factory=ClipFilter)


@dataclass
class PrepSettings:
    """What every prep run has, whatever its source. The full config (``data_prep.sources.PrepConfig``) adds
    the source's name and each source's own section, which the source defines and checks."""

    output_dir: str = "data/synthetic"  # shards/ stats/ plots/ summary.json (and raw/ for synthetic, laion)
    seed: int = 0  # synthetic world seed; also the shuffle seed of every output shard
    samples_per_shard: int = 1000  # input samples per unit of work; each becomes one output shard
    max_side: int = 512  # images are resized so that the longer side is at most this
    jpeg_quality: int = 95
    ray_address: str = ""  # "" = local Ray on this machine (or RAY_ADDRESS when set)
    workers: int = 0  # parallel filter tasks; 0 = one per CPU
    log_every: float = 10.0  # seconds between progress log lines
    filters: Filters = field(default_factory=Filters)

    def __post_init__(self) -> None:
        for key in ("samples_per_shard", "max_side"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"key '{key}': must be > 0")
        if self.filters.aspect.max_ratio < 1:
            raise ConfigError("key 'filters.aspect.max_ratio': must be >= 1")
        if self.filters.clip.device not in ("auto", "cpu", "cuda"):
            raise ConfigError("key 'filters.clip.device': must be auto, cpu or cuda")
        clip = self.filters.clip
        if clip.dense < 0 or clip.dense_box < 0 or (clip.dense_box > 0 and clip.dense == 0):
            raise ConfigError("key 'filters.clip.dense_box': must be >= 0, and > 0 only with filters.clip.dense > 0 "
                              "(the box regression is part of the dense loss)")  # fmt: skip
