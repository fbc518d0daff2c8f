"""Synthetic-world generation speed: pairs/s of the full generator (planning, ground truth, noise, files)
divided by a bare render+JPEG-encode loop over the same scenes, measured in the same run."""

from __future__ import annotations

import tempfile
import time

from data_prep.synthetic import WorldConfig, generate, plan_sample
from data_prep.synthetic.render import encode_jpeg, render

N = 500


def run() -> dict:
    cfg = WorldConfig(num_samples=N, seed=0)
    scenes = [plan_sample(cfg, i).scene for i in range(N)]
    start = time.perf_counter()
    for scene in scenes:
        encode_jpeg(render(scene))
    bare = N / (time.perf_counter() - start)
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        generate(cfg, out, progress=False)
        full = N / (time.perf_counter() - start)
    return {"pairs_per_s": round(full, 1), "render_encode_per_s": round(bare, 1), "ratio": round(full / bare, 3),
            "seconds_per_1000": round(1000 / full, 2)}  # fmt: skip
