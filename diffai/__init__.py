"""diffai: compare ML model checkpoints tensor by tensor."""

from __future__ import annotations

__version__ = "0.1.0"
