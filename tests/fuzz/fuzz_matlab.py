"""Fuzz the MATLAB target, v5 (scipy) and v7.3 (h5py) (see README.md here):

python tests/fuzz/fuzz_matlab.py -fork=1 -ignore_crashes=1 -max_total_time=600 /tmp/mat \
    tests/fuzz/corpus/matlab

scipy's own segfaults are expected here (diffai isolates them for users), hence
``-fork=1 -ignore_crashes=1``: the run goes on, and each crash is kept.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import main

if __name__ == "__main__":
    main("matlab")
