#!/usr/bin/env bash
# Python tools for fixtures and benchmarks only (never a runtime dependency of the library):
# PyTorch, NumPy and safetensors from PyPI.
set -euo pipefail
python3 -c "import torch, numpy, safetensors" 2>/dev/null && exit 0
python3 -m pip install --quiet torch numpy safetensors
