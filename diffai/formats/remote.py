"""Models where they live (``hf://``, ``s3://``, ``https://``), read by the same readers.

A remote file is read by a reader that can parse it from byte ranges
(``read_source``): its header first, then each tensor's own range as the
statistics stream it. Formats whose layout needs random access all over the
file or a whole-file parse (ONNX's protobuf, HDF5, a pickle-only legacy
``.pt``, npz members) are refused in one line that says to use a local copy.
A remote folder or index is read as ``sharded`` reads a local one: the same
choice of files, the same checks of the ``weight_map`` against each shard.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import PurePosixPath

from diffai.errors import MalformedModel, UnreadableModel
from diffai.formats import gguf, identify, numpy, safetensors, sharded
from diffai.formats.pytorch import remote as pytorch
from diffai.model import Model, TensorRef
from diffai.sources import ByteSource, Folder, locate
from diffai.sources.remote import Settings
from diffai.sources.tee import Tee

#: The readers that read from byte ranges, by format name, tried in this order (PyTorch's
#: takes every zip; its ``read_source`` gives None for one not made by ``torch.save``).
READERS = {module.FORMAT: module for module in (pytorch, safetensors, numpy, gguf)}
REMOTE_FORMATS = (
    "safetensors, GGUF, .npy and uncompressed PyTorch zip files (and folders and indexes of "
    "safetensors shards)"
)


@dataclass
class RemoteModel:
    """A model read remotely, and the files its tensors come from (``diffai.sources.pair``)."""

    model: Model
    files: dict[str, ByteSource] = field(default_factory=dict)  # tensor name -> its file


def open_remote(text: str, format: str | None, settings: Settings) -> RemoteModel:
    folder, name = locate(text, settings)
    if name is None:
        return _open_folder(text, folder, format)
    if name.endswith(sharded.INDEX_SUFFIX):
        return _open_index(text, folder, name, format)
    return _open_file(folder.open(name), format)


def _open_file(source: ByteSource, format: str | None) -> RemoteModel:
    reader = READERS.get(format or "") if format else _reader_by_content(source)
    model = reader.read_source(source) if reader is not None else None
    if model is None:
        raise UnreadableModel(
            source.name,
            f"diffai reads only {REMOTE_FORMATS} remotely; this one needs a local copy: "
            "download it and compare the files",
        )
    return RemoteModel(model, dict.fromkeys(model.tensors, source))


def _reader_by_content(source: ByteSource) -> object | None:
    head = source.read(0, min(source.size, identify.HEAD_BYTES))
    if source.size < identify.LFS_MAX_BYTES and head.startswith(identify.LFS_FIRST_LINE):
        raise UnreadableModel(source.name, identify.lfs_problem(head))
    path = PurePosixPath(source.name)
    return next((r for r in READERS.values() if r.matches(path, head)), None)  # type: ignore[arg-type]


def _open_folder(text: str, folder: Folder, format: str | None) -> RemoteModel:
    names = folder.names()
    index = next((name for name in sharded.INDEX_NAMES if name in names), None)
    if index is not None:
        return _open_index(text, folder, index, format)
    parts = [_open_file(folder.open(name), format) for name in sharded.pick_unindexed(text, names)]
    shards = [
        sharded.Shard(PurePosixPath(p.model.path).name, p.model, p.model.tensors) for p in parts
    ]
    return _combined(text, shards, parts, {"index": None})


def _open_index(text: str, folder: Folder, index_name: str, format: str | None) -> RemoteModel:
    index = folder.open(index_name)
    if index.size > sharded.MAX_INDEX_BYTES:
        raise MalformedModel(index.name, f"index is {index.size} bytes, over the 100 MB limit")
    weight_map, metadata = sharded.parse_index_bytes(index.name, index.read(0, index.size))
    by_shard = sorted(sharded.tensors_by_shard(weight_map).items())
    for shard_name, wanted in by_shard:  # every name checked before any shard is opened
        sharded.check_shard_name(index.name, shard_name, wanted[0])
    parts = [_open_file(folder.open(shard_name), format) for shard_name, _ in by_shard]
    shards = [
        sharded.check_shard(index.name, shard_name, part.model, wanted)
        for (shard_name, wanted), part in zip(by_shard, parts, strict=True)
    ]
    return _combined(text, shards, parts, {**metadata, "index": index_name})


def _combined(text: str, shards: list[sharded.Shard], parts: list[RemoteModel],
              metadata: dict[str, object]) -> RemoteModel:  # fmt: skip
    files = {name: source for part in parts for name, source in part.files.items()}
    return RemoteModel(sharded.combine(text, shards, metadata), files)


# --- a pair: files the store proves identical are read once -----------------------------


def open_pair(baseline: str, candidate: str, format: str | None,
              settings: Settings) -> tuple[Model, Model]:  # fmt: skip
    """Both sides (either may be local); tensors of files whose store-computed SHA-256 is
    the same on both sides are fetched once and measured for both (``shared_pair``)."""
    base, cand = (_open_side(side, format, settings) for side in (baseline, candidate))
    proven = _proven_identical(base, cand)
    for name in proven:
        base.model.tensors[name], cand.model.tensors[name] = shared_pair(
            base.model.tensors[name], cand.model.tensors[name]
        )
    _note_proof(base, cand, proven)
    return base.model, cand.model


def _open_side(text: str, format: str | None, settings: Settings) -> RemoteModel:
    from diffai.formats import open_model  # deferred: the registry imports this module
    from diffai.sources import is_remote

    if is_remote(text):
        return open_remote(text, format, settings)
    return RemoteModel(open_model(text, format))


def _proven_identical(base: RemoteModel, cand: RemoteModel) -> list[str]:
    """Tensors named alike in two files with the same full-content SHA-256 from the store:
    the same bytes, so the same header, offsets and values. Only that hash is proof (see
    ``diffai.sources``); a file without one is read on both sides."""
    proven = []
    for name, source in cand.files.items():
        twin = base.files.get(name)
        same_bytes = twin is not None and source.sha256 and source.sha256 == twin.sha256
        if same_bytes and base.model.tensors[name] == cand.model.tensors[name]:
            proven.append(name)
    return proven


def _note_proof(base: RemoteModel, cand: RemoteModel, proven: list[str]) -> None:
    pairs = {
        (base.files[name].name, cand.files[name].name, cand.files[name].sha256) for name in proven
    }
    for side in (side for side in (base, cand) if side.files):
        files = {source.name: source for source in side.files.values()}
        side.model.source = {
            "files": [
                {"name": name, "bytes": f.size, "sha256": f.sha256} for name, f in files.items()
            ],
            "read_once": [
                {"baseline": b, "candidate": c, "sha256": h} for b, c, h in sorted(pairs)
            ],
        }


def shared_pair(base: TensorRef, cand: TensorRef) -> tuple[TensorRef, TensorRef]:
    """Both refs reading one fetch of the baseline's bytes (``diffai.sources.tee``)."""
    assert base.stream is not None  # a remote reader's tensors always stream
    tee = Tee(base.stream)
    return replace(base, stream=tee.side(0)), replace(cand, stream=tee.side(1))
