"""Fuzz the tflite target (see README.md here):

python tests/fuzz/fuzz_tflite.py -max_total_time=600 /tmp/tflite tests/fuzz/corpus/tflite
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import main

if __name__ == "__main__":
    main("tflite")
