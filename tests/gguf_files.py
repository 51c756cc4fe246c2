"""GGUF files for the tests: real ones from llama.cpp's own writer, and raw headers built by hand.

``write_gguf`` uses ``gguf.GGUFWriter`` and ``gguf.quants.quantize`` (the types it
can quantize); ``k_quant_blocks`` makes blocks of the types it only dequantizes
from random bytes whose f16 scales are set to finite values. ``raw_gguf`` lays
out a header byte by byte, so hostile tests can make it lie.
"""

from __future__ import annotations

import struct
from pathlib import Path

import gguf
import numpy as np
from gguf.quants import quantize

Q = gguf.GGMLQuantizationType
#: Where each K-quant and IQ block keeps its f16 scales (ggml-common.h's block layouts).
F16_SCALES = {
    Q.Q2_K: (80, 82), Q.Q3_K: (108,), Q.Q4_K: (0, 2), Q.Q5_K: (0, 2), Q.Q6_K: (208,),
    Q.IQ2_XXS: (0,), Q.IQ2_XS: (0,), Q.IQ2_S: (0,), Q.IQ3_XXS: (0,), Q.IQ3_S: (0,),
    Q.IQ1_S: (0,), Q.IQ4_NL: (0,), Q.IQ4_XS: (0,), Q.TQ1_0: (52,), Q.TQ2_0: (64,),
}  # fmt: skip


def write_gguf(
    path: Path,
    tensors: dict[str, np.ndarray | tuple[np.ndarray, Q]],
    keys: dict[str, object] | None = None,
    **writer_options: int,
) -> Path:
    """A GGUF file: arrays as they are, ``(array, type)`` quantized, ``(blocks, type)`` raw."""
    writer = gguf.GGUFWriter(str(path), "llama", **writer_options)
    for key, value in (keys or {}).items():
        _add_key(writer, key, value)
    for name, tensor in tensors.items():
        if isinstance(tensor, tuple):
            array, qtype = tensor
            blocks = array if array.dtype == np.uint8 else quantize(array, qtype)
            writer.add_tensor(name, blocks, raw_shape=blocks.shape, raw_dtype=qtype)
        else:
            writer.add_tensor(name, tensor)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _add_key(writer: gguf.GGUFWriter, key: str, value: object) -> None:
    if isinstance(value, str):
        writer.add_string(key, value)
    elif isinstance(value, list):
        writer.add_array(key, value)
    elif isinstance(value, float):
        writer.add_float32(key, value)
    else:
        writer.add_uint32(key, int(value))  # type: ignore[call-overload]


def k_quant_blocks(qtype: Q, rows: int, row_blocks: int, seed: int = 0) -> np.ndarray:
    """``rows`` x ``row_blocks`` random blocks of ``qtype``, its f16 scales finite (0.01 to 1)."""
    size = gguf.GGML_QUANT_SIZES[qtype][1]
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (rows * row_blocks, size), dtype=np.uint8)
    for at in F16_SCALES.get(qtype, ()):
        scales = rng.uniform(0.01, 1.0, rows * row_blocks).astype(np.float16)
        blocks[:, at : at + 2] = scales.view(np.uint8).reshape(-1, 2)
    return blocks.reshape(rows, row_blocks * size)


def dequantized(path: Path) -> dict[str, np.ndarray]:
    """What the reference reader and dequantizer give, in C-order shape."""
    reader = gguf.GGUFReader(str(path))
    return {tensor.name: _values(tensor) for tensor in reader.tensors}


def _values(tensor: gguf.ReaderTensor) -> np.ndarray:
    """The package's typed view for the types it does not dequantize (integers, f64)."""
    data = np.asarray(tensor.data)
    if tensor.tensor_type in (Q.I8, Q.I16, Q.I32, Q.I64, Q.F64):
        return data
    return gguf.quants.dequantize(data, tensor.tensor_type)


# --- raw headers ----------------------------------------------------------------------------


def gguf_string(text: str | bytes, length: int | None = None) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw) if length is None else length) + raw


def key_u32(key: str, value: int, value_type: int = 4) -> bytes:
    return gguf_string(key) + struct.pack("<II", value_type, value)


def tensor_info(name: str, dims: tuple[int, ...], type_id: int = 0, offset: int = 0) -> bytes:
    sizes = struct.pack(f"<{len(dims)}Q", *dims)
    return (
        gguf_string(name)
        + struct.pack("<I", len(dims))
        + sizes
        + struct.pack("<IQ", type_id, offset)
    )


def raw_gguf(
    path: Path,
    keys: list[bytes] = (),  # type: ignore[assignment]
    infos: list[bytes] = (),  # type: ignore[assignment]
    data: bytes = b"",
    *,
    version: int = 3,
    counts: tuple[int, int] | None = None,
    alignment: int = 32,
) -> Path:
    """A GGUF file from raw pieces; ``counts`` (tensors, keys) may lie about them."""
    tensors, key_count = counts if counts is not None else (len(infos), len(keys))
    header = b"GGUF" + struct.pack("<IQQ", version, tensors, key_count) + b"".join(keys)
    header += b"".join(infos)
    padding = -len(header) % alignment if data else 0
    path.write_bytes(header + bytes(padding) + data)
    return path
