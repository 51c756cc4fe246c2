"""What a model path is before any reader parses it: a Git LFS pointer, or a format diffai lacks.

Two mistakes end in baffling parser errors unless they are named first:

- a checkout without Git LFS leaves a ~130-byte pointer where the model
  should be, and a reader then misreads its text as a header; ``probe``
  refuses a pointer for every path (forced ``--format``, each shard), since
  every model file is opened through it;
- a real model in a format diffai does not read yet (Core ML, ExecuTorch ...)
  would otherwise get "unrecognized" or, under a guessed ``--format``, a
  misleading header error. ``FOREIGN`` names each by content (magic bytes,
  protobuf fields, zip members) and by name second, with what to do instead.

``FOREIGN`` is a table so that a reader for one of these formats takes its
entry over: drop the row, register the reader. Nothing here reads more than
``HEAD_BYTES`` of a file.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from diffai.errors import UnreadableModel

#: Enough for every signature below.
HEAD_BYTES = 4096
#: The Git LFS spec: a pointer is under 1024 bytes and starts with exactly this line.
LFS_FIRST_LINE = b"version https://git-lfs.github.com/spec/v1\n"
LFS_MAX_BYTES = 1024
LFS_SIZE_LINE = re.compile(rb"^size (\d{1,20})\r?$", re.MULTILINE)
#: GGML's pre-GGUF magics ('ggml', 'ggmf', 'ggjt', 'ggla', 'ggsn'), stored as little-endian u32.
GGML_MAGICS = (b"lmgg", b"fmgg", b"tjgg", b"algg", b"nsgg")
#: Protobuf wire types a model's top-level fields use: varint, fixed64, length-delimited, fixed32.
WIRE_VARINT, WIRE_FIXED64, WIRE_LENGTH, WIRE_FIXED32 = 0, 1, 2, 5
#: onnx.proto ModelProto: ir_version 1, producer_name 2 ... graph 7 ... configuration 26
ONNX_FIELDS = {
    (1, WIRE_VARINT), (2, WIRE_LENGTH), (3, WIRE_LENGTH), (4, WIRE_LENGTH), (5, WIRE_VARINT),
    (6, WIRE_LENGTH), (7, WIRE_LENGTH), (8, WIRE_LENGTH), (14, WIRE_LENGTH), (20, WIRE_LENGTH),
    (25, WIRE_LENGTH), (26, WIRE_LENGTH),
}  # fmt: skip
ONNX_GRAPH = (7, WIRE_LENGTH)
#: Core ML Model.proto: specificationVersion 1, description 2, isUpdatable 10, the model 200 on.
COREML_HEADER_FIELDS = {(1, WIRE_VARINT), (2, WIRE_LENGTH), (10, WIRE_VARINT)}
COREML_FIRST_TYPE_FIELD = 200


@dataclass(frozen=True)
class Probe:
    """The start of a model file (empty for a folder), and its size."""

    path: Path
    head: bytes
    size: int

    @property
    def is_folder(self) -> bool:
        return self.path.is_dir()


def probe(path: Path) -> Probe:
    """The path's first bytes; a Git LFS pointer is refused here, whatever route led to it."""
    if path.is_dir():
        return Probe(path, b"", 0)
    try:
        with path.open("rb") as handle:
            head = handle.read(HEAD_BYTES)
        size = path.stat().st_size
    except OSError as exc:
        raise UnreadableModel(path, f"cannot read: {exc.strerror or exc}") from exc
    if size < LFS_MAX_BYTES and head.startswith(LFS_FIRST_LINE):
        raise UnreadableModel(path, lfs_problem(head))
    return Probe(path, head, size)


def lfs_problem(pointer: bytes) -> str:
    stated = LFS_SIZE_LINE.search(pointer)
    real_file = f"the real file ({_size_text(int(stated.group(1)))})" if stated else "the real file"
    return (
        f"this is a Git LFS pointer, not the model: {real_file} was never downloaded; "
        "run git lfs pull, or in GitHub Actions give actions/checkout with: {lfs: true}"
    )


def _size_text(size: int) -> str:
    """Exact bytes, and a rounded size a reader grasps at once when it is large."""
    exact = f"{size:,} bytes"
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20)):
        if size >= scale:
            return f"{exact}, {size / scale:.1f} {unit}"
    return exact


# --- content tests ------------------------------------------------------------------------


def _proto_fields(head: bytes) -> list[tuple[int, int, int]]:
    """The top-level (field, wire type, value or length) of a protobuf message, as far as the
    head shows them; [] as soon as the bytes cannot be protobuf."""
    fields: list[tuple[int, int, int]] = []
    position = 0
    while position < len(head):
        tag, position = _varint(head, position)
        if tag < 0:
            break
        field, wire = tag >> 3, tag & 7
        if field == 0 or wire not in _WIRE_SIZES:
            return []
        value, position = _wire_value(head, position, wire)
        if value < 0:
            break  # the field runs past the head: its tag is still evidence
        fields.append((field, wire, value))
        position += value if wire == WIRE_LENGTH else 0
    return fields


_WIRE_SIZES = {WIRE_VARINT: 0, WIRE_FIXED64: 8, WIRE_LENGTH: 0, WIRE_FIXED32: 4}


def _wire_value(head: bytes, position: int, wire: int) -> tuple[int, int]:
    """A varint's value or a length prefix (position after it); a fixed field's size is skipped."""
    if wire in (WIRE_VARINT, WIRE_LENGTH):
        return _varint(head, position)
    return 0, position + _WIRE_SIZES[wire]


def _varint(data: bytes, position: int) -> tuple[int, int]:
    """A base-128 varint at ``position``, or -1 when the data ends first or it exceeds 10 bytes."""
    value = 0
    for shift, byte in enumerate(data[position : position + 10]):
        value |= (byte & 0x7F) << (7 * shift)
        if byte < 0x80:
            return value, position + shift + 1
    return -1, len(data)


def _wire_fields(head: bytes) -> list[tuple[int, int]]:
    return [(field, wire) for field, wire, _ in _proto_fields(head)]


def looks_like_onnx(head: bytes) -> bool:
    """``ir_version`` first, a graph, and no field ModelProto lacks (the ONNX reader's test)."""
    fields = _wire_fields(head)
    return (
        bool(fields)
        and fields[0] == (1, WIRE_VARINT)
        and ONNX_GRAPH in fields
        and all(field in ONNX_FIELDS for field in fields)
    )


def _is_coreml(found: Probe) -> bool:
    """``specificationVersion``, a description, then one of the model-type fields (200 on)."""
    fields = _wire_fields(found.head)
    types = [field for field, wire in fields if field >= COREML_FIRST_TYPE_FIELD]
    header = [field for field in fields if field[0] < COREML_FIRST_TYPE_FIELD]
    return bool(types) and fields[0] == (1, WIRE_VARINT) and set(header) <= COREML_HEADER_FIELDS


def _is_mlpackage_folder(found: Probe) -> bool:
    return (found.path / "Manifest.json").is_file() and (found.path / "Data").is_dir()


def _flatbuffer_id(identifier: bytes) -> Callable[[Probe], bool]:
    """A FlatBuffer carries its 4-byte file identifier after the 4-byte root offset."""
    return lambda found: found.head[4:8] == identifier


def _starts_with(*magics: bytes) -> Callable[[Probe], bool]:
    return lambda found: found.head.startswith(magics)


def _is_plain_pickle(found: Probe) -> bool:
    """Pickle protocol 2 to 5 (torch's legacy files, also pickles, are claimed before this)."""
    return found.head[:1] == b"\x80" and found.head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")


def _never(found: Probe) -> bool:
    return False


# --- the table ----------------------------------------------------------------------------

NOT_YET = "which diffai cannot read yet"
NOT_EVER = "which diffai cannot read"


@dataclass(frozen=True)
class Foreign:
    """A model format diffai does not read: how to know it, and what to do instead."""

    what: str
    advice: str
    looks_like: Callable[[Probe], bool] = _never
    extensions: tuple[str, ...] = ()
    verdict: str = NOT_YET
    folder: bool = False

    @property
    def problem(self) -> str:
        return f"this is {self.what}, {self.verdict}; {self.advice}"


FOREIGN: tuple[Foreign, ...] = (
    Foreign(
        "a GGML model from before GGUF (llama.cpp)",
        "compare the checkpoint it was converted from, or convert it to GGUF",
        _starts_with(*GGML_MAGICS), (".ggml",), NOT_EVER,
    ),
    Foreign(
        "a Core ML model",
        "compare the checkpoint it was converted from (coremltools converts PyTorch and "
        "TensorFlow models)",
        _is_coreml, (".mlmodel",), NOT_EVER,
    ),
    Foreign(
        "a Core ML model package",
        "compare the checkpoint it was converted from (coremltools converts PyTorch and "
        "TensorFlow models)",
        _is_mlpackage_folder, (".mlpackage",), NOT_EVER, folder=True,
    ),
    Foreign(
        "an ExecuTorch program",
        "compare the PyTorch state dict it was exported from",
        _flatbuffer_id(b"ET12"), (".pte",), NOT_EVER,
    ),
    Foreign(
        "a TensorRT engine",
        "compare the checkpoint it was built from",
        extensions=(".engine", ".plan", ".trt"), verdict=NOT_EVER,
    ),
    Foreign(
        "a Flax msgpack checkpoint",
        "save its params to safetensors (safetensors.flax.save_file of "
        "flax.traverse_util.flatten_dict(params, sep='.'))",
        extensions=(".msgpack",),
    ),
    Foreign(
        "a plain Python pickle (pickle.dump, joblib, scikit-learn)",
        "unpickling it could run any code; save the arrays with numpy.savez or "
        "safetensors instead",
        _is_plain_pickle, (".pkl", ".pickle", ".joblib"), "which diffai does not load",
    ),
)  # fmt: skip


def refuse_by_content(found: Probe) -> None:
    """Raise for a file or folder whose content says it is a format in ``FOREIGN``."""
    for foreign in FOREIGN:
        if foreign.folder == found.is_folder and foreign.looks_like(found):
            raise UnreadableModel(found.path, foreign.problem)


def refuse_by_name(found: Probe) -> None:
    """Raise for a path whose extension is one of a format in ``FOREIGN``."""
    suffix = found.path.suffix.lower()
    for foreign in FOREIGN:
        if foreign.folder == found.is_folder and suffix in foreign.extensions:
            raise UnreadableModel(found.path, foreign.problem)
