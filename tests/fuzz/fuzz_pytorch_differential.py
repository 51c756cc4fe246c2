"""Fuzz diffai's PyTorch reader against torch.load(weights_only=True) (see README.md here):

python tests/fuzz/fuzz_pytorch_differential.py -max_total_time=600 /tmp/corpus \
    tests/fuzz/corpus/pytorch
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import main

if __name__ == "__main__":
    main("pytorch_differential")
