"""dev/LOG.md: where a synthetic CLIP scorer goes wrong on the held-out split (English vs Chinese FPR at
mismatch recall 0.95, lowest-scoring clean pairs, highest-scoring mismatches).

    PYTHONPATH=. python dev/clip_errors.py SCORER_DIR   # a folder written by python -m data_prep.clip_train
"""

import json
import sys

import numpy as np
import open_clip
import torch

from data_prep.clip_train import _pairs
from data_prep.synthetic.world import NoiseRates, WorldConfig, plan_sample
from pipeline.config import CONFIG_ROOT

open_clip.add_model_config(CONFIG_ROOT / "model" / "open_clip")
d = sys.argv[1]
info = json.load(open(f"{d}/scorer.json"))
size = info["image_size"]
model = open_clip.create_model(
    info["arch"], pretrained=f"{d}/model.safetensors", force_image_size=size
).eval()
tok = open_clip.get_tokenizer(info["arch"])
mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)


def sc(m):
    rows = _pairs(600, 99, "heldout", size, m)
    px = torch.from_numpy(np.stack([r[0] for r in rows])).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        s = (
            (
                model.encode_image((px - mean) / std, normalize=True)
                * model.encode_text(tok([r[1] for r in rows]), normalize=True)
            )
            .sum(-1)
            .numpy()
        )
    return s, rows


good, grows = sc(0.0)
bad, brows = sc(1.0)
cfg0 = WorldConfig(num_samples=600, seed=99, split="heldout", noise=NoiseRates(*[0.0] * 8))
cfg1 = WorldConfig(num_samples=600, seed=99, split="heldout", noise=NoiseRates(1.0, *[0.0] * 7))
zh = np.array([plan_sample(cfg0, i).lang == "zh" for i in range(600)])
print(f"clean mean en {good[~zh].mean():.3f} zh {good[zh].mean():.3f}; bad mean {bad.mean():.3f}")
t = np.quantile(bad, 0.95)
print("t95", t, "FPR en", (good[~zh] < t).mean(), "FPR zh", (good[zh] < t).mean())
for i in np.argsort(good)[:5]:
    print(f"LOW CLEAN {good[i]:.3f}", plan_sample(cfg0, i).caption[:150])
for i in np.argsort(-bad)[: int(sys.argv[2]) if len(sys.argv) > 2 else 5]:
    p = plan_sample(cfg1, i)
    print(f"HIGH BAD {bad[i]:.3f}", "| true:", p.clean_caption[:100], "| given:", p.caption[:100])
# mismatches whose caption names the image's background (English captions: the colour word appears)
same = np.array([p.lang == "en" and f" {p.scene.background} background" in p.caption
                 for p in (plan_sample(cfg1, i) for i in range(600))])  # fmt: skip
en_bad = np.array([plan_sample(cfg1, i).lang == "en" for i in range(600)])
print(
    f"English mismatches naming the image's background: {same.sum()} of {en_bad.sum()}; "
    f"share of them above t95: {(bad[same] >= t).mean():.2f}, of the others: {(bad[en_bad & ~same] >= t).mean():.2f}"
)
