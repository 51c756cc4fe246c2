"""TensorFlow's DataType enum (types.proto), as diffai's dtype names."""

from __future__ import annotations

from pathlib import Path

from diffai.errors import UnreadableModel

DT_STRING = 7
DTYPES = {
    1: "f32", 2: "f64", 3: "i32", 4: "u8", 5: "i16", 6: "i8", 8: "c64", 9: "i64", 10: "bool",
    14: "bf16", 17: "u16", 18: "c128", 19: "f16", 22: "u32", 23: "u64",
}  # fmt: skip


def dtype_name(path: Path, name: str, number: int) -> str:
    if number not in DTYPES:
        raise UnreadableModel(
            path, f"tensor {name!r} has TensorFlow dtype {number}, which diffai cannot compare"
        )
    return DTYPES[number]
