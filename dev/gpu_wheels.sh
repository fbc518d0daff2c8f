#!/usr/bin/env bash
# Here, before a device session (dev/gpu_check.sh runs there): the wheels the GPU machine lacks, into .whl/
# (ignored; carried). Its image has torch, triton, timm, numpy, pillow, psutil, tokenizers, safetensors,
# huggingface-hub, msgpack, ninja, py-cpuinfo, nvidia-ml-py, einops, regex (device KINDS.md); these are the rest,
# at the versions constraints.txt pins. deepspeed ships as a source archive: built here as a pure wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
pin() { grep -i "^$1==" constraints.txt | head -1; }
mkdir -p .whl
for name in webdataset open_clip_torch braceexpand torchdata omegaconf ftfy wcwidth hjson pydantic \
            pydantic_core annotated-types typing-inspection transformers liger-kernel; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "$(pin "$name" || echo "$name")"
done
DS_BUILD_OPS=0 .venv/bin/pip wheel -q --no-deps --no-build-isolation -w .whl "$(pin deepspeed)"
du -sh .whl
