"""Start-up: what a plain run does not need is imported only when a model or a path asks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import ml_dtypes
import numpy as np

from diffai import _kernel, dtypes, stats, text
from tests.test_startup import imported_by_run

#: Imported by a plain f32 safetensors run with ``--report -q`` only when needed: bf16 and
#: f8 types, thread pools of remote reads, the statistics module's exact fallbacks.
NOT_FOR_AN_F32_RUN = ("ml_dtypes", "concurrent.futures", "statistics")


def test_an_f32_run_imports_neither_ml_dtypes_nor_thread_pools(
    write_safetensors: Callable[..., Path], tmp_path: Path
) -> None:
    weights = np.arange(12, dtype=np.float32).reshape(3, 4)
    baseline = write_safetensors("base.safetensors", {"fc.weight": weights, "fc.bias": weights[0]})
    candidate = write_safetensors("cand.safetensors", {"fc.weight": weights * 1.1})
    argv = [str(baseline), str(candidate), "--report", str(tmp_path / "report.json"), "-q"]
    code, modules = imported_by_run(argv)
    assert code == 1
    assert sorted(modules.intersection(NOT_FOR_AN_F32_RUN)) == []


def test_f32_npy_and_torch_runs_import_no_ml_dtypes_either(tmp_path: Path) -> None:
    """The readers ask the dtype table by name (``dtypes.NAMES``, ``itemsize``), not by the
    table of numpy dtypes that needs ml_dtypes' types."""
    import torch

    weights = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.save(tmp_path / "base.npy", weights)
    np.save(tmp_path / "cand.npy", weights * 1.1)
    torch.save({"w": torch.from_numpy(weights)}, tmp_path / "base.pt")
    torch.save({"w": torch.from_numpy(weights * 1.1)}, tmp_path / "cand.pt")
    for suffix in ("npy", "pt"):
        pair = [str(tmp_path / f"{side}.{suffix}") for side in ("base", "cand")]
        code, modules = imported_by_run([*pair, "-q"])
        assert code == 1
        assert "ml_dtypes" not in modules, suffix


def test_a_bf16_run_reads_bf16_as_stored(
    write_safetensors: Callable[..., Path], tmp_path: Path
) -> None:
    weights = np.linspace(-2, 2, 12, dtype=np.float32).astype(ml_dtypes.bfloat16)
    baseline = write_safetensors("base.safetensors", {"w": weights})
    argv = [str(baseline), str(baseline), "--report", str(tmp_path / "report.json"), "-q"]
    code, modules = imported_by_run(argv)
    assert code == 0
    assert "ml_dtypes" in modules


def test_the_dtype_table_lists_every_name_in_its_order() -> None:
    names = ["f64", "f32", "f16", "bf16", "f8_e4m3", "f8_e5m2", "i64", "i32", "i16", "i8"]
    names += ["u64", "u32", "u16", "u8", "bool", "c64", "c128"]
    assert list(dtypes.NUMPY_DTYPES) == names
    assert dtypes.NUMPY_DTYPES["bf16"] == np.dtype(ml_dtypes.bfloat16)
    assert dtypes.NUMPY_DTYPES["f8_e4m3"] == np.dtype(ml_dtypes.float8_e4m3fn)
    assert dtypes.NUMPY_DTYPES["f8_e5m2"] == np.dtype(ml_dtypes.float8_e5m2)
    assert {name: dtypes.itemsize(name) for name in names} == {
        name: dtype.itemsize for name, dtype in dtypes.NUMPY_DTYPES.items()
    }
    swapped = [dtype.newbyteorder(">") for dtype in dtypes.NUMPY_DTYPES.values()]
    assert [dtypes.canonical_name(dtype) for dtype in swapped] == names


def test_the_kernel_reads_bf16_in_native_order_only() -> None:
    bf16 = np.dtype(ml_dtypes.bfloat16)
    assert stats._kernel_code(bf16) == _kernel.BF16
    assert stats._kernel_code(bf16.newbyteorder(">")) is None
    assert stats._kernel_code(np.dtype(np.int8)) is None
    assert stats.DIRECT_CODES == {"f64": _kernel.F64, "f32": _kernel.F32, "f16": _kernel.F16,
                                  "bf16": _kernel.BF16}  # fmt: skip


def test_the_lazily_compiled_patterns_are_the_module_attributes() -> None:
    assert text.INVISIBLE.search("a\u202eb") and text.BLANK.search("fc1.weight\u3164")
    assert text.INVISIBLE is text.INVISIBLE
    assert text.escaped("a\u3164\n") == "a\\u3164\\n"
