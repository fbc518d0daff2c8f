"""Stage 0 (the LLM's text warm-start, for the embedded default): configs/stage0.yaml plus `key=value` overrides.

deepspeed --num_gpus 8 launch/stage0.py [--config FILE] [key=value ...]
DS_ACCELERATOR=cpu deepspeed --num_gpus 2 launch/stage0.py      # the tiny default on a laptop CPU
torchrun --nproc_per_node 8 launch/stage0.py ...   |   python launch/stage0.py ...  (one process)
"""

import sys

from stages.cli import main

if __name__ == "__main__":
    sys.exit(main("stage0", sys.argv[1:]))
