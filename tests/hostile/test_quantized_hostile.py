"""Hostile quantized tensors and packed parameters: the new stand-ins check every argument.

Each pickle is assembled opcode by opcode (the helpers of ``test_pytorch_hostile``),
starting from the shape torch 2.13 writes (``VALID`` reads, as the first test shows)
and changing one thing. On the reader before quantized tensors were read, every one
of these was refused for holding ``_rebuild_qtensor`` or ``torch.ScriptObject`` at
all; each now gets the one line that names what is wrong with it.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.hostile.conftest import Refusal, assert_refused
from tests.hostile.test_pytorch_hostile import FALSE, TRUE, archive, call, g, i, program, s

MARK, TUPLE, DICT, SETITEMS, BUILD, NEWOBJ = b"(", b"t", b"}", b"u", b"b", b"\x81"
HOOKS = call(g("collections", "OrderedDict"))


def f(value: float) -> bytes:
    """BINFLOAT: push a float."""
    return b"G" + struct.pack(">d", value)


def tup(*items: bytes) -> bytes:
    return MARK + b"".join(items) + TUPLE


def lst(*items: bytes) -> bytes:
    """EMPTY_LIST, MARK items APPENDS: push a list."""
    return b"]" + (MARK + b"".join(items) + b"e" if items else b"")


def ints(*values: int) -> bytes:
    return tup(*map(i, values))


def storage(kind: str, key: str, numel: int) -> bytes:
    return tup(s("storage"), g("torch", kind), s(key), s("cpu"), i(numel)) + b"Q"


def tensor(kind: str, key: str, numel: int, size: tuple[int, ...]) -> bytes:
    rebuild = g("torch._utils", "_rebuild_tensor_v2")
    stride = [1] * len(size)
    return call(rebuild, storage(kind, key, numel), i(0), ints(*size), ints(*stride), FALSE, HOOKS)


def per_tensor(scale: bytes = f(0.1), zero_point: bytes = i(3)) -> bytes:
    return tup(g("torch", "per_tensor_affine"), scale, zero_point)


def per_channel(scales: bytes, points: bytes, axis: bytes = i(0)) -> bytes:
    return tup(g("torch", "per_channel_affine"), scales, points, axis)


SCALES = tensor("DoubleStorage", "1", 2, (2,))
POINTS = tensor("LongStorage", "2", 2, (2,))


def qtensor(
    params: bytes,
    kind: str = "QInt8Storage",
    numel: int = 6,
    size: tuple[int, ...] = (2, 3),
    stride: tuple[int, ...] = (3, 1),
    offset: int = 0,
    grad: bytes = FALSE,
    rebuild: bytes = g("torch._utils", "_rebuild_qtensor"),
    key: str = "0",
) -> bytes:
    where = storage(kind, key, numel)
    return call(rebuild, where, i(offset), ints(*size), ints(*stride), params, grad, HOOKS)


def state_dict(**entries: bytes) -> bytes:
    return program(DICT + MARK + b"".join(s(k) + v for k, v in entries.items()) + SETITEMS)


#: The members every pickle here may name: six qint8 values, two f64 scales, two i64 points.
STORAGES = {
    "0": bytes([1, 2, 3, 250, 5, 6]),
    "1": struct.pack("<2d", 0.5, 0.25),
    "2": struct.pack("<2q", 0, 1),
}


def script_object(state: bytes, cls: str) -> bytes:
    return g("torch", "ScriptObject") + b")" + NEWOBJ + tup(state, s(cls)) + BUILD


LINEAR = "__torch__.torch.classes.quantized.LinearPackedParamsBase"
CELL = "__torch__.torch.classes.rnn.CellParamsBase"
BIAS = tensor("FloatStorage", "3", 2, (2,))
STORAGES["3"] = struct.pack("<2f", 0.5, -0.5)


def linear(weight: bytes = qtensor(per_tensor()), bias: bytes = BIAS) -> bytes:
    return script_object(tup(weight, bias), LINEAR)


def cell(kind: str = "quantized_fp16", tensors: bytes = b"]", longs: bytes = b"]") -> bytes:
    return script_object(tup(s(kind), tensors, b"]", longs, lst(linear(), linear())), CELL)


VALID = {
    "per-tensor": state_dict(w=qtensor(per_tensor())),
    "per-channel": state_dict(w=qtensor(per_channel(SCALES, POINTS))),
    "packed-linear": state_dict(**{"fc._packed_params._packed_params": tup(
        qtensor(per_tensor()), BIAS)}),
    "lstm-cell": state_dict(**{"lstm._all_weight_values.0.param": cell()}),
}  # fmt: skip


@pytest.mark.parametrize("name", list(VALID))
def test_the_shapes_torch_writes_read(run_cli, tmp_path: Path, name: str) -> None:
    """The positive control: each hostile file below differs from one of these in one place."""
    path = archive(tmp_path / "valid.pt", VALID[name], STORAGES)
    result = run_cli(path, path)
    assert (result.code, result.err) == (0, "")


HOSTILE = {
    # lying types and numbers of the quantizer
    "scale-a-string": (state_dict(w=qtensor(per_tensor(scale=s("0.1")))),
                       "quantization scale '0.1' is not a float"),
    "scale-nan": (state_dict(w=qtensor(per_tensor(scale=f(float("nan"))))),
                  "quantization scales [nan] are not positive numbers a float32 holds"),
    "scale-beyond-float32": (state_dict(w=qtensor(per_tensor(scale=f(1e300)))),
                             "quantization scales [1e+300] are not positive numbers"),
    "zero-point-a-float": (state_dict(w=qtensor(per_tensor(zero_point=f(0.5)))),
                           "zero point 0.5 is not an integer"),
    "zero-point-a-bool": (state_dict(w=qtensor(per_tensor(zero_point=TRUE))),
                          "zero point True is not an integer"),
    "zero-point-out-of-range": (state_dict(w=qtensor(per_tensor(zero_point=i(300)))),
                                "zero points [300.0] are outside -128..127"),
    "params-too-few": (state_dict(w=qtensor(tup(g("torch", "per_tensor_affine"), f(0.1)))),
                       "quantizer parameters"),
    "scheme-a-string": (state_dict(w=qtensor(tup(s("per_tensor_affine"), f(0.1), i(0)))),
                        "quantizer parameters ('per_tensor_affine', 0.1, 0) are not torch's"),
    "axis-out-of-range": (state_dict(w=qtensor(per_channel(SCALES, POINTS, axis=i(2)))),
                          "per-channel axis 2 is out of range for size (2, 3)"),
    "axis-negative": (state_dict(w=qtensor(per_channel(SCALES, POINTS, axis=i(-1)))),
                      "per-channel axis -1 is out of range"),
    "axis-a-bool": (state_dict(w=qtensor(per_channel(SCALES, POINTS, axis=FALSE))),
                    "per-channel axis False is out of range"),
    "scales-wrong-length": (state_dict(w=qtensor(per_channel(SCALES, POINTS, axis=i(1)))),
                            "scales of size [2] and zero points of size [2] for 3 channels"),
    "scales-a-list": (state_dict(w=qtensor(per_channel(lst(f(0.5), f(0.2)), POINTS))),
                      "per-channel scales and zero points are not tensors"),
    "scales-f32-points-i64": (
        state_dict(w=qtensor(per_channel(tensor("FloatStorage", "3", 2, (2,)), POINTS))),
        "per-channel scales of f32 with zero points of i64 are not what torch writes"),
    # storages
    "storage-too-short": (state_dict(w=qtensor(per_tensor(), numel=6, size=(3, 3))),
                          "needs bytes [0, 9) of storage '0', which holds 6"),
    "packed-storage-too-short": (
        state_dict(w=qtensor(per_tensor(zero_point=i(1)), kind="QUInt4x2Storage", numel=6,
                             size=(4, 4), stride=(4, 1))),
        "needs 8 bytes of storage '0', which holds 6"),
    "packed-view": (state_dict(w=qtensor(per_tensor(zero_point=i(1)), kind="QUInt4x2Storage",
                                         size=(2, 2), stride=(2, 1), offset=1)),
                    "a view (offset 1, stride (2, 1)) of values packed 2 to a byte"),
    "float-storage": (state_dict(w=qtensor(per_tensor(), kind="FloatStorage", numel=4, key="1")),
                      "_rebuild_qtensor needs a quantized storage"),
    "qint8-as-plain-tensor": (state_dict(w=tensor("QInt8Storage", "0", 6, (6,))),
                              "_rebuild_tensor_v2 needs a typed storage of plain values"),
    "requires-grad": (state_dict(w=qtensor(per_tensor(), grad=TRUE)),
                      "a qint8 tensor cannot require gradients, which torch refuses"),
    # packed parameters with hostile contents
    "script-class-unknown": (state_dict(p=script_object(tup(), "os.system")),
                             "it holds a TorchScript object of class 'os.system', which diffai "
                             "does not read; nothing was executed"),
    "linear-three-values": (state_dict(p=script_object(tup(qtensor(per_tensor()), BIAS, BIAS),
                                                       LINEAR)),
                            "linear packed parameters"),
    "linear-weight-a-string": (state_dict(p=linear(weight=s("w"))), "are not (weight, bias)"),
    "cell-static-kind": (state_dict(p=cell(kind="quantized")),
                         "LSTM cell parameters of kind 'quantized', which diffai does not read"),
    "cell-foreign-biases": (state_dict(p=cell(kind="quantized_dynamic",
                                              tensors=lst(BIAS, BIAS), longs=lst(i(1)))),
                            "an LSTM cell's biases are not its packed weights' own; refused as "
                            "ambiguous"),
    "cell-linear-unbuilt": (state_dict(p=script_object(tup(
        s("quantized_fp16"), b"]", b"]", b"]",
        lst(g("torch", "ScriptObject") + b")" + NEWOBJ, linear())), CELL)),
        "LSTM cell parameters need two linear packed parameters"),
    "script-object-unbuilt": (state_dict(p=g("torch", "ScriptObject") + b")" + NEWOBJ),
                              "'p' is a torch.ScriptObject without state"),
    "script-object-built-twice": (state_dict(p=linear() + tup(tup(qtensor(per_tensor()), BIAS),
                                                             s(LINEAR)) + BUILD),
                                  "BUILD gave a torch.ScriptObject its state twice"),
    "script-object-new-with-args": (state_dict(p=g("torch", "ScriptObject") + tup(i(1)) + NEWOBJ),
                                    "torch.ScriptObject takes no arguments"),
    "script-object-called": (state_dict(p=call(g("torch", "ScriptObject"))),
                             "torch.ScriptObject cannot be called, which torch refuses"),
    "build-on-script-object-class": (
        state_dict(p=g("torch", "ScriptObject") + tup(tup(), s(LINEAR)) + BUILD),
        "malformed pickle"),
    "build-on-qscheme": (state_dict(p=g("torch", "per_tensor_affine") + DICT + BUILD),
                         "BUILD cannot give state to torch.per_tensor_affine"),
    "build-on-quantized-storage": (state_dict(p=g("torch", "QInt8Storage") + tup(s("f32")) + BUILD),
                                   "BUILD cannot give state to the storage type of qint8"),
    "packed-name-twice": (state_dict(**{"fc.weight": BIAS, "fc._packed_params._packed_params":
                                        tup(qtensor(per_tensor()), BIAS)}),
                          "'fc.weight' is named twice: on its own and as the weight in "
                          "'fc._packed_params._packed_params'; refused as ambiguous"),
    # lookalike names stay refused, named
    "lookalike-rebuild": (state_dict(a=qtensor(per_tensor()), w=qtensor(per_tensor(),
                                     rebuild=g("torch._utils", "_rebuild_qtensor_"))),
                          "refused to load pickled global 'torch._utils._rebuild_qtensor_'"),
    "lookalike-storage": (state_dict(w=qtensor(per_tensor(), kind="QInt8Storage ")),
                          # refused by the allow-list, then sized before torch.load would be
                          "storage type torch.QInt8Storage  is one diffai cannot size"),
    "lookalike-scheme-module": (state_dict(w=qtensor(tup(g("torch.nn", "per_tensor_affine"),
                                                         f(0.1), i(0)))),
                                "refused to load pickled global 'torch.nn.per_tensor_affine'"),
    "lookalike-script-object": (state_dict(p=g("torch._C", "ScriptObject") + b")" + NEWOBJ),
                                "it holds a TorchScript object (pickled global "
                                "'torch._C.ScriptObject')"),
    "symmetric-scheme": (state_dict(w=qtensor(tup(g("torch", "per_tensor_symmetric"), f(0.1),
                                                  i(0)))),
                         "it holds a symmetric quantization scheme (pickled global "
                         "'torch.per_tensor_symmetric')"),
}  # fmt: skip


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_hostile_quantized_tensor_or_packed_parameter_is_refused(
    refused: Callable[..., Refusal], tmp_path: Path, name: str
) -> None:
    pickled, problem = HOSTILE[name]
    hostile = archive(tmp_path / "hostile.pt", pickled, STORAGES)
    assert_refused(refused(hostile), problem)


def test_build_on_a_shared_stand_in_leaves_the_next_read_alone(run_cli, tmp_path: Path) -> None:
    """Refused BUILDs on the shared stand-ins (once a slotted dataclass's own ``__setstate__``
    let ``QInt8Storage`` become f32 for every later read) change nothing after them."""
    attempts = ["build-on-quantized-storage", "build-on-qscheme", "build-on-script-object-class"]
    for name in attempts:
        hostile = archive(tmp_path / f"{name}.pt", HOSTILE[name][0], STORAGES)
        assert run_cli(hostile, hostile).code == 2
    for name in VALID:
        valid = archive(tmp_path / f"{name}.pt", VALID[name], STORAGES)
        assert (run_cli(valid, valid).code, run_cli(valid, valid).err) == (0, ""), name
