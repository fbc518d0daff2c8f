"""Raw tars for the shard-format tests (the synthetic world's clean shards: data_prep.synthetic.shards)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    """A tar of exactly these members, in order (repeated names too, which webdataset's writer refuses)."""
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def one_task_shards(out: Path, num: int, task: str, per_shard: int, seed: int = 0) -> str:
    """Shards of ``num`` synthetic-world images with one task's ground truth each, as real datasets come:
    ``caption`` (LAION: a caption, no other task) or one of the metadata tasks (``ref``: RefCOCO)."""
    import json

    from data_prep.synthetic.shards import world_samples, write_shards

    samples = []
    for sample in world_samples(num, 0, seed):
        meta = json.loads(sample["json"])
        tasks = meta.pop("tasks", {})
        if task != "caption":
            meta.pop("caption", None)
            sample.pop("txt", None)
            meta["tasks"] = {task: tasks[task]}
        sample["json"] = json.dumps(meta).encode()
        samples.append(sample)
    return write_shards(samples, out, per_shard)
