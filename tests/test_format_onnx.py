"""The ONNX reader against the onnx package's own reading: real files, every storage field,
external data, subgraph constants, cross-format with safetensors, and without torch."""

from __future__ import annotations

import json
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import save_file

import diffai
from diffai.comparison import compare_models
from diffai.dtypes import numpy_dtype
from diffai.roles import role_of
from tests.onnx_models import model_of, onnx_reference, perturbed, save
from tests.real_models import REAL

SILERO = REAL / "silero_vad.onnx"


def assert_reads_as_onnx_does(path: Path) -> diffai.model.Model:
    """Names, shapes, dtypes and values equal the onnx package's (value dtypes compared)."""
    model = diffai.open_model(path)
    reference = onnx_reference(path)
    assert sorted(model.tensors) == sorted(reference)
    for name, expected in reference.items():
        values = model.tensors[name].array()
        assert values.shape == expected.shape, name
        as_values = expected.astype(numpy_dtype(model.tensors[name].dtype))
        assert np.array_equal(values, as_values, equal_nan=True), name
    return model


def test_silero_reads_every_subgraph_constant_as_onnx_does() -> None:
    model = assert_reads_as_onnx_does(SILERO)
    assert len(model.tensors) == 341
    weight = "If_0/then_branch/If_0_then_branch__Inline_0__encoder.0.reparam_conv.weight"
    assert model.tensors[weight].shape == (128, 129, 3)
    roles = {name: role_of(name, ref.role_hint) for name, ref in model.tensors.items()}
    assert roles[weight] == "weight"
    assert roles["Constant_0_output"] == "constant"
    assert model.metadata == {"ir_version": 8, "producer": "spox", "opsets": {"ai.onnx": 16}}


def test_silero_against_itself_is_identical(run_cli, validate_report, tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    result = run_cli(SILERO, SILERO, "--report", report)
    assert (result.code, result.err) == (0, "")
    document = json.loads(report.read_text())
    validate_report(document)
    assert {t["role"] for t in document["tensors"]} == {"weight", "constant"}


def test_a_perturbed_silero_is_measured_to_float64_accuracy(tmp_path: Path) -> None:
    candidate = perturbed(SILERO, tmp_path / "moved.onnx")
    comparison = compare_models(diffai.open_model(SILERO), diffai.open_model(candidate))
    base, cand = onnx_reference(SILERO), onnx_reference(candidate)
    changed = {t.name: t for t in comparison.tensors if t.status == "changed"}
    assert len(changed) == 28
    for name, tensor in changed.items():
        b, c = base[name].astype(np.float64), cand[name].astype(np.float64)
        assert tensor.candidate.mean == pytest.approx(c.mean(), rel=1e-6, abs=1e-12)
        assert tensor.candidate.std == pytest.approx(c.std(), rel=1e-6)
        assert tensor.diff.l2 == pytest.approx(np.linalg.norm(c - b), rel=1e-6)
        assert tensor.diff.max_abs == pytest.approx(np.abs(c - b).max(), rel=1e-6)


def test_a_torch_export_compares_identical_to_its_state_dict(run_cli, tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    exported = tmp_path / "net.onnx"
    torch.onnx.export(
        net, (torch.zeros(1, 4),), str(exported), dynamo=False, do_constant_folding=False
    )
    state = {k: v.numpy() for k, v in net.state_dict().items()}
    save_file(state, tmp_path / "net.safetensors")
    assert sorted(diffai.open_model(exported).tensors) == sorted(state)
    result = run_cli(tmp_path / "net.safetensors", exported)
    assert (result.code, result.err) == (0, ""), result.out


def test_external_data_reads_in_place(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    arrays = {"a": rng.standard_normal((64, 32), np.float32), "b": np.arange(10, dtype=np.int64)}
    path = save(model_of(arrays), tmp_path / "model.onnx", external=True)
    assert (tmp_path / "model.onnx.data").stat().st_size > path.stat().st_size
    model = assert_reads_as_onnx_does(path)
    assert model.size_bytes == path.stat().st_size + (tmp_path / "model.onnx.data").stat().st_size
    assert not model.tensors["a"].array().flags.owndata  # a view of the mapped file


def _typed(name: str, data_type: int, values, dims) -> TensorProto:
    return helper.make_tensor(name, data_type, dims, values)


TYPED = [
    pytest.param(TensorProto.FLOAT, [1.5, -2.0, 3.25], id="float_data"),
    pytest.param(TensorProto.DOUBLE, [1e300, -2.5, 0.1], id="double_data"),
    pytest.param(TensorProto.INT64, [-(2**63), 5, 2**63 - 1], id="int64_data"),
    pytest.param(TensorProto.INT32, [-(2**31), -1, 7], id="int32_data"),
    pytest.param(TensorProto.INT8, [-128, -1, 127], id="int8-in-int32_data"),
    pytest.param(TensorProto.UINT16, [0, 65535, 3], id="uint16-in-int32_data"),
    pytest.param(TensorProto.UINT64, [0, 2**64 - 1, 9], id="uint64_data"),
    pytest.param(TensorProto.UINT32, [0, 2**32 - 1, 9], id="uint32-in-uint64_data"),
    pytest.param(TensorProto.BOOL, [True, False, True], id="bool"),
    pytest.param(TensorProto.FLOAT16, np.array([1.5, -0.0, 65504], np.float16), id="float16"),
    pytest.param(
        TensorProto.BFLOAT16, np.array([1.5, -3.0, 1e30], ml_dtypes.bfloat16), id="bfloat16"
    ),
    pytest.param(TensorProto.FLOAT8E4M3FN, np.array([1, -448, 0.5], ml_dtypes.float8_e4m3fn),
                 id="f8e4m3fn"),
    pytest.param(TensorProto.FLOAT8E4M3FNUZ,
                 np.array([1, -240, 0.5], ml_dtypes.float8_e4m3fnuz), id="f8e4m3fnuz"),
    pytest.param(TensorProto.FLOAT8E5M2, np.array([1, -57344, 2], ml_dtypes.float8_e5m2),
                 id="f8e5m2"),
    pytest.param(TensorProto.FLOAT8E5M2FNUZ,
                 np.array([1, -57344, 2], ml_dtypes.float8_e5m2fnuz), id="f8e5m2fnuz"),
    pytest.param(TensorProto.INT4, np.array([-8, 7, -1], ml_dtypes.int4), id="int4"),
    pytest.param(TensorProto.UINT4, np.array([0, 15, 9], ml_dtypes.uint4), id="uint4"),
    pytest.param(TensorProto.COMPLEX64, np.array([1 + 2j, -3j, 4], np.complex64), id="c64"),
]  # fmt: skip


@pytest.mark.parametrize("raw", [False, True], ids=["typed-field", "raw_data"])
@pytest.mark.parametrize(("data_type", "values"), TYPED)
def test_every_storage_field_reads_as_onnx_does(tmp_path, data_type, values, raw) -> None:
    tensor = _typed("t", data_type, values, [3])
    if raw:
        tensor = numpy_helper.from_array(numpy_helper.to_array(tensor), "t")
    path = save(model_of([tensor]), tmp_path / "typed.onnx")
    model = assert_reads_as_onnx_does(path)
    stored = model.tensors["t"].stored_dtype
    expected = {TensorProto.INT4: "i4", TensorProto.UINT4: "u4",
                TensorProto.FLOAT8E4M3FNUZ: "f8_e4m3fnuz"}  # fmt: skip
    if data_type in expected:
        assert stored == expected[data_type]


def test_an_odd_count_of_4bit_values_drops_the_padding_nibble(tmp_path: Path) -> None:
    values = np.array([[-8, 7, 1], [2, -3, 0], [5, 6, -1]], ml_dtypes.int4)
    path = save(model_of([numpy_helper.from_array(values, "q")]), tmp_path / "q.onnx")
    ref = assert_reads_as_onnx_does(path).tensors["q"]
    assert (ref.dtype, ref.stored_dtype, ref.stored_bytes) == ("i8", "i4", 5)


def _if_model() -> onnx.ModelProto:
    def branch(value: float) -> onnx.GraphProto:
        weight = numpy_helper.from_array(np.full((2, 2), value, np.float32), "w")
        constant = helper.make_node(
            "Constant", [], ["c"], value=numpy_helper.from_array(np.full((3,), value, np.float32))
        )
        return helper.make_graph(
            [constant], "b", [], [helper.make_tensor_value_info("c", TensorProto.FLOAT, [3])],
            initializer=[weight],
        )  # fmt: skip

    nodes = [
        helper.make_node("Constant", [], ["axes"], value_ints=[0, 1]),
        helper.make_node("Constant", [], ["eps"], value_float=1e-5),
        helper.make_node("If", ["cond"], ["out"], name="If_0",
                         then_branch=branch(1.0), else_branch=branch(2.0)),
    ]  # fmt: skip
    return model_of([], nodes)


def test_subgraph_tensors_are_named_by_their_node_path(tmp_path: Path) -> None:
    path = save(_if_model(), tmp_path / "if.onnx")
    model = assert_reads_as_onnx_does(path)
    assert sorted(model.tensors) == [
        "If_0/else_branch/c", "If_0/else_branch/w", "If_0/then_branch/c", "If_0/then_branch/w",
        "axes", "eps",
    ]  # fmt: skip
    roles = {n: role_of(n, r.role_hint) for n, r in model.tensors.items()}
    assert roles == {**dict.fromkeys(roles, "weight"), "axes": "constant", "eps": "constant"}


def test_onnx_reads_without_torch(run_without_torch, tmp_path: Path) -> None:
    candidate = perturbed(SILERO, tmp_path / "moved.onnx")
    result = run_without_torch(SILERO, candidate, "-o", "json")
    assert result.code == 1, result.err
    assert '"TensorStatsChanged"' in result.out


def test_format_onnx_forces_the_reader(run_cli, tmp_path: Path) -> None:
    path = save(model_of({"w": np.ones(3, np.float32)}), tmp_path / "weights.bin")
    assert run_cli(path, path, "--format", "onnx").code == 0


def test_a_role_hint_one_side_lacks_is_dropped(tmp_path: Path) -> None:
    """A constant in the baseline that the candidate holds as an initializer is judged as one."""
    constant = helper.make_node("Constant", [], ["eps"], value_float=1e-5)
    base = save(model_of([], [constant]), tmp_path / "base.onnx")
    cand = save(model_of({"eps": np.array(1e-3, np.float32)}), tmp_path / "cand.onnx")
    same = compare_models(diffai.open_model(base), diffai.open_model(base))
    moved = compare_models(diffai.open_model(base), diffai.open_model(cand))
    assert [t.role for t in same.tensors] == ["constant"]
    assert [(t.role, t.status) for t in moved.tensors] == [("weight", "changed")]


def test_mutated_files_read_as_onnx_reads_them_or_are_refused(tmp_path: Path) -> None:
    """Seeded byte mutations of the fuzz seeds: whatever both read, they read alike.

    Files diffai reads and the onnx package refuses are counted, not failed: they are
    protobuf damage inside fields diffai skips (value_info, doc strings), where the
    walker does not parse (docs/security.md, known limits).
    """
    import random
    import warnings

    from diffai.errors import DiffaiError
    from tests.fuzz.targets import ONNX_EXTERNAL

    seeds = [p.read_bytes() for p in sorted((Path(__file__).parent / "fuzz/corpus/onnx").glob("*"))]
    (tmp_path / "w.data").write_bytes(ONNX_EXTERNAL)
    rng, both = random.Random(0), 0
    for _ in range(300):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 3)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        path = tmp_path / "m.onnx"
        path.write_bytes(bytes(data))
        try:
            model = diffai.open_model(path)
        except DiffaiError:  # refused: one line, checked by the hostile suite
            continue
        ours = {name: ref.array() for name, ref in model.tensors.items()}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                theirs = onnx_reference(path)
        except Exception:  # the onnx package refuses it: nothing to agree with
            continue
        both += 1
        assert sorted(ours) == sorted(theirs)
        for name, expected in theirs.items():
            assert np.array_equal(ours[name], expected.astype(ours[name].dtype), equal_nan=True)
    assert both > 20
