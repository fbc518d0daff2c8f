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
