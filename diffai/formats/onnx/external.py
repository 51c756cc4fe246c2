"""External data (the ``.onnx.data`` files exporters write beside models over 2 GB), mapped.

An external tensor names a file, an offset and a length. The file must be a
regular file inside the model's folder, reached without a symbolic link: a
location of ``../../etc/shadow``, ``/proc/self/environ`` or a link out of the
folder would put a runner's files into tensor statistics, and so into the
report and the PR comment (the ``onnx`` package refuses them too). Each file is
mapped once, however many tensors it holds; offsets and lengths are checked
against its size before any byte is read.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path, PurePosixPath

import numpy as np

from diffai.formats.mapped import map_bytes
from diffai.formats.onnx.wire import OnnxProblem

#: The keys the ONNX spec defines (ONNX Runtime refuses others; ``basepath`` is onnx's own).
KEYS = frozenset({"location", "offset", "length", "checksum", "basepath"})
_DECIMAL = re.compile(r"[0-9]{1,20}")


class ExternalFiles:
    """The external data files of one model file, each checked and mapped at first use."""

    def __init__(self, model_path: Path) -> None:
        self.folder = model_path.parent
        self._mapped: dict[str, np.ndarray] = {}

    def __call__(self, tensor: str, entries: dict[str, str]) -> np.ndarray:
        """The bytes of ``tensor`` that its checked ``external_data`` ``entries`` point at."""
        location = entries.get("location", "")
        data = self._file(tensor, location)
        offset = _number(tensor, entries, "offset", 0)
        length = _number(tensor, entries, "length", max(data.size - offset, 0))
        if offset + length > data.size:
            raise OnnxProblem(
                f"tensor {tensor!r}: external data at offset {offset:,}, {length:,} bytes, "
                f"runs past the end of {location!r} ({data.size:,} bytes)"
            )
        return data[offset : offset + length]

    def bytes_mapped(self) -> dict[str, int]:
        """The size of each external file read so far: the model's bytes beyond its own file."""
        return {location: data.size for location, data in self._mapped.items()}

    def _file(self, tensor: str, location: str) -> np.ndarray:
        if location not in self._mapped:
            path = self.folder.joinpath(*_parts(tensor, location))
            _check_no_link(tensor, location, self.folder, path)
            self._mapped[location] = _map(tensor, location, path)
        return self._mapped[location]


def _parts(tensor: str, location: str) -> tuple[str, ...]:
    """The location's folders and name, lexically inside the model's folder."""
    problem = ""
    if not location:
        problem = "has external data but no location"
    elif "\x00" in location or "\\" in location or re.match(r"[A-Za-z]:", location):
        problem = f"external data location {location!r:.80} is not a plain relative path"
    elif PurePosixPath(location).is_absolute():
        problem = f"external data location {location!r:.80} is absolute"
    elif not PurePosixPath(location).parts:
        problem = f"external data location {location!r:.80} names no file"
    elif ".." in PurePosixPath(location).parts:
        problem = f"external data location {location!r:.80} leaves the model's folder"
    if problem:
        raise OnnxProblem(f"tensor {tensor!r} {problem}; it must name a file beside the model")
    return PurePosixPath(location).parts


def _check_no_link(tensor: str, location: str, folder: Path, path: Path) -> None:
    current = folder
    for part in path.relative_to(folder).parts:
        current = current / part
        try:
            mode = os.lstat(current).st_mode
        except OSError as exc:
            raise OnnxProblem(
                f"tensor {tensor!r}: external data file {location!r:.80} cannot be opened "
                f"({exc.strerror or exc})"
            ) from None
        if stat.S_ISLNK(mode):
            raise OnnxProblem(
                f"tensor {tensor!r}: external data location {location!r:.80} goes through a "
                "symbolic link; external data is read only from files inside the model's folder"
            )
    if not stat.S_ISREG(mode):
        raise OnnxProblem(f"tensor {tensor!r}: external data {location!r:.80} is not a file")


def _map(tensor: str, location: str, path: Path) -> np.ndarray:
    try:
        return map_bytes(path) if path.stat().st_size else np.empty(0, np.uint8)
    except OSError as exc:
        raise OnnxProblem(
            f"tensor {tensor!r}: cannot map external data {location!r:.80} ({exc.strerror or exc})"
        ) from None


def _number(tensor: str, entries: dict[str, str], key: str, default: int) -> int:
    text = entries.get(key)
    if text is None:
        return default
    if not _DECIMAL.fullmatch(text):
        raise OnnxProblem(f"tensor {tensor!r}: external data {key} {text!r:.40} is not a number")
    return int(text)
