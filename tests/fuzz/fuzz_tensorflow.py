"""Fuzz the TensorFlow target, a checkpoint index or a GraphDef (see README.md here):

python tests/fuzz/fuzz_tensorflow.py -max_len=65536 -max_total_time=600 /tmp/t \
    tests/fuzz/corpus/tensorflow

Every failure here is diffai's own: no C library parses these bytes.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import main

if __name__ == "__main__":
    main("tensorflow")
