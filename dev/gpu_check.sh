#!/usr/bin/env bash
# On the device machine, in one run (issue 14): the anchor, the GPU tests and `python -m bench gpu`.
#   here:  bash dev/gpu_wheels.sh; mkdir -p .anchor && cp ../shared/anchors/gpu_anchor_mfu.py .anchor/
#          (.whl/ and .anchor/ are ignored, so they travel only as carried)
#   run:   command "bash dev/gpu_check.sh", carry [".whl", ".cache/tokenizer", ".anchor"], timeout_s 570
# Results land in $OUT: anchor.json, tests.log, gpu.json, log.
set -uo pipefail
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/log"
python3 .anchor/gpu_anchor_mfu.py 0.5b 16 | tee "$OUT/anchor.json"
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/stages/test_gpu.py 2>&1 | tee "$OUT/tests.log" | tail -3
timeout 360 python3 -m bench gpu 2>&1 | tail -40 >> "$OUT/log"
cp runs/bench/gpu.json "$OUT/gpu.json" 2>/dev/null
tail -5 "$OUT/log"
