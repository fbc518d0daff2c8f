"""Reading the datasets' own annotation files safely, for the importers (data_prep) and the benchmarks alike.

REFER's ``refs(<split_by>).p`` is a pickle; a pickle can run any code when loaded, so it is read by an
unpickler that admits plain types only (lists, dicts, strings, numbers): one that names a class or a function
is refused before anything of it runs.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any


class PlainUnpickler(pickle.Unpickler):
    """Lists, dicts, strings and numbers only: a pickle that names a class or function is refused."""

    def find_class(self, module: str, name: str):  # noqa: ANN201 - never returns
        raise pickle.UnpicklingError(f"refusing {module}.{name}: only plain types are read")


def load_plain_pickle(path: str | Path) -> Any:
    """A pickle of plain types (Python 2 protocols included, their strings read as UTF-8)."""
    return PlainUnpickler(io.BytesIO(Path(path).read_bytes()), encoding="utf-8").load()
