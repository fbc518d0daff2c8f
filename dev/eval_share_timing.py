"""dev/LOG.md (issue 30): the stage-end held-out evaluation of an export, by one process or shared by 2 ranks
(pipeline.eval.Share) on torch's default threads or one thread each; prints the seconds and writes
/tmp/eval-<mode>.json (the same bytes in every mode).

    PYTHONPATH=. LIMIT=100 python dev/eval_share_timing.py alone|share|share1 EXPORT_DIR
"""

import os
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pipeline.data.shard_format import expand_urls
from pipeline.distributed import free_port
from pipeline.eval import Share, evaluate_export

SHARDS = "data/heldout/shards/{000000..000000}.tar"


def run(rank: int, world: int, threads: int, port: int, final: str, out: str) -> None:
    if threads:
        torch.set_num_threads(threads)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    start = time.perf_counter()
    limit = int(os.environ.get("LIMIT", 100))
    evaluate_export(final, expand_urls(SHARDS), limit=limit, out=out, share=Share(rank, world))
    if rank == 0:
        print(f"world {world}, {torch.get_num_threads()} thread(s) each: {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    mode, final = sys.argv[1], sys.argv[2]
    out = f"/tmp/eval-{mode}.json"
    if mode == "alone":
        run(0, 1, 0, 0, final, out)
    else:
        mp.spawn(run, args=(2, 1 if mode == "share1" else 0, free_port(), final, out), nprocs=2)
