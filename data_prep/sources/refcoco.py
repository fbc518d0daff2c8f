"""refcoco: referring expressions with their COCO instance boxes, for RefCOCO, RefCOCO+ and RefCOCOg.

The official release (REFER): ``refs(<split_by>).p``, a pickled list of refs (``ref_id``, ``ann_id``,
``image_id``, ``split``, ``sentences`` with ``sent``/``raw``), and ``instances.json`` in COCO's layout
(``images`` with ``file_name``, ``width``, ``height``; ``annotations`` with ``id`` and ``bbox`` as
``[x, y, w, h]`` pixels). The pickle is read by an unpickler that admits plain types only (a pickle naming
any class or function is refused), and the same list as JSON is read too.

One sample per ref in ``refcoco.splits``: its object's box on the 0-1000 grid, once per expression (the
loader draws one per epoch).
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache

from data_prep.config import PrepSettings
from data_prep.sample import ReadError, Sample, sample_key
from data_prep.sources.annotations import (
    BadRecord,
    check_size,
    grid_box,
    image_file,
    index_parts,
    read_json,
    require_dir,
    stored_frame,  # fmt: skip
)
from pipeline.config import ConfigError
from pipeline.data.dataset_files import load_plain_pickle


@dataclass
class Config:
    refs: str = ""  # refs(unc).p, refs(umd).p, refs(google).p, or the same list as .json
    instances: str = ""  # instances.json of the same release
    image_root: str = ""  # COCO train2014 images
    splits: list[str] = field(default_factory=lambda: ["train"])  # train | val | test | testA | testB
    lang: str = "en"


def check(cfg: PrepSettings, src: Config) -> None:
    require_dir(src.image_root, "refcoco.image_root")
    refs(src)
    _instances(src.instances)


def plan(cfg: PrepSettings, src: Config) -> list[dict]:
    return index_parts(len(refs(src)), cfg.samples_per_shard)


def read(cfg: PrepSettings, src: Config, spec: dict) -> Iterator[Sample | ReadError]:
    records, (images, boxes) = refs(src), _instances(src.instances)
    for position, index in enumerate(range(spec["start"], spec["end"])):
        ref = records[index]
        where = f"{src.refs} ref {ref.get('ref_id')}"
        try:
            sentences = ref.get("sentences") if isinstance(ref.get("sentences"), list) else []
            expressions = [e for e in (_expression(s) for s in sentences) if e]
            if not expressions:
                raise BadRecord("no_expression", "no sentence")
            if not (_known(ref.get("image_id"), images) and _known(ref.get("ann_id"), boxes)):
                raise BadRecord("missing_annotation", f"image {ref.get('image_id')} or object "
                                f"{ref.get('ann_id')} is not in {src.instances}")  # fmt: skip
            im = images[ref["image_id"]]
            image = image_file(src.image_root, str(im.get("file_name", "")))
            frame = stored_frame(image)
            check_size(frame, im.get("width"), im.get("height"))
            box = grid_box(boxes[ref["ann_id"]], frame)
        except BadRecord as e:
            yield ReadError(where, e.kind, f"{where}: {e}")
            continue
        tasks = {"ref": [{"expression": e, "box": box} for e in expressions]}
        yield Sample(
            sample_key(spec["part"], position), where, image, None, {"lang": src.lang, "tasks": tasks}
        )


def _known(key: object, index: dict) -> bool:
    return isinstance(key, int | str) and key in index


def _expression(sentence: object) -> str:
    if not isinstance(sentence, dict):
        return ""
    text = sentence.get("sent") or sentence.get("raw")
    return text.strip() if isinstance(text, str) else ""


def refs(src: Config) -> list[dict]:
    """The refs of the configured splits, in file order."""
    return [r for r in _all_refs(src.refs) if r.get("split") in src.splits]


@lru_cache(maxsize=2)
def _all_refs(path: str) -> list[dict]:
    if path.endswith(".json"):
        data = read_json(path, "refcoco.refs")
    else:
        try:
            data = load_plain_pickle(path)
        except (OSError, pickle.UnpicklingError, EOFError, UnicodeDecodeError, ValueError) as e:
            raise ConfigError(f"key 'refcoco.refs': cannot read {path}: {e}") from None
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise ConfigError(f"key 'refcoco.refs': {path} is not a list of refs")
    return data


@lru_cache(maxsize=2)
def _instances(path: str) -> tuple[dict, dict]:
    """image id -> image record, object id -> its box."""
    data = read_json(path, "refcoco.instances")
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("images"), list)
        or not isinstance(data.get("annotations"), list)
    ):
        raise ConfigError(f"key 'refcoco.instances': {path} lacks COCO's 'images' and 'annotations'")
    images = {
        im["id"]: im for im in data["images"] if isinstance(im, dict) and isinstance(im.get("id"), int | str)
    }
    boxes = {
        a["id"]: a.get("bbox")
        for a in data["annotations"]
        if isinstance(a, dict) and isinstance(a.get("id"), int | str)
    }
    return images, boxes
