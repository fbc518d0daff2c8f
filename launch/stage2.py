"""Stage 2 (multi-task pretraining, all unfrozen, 448 px): configs/stage2.yaml plus `key=value` overrides.

deepspeed --num_gpus 8 launch/stage2.py [--config FILE] [key=value ...]
DS_ACCELERATOR=cpu deepspeed --num_gpus 2 launch/stage2.py      # the tiny default on a laptop CPU
torchrun --nproc_per_node 8 launch/stage2.py ...   |   python launch/stage2.py ...  (one process)
"""

import sys

from stages.cli import main

if __name__ == "__main__":
    sys.exit(main("stage2", sys.argv[1:]))
