"""`make bench`: every benchmark reports ratios against a baseline measured in the same run and writes
runs/bench/<name>.json.  python -m bench [name ...]"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

BENCHMARKS = ["tiny_step", "world", "loader", "packing", "prep", "train"]
ON_REQUEST = ["gpu"]  # python -m bench gpu: the stages' speed on a GPU (on CPU it only checks itself)
OUT = Path("runs/bench")


def main(argv: list[str]) -> int:
    names = argv or BENCHMARKS
    unknown = sorted(set(names) - set(BENCHMARKS + ON_REQUEST))
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {unknown}; choose from {BENCHMARKS + ON_REQUEST}")
    OUT.mkdir(parents=True, exist_ok=True)
    for name in names:
        result = importlib.import_module(f"bench.{name}").run()
        (OUT / f"{name}.json").write_text(json.dumps(result, indent=2))
        print(f"{name}: {json.dumps(result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
