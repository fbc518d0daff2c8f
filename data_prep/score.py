"""The CLIP filter's stage: Ray Data actors that each load the scorer once and score whole parts in batches."""

from __future__ import annotations

import time

from data_prep.batches import pack, unpack
from data_prep.config import PrepSettings


class ClipStage:
    def __init__(self, cfg: PrepSettings, scorer_dir: str | None, threads: int) -> None:
        import torch

        from data_prep.clip_score import ClipScorer

        torch.set_num_threads(threads)
        self.scorer = ClipScorer(cfg.filters.clip, scorer_dir)

    def __call__(self, batch: dict) -> dict:
        parts = []
        for payload in batch["payload"]:
            samples, s = unpack(payload)
            start = time.perf_counter()
            images = [x for x in samples if x.image is not None and x.caption is not None]  # pairs only
            scores = self.scorer.score([x.image for x in images], [x.caption for x in images])
            threshold = self.scorer.threshold
            for x, score in zip(images, scores, strict=True):
                x.clip_score = round(float(score), 4)
                s.hist("clip_score", float(score))
                if x.clip_score < threshold:
                    s.drop(x, "clip_score")
            samples = [x for x in samples if x.clip_score is None or x.clip_score >= threshold]
            s.seconds["clip"] = time.perf_counter() - start
            s.clip_scored = len(images)
            s.clip_threshold = threshold
            parts.append((samples, s))
        return {"spec": batch["spec"], "payload": pack(*zip(*parts, strict=True))}


def clip_threads(cpus: int, workers: int) -> int:
    """Torch threads per scoring actor on CPUs: the actors share the machine with the filter tasks."""
    return max(1, cpus // (workers + 1))
