"""The fuzz targets: bytes in, and either a usable result or a DiffaiError out, nothing else.

Shared by the atheris harnesses (``fuzz_*.py``), their plain-Python fallback
(``mutate.py``), the hypothesis properties and the replay of committed
regressions (``tests/hostile``), so all four hold the readers to one contract:

- the reader returns a model whose every tensor loads with the promised shape
  and dtype, and which compares and reports (strict JSON) without error; or
- it raises a ``DiffaiError`` whose message is one line;
- and in no case does it start a process or open a socket (an audit hook
  watches), or leave the sentinel file a crafted pickle would create.

Any other exception, or a broken promise, propagates: that is a crash.
"""

from __future__ import annotations

import io
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from diffai.adapters import prepare
from diffai.comparison import CompareOptions, compare_models
from diffai.dtypes import numpy_dtype
from diffai.errors import DiffaiError, PolicyError
from diffai.formats import keras, matlab, open_model
from diffai.formats.limits import check_model
from diffai.functional import probes
from diffai.functional.graph import admit
from diffai.model import Model, TensorRef
from diffai.policy.functional import FunctionalPolicy
from diffai.policy.load import load_metrics, load_policy
from diffai.renderers.markdown import render_markdown
from diffai.report import Report

#: Audit events that mean a byte of input ran as code: a process, a shell, a socket.
FORBIDDEN_EVENTS = frozenset(
    {
        "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
        "subprocess.Popen", "pty.spawn", "socket.connect", "socket.bind", "webbrowser.open",
    }
)  # fmt: skip
#: The file the crafted pickles of the corpus create if they ever run.
SENTINEL = Path(tempfile.gettempdir()) / "diffai-fuzz-sentinel"
#: Storages that a fuzzed data.pkl may name: ``data/0`` (16 bytes) and ``data/1`` (8 bytes).
STORAGES = {"0": bytes(range(16)), "1": bytes(8)}
#: The real SavedModel whose index a fuzzed input replaces.
TF_MODULE = Path(__file__).resolve().parents[1] / "data" / "tensorflow" / "module"


class CodeRan(AssertionError):
    """An input made diffai start a process, open a socket or create the sentinel file."""


_watching: list[str] = []


def _audit(event: str, _args: tuple[object, ...]) -> None:
    if _watching and event in FORBIDDEN_EVENTS:
        _watching.append(event)


sys.addaudithook(_audit)  # hooks cannot be removed, so this one only records while watching


@contextmanager
def no_code_runs() -> Iterator[None]:
    SENTINEL.unlink(missing_ok=True)
    _watching[:] = ["watching"]
    try:
        yield
    finally:
        events, _watching[:] = _watching[1:], []
        if events or SENTINEL.exists():
            raise CodeRan(f"audit events {events}, sentinel created: {SENTINEL.exists()}")


def check_model_file(
    path: Path, format: str | None, read: Callable[[Path], Model] | None = None
) -> Model | None:
    """The reader contract for one file: a usable model, or one DiffaiError line.

    ``read`` replaces ``open_model`` (whose checks still apply) for a reader fuzzed in
    this process rather than in the isolated child it runs in for users.
    """
    try:
        model = open_model(path, format) if read is None else _read_checked(read, path)
        _exercise(model)
    except DiffaiError as exc:
        _one_line(exc)
        return None
    return model


def _read_checked(read: Callable[[Path], Model], path: Path) -> Model:
    model = read(path)
    check_model(path, model)
    return model


def _exercise(model: Model) -> None:
    """Every promise a reader makes, used the way a comparison and a report use it."""
    for ref in model.tensors.values():
        array = ref.array()
        assert array.shape == ref.shape, (ref.name, array.shape, ref.shape)
        assert array.dtype.newbyteorder("<") == numpy_dtype(ref.dtype), (ref.name, array.dtype)
    report = Report.build(compare_models(model, model))
    report.to_json()
    render_markdown(report.document)


def _one_line(exc: DiffaiError) -> None:
    message = str(exc)
    assert message and "\n" not in message and "\r" not in message, repr(message)


def safetensors_input(data: bytes, workdir: Path) -> None:
    path = workdir / "fuzz.safetensors"
    path.write_bytes(data)
    with no_code_runs():
        check_model_file(path, "safetensors")


def pytorch_input(data: bytes, workdir: Path) -> None:
    """Odd first byte: the rest is data.pkl in a well-formed torch zip; even: the whole file."""
    path = workdir / "fuzz.pt"
    path.write_bytes(torch_zip(data[1:]) if data[:1] and data[0] & 1 else data[1:])
    with no_code_runs():
        check_model_file(path, "pytorch")


def matlab_input(data: bytes, workdir: Path) -> None:
    """A whole .mat file, v5 or v7.3 by its content, parsed in this process: users get it
    parsed in a bounded child (``diffai.formats.isolated``), whose crashes are one line, but
    the Python around scipy and h5py must turn every refusal into one, and is fuzzed here."""
    path = workdir / "fuzz.mat"
    path.write_bytes(data)
    # Imported before watching: their first import runs ldconfig, which no input caused.
    import h5py  # noqa: F401 -- imported for its side effect
    import scipy.io  # noqa: F401 -- likewise

    with no_code_runs():
        check_model_file(path, "matlab", matlab.read_in_process)


#: The external data file every fuzzed ONNX model may point at (``location: w.data``).
ONNX_EXTERNAL = bytes(range(64))


def onnx_input(data: bytes, workdir: Path) -> None:
    """A whole .onnx file, beside a 64-byte ``w.data`` its external data may name; read as
    weights, then checked for running and planned probes for, as a functional gate would
    before ONNX Runtime sees it (nothing runs here)."""
    path = workdir / "fuzz.onnx"
    path.write_bytes(data)
    (workdir / "w.data").write_bytes(ONNX_EXTERNAL)
    with no_code_runs():
        check_model_file(path, "onnx")
        check_admission(path)


def check_admission(path: Path) -> None:
    try:
        signature = admit(path, allow_contrib=True)
        probes.plan(signature.inputs, FunctionalPolicy(), {}, signature.vocabularies)
    except DiffaiError as exc:
        _one_line(exc)


def gguf_input(data: bytes, workdir: Path) -> None:
    """A whole .gguf file; its quantized tensors go through ``gguf.quants.dequantize``."""
    path = workdir / "fuzz.gguf"
    path.write_bytes(data)
    import gguf.quants  # noqa: F401 -- imported before watching, as the MATLAB target does

    with no_code_runs():
        check_model_file(path, "gguf")


def tflite_input(data: bytes, workdir: Path) -> None:
    path = workdir / "fuzz.tflite"
    path.write_bytes(data)
    with no_code_runs():
        check_model_file(path, "tflite")


def keras_input(data: bytes, workdir: Path) -> None:
    """Odd first byte: the rest is ``model.weights.h5`` inside a well-formed .keras zip; even:
    the whole file (an .h5, or a zip), parsed in this process like ``matlab_input``."""
    path = workdir / "fuzz.keras"
    path.write_bytes(keras_zip(data[1:]) if data[:1] and data[0] & 1 else data[1:])
    import h5py  # noqa: F401 -- imported before watching, as in matlab_input

    with no_code_runs():
        check_model_file(path, "keras", keras.read_in_process)


def tensorflow_input(data: bytes, workdir: Path) -> None:
    """Odd first byte: the rest is ``variables.index`` of a copy of the real SavedModel (its
    shard, the real one); even: a frozen GraphDef. Parsed by diffai alone, in this process."""
    if data[:1] and data[0] & 1:
        folder = workdir / "saved_model"
        if not folder.exists():
            shutil.copytree(TF_MODULE, folder)
        (folder / "variables" / "variables.index").write_bytes(data[1:])
        path = folder
    else:
        path = workdir / "fuzz.pb"
        path.write_bytes(data[1:])
    with no_code_runs():
        check_model_file(path, "tensorflow")


def keras_zip(weights: bytes) -> bytes:
    """The layout Keras 3 writes, around given weights."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("metadata.json", '{"keras_version": "3.15.1"}')
        archive.writestr("config.json", '{"class_name": "Functional"}')
        archive.writestr("model.weights.h5", weights)
    return buffer.getvalue()


def torch_zip(pickle_bytes: bytes, storages: dict[str, bytes] = STORAGES) -> bytes:
    """The layout torch.save writes, around a given pickle."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", pickle_bytes)
        archive.writestr("archive/byteorder", "little")
        for key, payload in storages.items():
            archive.writestr(f"archive/data/{key}", payload)
        archive.writestr("archive/version", "3\n")
    return buffer.getvalue()


#: The TorchScript target's classes: a module with a parameter, a buffer and a submodule.
SCRIPT_CODE = """\
class Net(Module):
  __parameters__ = ["weight", ]
  __buffers__ = ["running", ]
  weight : Tensor
  running : Tensor
  training : bool
  child : __torch__.Leaf
  def forward(self: __torch__.Net) -> Tensor:
    return self.weight
class Leaf(Module):
  __parameters__ = ["weight", ]
  __buffers__ = []
  weight : Tensor
  training : bool
  def forward(self: __torch__.Leaf) -> Tensor:
    return self.weight
"""


def _script_pickle() -> bytes:
    """``Net`` holding a ``Leaf``, on storages ``data/0`` and ``data/1``."""

    def text(value: str) -> bytes:
        return b"X" + len(value).to_bytes(4, "little") + value.encode()

    def tensor(key: str, numel: int) -> bytes:
        pid = b"((" + text("storage") + b"ctorch\nFloatStorage\n" + text(key) + text("cpu")
        sizes = b"K" + bytes([numel])
        return (
            b"ctorch._utils\n_rebuild_tensor_v2\n" + pid + sizes + b"tQK\x00(" + sizes
            + b"t(K\x01t\x89ccollections\nOrderedDict\n)RtR"
        )  # fmt: skip

    leaf = text("weight") + tensor("1", 2) + text("training") + b"\x89"
    state = text("weight") + tensor("0", 4) + text("running") + tensor("1", 2)
    state += text("training") + b"\x89" + text("child") + b"c__torch__\nLeaf\n)\x81}(" + leaf
    return b"\x80\x02c__torch__\nNet\n)\x81}(" + state + b"ubub."


SCRIPT_PICKLE = _script_pickle()


def torchscript_input(data: bytes, workdir: Path) -> None:
    """Odd first byte: the rest is data.pkl beside ``SCRIPT_CODE``; even: the rest is the
    code/ file beside ``SCRIPT_PICKLE``; in the layout torch.jit.save writes."""
    pickle_mode = bool(data[:1] and data[0] & 1)
    code = SCRIPT_CODE.encode() if pickle_mode else data[1:]
    path = workdir / "fuzz.jit"
    path.write_bytes(script_zip(data[1:] if pickle_mode else SCRIPT_PICKLE, code))
    with no_code_runs():
        check_model_file(path, "torchscript")


def script_zip(pickle_bytes: bytes, code: bytes) -> bytes:
    records = torch_zip(pickle_bytes, {"0": bytes(range(16)), "1": bytes(8)})
    buffer = io.BytesIO(records)
    with zipfile.ZipFile(buffer, "a", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/code/__torch__.py", code)
        archive.writestr("archive/constants.pkl", b"\x80\x02).")
    return buffer.getvalue()


#: The Hugging Face side a fuzzed GGUF file meets through ``gguf-llama``: the seed's shapes.
LLAMA_SOURCE = Model("source.safetensors", "safetensors", 0, {
    name: TensorRef(name, shape, "f32", load=lambda shape=shape: np.ones(shape, np.float32))
    for name, shape in {
        "model.embed_tokens.weight": (8, 32),
        "model.layers.0.self_attn.q_proj.weight": (8, 32),
        "model.layers.0.self_attn.k_proj.weight": (4, 32),
        "model.layers.0.input_layernorm.weight": (32,),
    }.items()
})  # fmt: skip


def name_maps_input(data: bytes, workdir: Path) -> None:
    """A whole .gguf file against a Hugging Face Llama model through the ``gguf-llama`` map:
    its names renamed, its Q/K rows un-permuted by the head counts it states, measured."""
    path = workdir / "fuzz.gguf"
    path.write_bytes(data)
    import gguf.quants  # noqa: F401 -- imported before watching, as the gguf target does

    with no_code_runs():
        try:
            options = CompareOptions(maps=("gguf-llama",))
            Report.build(compare_models(LLAMA_SOURCE, open_model(path, "gguf"), options)).to_json()
        except DiffaiError as exc:
            _one_line(exc)


def policy_input(data: bytes, workdir: Path) -> None:
    """The same bytes as a policy, as YAML metrics and as JSON metrics."""
    loaders: list[tuple[str, Callable[[Path], object]]] = [
        ("policy.yaml", load_policy),
        ("metrics.yaml", load_metrics),
        ("metrics.json", load_metrics),
    ]
    for name, load in loaders:
        path = workdir / name
        path.write_bytes(data)
        with no_code_runs():
            try:
                load(path)
            except PolicyError as exc:
                _one_line(exc)


#: The peft target's fixed half: a valid config and factors (two modules, ranks 2 and 1).
PEFT_CONFIG = (
    b'{"peft_type": "LORA", "r": 2, "lora_alpha": 4, "use_rslora": false, '
    b'"rank_pattern": {"fc2": 1}, "alpha_pattern": {"fc2": 3}, "modules_to_save": ["head"]}'
)


def peft_factors() -> bytes:
    from safetensors.numpy import save

    ramp = np.linspace(-1, 1, 24, dtype=np.float32)
    return save({
        "base_model.model.fc1.lora_A.weight": ramp[:8].reshape(2, 4),
        "base_model.model.fc1.lora_B.weight": ramp[8:14].reshape(3, 2),
        "base_model.model.fc2.lora_A.weight": ramp[14:17].reshape(1, 3),
        "base_model.model.fc2.lora_B.weight": ramp[17:19].reshape(2, 1),
        "base_model.model.head.weight": ramp[19:23].reshape(2, 2),
    })  # fmt: skip


def peft_input(data: bytes, workdir: Path) -> None:
    """Odd first byte: the rest is ``adapter_config.json`` beside valid factors; even: the rest
    is ``adapter_model.safetensors`` beside a valid config. An adapter read is compared with
    itself the way ``diffai A A`` does: closed forms, then its ΔW streamed and reported."""
    folder = workdir / "adapter"
    folder.mkdir(exist_ok=True)
    config, factors = (data[1:], peft_factors()) if data[:1] and data[0] & 1 else (
        PEFT_CONFIG, data[1:])  # fmt: skip
    (folder / "adapter_config.json").write_bytes(config)
    (folder / "adapter_model.safetensors").write_bytes(factors)
    with no_code_runs():
        try:
            model = open_model(folder, "peft")
            baseline, candidate, section = prepare(model, model)
            report = Report.build(compare_models(baseline, candidate), adapter=section)
            report.to_json()
            render_markdown(report.document)
        except DiffaiError as exc:
            _one_line(exc)


TARGETS: dict[str, Callable[[bytes, Path], None]] = {
    "safetensors": safetensors_input,
    "pytorch": pytorch_input,
    "torchscript": torchscript_input,
    "policy": policy_input,
    "matlab": matlab_input,
    "onnx": onnx_input,
    "gguf": gguf_input,
    "name_maps": name_maps_input,
    "tflite": tflite_input,
    "keras": keras_input,
    "tensorflow": tensorflow_input,
    "peft": peft_input,
}
