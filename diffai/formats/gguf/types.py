"""GGML's tensor types: how many elements a block holds, how many bytes it takes, what it yields.

A table, not the ``gguf`` package's enum, so that the header parses without the
package and an id it does not know yet is still named. Ids, block sizes and type
sizes are ggml's (``ggml.h``, ``ggml.c``'s ``type_traits``).

Plain types are mapped and read as they are (``f16`` stays ``f16``); the others
are dequantized to f32 by ``gguf.quants.dequantize``, the values llama.cpp's
kernels compute with.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GgmlType:
    """One ggml tensor type."""

    name: str  # lower-case, as diffai names the stored dtype: ``q8_0``, ``q4_k``
    block: int  # elements per block
    size: int  # bytes per block
    #: The dtype of the values when the bytes are read as they are; None when dequantized.
    plain: str | None = None

    @property
    def values(self) -> str:
        return self.plain or "f32"

    def nbytes(self, elements: int) -> int:
        return elements // self.block * self.size


def _plain(name: str, size: int) -> GgmlType:
    return GgmlType(name, 1, size, name)


GGML_TYPES: dict[int, GgmlType] = {
    0: _plain("f32", 4),
    1: _plain("f16", 2),
    2: GgmlType("q4_0", 32, 18),
    3: GgmlType("q4_1", 32, 20),
    6: GgmlType("q5_0", 32, 22),
    7: GgmlType("q5_1", 32, 24),
    8: GgmlType("q8_0", 32, 34),
    9: GgmlType("q8_1", 32, 40),
    10: GgmlType("q2_k", 256, 84),
    11: GgmlType("q3_k", 256, 110),
    12: GgmlType("q4_k", 256, 144),
    13: GgmlType("q5_k", 256, 176),
    14: GgmlType("q6_k", 256, 210),
    15: GgmlType("q8_k", 256, 292),
    16: GgmlType("iq2_xxs", 256, 66),
    17: GgmlType("iq2_xs", 256, 74),
    18: GgmlType("iq3_xxs", 256, 98),
    19: GgmlType("iq1_s", 256, 50),
    20: GgmlType("iq4_nl", 32, 18),
    21: GgmlType("iq3_s", 256, 110),
    22: GgmlType("iq2_s", 256, 82),
    23: GgmlType("iq4_xs", 256, 136),
    24: _plain("i8", 1),
    25: _plain("i16", 2),
    26: _plain("i32", 4),
    27: _plain("i64", 8),
    28: _plain("f64", 8),
    29: GgmlType("iq1_m", 256, 56),
    30: _plain("bf16", 2),
    34: GgmlType("tq1_0", 256, 54),
    35: GgmlType("tq2_0", 256, 66),
    39: GgmlType("mxfp4", 32, 17),
    40: GgmlType("nvfp4", 64, 36),
    41: GgmlType("q1_0", 128, 18),
}
