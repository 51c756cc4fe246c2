"""Fuzz the compact safetensors header reader against the strict parse (see README.md here):

python tests/fuzz/fuzz_safetensors_header.py -max_total_time=600 /tmp/sh \
    tests/fuzz/corpus/safetensors_header
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import main

if __name__ == "__main__":
    main("safetensors_header")
