"""Quantized PyTorch models, made here with torch 2.13, read without it, bit for bit as torch.

Each fixture is a real ``torch.ao.quantization`` state dict (static conv + linear with
per-channel weights, dynamic Linear and LSTM, loose tensors of every quantized dtype).
The reference is ``torch.load(weights_only=False)`` on these trusted files (its
weights-only loader refuses a dynamic LSTM's ``torch.ScriptObject``) and each
tensor's ``dequantize()``; the comparisons run through the CLI with torch hidden.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from diffai.formats import pytorch

LINEAR_TUPLE = "_packed_params._packed_params"
CELL_ENTRIES = ("weight_ih", "bias_ih", "weight_hh", "bias_hh")


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():  # torch's deprecation notes on torch.ao.quantization
        warnings.simplefilter("ignore")
        yield


class _Static(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.quant = torch.ao.quantization.QuantStub()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4 * 6 * 6, 5)
        self.dequant = torch.ao.quantization.DeQuantStub()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dequant(self.fc(torch.relu(self.conv(self.quant(x))).flatten(1)))


class _Dynamic(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 8)
        self.lstm = nn.LSTM(8, 6, num_layers=2)


def static_model() -> tuple[nn.Module, nn.Module]:
    """Post-training static quantization, x86 qconfig: per-channel qint8 weights."""
    torch.manual_seed(0)
    model = _Static().eval()
    model.qconfig = torch.ao.quantization.get_default_qconfig("x86")
    prepared = torch.ao.quantization.prepare(model)
    for _ in range(4):
        prepared(torch.randn(2, 3, 8, 8))
    return model, torch.ao.quantization.convert(prepared)


def dynamic_model() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(1)
    model = _Dynamic().eval()
    quantized = torch.ao.quantization.quantize_dynamic(model, {nn.Linear, nn.LSTM}, torch.qint8)
    return model, quantized


def loose_tensors() -> dict[str, torch.Tensor]:
    """Every dtype and scheme torch saves, including a big-valued qint32 and odd shapes."""
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(6, 7, generator=gen)
    scales = torch.rand(6, generator=gen, dtype=torch.float64) * 0.1 + 1e-3
    points = torch.randint(-5, 5, (6,), generator=gen)
    float_points = torch.randn(6, generator=gen) * 2
    int32 = torch.randint(-(2**31), 2**31 - 1, (5, 3), dtype=torch.int32, generator=gen)
    return {
        "qint8": torch.quantize_per_tensor(x, 0.0123, 3, torch.qint8),
        "quint8": torch.quantize_per_tensor(x, 0.05, 128, torch.quint8),
        "qint32": torch._make_per_tensor_quantized_tensor(int32, 0.37, -17),
        "quint4x2": torch.quantize_per_tensor(x, 0.3, 7, torch.quint4x2),
        "quint2x4": torch.quantize_per_tensor(x, 0.9, 1, torch.quint2x4),
        "channels": torch.quantize_per_channel(x, scales, points, 0, torch.qint8),
        "channels_u8_axis1": torch.quantize_per_channel(
            x, scales[:1].repeat(7), points[:1].repeat(7) + 100, 1, torch.quint8
        ),
        "float_qparams_4bit": torch.quantize_per_channel(
            x, scales.float(), float_points, 0, torch.quint4x2
        ),
        "transposed": torch.quantize_per_tensor(x, 0.02, 0, torch.qint8).t(),
    }


FIXTURES = {
    "static": lambda: static_model()[1].state_dict(),
    "dynamic": lambda: dynamic_model()[1].state_dict(),
    "tensors": loose_tensors,
}


@pytest.fixture(params=list(FIXTURES))
def saved(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    path = tmp_path / f"{request.param}.pt"
    torch.save(FIXTURES[request.param](), path)
    return path


def expected(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """What diffai names each tensor torch loaded (packed tuples and script objects opened)."""
    found: dict[str, torch.Tensor] = {}
    for name, value in checkpoint.items():
        if isinstance(value, torch.Tensor):
            found[name] = value
        elif name.endswith(LINEAR_TUPLE):
            module = name.removesuffix(LINEAR_TUPLE)
            found[f"{module}weight"], found[f"{module}bias"] = value
        elif isinstance(value, torch.ScriptObject):
            state = value.__getstate__()[0]
            (w_ih, b_ih), (w_hh, b_hh) = (p.__getstate__()[0] for p in state[4])
            cell = (w_ih, b_ih, w_hh, b_hh)
            found.update(zip((f"{name}.{e}" for e in CELL_ENTRIES), cell, strict=True))
    return found


def values(tensor: torch.Tensor) -> np.ndarray:
    return (tensor.dequantize() if tensor.is_quantized else tensor).detach().numpy()


def bits(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array).view(np.uint8)


def test_every_value_is_what_torch_dequantizes(saved: Path) -> None:
    model = pytorch.read(saved)
    truth = expected(torch.load(saved, weights_only=False))
    assert list(model.tensors) == list(truth)
    for name, tensor in truth.items():
        ref = model.tensors[name]
        assert ref.shape == tuple(tensor.shape), name
        assert np.array_equal(bits(ref.array()), bits(values(tensor))), name
        if tensor.is_quantized:
            assert (ref.dtype, ref.stored_dtype) == ("f32", str(tensor.dtype)[6:]), name
            assert ref.quantization == quantization_of(tensor), name


def quantization_of(tensor: torch.Tensor) -> dict[str, Any]:
    scheme = str(tensor.qscheme())[6:]
    if scheme == "per_tensor_affine":
        return {"scheme": scheme, "scale": tensor.q_scale(), "zero_point": tensor.q_zero_point(),
                "axis": None}  # fmt: skip
    scales = tensor.q_per_channel_scales().double().numpy()
    points = tensor.q_per_channel_zero_points().double().numpy()
    summary = lambda v: {"min": v.min(), "max": v.max(), "mean": v.mean()}  # noqa: E731
    return {"scheme": scheme, "axis": tensor.q_per_channel_axis(), "channels": scales.size,
            "scale": summary(scales), "zero_point": summary(points)}  # fmt: skip


def test_stored_bytes_are_the_integers_and_the_channel_parameters(tmp_path: Path) -> None:
    path = tmp_path / "t.pt"
    torch.save(loose_tensors(), path)
    stored = {name: ref.stored_bytes for name, ref in pytorch.read(path).tensors.items()}
    assert stored == {
        "qint8": 42, "quint8": 42, "qint32": 60, "quint4x2": 21, "quint2x4": 11,
        "channels": 42 + 6 * 16, "channels_u8_axis1": 42 + 7 * 16,
        "float_qparams_4bit": 21 + 6 * 8, "transposed": 42,
    }  # fmt: skip


@pytest.mark.parametrize("name", ["static", "tensors"])
def test_a_legacy_file_gives_the_same_tensors_through_torch(tmp_path: Path, name: str) -> None:
    checkpoint = FIXTURES[name]()
    torch.save(checkpoint, zipped := tmp_path / "zip.pt")
    torch.save(checkpoint, legacy := tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    ours, torchs = pytorch.read(zipped), pytorch.read(legacy)
    assert torchs.metadata["torch_format"] == "legacy"
    assert list(ours.tensors) == list(torchs.tensors)
    for tensor_name, ref in ours.tensors.items():
        other = torchs.tensors[tensor_name]
        assert ref == other, tensor_name  # name, shape, dtype, stored dtype and bytes
        assert ref.quantization == other.quantization, tensor_name
        assert np.array_equal(bits(ref.array()), bits(other.array())), tensor_name


def test_a_legacy_dynamic_lstm_is_refused_as_torch_refuses_it(run_cli, tmp_path: Path) -> None:
    path = tmp_path / "legacy.pt"
    torch.save(FIXTURES["dynamic"](), path, _use_new_zipfile_serialization=False)
    result = run_cli(path, path)
    assert result.code == 2
    assert result.err == (
        f"diffai: error: {path}: it holds a TorchScript object (such as a dynamic quantized "
        "LSTM's weights) (pickled global 'torch.ScriptObject'), which diffai does not read yet; "
        "nothing was executed; torch.load(weights_only=True) refused it\n"
    )


# --- through the CLI, torch unimportable ---------------------------------------------------


def test_a_quantized_model_against_itself_is_unchanged(run_without_torch, saved: Path) -> None:
    result = run_without_torch(saved, saved, "--brief")
    assert (result.code, result.err) == (0, "")


def perturbed(tensor: torch.Tensor, step: int) -> torch.Tensor:
    """The same quantizer, every ``step``-th stored integer moved by one (within range)."""
    ints = tensor.int_repr().clone().reshape(-1)
    high = torch.iinfo(ints.dtype).max
    ints[::step] = torch.where(ints[::step] < high, ints[::step] + 1, ints[::step] - 1)
    ints = ints.reshape(tensor.shape)
    if tensor.qscheme() == torch.per_tensor_affine:
        scale, zero_point = tensor.q_scale(), tensor.q_zero_point()
        return torch._make_per_tensor_quantized_tensor(ints, scale, zero_point)
    return torch._make_per_channel_quantized_tensor(
        ints, tensor.q_per_channel_scales(), tensor.q_per_channel_zero_points(),
        tensor.q_per_channel_axis(),
    )  # fmt: skip


def float64_stats(base: np.ndarray, cand: np.ndarray) -> dict[str, float]:
    b, c = base.astype(np.float64).reshape(-1), cand.astype(np.float64).reshape(-1)
    d = c - b
    return {
        "b.mean": b.mean(), "b.std": b.std(), "b.min": b.min(), "b.max": b.max(),
        "c.mean": c.mean(), "c.std": c.std(), "c.min": c.min(), "c.max": c.max(),
        "max_abs": np.abs(d).max(), "mean_abs": np.abs(d).mean(), "l2": np.linalg.norm(d),
        "relative_l2": np.linalg.norm(d) / np.linalg.norm(b),
        "cosine": b @ c / (np.linalg.norm(b) * np.linalg.norm(c)),
    }  # fmt: skip


def reported_stats(record: dict[str, Any]) -> dict[str, float]:
    sides = {f"{s[0]}.{k}": record[s][k] for s in ("baseline", "candidate")
             for k in ("mean", "std", "min", "max")}  # fmt: skip
    keys = ("max_abs", "mean_abs", "l2", "relative_l2", "cosine")
    return {**sides, **{k: record["diff"][k] for k in keys}}


def report_of(run_without_torch, validate_report, *argv: Path | str) -> dict[str, Any]:
    report = Path(argv[0]).parent / "report.json"
    result = run_without_torch(*argv, "--report", report)
    assert result.err == "", result.err
    document = json.loads(report.read_text())
    validate_report(document)
    return document


@pytest.mark.parametrize(
    ("make", "names"),
    [
        pytest.param(static_model, ["conv.weight", "fc.weight"], id="static-per-channel"),
        pytest.param(
            dynamic_model,
            ["fc.weight", "lstm._all_weight_values.1.param.weight_hh"],
            id="dynamic-linear-lstm",
        ),
    ],
)
def test_a_perturbed_copy_has_the_exact_float64_statistics(
    run_without_torch, validate_report, tmp_path: Path, make: Callable, names: list[str]
) -> None:
    state = make()[1].state_dict()
    torch.save(state, base_path := tmp_path / "base.pt")
    truth = expected(state)
    changed = {name: perturbed(truth[name], step=3) for name in names}
    _replace(state, changed)
    torch.save(state, cand_path := tmp_path / "cand.pt")
    document = report_of(run_without_torch, validate_report, base_path, cand_path)
    records = {t["name"]: t for t in document["tensors"]}
    for name in names:
        record = records[name]
        assert record["status"] == "changed"
        assert record["candidate"]["stored_dtype"] == "qint8"
        assert record["candidate"]["quantization"] == record["baseline"]["quantization"]
        want = float64_stats(values(truth[name]), values(changed[name]))
        assert reported_stats(record) == pytest.approx(want, rel=1e-6), name


def _replace(state: dict[str, Any], changed: dict[str, torch.Tensor]) -> None:
    """Put perturbed weights back where torch keeps them: a tensor, a packed tuple, a cell."""
    for name, tensor in changed.items():
        module, _, leaf = name.rpartition(".")
        if name in state:
            state[name] = tensor
        elif f"{module}.{LINEAR_TUPLE}" in state:
            state[f"{module}.{LINEAR_TUPLE}"] = (tensor, state[f"{module}.{LINEAR_TUPLE}"][1])
        else:
            state[module] = _cell_with(state[module], leaf, tensor)


def _cell_with(cell: torch.ScriptObject, leaf: str, weight: torch.Tensor) -> torch.ScriptObject:
    _kind, tensors, _doubles, longs, packed = cell.__getstate__()[0]
    index = 0 if leaf == "weight_ih" else 1
    bias = tensors[index]
    packed = list(packed)
    packed[index] = torch.ops.quantized.linear_prepack(weight, bias)
    return torch.ops.quantized.make_quantized_cell_params_dynamic(
        packed[0], packed[1], tensors[0], tensors[1], bool(longs[0])
    )


def float_names(float_model: nn.Module, quantized_state: dict[str, Any]) -> dict[str, Any]:
    """The float weights under diffai's names of the quantized ones (an LSTM's by layer)."""
    state = dict(float_model.state_dict())
    for name in list(state):
        if name.startswith("lstm.") and "_l" in name:
            kind, layer = name.removeprefix("lstm.").rsplit("_l", 1)
            state[f"lstm._all_weight_values.{layer}.param.{kind}"] = state.pop(name)
    return {name: tensor for name, tensor in state.items() if name in expected(quantized_state)}


@pytest.mark.parametrize("make", [static_model, dynamic_model], ids=["static", "dynamic"])
def test_against_the_float_model_in_safetensors_it_measures_the_quantization(
    run_without_torch, validate_report, write_safetensors, tmp_path: Path, make: Callable
) -> None:
    float_model, quantized = make()
    state = quantized.state_dict()
    torch.save(state, quantized_path := tmp_path / "quantized.pt")
    floats = {n: t.detach().numpy() for n, t in float_names(float_model, state).items()}
    float_path = write_safetensors("float.safetensors", floats)
    document = report_of(run_without_torch, validate_report, float_path, quantized_path)
    truth = expected(state)
    retyped = [n for n, t in truth.items() if t.is_quantized]
    records = {t["name"]: t for t in document["tensors"]}
    assert {n for n, r in records.items() if r["status"] == "dtype_changed"} == set(retyped)
    change = sum(float(np.sum((values(truth[n]) - floats[n].astype(np.float64)) ** 2))
                 for n in retyped)  # fmt: skip
    size = sum(float(np.sum(floats[n].astype(np.float64) ** 2)) for n in retyped)
    analysis = document["analyses"]["quantization_analysis"]
    assert analysis["relative_error"] == pytest.approx(math.sqrt(change / size), rel=1e-6)
    assert analysis["sqnr_db"] == pytest.approx(10 * math.log10(size / change), rel=1e-6)
    stored = sum(records[n]["candidate"]["bytes"] for n in retyped)
    assert analysis["compression"] == pytest.approx(stored / sum(floats[n].nbytes for n in retyped))
    assert analysis["conversions"] == {"f32->qint8": len(retyped)}
    assert analysis["precision_loss"] in ("low", "moderate")


def test_text_output_names_the_stored_dtype(
    run_without_torch, write_safetensors, tmp_path: Path
) -> None:
    float_model, quantized = static_model()
    state = quantized.state_dict()
    torch.save(state, quantized_path := tmp_path / "quantized.pt")
    floats = {n: t.detach().numpy() for n, t in float_names(float_model, state).items()}
    result = run_without_torch(write_safetensors("float.safetensors", floats), quantized_path)
    assert result.code == 1
    assert "  ~ conv.weight: dtype=f32->qint8, rel_l2=0.00" in result.out
