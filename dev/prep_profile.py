"""dev/LOG.md: where the data-prep filter stage spends its time, how many images need a resize, and what each
resize method costs.

    PYTHONPATH=. python dev/prep_profile.py [OUT_DIR]   # default /tmp/prep_profile

Generates a 1,000-pair world, then profiles ``filter_part`` + ``write_part`` on its first part (550 samples)
in this process (no Ray), and times PIL and OpenCV resizes of 150 of its images with a side over 512.
"""

import cProfile
import io
import json
import pstats
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import webdataset  # noqa: F401 - imported here so that its start-up cost stays out of the profile
from PIL import Image

from data_prep.chain import filter_part
from data_prep.sources import PrepConfig, plan_parts
from data_prep.write import write_part
from pipeline.config import CONFIG_ROOT, load_config

out = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/prep_profile")
cfg = load_config(PrepConfig, CONFIG_ROOT / "data" / "synthetic.yaml", [
    f"output_dir={out}", "synthetic.num_samples=1000", "samples_per_shard=500", "filters.clip.enabled=false",
])  # fmt: skip
spec = plan_parts(cfg)[0]
for sub in ("shards", "stats"):
    (out / sub).mkdir(parents=True, exist_ok=True)
batch = {"spec": np.array([json.dumps(spec)], dtype=object), "duplicates": np.array(["[]"], dtype=object)}
filter_part(batch, cfg)  # warm: loads the language-ID model
profile = cProfile.Profile()
start = time.perf_counter()
profile.enable()
write_part(filter_part(batch, cfg), cfg)
profile.disable()
print(f"one part, filter + write: {time.perf_counter() - start:.2f} s (under cProfile)")
pstats.Stats(profile).sort_stats("tottime").print_stats(12)

cv2.setNumThreads(1)
images, decodable, over = [], 0, 0
for path in sorted((out / "raw").rglob("*.jpg")):
    try:
        image = Image.open(path)
    except OSError:
        continue  # the world's corrupt images
    decodable += 1
    if max(image.size) > cfg.max_side:
        over += 1
        if len(images) < 150:
            image.load()
            images.append(image)
print(f"{over / decodable:.0%} of {decodable} decodable images have a side over {cfg.max_side}")


def target(image: Image.Image) -> tuple[int, int]:
    scale = cfg.max_side / max(image.size)
    return round(image.width * scale), round(image.height * scale)


methods = {
    "PIL bicubic": lambda im: im.resize(target(im), Image.Resampling.BICUBIC, reducing_gap=3.0),
    "PIL bilinear": lambda im: im.resize(target(im), Image.Resampling.BILINEAR),
    "PIL box": lambda im: im.resize(target(im), Image.Resampling.BOX),
    "cv2 INTER_AREA": lambda im: Image.fromarray(cv2.resize(np.asarray(im), target(im), interpolation=cv2.INTER_AREA)),
    "cv2 INTER_LINEAR": lambda im: Image.fromarray(cv2.resize(np.asarray(im), target(im), interpolation=cv2.INTER_LINEAR)),
    "JPEG encode q95": lambda im: im.save(io.BytesIO(), format="JPEG", quality=cfg.jpeg_quality),
}  # fmt: skip
for name, fn in methods.items():
    start = time.perf_counter()
    for image in images:
        fn(image)
    print(
        f"{name}: {(time.perf_counter() - start) / len(images) * 1000:.2f} ms per image ({len(images)} images)"
    )
