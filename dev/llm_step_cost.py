"""dev/LOG.md (issue 30): what a deeper or wider LLM costs a demo stage-2 step on CPU. One forward + backward
+ AdamW step of the model a stage config builds, on micro-batches of 16 real samples from its own loader, on
one thread (a demo rank's share of 2 cores); the median of 3 steps after one warm-up.

    PYTHONPATH=. python dev/llm_step_cost.py RUN/stage2/config.yaml [KEY=VALUE ...]
    # e.g. model.llm.arch.num_hidden_layers=4, or also model.llm.arch.hidden_size=256 intermediate_size=1024

The tower is built fresh (its weights do not change the cost), and the config's shards must exist here.
"""

import statistics
import sys
import time

import torch

from pipeline.config import load_config
from pipeline.data.formats import Formatter
from pipeline.data.loader import build_loader
from pipeline.model.qwenvl import QwenVL
from pipeline.model.vision import image_transform
from pipeline.optim import freeze
from pipeline.schema import StageConfig
from pipeline.tokens import load_tokenizer


def main() -> None:
    torch.set_num_threads(1)
    overrides = ["data.num_workers=0", "model.vision.pretrained=null", "train.init_from=null", *sys.argv[2:]]
    cfg = load_config(StageConfig, sys.argv[1], overrides)
    tokenizer = load_tokenizer(cfg.model.tokenizer)
    torch.manual_seed(0)
    model = QwenVL.from_config(cfg.model, cfg.data.image_size, tokenizer)
    freeze(model, cfg.train.trainable)
    formatter = Formatter(tokenizer, cfg.model.adapter.num_queries, cfg.data.max_length)
    batches = iter(build_loader(cfg.data, formatter, image_transform(cfg.model.vision, cfg.data.image_size),
                                16, 0, 0, 1))  # fmt: skip
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    seconds = []
    for _ in range(4):
        batch = {k: v for k, v in next(batches).items() if torch.is_tensor(v)}
        start = time.perf_counter()
        model(**batch).loss.backward()
        opt.step()
        opt.zero_grad()
        seconds.append(time.perf_counter() - start)
    llm = sum(p.numel() for p in model.llm.parameters()) / 1e6
    print(f"LLM {llm:.2f} M parameters: {statistics.median(seconds[1:]):.2f} s a step")


if __name__ == "__main__":
    main()
