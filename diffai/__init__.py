"""diffai: compare ML model checkpoints tensor by tensor.

>>> report = diffai.compare("base.safetensors", "tuned.safetensors", policy="policy.yaml")
>>> report.document["summary"]["changed"], report.verdict

The API loads numpy and the readers on first use, so importing the package
(and ``diffai --version``) stays quick.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from diffai._version import __version__
from diffai.errors import DiffaiError

if TYPE_CHECKING:
    from diffai.api import compare
    from diffai.formats import open_model
    from diffai.report import Report, report_schema

__all__ = ["DiffaiError", "Report", "__version__", "compare", "open_model", "report_schema"]

_LAZY = {
    "compare": "diffai.api",
    "open_model": "diffai.formats",
    "Report": "diffai.report",
    "report_schema": "diffai.report",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'diffai' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_LAZY[name]), name)
