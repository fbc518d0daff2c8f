"""`make demo`: the embedded default end to end. The chained run (prep -> stage 1 -> 2 -> 3 -> eval) lands with
the demo issue; until then this runs what exists and says plainly what does not."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

NOT_BUILT = [
    "the chain of prep -> stage 1 -> 2 -> 3 in this command (each stage runs on its own: "
    "`DS_ACCELERATOR=cpu deepspeed --num_gpus 2 launch/stage1.py`, see the README)",
    "the report (evaluation exists: `python -m pipeline.eval`; generation: `python -m pipeline.generate`)",
]


def main() -> int:
    out = Path("data/demo")
    # a small world; the CLIP filter is off here because its scorer trains for minutes (`make prep` trains it)
    prep = ["--config", "configs/data/synthetic.yaml", f"output_dir={out}", "num_samples=300",
            "samples_per_shard=100", "filters.clip.enabled=false"]  # fmt: skip
    subprocess.run([sys.executable, "-m", "data_prep", *prep], check=True)
    tok = json.loads(Path(".cache/tokenizer/build_info.json").read_text())
    print(
        f"\nbuilt: cleaned synthetic shards in {out}/shards (plots in {out}/plots), "
        f"offline tokenizer in .cache/tokenizer ({tok['vocab_size']} tokens)"
    )
    print("demo is NOT complete - not built yet:")
    for item in NOT_BUILT:
        print(f"  - {item}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
