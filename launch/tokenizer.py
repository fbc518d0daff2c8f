"""Build (or reuse) the offline tokenizer from a text corpus (``pipeline.tokenizer``).

python -m data_prep.synthetic.corpus --out .cache/corpus.jsonl
python -m launch.tokenizer --corpus .cache/corpus.jsonl --out .cache/tokenizer      (make tokenizer)
"""

from __future__ import annotations

import argparse
import json
import sys

from pipeline.tokenizer import BUILD_INFO, MAX_VOCAB, ensure_tokenizer, read_corpus


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m launch.tokenizer", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--corpus", required=True, help="JSONL file of texts (python -m data_prep.synthetic.corpus)"
    )
    p.add_argument("--out", default=".cache/tokenizer", help="output folder (default .cache/tokenizer)")
    p.add_argument(
        "--vocab-size", type=int, default=MAX_VOCAB, help="largest BPE vocabulary, special tokens included"
    )
    p.add_argument("--force", action="store_true", help="rebuild even if the cached build matches")
    args = p.parse_args(argv)
    path, built = ensure_tokenizer(args.out, read_corpus(args.corpus), args.vocab_size, args.force)
    info = json.loads((path / BUILD_INFO).read_text())
    print(f"tokenizer {'built' if built else 'up to date'}: {path} ({info['vocab_size']} tokens)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
