"""Stage 3 (supervised fine-tuning, ViT frozen, 448 px): configs/stage3.yaml plus `key=value` overrides.

deepspeed --num_gpus 8 launch/stage3.py [--config FILE] [key=value ...]
DS_ACCELERATOR=cpu deepspeed --num_gpus 2 launch/stage3.py      # the tiny default on a laptop CPU
torchrun --nproc_per_node 8 launch/stage3.py ...   |   python launch/stage3.py ...  (one process)
"""

import sys

from stages.cli import main

if __name__ == "__main__":
    sys.exit(main("stage3", sys.argv[1:]))
