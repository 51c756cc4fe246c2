"""Readers: one module per format, all satisfying ``Reader``, registered in ``READERS``.

``open_model`` picks the reader by content first (magic bytes, zip members)
and by file extension second, so a misnamed file still reads correctly; a Git
LFS pointer, or a format diffai does not read yet, is named by ``identify``.
"""

from __future__ import annotations

import importlib
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from diffai.errors import UnreadableModel, UsageError
from diffai.formats import identify
from diffai.formats.limits import check_model
from diffai.formats.pairmemo import opening_a_pair
from diffai.model import Model
from diffai.sources import is_remote

if TYPE_CHECKING:
    from diffai.sources.remote import Settings


class Reader(Protocol):
    """What a format module provides."""

    FORMAT: str
    EXTENSIONS: tuple[str, ...]

    def matches(self, path: Path, head: bytes) -> bool:
        """Whether the content (not the name) says this is the reader's format."""

    def read(self, path: Path) -> Model:
        """Open ``path`` lazily; raise ``UnreadableModel`` subclasses on bad input."""


#: Each format's reader module, in the order content is tried: tensorflow and peft first,
#: since the sharded reader takes any folder, theirs too. A reader is imported when first
#: tried (``import_reader``): importing all twelve was 0.1 s of every run's start, and a
#: safetensors file is claimed by the fourth.
READERS: dict[str, str] = {
    "tensorflow": "diffai.formats.tensorflow",
    "peft": "diffai.adapters.reader",
    "folder": "diffai.formats.sharded",
    "safetensors": "diffai.formats.safetensors",
    "torchscript": "diffai.formats.pytorch.torchscript",
    "pytorch": "diffai.formats.pytorch",
    "numpy": "diffai.formats.numpy",
    "matlab": "diffai.formats.matlab",
    "keras": "diffai.formats.keras",
    "onnx": "diffai.formats.onnx",
    "gguf": "diffai.formats.gguf",
    "tflite": "diffai.formats.tflite",
}


def import_reader(name: str) -> Reader:
    """The reader of format ``name``, a key of ``READERS``."""
    module: Reader = importlib.import_module(READERS[name])  # type: ignore[assignment]
    return module


def open_model(path: str | Path, format: str | None = None) -> Model:
    """Open a model artifact (file or folder) with the reader its content calls for.

    Whatever the reader, the model must then pass ``check_model``. ``hf://``, ``s3://``
    and ``http(s)://`` paths are read where they live (``formats.remote``).
    """
    if is_remote(path):
        from diffai.formats import remote
        from diffai.sources.remote import Settings

        model = remote.open_remote(str(path), format, Settings.from_environ()).model
        check_model(str(path), model)
        return model
    path = Path(path)
    _check_kind(path)
    reader = choose_reader(path, format)
    model = reader.read(path)
    check_model(path, model)
    return model


def open_models(baseline: str | Path, candidate: str | Path, format: str | None = None,
                settings: Settings | None = None) -> tuple[Model, Model]:  # fmt: skip
    """Both sides of a comparison; a header both sides hold byte for byte is parsed once
    (``formats.pairmemo``), and when either is remote, files the store proves identical on
    both sides are read once (``formats.remote.open_pair``)."""
    with opening_a_pair():
        if not (is_remote(baseline) or is_remote(candidate)):
            return open_model(baseline, format), open_model(candidate, format)
        from diffai.formats import remote
        from diffai.sources.remote import Settings

        settings = settings or Settings.from_environ()
        pair = remote.open_pair(str(baseline), str(candidate), format, settings)
    for text, model in zip((baseline, candidate), pair, strict=True):
        check_model(text, model)
    return pair


def _check_kind(path: Path) -> None:
    """A regular file one may read, or a folder: a FIFO or a device would block a reader."""
    try:
        mode = os.stat(path).st_mode
        if stat.S_ISREG(mode):
            path.open("rb").close()  # so no reader meets "permission denied" unprepared
    except FileNotFoundError:
        raise UnreadableModel(path, "no such file or directory") from None
    except OSError as exc:  # a symlink loop, no permission, a folder that cannot be searched
        raise UnreadableModel(path, f"cannot open: {exc.strerror or exc}") from exc
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise UnreadableModel(path, "not a regular file or a folder")


def choose_reader(path: Path, format: str | None = None) -> Reader:
    """The reader for one model file or folder, a shard included: forced, or by its content.

    Every model file is opened here first, so ``identify.probe`` refuses a Git LFS
    pointer whatever led to it; then a format diffai does not read is named, by
    content before the readers' extensions, by name after them.
    """
    forced = import_reader(check_format_name(format)) if format else None
    found = identify.probe(path)
    if forced is not None:
        return forced
    if found.is_folder:  # the sharded reader takes any folder, so foreign ones are named first
        identify.refuse_by_content(found)
    reader = _claimed_by_content(found)
    if reader is None:
        identify.refuse_by_content(found)
        reader = _claimed_by_extension(path)
    if reader is None:
        identify.refuse_by_name(found)
        raise _unrecognized(path)
    return reader


def _claimed_by_content(found: identify.Probe) -> Reader | None:
    return next((r for r in map(import_reader, READERS) if r.matches(found.path, found.head)), None)


def _claimed_by_extension(path: Path) -> Reader | None:
    suffix = path.suffix.lower()
    return next((r for r in map(import_reader, READERS) if suffix in r.EXTENSIONS), None)


def _unrecognized(path: Path) -> UnreadableModel:
    known = ", ".join(sorted(READERS))
    return UnreadableModel(path, f"unrecognized model format; force one with --format ({known})")


def check_format_name(name: str) -> str:
    if name not in READERS:
        raise UsageError(f"unknown format {name!r}; choose one of {', '.join(sorted(READERS))}")
    return name
