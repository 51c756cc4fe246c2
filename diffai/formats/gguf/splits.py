"""A GGUF split series (``model-00001-of-00003.gguf`` ...), read as one model as llama.cpp does.

llama.cpp's ``gguf-split`` writes ``split.no`` (from 0), ``split.count`` and
``split.tensors.count`` into every split, and its loader, given the first file,
finds the others by name: ``PREFIX-%05d-of-%05d.gguf``. Diffai does the same:
the first split names the series, every other split must exist under that name
and say it is that split of that count, and no tensor may be in two splits.

Not ``formats.sharded``: there an index file maps each tensor to a shard, while
here the files' own keys and names make the series; the checks differ, and only
"one tensor, one file" is common. The scalars are the first split's, which is
where llama.cpp reads the model's key/values, less the ``split.*`` keys.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from diffai.errors import UnreadableModel
from diffai.formats import identify
from diffai.model import Model, TensorRef

SPLIT_NAME = re.compile(
    r"(?P<prefix>.+)-(?P<number>\d{5})-of-(?P<count>\d{5})\.gguf", re.IGNORECASE
)
COUNT_KEY, NUMBER_KEY, TENSORS_KEY = "split.count", "split.no", "split.tensors.count"
#: How the model was cut, not what it is: a series compares equal to the single file.
SPLIT_KEYS = (COUNT_KEY, NUMBER_KEY, TENSORS_KEY)


def read_series(path: Path, read_one: Callable[[Path], Model]) -> Model:
    first = read_one(path)
    count = _int_key(path, first, COUNT_KEY, 1)
    if count <= 1:
        return first
    number = _int_key(path, first, NUMBER_KEY, 0)
    if number != 0:
        raise UnreadableModel(
            path, f"this is split {number + 1} of {count}; give the first split of the series"
        )
    others = [_split(path, read_one, index, count) for index in range(1, count)]
    return _combine(path, [first, *others])


def _int_key(path: Path, model: Model, key: str, default: int) -> int:
    value = model.scalars.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise UnreadableModel(path, f"{key} is {value!r}, not a count")
    return value


def _split_path(path: Path, index: int, count: int) -> Path:
    named = SPLIT_NAME.fullmatch(path.name)
    if named is None or int(named["number"]) != 1 or int(named["count"]) != count:
        raise UnreadableModel(
            path,
            f"{COUNT_KEY} says the model has {count} splits, but the file name does not "
            f"follow llama.cpp's PREFIX-00001-of-{count:05d}.gguf, so the others cannot be found",
        )
    return path.with_name(f"{named['prefix']}-{index + 1:05d}-of-{count:05d}.gguf")


def _split(path: Path, read_one: Callable[[Path], Model], index: int, count: int) -> Model:
    split_path = _split_path(path, index, count)
    if not split_path.is_file():
        raise UnreadableModel(path, f"split {index + 1} of {count}, {split_path.name}, is missing")
    identify.probe(split_path)  # a Git LFS pointer is named as one
    model = read_one(split_path)
    said = (_int_key(split_path, model, NUMBER_KEY, -1), _int_key(split_path, model, COUNT_KEY, 1))
    if said != (index, count):
        raise UnreadableModel(
            split_path,
            f"its {NUMBER_KEY} and {COUNT_KEY} are {said[0]} and {said[1]}, "
            f"but its name makes it split {index} (from 0) of {count}",
        )
    return model


def _combine(path: Path, models: list[Model]) -> Model:
    tensors: dict[str, TensorRef] = {}
    for model in models:
        for name, ref in model.tensors.items():
            if name in tensors:
                raise UnreadableModel(path, f"tensor {name!r} is in more than one split")
            tensors[name] = ref
    _check_tensor_total(path, models[0], len(tensors))
    return Model(
        path=str(path),
        format=f"gguf ({len(models)} splits)",
        size_bytes=sum(model.size_bytes for model in models),
        tensors=tensors,
        scalars={k: v for k, v in models[0].scalars.items() if k not in SPLIT_KEYS},
        metadata={**models[0].metadata, "splits": [Path(model.path).name for model in models]},
    )


def _check_tensor_total(path: Path, first: Model, found: int) -> None:
    stated = first.scalars.get(TENSORS_KEY, found)
    if stated != found:
        raise UnreadableModel(path, f"{TENSORS_KEY} is {stated!r}, but the splits hold {found}")
