"""A plain-Python random-mutation fuzz loop, for machines where atheris does not install.

Far weaker than libFuzzer (no coverage feedback), but it takes the same
arguments that matter (``-max_total_time=N``, ``-runs=N``, ``-seed=N``, corpus
folders) and the same targets, and it keeps going after a crash, saving each.
"""

from __future__ import annotations

import hashlib
import random
import struct
import time
import traceback
from collections.abc import Callable
from pathlib import Path

#: Integers that sit on the edges parsers get wrong, as 1, 2, 4 and 8-byte little-endian.
INTERESTING = [0, 1, 2, 7, 8, 127, 128, 255, 256, 2**15, 2**16 - 1, 2**31 - 1, 2**32 - 1,
               2**62, 2**63 - 1, 2**64 - 1, 100 * 1024 * 1024 + 1]  # fmt: skip
MAX_INPUT = 1 << 16


def run(
    target: Callable[[bytes, Path], None], workdir: Path, argv: list[str], crashes: Path
) -> None:
    options = dict(arg[1:].split("=", 1) for arg in argv if arg.startswith("-") and "=" in arg)
    rng = random.Random(int(options.get("seed", time.time_ns())))
    seeds = _corpus([Path(arg) for arg in argv if not arg.startswith("-")]) or [b""]
    deadline = time.monotonic() + float(options.get("max_total_time", 60))
    runs, executions, crashed = int(options.get("runs", -1)), 0, 0
    while time.monotonic() < deadline and executions != runs:
        data = _mutated(rng, rng.choice(seeds), seeds)
        executions += 1
        try:
            target(data, workdir)
        except Exception:
            crashed += 1
            _save(crashes, data, traceback.format_exc())
    print(f"#{executions} DONE (mutate.py, no coverage feedback): {crashed} crashes")


def _corpus(folders: list[Path]) -> list[bytes]:
    return [file.read_bytes() for folder in folders for file in sorted(folder.glob("*"))]


def _save(crashes: Path, data: bytes, trace: str) -> None:
    crashes.mkdir(parents=True, exist_ok=True)
    path = crashes / f"crash-{hashlib.sha1(data).hexdigest()}"
    path.write_bytes(data)
    print(f"==crash== {path}\n{trace}")


def _mutated(rng: random.Random, seed: bytes, seeds: list[bytes]) -> bytes:
    data = bytearray(seed)
    for _ in range(rng.randint(1, 8)):
        rng.choice(MUTATIONS)(rng, data, seeds)
    return bytes(data[:MAX_INPUT])


def _flip_bit(rng: random.Random, data: bytearray, _: list[bytes]) -> None:
    if data:
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)


def _random_byte(rng: random.Random, data: bytearray, _: list[bytes]) -> None:
    if data:
        data[rng.randrange(len(data))] = rng.randrange(256)


def _insert(rng: random.Random, data: bytearray, _: list[bytes]) -> None:
    at = rng.randint(0, len(data))
    data[at:at] = rng.randbytes(rng.randint(1, 16))


def _delete(rng: random.Random, data: bytearray, _: list[bytes]) -> None:
    if data:
        at = rng.randrange(len(data))
        del data[at : at + rng.randint(1, 32)]


def _duplicate(rng: random.Random, data: bytearray, _: list[bytes]) -> None:
    if data:
        at = rng.randrange(len(data))
        chunk = data[at : at + rng.randint(1, 64)]
        to = rng.randint(0, len(data))
        data[to:to] = chunk * rng.randint(1, 4)


def _interesting_int(rng: random.Random, data: bytearray, _: list[bytes]) -> None:
    width = rng.choice([1, 2, 4, 8])
    if len(data) >= width:
        at = rng.randint(0, len(data) - width)
        value = rng.choice(INTERESTING) % (1 << (8 * width))
        data[at : at + width] = value.to_bytes(width, "little")


def _ascii_digits(rng: random.Random, data: bytearray, _: list[bytes]) -> None:
    """JSON and YAML numbers: swap a number for one at an edge."""
    at = rng.randint(0, len(data))
    data[at:at] = str(rng.choice([*INTERESTING, -1, -(2**63)])).encode()


def _splice(rng: random.Random, data: bytearray, seeds: list[bytes]) -> None:
    other = rng.choice(seeds)
    if other:
        at = rng.randrange(len(other))
        data[rng.randint(0, len(data)) :] = other[at:]


def _header_length(rng: random.Random, data: bytearray, _: list[bytes]) -> None:
    """The first 8 bytes, where safetensors keeps its header length."""
    if len(data) >= 8:
        data[:8] = struct.pack("<Q", rng.choice([*INTERESTING, len(data) - 8, len(data)]))


MUTATIONS = [_flip_bit, _random_byte, _insert, _delete, _duplicate, _interesting_int,
             _ascii_digits, _splice, _header_length]  # fmt: skip
