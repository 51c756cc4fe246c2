"""Sharded checkpoints and model folders, read as one logical model.

A Hugging Face index (``model.safetensors.index.json``,
``pytorch_model.bin.index.json``) maps every tensor to a shard file in its
``weight_map``; each shard is opened once, with whichever reader its content
calls for, and it must hold exactly the tensors mapped to it. A folder without an
index is read only when it is clear what it stands for (``_unindexed_files``)
and refused otherwise: a report about the wrong file is worse than none.

Shard names are checked lexically (no ``..``, nothing absolute) and never
resolved: the Hugging Face cache links snapshot files to blobs outside the
folder, which is fine, while an index naming ``../../x`` is not.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from diffai.errors import MalformedModel, UnreadableModel
from diffai.formats.limits import check_tensor_count
from diffai.formats.strictjson import DuplicateKey, InvalidJson, loads_strict
from diffai.model import Model, Scalar, TensorRef
from diffai.text import one_line

FORMAT = "folder"
EXTENSIONS = (".json",)

INDEX_SUFFIX = ".index.json"
INDEX_NAMES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
# A training folder also holds optimizer.pt, training_args.bin, rng_state.pth ...;
# Hugging Face's own model file names say which one is the model.
MODEL_NAMES = ("model.safetensors", "pytorch_model.bin")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".npz")
SHARD_SUFFIX = ".safetensors"
MAX_INDEX_BYTES = 100 * 1024 * 1024


@dataclass(frozen=True)
class Shard:
    """One opened shard and the tensors the model takes from it."""

    name: str
    model: Model
    tensors: dict[str, TensorRef]


def matches(path: Path, head: bytes) -> bool:
    """A folder, or a ``*.index.json`` file that has a ``weight_map``."""
    return path.is_dir() or (path.name.endswith(INDEX_SUFFIX) and _mentions_weight_map(path))


def _mentions_weight_map(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return b'"weight_map"' in handle.read(MAX_INDEX_BYTES)
    except OSError:
        return False


def read(path: Path) -> Model:
    if not path.is_dir():
        return _read_index(path, path)
    index = next((path / name for name in INDEX_NAMES if (path / name).is_file()), None)
    if index is not None:
        return _read_index(path, index)
    shards = [_whole_shard(file) for file in _unindexed_files(path)]
    return combine(path, shards, {"index": None})


def _whole_shard(file: Path) -> Shard:
    model = _open_weight_file(file)
    return Shard(name=file.name, model=model, tensors=model.tensors)


def _unindexed_files(folder: Path) -> list[Path]:
    files = [file.name for file in folder.iterdir() if file.is_file()]
    return [folder / name for name in pick_unindexed(folder, files)]


def pick_unindexed(folder: str | Path, files: list[str]) -> list[str]:
    """The weight files an index-less folder stands for: a model file, a single file, or shards."""
    for name in MODEL_NAMES:
        if name in files:
            return [name]
    found = sorted(name for name in files if PurePosixPath(name).suffix.lower() in WEIGHT_SUFFIXES)
    if len(found) == 1 or (found and all(name.lower().endswith(SHARD_SUFFIX) for name in found)):
        return found
    raise _ambiguous(folder, found)


def _ambiguous(folder: str | Path, found: list[str]) -> UnreadableModel:
    seen = ", ".join(found) if found else "no weight file"
    suffixes = ", ".join("*" + suffix for suffix in WEIGHT_SUFFIXES)
    return UnreadableModel(
        folder,
        f"found {seen}; expected {' or '.join(INDEX_NAMES)}, one weight file ({suffixes}), "
        "or only *.safetensors shards; name the file to compare instead of the folder",
    )


def _read_index(path: Path, index: Path) -> Model:
    weight_map, index_metadata = _parse_index(index)
    by_shard = sorted(tensors_by_shard(weight_map).items())
    # Every shard path is checked before any shard is opened.
    paths = {name: _shard_path(index, name, wanted[0]) for name, wanted in by_shard}
    shards = [_indexed_shard(index, name, paths[name], wanted) for name, wanted in by_shard]
    return combine(path, shards, {**index_metadata, "index": index.name})


def tensors_by_shard(weight_map: dict[str, str]) -> dict[str, list[str]]:
    by_shard: dict[str, list[str]] = {}
    for tensor, shard in weight_map.items():
        by_shard.setdefault(shard, []).append(tensor)
    return by_shard


def _parse_index(index: Path) -> tuple[dict[str, str], dict[str, Any]]:
    """The ``weight_map`` and the index's own ``metadata``; duplicate keys are refused."""
    size = index.stat().st_size
    if size > MAX_INDEX_BYTES:
        raise MalformedModel(index, f"index is {size} bytes, over the 100 MB limit")
    return parse_index_bytes(index, index.read_bytes())


def parse_index_bytes(index: str | Path, raw: bytes) -> tuple[dict[str, str], dict[str, Any]]:
    try:
        document = loads_strict(raw)
    except (UnicodeDecodeError, InvalidJson) as exc:
        raise MalformedModel(index, f"index is not valid JSON: {one_line(exc)}") from exc
    except DuplicateKey as exc:
        # A repeated tensor name would silently point at only one of its shards.
        raise MalformedModel(index, f"index repeats the key {exc.key!r}") from exc
    return _weight_map(index, document), _index_metadata(index, document)


def _weight_map(index: str | Path, document: Any) -> dict[str, str]:
    weight_map = document.get("weight_map") if isinstance(document, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise MalformedModel(index, "index has no weight_map object mapping tensor names to shards")
    check_tensor_count(index, "weight_map lists", len(weight_map))
    for tensor, shard in weight_map.items():
        if not isinstance(shard, str):
            raise MalformedModel(
                index, f"weight_map maps tensor {tensor!r} to {shard!r}, not a shard file name"
            )
    return weight_map


def _index_metadata(index: str | Path, document: dict[str, Any]) -> dict[str, Any]:
    metadata = document.get("metadata", {})
    if not isinstance(metadata, dict):
        raise MalformedModel(index, "index metadata is not a JSON object")
    return metadata


def _indexed_shard(index: Path, shard_name: str, shard_path: Path, wanted: list[str]) -> Shard:
    model = _open_weight_file(shard_path)
    return check_shard(index, shard_name, model, wanted)


def check_shard(index: str | Path, shard_name: str, model: Model, wanted: list[str]) -> Shard:
    """The shard's tensors, which must be exactly those the weight_map assigns to it."""
    missing = [tensor for tensor in wanted if tensor not in model.tensors]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise UnreadableModel(
            index,
            f"weight_map puts tensor {missing[0]!r}{more} in shard {shard_name!r}, "
            "which does not hold it",
        )
    listed = set(wanted)  # once: a set per tensor made a 40,000-tensor index take a minute
    unlisted = [tensor for tensor in model.tensors if tensor not in listed]
    if unlisted:
        # Loaders read whole shards, so an unlisted tensor would load yet never be compared.
        raise UnreadableModel(
            index,
            f"shard {shard_name!r} holds tensor {unlisted[0]!r} that the weight_map does not list",
        )
    return Shard(name=shard_name, model=model, tensors=model.tensors)


def _shard_path(index: Path, shard_name: str, tensor: str) -> Path:
    check_shard_name(index, shard_name, tensor)
    shard_path = index.parent / shard_name
    problem = _not_a_file(shard_path)
    if problem:
        raise UnreadableModel(index, f"shard {shard_name!r} (for tensor {tensor!r}) {problem}")
    return shard_path


def check_shard_name(index: str | Path, shard_name: str, tensor: str) -> None:
    # PureWindowsPath sees both separators, drives and roots, so "C:x" and "\\x" escape too.
    parsed = PureWindowsPath(shard_name)
    if parsed.drive or parsed.root or ".." in parsed.parts:
        raise UnreadableModel(
            index, f"shard {shard_name!r} (for tensor {tensor!r}) points outside the index's folder"
        )


def _not_a_file(path: Path) -> str:
    """Why ``path`` cannot be read as a file (a FIFO would block the reader for ever), or ''."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "does not exist"
    except OSError as exc:  # a symlink loop, a folder on the way that cannot be searched
        return f"cannot be opened: {exc.strerror or exc}"
    return "" if stat.S_ISREG(mode) else "is not a regular file"


def _open_weight_file(path: Path) -> Model:
    # Deferred: the reader registry imports this module.
    from diffai.formats import choose_reader

    reader = choose_reader(path)
    if reader.FORMAT == FORMAT:
        raise UnreadableModel(path, "a shard must be a weight file, not another index")
    return reader.read(path)


def combine(path: str | Path, shards: list[Shard], metadata: dict[str, Any]) -> Model:
    """One model from its shards; shard metadata first, so the index's own keys win."""
    merged_metadata: dict[str, Any] = {}
    scalars: dict[str, Scalar] = {}
    for shard in shards:
        merged_metadata.update(shard.model.metadata)
        scalars.update(shard.model.scalars)
    merged_metadata.update(metadata, shards=[shard.name for shard in shards])
    return Model(
        path=str(path),
        format=_format_name(shards),
        size_bytes=sum(shard.model.size_bytes for shard in shards),
        tensors=_merge_tensors(path, shards),
        scalars=scalars,
        metadata=merged_metadata,
    )


def _merge_tensors(path: str | Path, shards: list[Shard]) -> dict[str, TensorRef]:
    tensors: dict[str, TensorRef] = {}
    owners: dict[str, str] = {}
    for shard in shards:
        for name, ref in shard.tensors.items():
            if name in owners:
                raise UnreadableModel(
                    path, f"tensor {name!r} is in both {owners[name]!r} and {shard.name!r}"
                )
            tensors[name], owners[name] = ref, shard.name
    return tensors


def _format_name(shards: list[Shard]) -> str:
    """E.g. ``safetensors (3 shards)``: short, and still says what was read."""
    formats = "+".join(dict.fromkeys(shard.model.format for shard in shards))
    count = len(shards)
    return f"{formats} ({count} shard{'' if count == 1 else 's'})"
