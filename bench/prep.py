"""Data prep throughput, as ratios against baselines measured in the same run.

- clip_ratio: samples/s of the CLIP stage inside prep (decode, preprocess, both towers, batched in a Ray
  actor) over a bare batched open_clip loop on the same images, model, batch size and thread count.
- filter_samples_per_s_per_core: the non-CLIP filters with shard writing (read, text cleaning, decode, size,
  aspect, language ID, dedup lookup, resize, tar writing), in samples per second of one task's CPU time.
- filter_ratio_to_decode: that rate over a bare loop that only decodes every input image fully, on one core
  in this process (input samples per second of decoding): what the whole chain costs beyond one decode.

The CLIP model is a randomly initialised scorer of the synthetic preset's architecture: speed does not
depend on the weights, and this skips training the real one.
"""

from __future__ import annotations

import io
import tempfile
import time
from pathlib import Path

import open_clip
import ray
import torch
from PIL import Image
from safetensors.torch import save_file

from data_prep.clip_score import ClipScorer
from data_prep.clip_train import ScorerConfig
from data_prep.job import run as prep
from data_prep.score import clip_threads
from data_prep.sources import PrepConfig
from pipeline.config import CONFIG_ROOT, load_config, register_open_clip_configs
from pipeline.data.shard_format import read_shards

PAIRS = 1500


def run() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        arch = ScorerConfig.arch
        register_open_clip_configs()
        model = open_clip.create_model(arch)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / "clip.safetensors"))
        common = [f"output_dir={tmp / 'out'}", f"synthetic.num_samples={PAIRS}", "samples_per_shard=250"]
        # without CLIP first: the filters and writing alone
        plain = prep(load_config(PrepConfig, CONFIG_ROOT / "data" / "synthetic.yaml",
                                 [*common, "filters.clip.enabled=false"]))  # fmt: skip
        decode_rate = plain["input"] / _decode_seconds(tmp / "out" / "raw")
        for p in (tmp / "out" / "stats").glob("*.json"):
            p.unlink()  # the same world again, now with CLIP
        cfg = load_config(PrepConfig, CONFIG_ROOT / "data" / "synthetic.yaml", [
            *common, f"filters.clip.arch={arch}", f"filters.clip.pretrained={tmp / 'clip.safetensors'}",
            "filters.clip.threshold=-1.0",
        ])  # fmt: skip
        scored = prep(cfg)
        seconds = scored["stage_seconds"]
        clip_rate = scored["clip"]["scored"] / seconds["clip"]

        # baseline: the images the CLIP stage scored (as written to the shards), the same scorer, one loop
        samples = [s for s in read_shards(scored["shards"]) if "jpg" in s]
        images, captions = [s["jpg"] for s in samples], [s["txt"].decode() for s in samples]
        threads = torch.get_num_threads()
        actor_threads = clip_threads(int(ray.cluster_resources()["CPU"]), cfg.filters.clip.workers)
        torch.set_num_threads(actor_threads)
        scorer = ClipScorer(cfg.filters.clip)
        start = time.perf_counter()
        scorer.score(images, captions)
        bare_rate = len(images) / (time.perf_counter() - start)
        torch.set_num_threads(threads)

    plain_seconds = plain["stage_seconds"]
    filter_rate = plain["input"] / (plain_seconds["filter"] + plain_seconds["write"])
    return {
        "pairs": PAIRS,
        "input_samples": plain["input"],
        "clip_stage_samples_per_s": round(clip_rate, 1),
        "clip_bare_samples_per_s": round(bare_rate, 1),
        "clip_ratio": round(clip_rate / bare_rate, 3),
        "clip_batch_size": cfg.filters.clip.batch_size,
        "clip_threads": actor_threads,
        "filter_samples_per_s_per_core": round(filter_rate, 1),
        "decode_samples_per_s": round(decode_rate, 1),
        "filter_ratio_to_decode": round(filter_rate / decode_rate, 3),
        "prep_wall_samples_per_s_without_clip": plain["samples_per_s"],
        "prep_wall_samples_per_s_with_clip": scored["samples_per_s"],
        "dedup_pass_seconds": plain["run"]["seconds"]["dedup"],
        "goals": {"clip_ratio": 0.9, "filter_ratio_to_decode": 0.5},
    }


def _decode_seconds(raw: Path) -> float:
    """CPU seconds to fully decode every image of the raw input (read into memory first), one core."""
    blobs = [p.read_bytes() for p in sorted(raw.rglob("*")) if p.suffix in (".jpg", ".png", ".webp")]
    start = time.thread_time()
    for blob in blobs:
        try:
            Image.open(io.BytesIO(blob)).load()
        except OSError:
            pass  # the world's corrupt images cost what a failed decode costs
    return time.thread_time() - start
