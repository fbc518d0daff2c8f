"""Stage 1 (pretraining, LLM frozen, 224 px): configs/stage1.yaml plus `key=value` overrides.

deepspeed --num_gpus 8 launch/stage1.py [--config FILE] [key=value ...]
DS_ACCELERATOR=cpu deepspeed --num_gpus 2 launch/stage1.py      # the tiny default on a laptop CPU
torchrun --nproc_per_node 8 launch/stage1.py ...   |   python launch/stage1.py ...  (one process)
"""

import sys

from stages.cli import main

if __name__ == "__main__":
    sys.exit(main("stage1", sys.argv[1:]))
