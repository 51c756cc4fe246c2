"""Fuzz the ONNX target (see README.md here): diffai's hand-written protobuf walker.

python tests/fuzz/fuzz_onnx.py -max_total_time=600 /tmp/onnx tests/fuzz/corpus/onnx
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import main

if __name__ == "__main__":
    main("onnx")
