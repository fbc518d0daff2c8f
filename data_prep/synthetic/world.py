"""The synthetic image-text world: deterministic raw pairs with ground truth and labelled noise.

Every sample depends only on (seed, split, index), so any sample can be rebuilt on its own and the
held-out split never shares a sample seed with the training split.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from tqdm import tqdm

from data_prep.synthetic import text as T
from data_prep.synthetic.preview import write_preview
from data_prep.synthetic.render import encode_jpeg, render
from data_prep.synthetic.scene import Scene, sample_scene

VERSION = "synthetic-v1"  # bump when the world's content changes
SPLITS = ("train", "heldout")


@dataclass
class NoiseRates:
    """Share of raw samples carrying each kind of noise (the rest are clean)."""

    mismatch: float = 0.05  # caption of another image
    aspect: float = 0.03  # extreme aspect ratio (3.5:1 to 6:1)
    small: float = 0.03  # longer side 24-80 px
    language: float = 0.05  # caption in another language (fr, de, es, ru, ja, ko, ar)
    html: float = 0.05  # HTML and irregular junk around a good caption (cleaning recovers it)
    empty: float = 0.02  # caption made only of junk (nothing left after cleaning)
    duplicate: float = 0.03  # exact copy (image bytes and caption) of an earlier clean sample
    corrupt: float = 0.02  # image bytes that do not decode

    def __post_init__(self) -> None:
        total = sum(getattr(self, f.name) for f in fields(self))
        for f in fields(self):
            if not 0 <= getattr(self, f.name) <= 1:
                raise ValueError(f"noise.{f.name} must be in [0, 1], got {getattr(self, f.name)}")
        if total > 1:
            raise ValueError(f"noise rates add up to {total:.3f} > 1")


def split_noise(split: str) -> NoiseRates:
    """A split's default noise: the training world's rates; held-out data is clean."""
    return NoiseRates() if split == "train" else NoiseRates(*[0.0] * len(fields(NoiseRates)))


NOISE_KINDS = tuple(f.name for f in fields(NoiseRates))


@dataclass
class WorldConfig:
    num_samples: int = 1000  # image-text pairs
    seed: int = 0
    split: str = "train"  # train | heldout (disjoint sample seeds)
    zh_rate: float = 0.23  # share of pairs captioned in Chinese (the recipe's 77/23)
    word_rate: float = 0.3  # share of images with rendered words (OCR ground truth)
    max_objects: int = 4  # objects per image: 1..max_objects, as many as fit (1: a box is where it is)
    text_rate: float = 0.1  # text-only samples (pure text, text dialogues) per image-text pair
    samples_per_folder: int = 1000
    jpeg_quality: int = 90
    noise: NoiseRates = field(default_factory=NoiseRates)

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {self.split!r}")
        if self.num_samples < 0:
            raise ValueError("num_samples must be >= 0")
        if self.max_objects < 1:
            raise ValueError(f"max_objects must be >= 1, got {self.max_objects}")


def sample_rng(cfg: WorldConfig, index: int, kind: str = "pair") -> random.Random:
    return random.Random(f"{VERSION}:{cfg.seed}:{cfg.split}:{kind}:{index}")


def drawn_noise(cfg: WorldConfig, rng: random.Random) -> str:
    u, acc = rng.random(), 0.0
    for kind in NOISE_KINDS:
        acc += getattr(cfg.noise, kind)
        if u < acc:
            return kind
    return "clean"


@dataclass
class Plan:
    """Everything about a raw pair except its pixels."""

    key: str
    index: int
    noise: str
    lang: str
    scene: Scene
    caption: str  # the raw caption, noise included
    clean_caption: str  # what a perfect cleaner returns ("" when nothing survives)
    tasks: dict
    duplicate_of: int | None = None
    corruption: str | None = None


def plan_sample(cfg: WorldConfig, index: int) -> Plan:
    rng = sample_rng(cfg, index)
    noise = drawn_noise(cfg, rng)
    chinese = rng.random() < cfg.zh_rate
    duplicate_of = None
    if noise == "duplicate":
        duplicate_of = _earlier_clean(cfg, index, rng)
        if duplicate_of is None:  # nothing earlier to copy (the first samples): stays clean
            noise = "clean"
        else:
            source = plan_sample(cfg, duplicate_of)
            return Plan(_key(index), index, noise, source.lang, source.scene, source.caption,
                        source.clean_caption, source.tasks, duplicate_of=duplicate_of)  # fmt: skip
    size_kind = noise if noise in ("aspect", "small") else "clean"
    scene = sample_scene(rng, size_kind, cfg.word_rate, cfg.max_objects)
    tasks = scene_tasks(scene, rng, chinese)
    lang = "zh" if chinese else "en"
    caption = clean = tasks["caption_zh"] if chinese else tasks["caption_en"]
    corruption = None
    if noise == "mismatch":
        caption = _other_caption(cfg, index, scene, chinese, rng)
    elif noise == "language":
        lang = rng.choice(sorted(T.OTHER_LANGUAGES))
        caption = T.caption_other(scene, lang)
    elif noise == "html":
        caption = T.html_junk(clean, rng)
    elif noise == "empty":
        caption, clean = T.empty_junk(rng), ""
    elif noise == "corrupt":
        corruption = rng.choice(("truncated", "garbage"))
    return Plan(_key(index), index, noise, lang, scene, caption, clean, tasks, corruption=corruption)


def _key(index: int) -> str:
    return f"{index:09d}"


def scene_tasks(scene: Scene, rng: random.Random, chinese: bool) -> dict:
    """Ground truth of every task for one scene (the Chinese caption only where ``chinese``)."""
    caption = T.caption_en(scene, rng)
    qa = T.vqa(scene, rng)
    tasks = {
        "caption_en": caption,
        "vqa": qa,
        "ref": T.referring(scene, rng),
        "grounded_caption": T.grounded_caption(scene),
        "ocr": T.ocr(scene),
        "dialogue": T.image_dialogue(scene, caption, qa, rng),
    }
    if chinese:
        tasks["caption_zh"] = T.caption_zh(scene, rng)
    return tasks


def _earlier_clean(cfg: WorldConfig, index: int, rng: random.Random) -> int | None:
    if index == 0:
        return None
    for _ in range(32):
        j = rng.randrange(index)
        if drawn_noise(cfg, sample_rng(cfg, j)) == "clean":
            return j
    return None


def _other_caption(cfg: WorldConfig, index: int, scene: Scene, chinese: bool, rng: random.Random) -> str:
    """A caption of another image of the world, describing a different set of objects."""
    own = {(o.colour, o.shape) for o in scene.objects}
    for _ in range(32):
        k = rng.randrange(2**31)
        other = sample_scene(sample_rng(cfg, k, "mismatch"), "clean", cfg.word_rate, cfg.max_objects)
        if {(o.colour, o.shape) for o in other.objects}.isdisjoint(own):
            return T.caption_zh(other, rng) if chinese else T.caption_en(other, rng)
    # 32 misses in a row do not happen in practice; fail loudly rather than write a matching caption
    raise RuntimeError(f"sample {index}: found no caption of a different image")


def image_bytes(cfg: WorldConfig, plan: Plan) -> bytes:
    """The encoded image (a duplicate shares its source's scene, so its bytes are identical)."""
    data = encode_jpeg(render(plan.scene), cfg.jpeg_quality)
    if plan.corruption == "truncated":
        return data[: len(data) // 3]
    if plan.corruption == "garbage":
        return random.Random(f"{VERSION}:garbage:{plan.index}").randbytes(len(data) // 4 + 64)
    return data


def metadata(cfg: WorldConfig, plan: Plan) -> dict:
    return {
        "key": plan.key,
        "split": cfg.split,
        "index": plan.index,
        "noise": plan.noise,
        "lang": plan.lang,
        "width": plan.scene.width,
        "height": plan.scene.height,
        "caption": plan.caption,
        "clean_caption": plan.clean_caption,
        "duplicate_of": None if plan.duplicate_of is None else _key(plan.duplicate_of),
        "corruption": plan.corruption,
        "tasks": plan.tasks,
        "scene": plan.scene.to_dict(),
    }


def text_sample(cfg: WorldConfig, index: int) -> dict:
    rng = sample_rng(cfg, index, "text")
    key = f"t{index:08d}"
    if rng.random() < 0.5:
        chinese = rng.random() < cfg.zh_rate
        return {
            "key": key,
            "kind": "text",
            "lang": "zh" if chinese else "en",
            "text": T.pure_text(rng, chinese),
        }
    return {"key": key, "kind": "dialogue", "lang": "en", "messages": T.text_dialogue(rng)}


def generate(cfg: WorldConfig, out: str | Path, progress: bool = True, preview: bool = True) -> dict:
    """Write the world to ``out`` (layout: ``python -m data_prep.synthetic --help``); return its summary."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    counts: dict[str, int] = {}
    languages: dict[str, int] = {}
    shown: list[tuple[bytes, dict]] = []  # for preview.png: 8 clean samples, then one of each noise kind
    for index in tqdm(
        range(cfg.num_samples), desc=f"synthetic {cfg.split}", unit="pair", disable=not progress
    ):
        plan = plan_sample(cfg, index)
        data, meta = image_bytes(cfg, plan), metadata(cfg, plan)
        folder = out / f"{index // cfg.samples_per_folder:05d}"
        folder.mkdir(exist_ok=True)
        (folder / f"{plan.key}.jpg").write_bytes(data)
        (folder / f"{plan.key}.txt").write_text(plan.caption, encoding="utf-8")
        (folder / f"{plan.key}.json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
        if counts.get(plan.noise, 0) < (8 if plan.noise == "clean" else 1):
            shown.append((data, meta))
        counts[plan.noise] = counts.get(plan.noise, 0) + 1
        languages[plan.lang] = languages.get(plan.lang, 0) + 1
    if preview and shown:
        write_preview(sorted(shown, key=lambda s: s[1]["noise"] != "clean"), out / "preview.png")
    num_text = round(cfg.num_samples * cfg.text_rate)
    with open(out / "text.jsonl", "w", encoding="utf-8") as f:
        for index in range(num_text):
            f.write(json.dumps(text_sample(cfg, index), ensure_ascii=False) + "\n")
    summary = {
        "version": VERSION,
        "config": asdict(cfg),
        "num_pairs": cfg.num_samples,
        "num_text": num_text,
        "noise_counts": dict(sorted(counts.items())),
        "languages": dict(sorted(languages.items())),
        "seconds": round(time.perf_counter() - start, 2),
    }
    tmp = out / "world.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2))
    tmp.replace(out / "world.json")
    return summary
