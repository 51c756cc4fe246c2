"""TensorFlow: SavedModel folders, checkpoints (``*.index``) and frozen GraphDefs (``.pb``).

No TensorFlow is needed, nor wanted: its 600 MB wheel would be the largest part
of the Action's image, and parsing a hostile file with it runs its C++ in
diffai's process. These formats are small and documented, so diffai reads them
itself, strictly and bounded (``protobuf``, ``table``, ``bundle``, ``graph``);
only the tensor bundle's CRC32C needs a library, ``google-crc32c`` (the
``tensorflow`` extra, 40 KB), since TensorFlow checks every tensor's checksum
and a gate must refuse what TensorFlow refuses.

- a SavedModel folder (``saved_model.pb`` and ``variables/variables.index``), or
  its ``saved_model.pb`` given alone: the variables of its checkpoint;
- a checkpoint's ``.index`` (``tf.train.Checkpoint.save``): the same;
- a frozen GraphDef: its ``Const`` nodes.
"""

from __future__ import annotations

import contextlib
import importlib.util
from pathlib import Path

from diffai.errors import MalformedModel, MissingExtra
from diffai.formats.mapped import map_bytes
from diffai.formats.tensorflow import protobuf as pb
from diffai.model import Model

__all__ = ["EXTENSIONS", "FORMAT", "matches", "read"]

FORMAT = "tensorflow"
EXTENSIONS = (".pb", ".index")
SAVED_MODEL = "saved_model.pb"
VARIABLES = ("variables", "variables")
#: saved_model.proto: schema version 1 (always 1), meta graphs 2; MetaGraphDef.meta_info_def
#: 1; MetaInfoDef.tensorflow_version 5.
SCHEMA, META_GRAPHS, META_INFO, TF_VERSION = 1, 2, 1, 5
#: GraphDef: node 1, library 2, version 3 (deprecated), versions 4.
GRAPH_FIELDS = {(1, pb.LENGTH), (2, pb.LENGTH), (3, pb.VARINT), (4, pb.LENGTH)}


def matches(path: Path, head: bytes) -> bool:
    if path.is_dir():
        return (path / SAVED_MODEL).is_file() and _index(path).is_file()
    return _is_saved_model(head) or _is_checkpoint_index(path) or _is_graph(head)


def read(path: Path) -> Model:
    if path.is_dir():
        return _saved_model(path, path)
    with path.open("rb") as handle:
        head = handle.read(64)
    if path.name == SAVED_MODEL or _is_saved_model(head):
        return _saved_model(path, path.parent)
    # The registry asks every file whether it is TensorFlow's: the readers are imported
    # only to read one (their 21 KB of source: 31 M of a plain run's 1,134 M instructions
    # where no bytecode is cached, 2 M where it is).
    from diffai.formats.tensorflow.bundle import read_bundle
    from diffai.formats.tensorflow.graph import read_graph

    if path.suffix == ".index":
        _need_crc32c(path)
        return read_bundle(path, path.with_suffix(""), {"layout": "checkpoint"})
    size = path.stat().st_size
    return read_graph(path, memoryview(map_bytes(path)) if size else memoryview(b""))


def _saved_model(path: Path, folder: Path) -> Model:
    from diffai.formats.tensorflow.bundle import read_bundle

    _need_crc32c(path)
    if not _index(folder).is_file():
        raise MalformedModel(path, "the SavedModel has no variables/variables.index")
    metadata = {"layout": "saved model", **_tensorflow_version(folder / SAVED_MODEL)}
    return read_bundle(path, folder.joinpath(*VARIABLES), metadata)


def _index(folder: Path) -> Path:
    return folder.joinpath(*VARIABLES).with_suffix(".index")


def _need_crc32c(path: Path) -> None:
    if importlib.util.find_spec("google_crc32c") is None:
        raise MissingExtra(path, "reading TensorFlow checkpoints needs google-crc32c", FORMAT)


def _tensorflow_version(saved_model: Path) -> dict[str, str]:
    """What the first meta graph says made it; nothing when it says nothing readable."""
    try:
        data = memoryview(map_bytes(saved_model))
        graphs = (f for f in pb.fields(data) if f.number == META_GRAPHS)
        info = next(f for f in pb.message(next(graphs), 0) if f.number == META_INFO)
        version = next(f for f in pb.message(info, 1) if f.number == TF_VERSION)
        return {"tensorflow_version": pb.text(version)[:100]}
    except (OSError, ValueError, StopIteration):
        return {}


def _head_fields(head: bytes) -> list[pb.Field]:
    """The top-level fields the head shows in full (the last may run past it)."""
    found: list[pb.Field] = []
    with contextlib.suppress(pb.WireError):
        found.extend(pb.fields(memoryview(head)))
    return found


def _is_saved_model(head: bytes) -> bool:
    fields = _head_fields(head)
    return (
        bool(fields)
        and (fields[0].number, fields[0].value) == (SCHEMA, 1)
        and {(f.number, f.wire) for f in fields} == {(SCHEMA, pb.VARINT), (META_GRAPHS, pb.LENGTH)}
    )


def _is_graph(head: bytes) -> bool:
    """A GraphDef whose first field is a node, itself starting with its name."""
    fields = _head_fields(head)
    first = fields[0] if fields else None
    if first is None or (first.number, first.wire) != (1, pb.LENGTH) or first.payload is None:
        return False
    node = _head_fields(bytes(first.payload))
    return (
        all((f.number, f.wire) in GRAPH_FIELDS for f in fields)
        and bool(node)
        and (
            node[0].number,
            node[0].wire,
        )
        == (1, pb.LENGTH)
    )


def _is_checkpoint_index(path: Path) -> bool:
    if path.suffix != ".index":
        return False
    from diffai.formats.tensorflow.table import MAGIC

    try:
        with path.open("rb") as handle:
            handle.seek(max(0, path.stat().st_size - 8))
            tail = handle.read(8)
    except OSError:
        return False
    return int.from_bytes(tail, "little") == MAGIC
