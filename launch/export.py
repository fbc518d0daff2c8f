"""Write a final/ export as a folder to share, laid out as on the Hugging Face hub (``pipeline.export``).

python -m launch.export --checkpoint runs/demo/stage3/final --out runs/demo/hf
"""

from __future__ import annotations

import argparse
import sys

from pipeline.export import export_hf


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m launch.export", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="a final/ export")
    p.add_argument("--out", required=True, help="the folder to write (replaced)")
    args = p.parse_args(argv)
    print(f"exported: {export_hf(args.checkpoint, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
