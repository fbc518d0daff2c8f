"""python -m data_prep.synthetic --out data/raw/synthetic --num-samples 5000 --seed 0"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from data_prep.synthetic.world import NOISE_KINDS, NoiseRates, WorldConfig, generate, split_noise

EPILOG = """\
output layout (img2dataset's "files" format plus ground truth):
  OUT/00000/000000000.jpg   image (JPEG; 'corrupt' noise samples hold bytes that do not decode)
  OUT/00000/000000000.txt   raw caption, noise included
  OUT/00000/000000000.json  noise label, language, size, clean caption, ground truth for every task, scene
  OUT/text.jsonl            text-only samples: pure text and ChatML dialogues without images
  OUT/world.json            generator config, counts per noise label and language, seconds taken
  OUT/preview.png           contact sheet: clean samples and one of each noise kind, ground truth drawn on

noise kinds (rate of each with --noise KIND=RATE): """ + ", ".join(NOISE_KINDS)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m data_prep.synthetic",
        description="Generate the synthetic image-text world: deterministic raw pairs with ground truth "
        "for every Qwen-VL task and labelled noise for every data-prep filter.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--num-samples", type=int, default=1000, help="image-text pairs (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="world seed (default 0)")
    p.add_argument("--split", choices=("train", "heldout"), default="train",
                   help="heldout draws disjoint sample seeds and, unless --noise is given, has no noise")  # fmt: skip
    p.add_argument("--zh-rate", type=float, default=0.23, help="share of Chinese captions (default 0.23)")
    p.add_argument(
        "--word-rate", type=float, default=0.3, help="share of images with rendered words (default 0.3)"
    )
    p.add_argument("--text-rate", type=float, default=0.1, help="text-only samples per pair (default 0.1)")
    p.add_argument("--max-objects", type=int, default=4, help="objects per image: 1..N (default 4)")
    p.add_argument("--noise", action="append", default=[], metavar="KIND=RATE", help="set one noise rate")
    p.add_argument("--no-noise", action="store_true", help="all noise rates 0")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> WorldConfig:
    rates = asdict(NoiseRates() if args.noise else split_noise(args.split))
    if args.no_noise:
        rates = dict.fromkeys(rates, 0.0)
    for item in args.noise:
        kind, sep, value = item.partition("=")
        if not sep or kind not in rates:
            raise SystemExit(f"--noise {item!r}: expected KIND=RATE with KIND in {NOISE_KINDS}")
        rates[kind] = float(value)
    try:
        return WorldConfig(
            num_samples=args.num_samples, seed=args.seed, split=args.split, zh_rate=args.zh_rate,
            word_rate=args.word_rate, text_rate=args.text_rate, max_objects=args.max_objects,
            noise=NoiseRates(**rates),
        )  # fmt: skip
    except ValueError as e:
        raise SystemExit(f"invalid world config: {e}") from None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    summary = generate(config_from_args(args), args.out, progress=not args.quiet)
    print(
        json.dumps({k: summary[k] for k in ("num_pairs", "num_text", "noise_counts", "languages", "seconds")})
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
