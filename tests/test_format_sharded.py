"""Sharded checkpoints and model folders: one logical model, every ambiguity refused by name."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file

from diffai.errors import MalformedModel, UnreadableModel
from diffai.formats import open_model, sharded

INDEX = "model.safetensors.index.json"
SHARD_1 = "model-00001-of-00002.safetensors"
SHARD_2 = "model-00002-of-00002.safetensors"
# Names in alphabetical order, the order safetensors writes them in, so shard order is visible.
SHARDS = {
    SHARD_1: {
        "embed.weight": np.arange(12, dtype=np.float32).reshape(4, 3),
        "layer.0.weight": np.full((3, 3), 0.5, np.float16),
    },
    SHARD_2: {
        "head.bias": np.array([1, -2, 3], np.int64),
        "layer.1.weight": np.eye(3, dtype=np.float64),
    },
}
ALL_TENSORS = {name: array for tensors in SHARDS.values() for name, array in tensors.items()}

WriteIndex = Callable[..., Path]


def _save(path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None):
    save_file(tensors, path, metadata=metadata)
    return path


@pytest.fixture
def write_index(tmp_path: Path) -> WriteIndex:
    """A Hugging Face style folder: shards plus an index mapping every tensor to its shard."""

    def write(
        weight_map: dict[str, str] | None = None,
        name: str = INDEX,
        extra: dict[str, Any] | None = None,
    ) -> Path:
        for shard, tensors in SHARDS.items():
            _save(tmp_path / shard, tensors, {"format": "pt"})
        if weight_map is None:
            weight_map = {tensor: shard for shard, names in SHARDS.items() for tensor in names}
        document = {"metadata": {"total_size": 200}, "weight_map": weight_map, **(extra or {})}
        index = tmp_path / name
        index.write_text(json.dumps(document))
        return index

    return write


def _assert_tensors(model_tensors: dict[str, Any], expected: dict[str, np.ndarray]) -> None:
    assert list(model_tensors) == list(expected)
    for name, array in expected.items():
        ref = model_tensors[name]
        assert (ref.name, ref.shape) == (name, array.shape)
        np.testing.assert_array_equal(ref.array(), array)
        assert ref.array().dtype == array.dtype


def test_folder_with_index_is_one_model(tmp_path: Path, write_index: WriteIndex) -> None:
    write_index()
    model = open_model(tmp_path)
    assert model.path == str(tmp_path)
    assert model.format == "safetensors (2 shards)"
    _assert_tensors(model.tensors, ALL_TENSORS)
    assert [ref.dtype for ref in model.tensors.values()] == ["f32", "f16", "i64", "f64"]
    assert model.size_bytes == sum((tmp_path / shard).stat().st_size for shard in SHARDS)
    assert model.metadata == {
        "format": "pt",
        "total_size": 200,
        "index": INDEX,
        "shards": [SHARD_1, SHARD_2],
    }


def test_index_file_opened_directly(write_index: WriteIndex) -> None:
    index = write_index(name="weights.index.json")
    model = open_model(index)
    assert model.path == str(index)
    assert model.metadata["index"] == "weights.index.json"
    _assert_tensors(model.tensors, ALL_TENSORS)


def test_a_tensor_the_index_does_not_list_is_refused(write_index: WriteIndex) -> None:
    """Loaders read whole shards: an unlisted tensor would load but never be compared."""
    index = write_index({"head.bias": SHARD_2, "layer.0.weight": SHARD_1, "embed.weight": SHARD_1})
    with pytest.raises(
        UnreadableModel, match=r"holds tensor '.*' that the weight_map does not list"
    ):
        open_model(index)


def test_safetensors_index_preferred_over_bin_index(
    tmp_path: Path, write_index: WriteIndex
) -> None:
    write_index()
    (tmp_path / "pytorch_model.bin.index.json").write_text('{"weight_map": {"x": "missing.bin"}}')
    assert open_model(tmp_path).metadata["index"] == INDEX


def test_bin_shards_read_through_the_pytorch_reader(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    torch.save({"a": torch.arange(4.0), "epoch": 3}, tmp_path / "pytorch_model-00001-of-00002.bin")
    torch.save({"b": torch.ones(2, 2, dtype=torch.float16)}, tmp_path / "pytorch_model-00002.bin")
    weight_map = {"a": "pytorch_model-00001-of-00002.bin", "b": "pytorch_model-00002.bin"}
    (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    model = open_model(tmp_path)
    assert model.format == "pytorch (2 shards)"
    _assert_tensors(
        model.tensors, {"a": np.arange(4.0, dtype=np.float32), "b": np.ones((2, 2), np.float16)}
    )
    assert model.scalars == {"epoch": 3}


def test_folder_with_one_weight_file(tmp_path: Path) -> None:
    np.savez(tmp_path / "weights.npz", w=np.arange(3.0))
    (tmp_path / "config.json").write_text("{}")
    model = open_model(tmp_path)
    assert model.format == "numpy (1 shard)"
    assert model.metadata == {"index": None, "shards": ["weights.npz"]}
    _assert_tensors(model.tensors, {"w": np.arange(3.0)})


def test_training_folder_reads_the_model_file(tmp_path: Path) -> None:
    """optimizer.pt and training_args.bin sit beside model.safetensors in a Trainer checkpoint."""
    _save(tmp_path / "model.safetensors", {"w": np.ones(2, np.float32)}, {"format": "pt"})
    (tmp_path / "optimizer.pt").write_bytes(b"not read")
    (tmp_path / "training_args.bin").write_bytes(b"not read")
    model = open_model(tmp_path)
    assert model.metadata == {"format": "pt", "index": None, "shards": ["model.safetensors"]}
    _assert_tensors(model.tensors, {"w": np.ones(2, np.float32)})


def test_unindexed_safetensors_shards_are_read_in_name_order(tmp_path: Path) -> None:
    _save(tmp_path / "b.safetensors", {"second": np.zeros(2, np.float32)})
    _save(tmp_path / "a.safetensors", {"first": np.ones(3, np.float32)})
    model = open_model(tmp_path)
    assert model.metadata["shards"] == ["a.safetensors", "b.safetensors"]
    _assert_tensors(
        model.tensors, {"first": np.ones(3, np.float32), "second": np.zeros(2, np.float32)}
    )


def test_tensor_in_two_unindexed_shards_is_ambiguous(tmp_path: Path) -> None:
    _save(tmp_path / "a.safetensors", {"w": np.ones(3, np.float32)})
    _save(tmp_path / "b.safetensors", {"w": np.zeros(3, np.float32)})
    with pytest.raises(
        UnreadableModel, match=r"tensor 'w' is in both 'a\.safetensors' and 'b\.safetensors'"
    ):
        open_model(tmp_path)


@pytest.mark.parametrize(
    ("files", "found"),
    [
        pytest.param([], "found no weight file", id="empty"),
        pytest.param(["config.json", "README.md"], "found no weight file", id="no-weights"),
        pytest.param(["a.safetensors", "b.npz"], "found a.safetensors, b.npz", id="mixed"),
        pytest.param(["x.bin", "y.bin"], "found x.bin, y.bin", id="several-bin"),
    ],
)
def test_ambiguous_folder_lists_what_it_found(tmp_path: Path, files: list[str], found: str) -> None:
    for name in files:
        (tmp_path / name).write_bytes(b"{}")
    with pytest.raises(UnreadableModel) as caught:
        open_model(tmp_path)
    assert str(caught.value) == (
        f"{tmp_path}: {found}; expected model.safetensors.index.json or "
        "pytorch_model.bin.index.json, one weight file (*.safetensors, *.bin, *.pt, *.pth, "
        "*.npz), or only *.safetensors shards; name the file to compare instead of the folder"
    )


@pytest.mark.parametrize(
    "shard",
    [
        "../outside.safetensors",
        "sub/../../x.safetensors",
        "/etc/x.safetensors",
        "C:x.safetensors",
        "..\\x.safetensors",
    ],
)
def test_shard_outside_the_folder_is_refused(write_index: WriteIndex, shard: str) -> None:
    index = write_index({"embed.weight": SHARD_1, "evil": shard})
    with pytest.raises(UnreadableModel) as caught:
        open_model(index)
    assert str(caught.value) == (
        f"{index}: shard {shard!r} (for tensor 'evil') points outside the index's folder"
    )


def test_missing_shard_is_named(write_index: WriteIndex) -> None:
    index = write_index({"embed.weight": SHARD_1, "lost": "model-00003.safetensors"})
    with pytest.raises(UnreadableModel) as caught:
        open_model(index)
    assert str(caught.value) == (
        f"{index}: shard 'model-00003.safetensors' (for tensor 'lost') does not exist"
    )


def test_tensor_missing_from_its_shard_is_named(write_index: WriteIndex) -> None:
    index = write_index({"embed.weight": SHARD_2, "layer.1.weight": SHARD_2, "x": SHARD_2})
    with pytest.raises(UnreadableModel) as caught:
        open_model(index)
    assert str(caught.value) == (
        f"{index}: weight_map puts tensor 'embed.weight' (and 1 more) in shard {SHARD_2!r}, "
        "which does not hold it"
    )


def test_shard_that_is_an_index_is_refused(tmp_path: Path, write_index: WriteIndex) -> None:
    index = write_index({"embed.weight": INDEX})
    with pytest.raises(UnreadableModel, match="a shard must be a weight file, not another index"):
        open_model(index)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("{not json", "index is not valid JSON", id="not-json"),
        pytest.param('{"weight_map": {"a": "x", "a": "y"}}', "repeats the key 'a'", id="dup"),
        pytest.param('{"weight_map": []}', "has no weight_map object", id="not-object"),
        pytest.param('{"weight_map": {}}', "has no weight_map object", id="empty"),
        pytest.param('[{"weight_map": 1}]', "has no weight_map object", id="list"),
        pytest.param('{"weight_map": {"a": 3}}', "maps tensor 'a' to 3", id="not-a-name"),
        pytest.param(
            '{"weight_map": {"a": "x"}, "metadata": 3}', "metadata is not a JSON object", id="meta"
        ),
    ],
)
def test_malformed_index_is_refused(tmp_path: Path, text: str, message: str) -> None:
    index = tmp_path / INDEX
    index.write_text(text)
    with pytest.raises(MalformedModel, match=message):
        open_model(index)


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        pytest.param(INDEX, '{"weight_map": {}}', True, id="hf-index"),
        pytest.param("anything.index.json", '{"weight_map": {}}', True, id="any-index"),
        pytest.param("config.index.json", '{"layers": 3}', False, id="no-weight-map"),
        pytest.param("weight_map.json", '{"weight_map": {}}', False, id="not-index-name"),
    ],
)
def test_matches_index_by_name_and_content(
    tmp_path: Path, name: str, text: str, expected: bool
) -> None:
    path = tmp_path / name
    path.write_text(text)
    assert sharded.matches(path, path.read_bytes()) is expected
    assert sharded.matches(tmp_path, b"") is True
