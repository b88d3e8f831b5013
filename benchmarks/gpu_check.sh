#!/usr/bin/env bash
# One prepared check for a machine with a CUDA GPU (under 8 minutes): installs what is missing,
# runs the tests marked `gpu`, then prints one table of training and extraction throughput.
#   bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device visible'" 
# torch is normally already there on a GPU machine; install the rest without touching it.
grep -v -E '^(torch|torchvision)==' requirements.txt > /tmp/vlmsae-requirements-gpu.txt
python3 -m pip install -q -r /tmp/vlmsae-requirements-gpu.txt overcomplete
python3 -m pip install -q --no-deps -e .
timeout 240 python3 -m pytest -q -m gpu tests/ -p no:cacheprovider
cd benchmarks && timeout 240 python3 gpu_throughput.py
