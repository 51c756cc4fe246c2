"""Fuzz the peft target (see README.md here):

python tests/fuzz/fuzz_peft.py -max_total_time=600 /tmp/pe tests/fuzz/corpus/peft
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import main

if __name__ == "__main__":
    main("peft")
