"""coco: image captions from COCO-style files, for COCO Captions, Flickr30k and the like (``coco.input``).

Two official layouts, told apart by their keys:

- COCO's ``captions_<split>.json``: ``images`` (``id``, ``file_name``, ``width``, ``height``) and
  ``annotations`` (``image_id``, ``caption``); images under ``coco.image_root``.
- Karpathy's split file (``dataset_coco.json``, ``dataset_flickr30k.json``): ``images``, each with
  ``filename``, optional ``filepath``, ``split`` and ``sentences`` (``raw``); ``coco.splits`` picks the splits
  (train + restval for training, as the captioning literature does).

One sample per image: its first caption as the ``.txt`` and every caption in ``captions`` (the loader draws
one per epoch; evaluation scores against all).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from data_prep.config import PrepSettings
from data_prep.sample import ReadError, Sample, sample_key
from data_prep.sources.annotations import BadRecord, image_file, index_parts, read_json, require_dir
from pipeline.config import ConfigError


@dataclass
class Config:
    input: str = ""  # captions_<split>.json or a Karpathy dataset_<name>.json
    image_root: str = ""  # the folder the file's image names are relative to
    splits: list[str] = field(default_factory=lambda: ["train", "restval"])  # Karpathy files only
    lang: str = "en"


def check(cfg: PrepSettings, src: Config) -> None:
    require_dir(src.image_root, "coco.image_root")
    images(src)


def plan(cfg: PrepSettings, src: Config) -> list[dict]:
    return index_parts(len(images(src)), cfg.samples_per_shard)


def read(cfg: PrepSettings, src: Config, spec: dict) -> Iterator[Sample | ReadError]:
    records = images(src)
    for position, index in enumerate(range(spec["start"], spec["end"])):
        name, captions, where = records[index]
        try:
            if not captions:
                raise BadRecord("no_caption", "the image has no caption")
            image = image_file(src.image_root, name)
        except BadRecord as e:
            yield ReadError(where, e.kind, f"{where}: {e}")
            continue
        meta = {"lang": src.lang, "tasks": {}, "captions": captions}
        yield Sample(sample_key(spec["part"], position), where, image, captions[0], meta)


def images(src: Config) -> list[tuple[str, list[str], str]]:
    """(image path, captions, record name) per image, in file order."""
    data = read_json(src.input, "coco.input")
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ConfigError(f"key 'coco.input': {src.input} has no 'images' list")
    if "annotations" in data:
        if not isinstance(data["annotations"], list):
            raise ConfigError(f"key 'coco.input': {src.input}: 'annotations' is not a list")
        return _coco(data, src.input)
    return _karpathy(data, src)


def _coco(data: dict, path: str) -> list[tuple[str, list[str], str]]:
    captions: dict = {}
    for a in data["annotations"]:
        if (
            isinstance(a, dict)
            and _id(a.get("image_id"))
            and isinstance(a.get("caption"), str)
            and a["caption"].strip()
        ):
            captions.setdefault(a["image_id"], []).append(a["caption"].strip())
    return [(str(im.get("file_name", "")), captions.get(im["id"], []) if _id(im.get("id")) else [],
             f"{path} image {im.get('id')}") for im in data["images"] if isinstance(im, dict)]  # fmt: skip


def _id(value: object) -> bool:
    return isinstance(value, int | str)


def _karpathy(data: dict, src: Config) -> list[tuple[str, list[str], str]]:
    out = []
    for im in data["images"]:
        if not isinstance(im, dict) or im.get("split") not in src.splits:
            continue
        name = "/".join(str(p) for p in (im.get("filepath"), im.get("filename")) if p)
        sentences = im.get("sentences") if isinstance(im.get("sentences"), list) else []
        raw = [s.get("raw") for s in sentences if isinstance(s, dict)]
        out.append(
            (name, [r.strip() for r in raw if isinstance(r, str) and r.strip()], f"{src.input} {name}")
        )
    return out
