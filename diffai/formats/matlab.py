"""Placeholder until the matlab reader lands."""

from __future__ import annotations

from pathlib import Path

from diffai.errors import UnreadableModel
from diffai.model import Model

FORMAT = "matlab"
EXTENSIONS: tuple[str, ...] = ()


def matches(path: Path, head: bytes) -> bool:
    return False


def read(path: Path) -> Model:
    raise UnreadableModel(path, "the matlab reader is not written yet")
