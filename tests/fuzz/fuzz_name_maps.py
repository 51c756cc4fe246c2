"""Fuzz the name_maps target (see README.md here):

python tests/fuzz/fuzz_name_maps.py -max_total_time=600 /tmp/name_maps tests/fuzz/corpus/name_maps
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import main

if __name__ == "__main__":
    main("name_maps")
