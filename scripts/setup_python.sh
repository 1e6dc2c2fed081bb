#!/usr/bin/env bash
# Python tools for fixtures and benchmarks only (never a runtime dependency of the library):
# PyTorch, timm, NumPy and safetensors from PyPI (the benchmarks race timm's ViTs), and with
# --fixtures also what the fixture generators import: Pillow, torchvision, transformers.
# torchvision and transformers are installed --no-deps so they never replace the torch build.
set -euo pipefail
python3 -c "import torch, timm, numpy, safetensors" 2>/dev/null || python3 -m pip install --quiet torch timm numpy safetensors
if [ "${1:-}" = "--fixtures" ]; then
  python3 -c "import PIL" 2>/dev/null || python3 -m pip install --quiet pillow
  python3 -c "import torchvision" 2>/dev/null || python3 -m pip install --quiet --no-deps torchvision
  python3 -c "import transformers" 2>/dev/null || python3 -m pip install --quiet --no-deps transformers tokenizers huggingface_hub
fi
