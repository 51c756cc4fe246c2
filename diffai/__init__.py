"""diffai: compare ML model checkpoints tensor by tensor.

>>> report = diffai.compare("base.safetensors", "tuned.safetensors")
>>> report.document["summary"]["changed"]
"""

from __future__ import annotations

from diffai._version import __version__
from diffai.api import compare
from diffai.errors import DiffaiError
from diffai.formats import open_model
from diffai.report import Report

__all__ = ["DiffaiError", "Report", "__version__", "compare", "open_model"]
