"""Fuzz the Keras target, .h5 and .keras (h5py) (see README.md here):

python tests/fuzz/fuzz_keras.py -max_len=65536 -max_total_time=600 /tmp/k tests/fuzz/corpus/keras

Like the MATLAB target, HDF5's own signals are expected (diffai isolates them for
users): rerun it in a loop until the time is up.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import main

if __name__ == "__main__":
    main("keras")
