#!/usr/bin/env bash
# On the device machine, in one call (issues 14, 29): the anchor, the GPU tests, then `python -m bench gpu`
# (stages 1-3 on bench-1b, each with every speed lever off and on, and each lever alone on stage 2) in the time
# the call has left: the bench runs what fits and lists the rest under `skipped`.
#   here:  bash dev/gpu_wheels.sh; mkdir -p .anchor && cp ../shared/anchors/gpu_anchor_mfu.py .anchor/
#          (.whl/ and .anchor/ are ignored, so they travel only as carried)
#   run:   command "bash dev/gpu_check.sh 560", carry [".whl", ".cache/tokenizer", ".anchor"], timeout_s 590
# Results land in $OUT: anchor.json, tests.log, gpu.json (rewritten after each measurement), log.
set -uo pipefail
LIMIT=${1:-560}  # seconds this script may take, start to end
START=$SECONDS
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/log"
timeout 90 python3 .anchor/gpu_anchor_mfu.py 0.5b 16 | tee "$OUT/anchor.json"
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/stages/test_gpu.py 2>&1 | tee "$OUT/tests.log" | tail -3
LEFT=$((LIMIT - (SECONDS - START) - 20))
echo "bench gpu: ${LEFT} s left" | tee -a "$OUT/log"
mkdir -p runs/bench && ln -sf "$OUT/gpu.json" runs/bench/gpu.json  # each partial write lands in $OUT at once
BENCH_GPU_BUDGET_S=$((LEFT - 60)) timeout "$LEFT" python3 -m bench gpu 2>&1 | tail -40 >> "$OUT/log"
tail -5 "$OUT/log"
