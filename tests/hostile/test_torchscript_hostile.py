"""Hostile TorchScript archives: no class is rebuilt but as an inert bag, no code/ line is run.

Each archive is crafted by hand from one small valid one (``NET_CODE`` and
``net_pickle``, which ``torch.jit.load`` reads as diffai does). The code before
the TorchScript reader refused every such archive at its first ``__torch__``
global, so each test asserts the refusal that names the new path's own
problem (its first global is always the valid ``__torch__.Net``): that text
appears only once the archive's classes are read. The one exception is the
duplicate-member case, which goes through the checks the checkpoint reader
shares with this one and so was refused the same way before.
"""

from __future__ import annotations

import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from diffai.formats import open_model
from tests.hostile.conftest import Refusal, assert_refused, run_bounded
from tests.hostile.test_pytorch_hostile import FALSE, call, g, i, s

pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:Duplicate name:UserWarning"),
]

NET_CODE = """\
class Net(Module):
  __parameters__ = ["weight", ]
  __buffers__ = []
  weight : Tensor
  training : bool
  def forward(self: __torch__.Net) -> Tensor:
    return self.weight
"""
WEIGHT = np.array([1.5, -2.0, 3.25, 4.0], dtype=np.float32)
WEIGHT_BYTES = WEIGHT.tobytes()
TORCHBIND = "__torch__.torch.classes.quantized.LinearPackedParamsBase"
PROTO2 = b"\x80\x02"
NEWOBJ, BUILD, EMPTY_DICT, MARK, SETITEMS, STOP = b")\x81", b"b", b"}", b"(", b"u", b"."


def tensor(key: str = "0", numel: int = 4) -> bytes:
    """``_rebuild_tensor_v2`` of a 1-d f32 tensor on storage ``key``, as torch.jit.save writes."""
    pid = b"(" + s("storage") + g("torch", "FloatStorage") + s(key) + s("cpu") + i(numel) + b"tQ"
    hooks = g("collections", "OrderedDict") + b")R"
    return call(g("torch._utils", "_rebuild_tensor_v2"), pid, i(0), b"(" + i(numel) + b"t",
                b"(" + i(1) + b"t", FALSE, hooks)  # fmt: skip


def module(qualname: str, state: bytes) -> bytes:
    """``NEWOBJ`` of ``qualname`` and one ``BUILD`` of ``state``."""
    prefix, _, name = qualname.rpartition(".")
    return g(prefix, name) + NEWOBJ + state + BUILD


def attributes(**values: bytes) -> bytes:
    return EMPTY_DICT + MARK + b"".join(s(k) + v for k, v in values.items()) + SETITEMS


def net_pickle(weight: bytes | None = None, **extra: bytes) -> bytes:
    state = attributes(training=FALSE, weight=tensor() if weight is None else weight, **extra)
    return PROTO2 + module("__torch__.Net", state) + STOP


def jit_archive(
    path: Path,
    data_pkl: bytes,
    code: str = NET_CODE,
    storages: dict[str, bytes] | None = None,
    extra: tuple[tuple[str, bytes], ...] = (),
) -> Path:
    """torch.jit.save's layout: data.pkl, data/<key>, code/__torch__.py, constants.pkl, version."""
    records = [
        ("net/data.pkl", data_pkl),
        ("net/code/__torch__.py", code.encode()),
        ("net/constants.pkl", PROTO2 + b")."),
        ("net/version", b"3\n"),
        *((f"net/data/{key}", data) for key, data in (storages or {"0": WEIGHT_BYTES}).items()),
        *extra,
    ]  # fmt: skip
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as opened:
        for name, data in records:
            opened.writestr(name, data)
    return path


def test_the_crafted_archive_reads_as_torch_jit_load_reads_it(run_cli, tmp_path) -> None:
    """The base every hostile case alters: valid, and read alike by both loaders."""
    path = jit_archive(tmp_path / "net.jit", net_pickle())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = torch.jit.load(path).state_dict()
    assert list(loaded) == ["weight"] and np.array_equal(loaded["weight"].numpy(), WEIGHT)
    model = open_model(path)
    assert list(model.tensors) == ["weight"]
    assert np.array_equal(model.tensors["weight"].array(), WEIGHT)
    save_file({"weight": WEIGHT}, tmp_path / "net.safetensors")
    assert run_cli(path, tmp_path / "net.safetensors").code == 0


# --- data.pkl: classes as inert bags -----------------------------------------------------------

CHILD_CODE = NET_CODE.replace("  training : bool\n", "  training : bool\n  child : __torch__.Net\n")
NESTED = {"training": FALSE, "weight": tensor()}


def child_pickle(child: bytes) -> bytes:
    """A ``Net`` whose ``child`` attribute (declared a ``Net``) holds ``child``."""
    return PROTO2 + module("__torch__.Net", attributes(**NESTED, child=child)) + STOP


def plain(qualname: str) -> bytes:
    return module(qualname, attributes(training=FALSE, weight=tensor()))


def pickles(sentinel: Path) -> dict[str, tuple[bytes, str, str]]:
    """name -> (data.pkl, its code/__torch__.py, the problem the refusal names)."""
    touch = call(g("os", "system"), s(f"touch {sentinel}"))
    again = EMPTY_DICT + BUILD
    return {
        "lookalike-prefix": (child_pickle(plain("__torch__x.Net")), CHILD_CODE,
                             "refused to load pickled global '__torch__x.Net'"),
        "lookalike-underscore": (child_pickle(plain("___torch__.Net")), CHILD_CODE,
                                 "refused to load pickled global '___torch__.Net'"),
        "lookalike-empty-part": (child_pickle(plain("__torch__..Net")), CHILD_CODE,
                                 "refused to load pickled global '__torch__..Net'"),
        "torchbind": (child_pickle(plain(TORCHBIND)),
                      CHILD_CODE, "it holds a TorchBind object"),
        "not-in-code": (child_pickle(plain("__torch__.Other")), CHILD_CODE,
                        "class __torch__.Other is pickled but not in code/"),
        "build-twice": (PROTO2 + module("__torch__.Net", attributes(**NESTED)) + again + STOP,
                        NET_CODE, "BUILD gave __torch__.Net its state twice"),
        "build-a-list": (PROTO2 + module("__torch__.Net", b"]") + STOP, NET_CODE,
                         "BUILD gave __torch__.Net list state, not a dict"),
        "build-a-tuple": (PROTO2 + module("__torch__.Net", b"(" + s("weight") + b"t") + STOP,
                          NET_CODE, "BUILD gave __torch__.Net tuple state, not a dict"),
        "never-built": (PROTO2 + g("__torch__", "Net") + NEWOBJ + STOP, NET_CODE,
                        "an object of __torch__.Net was never given its state by BUILD"),
        "called": (PROTO2 + g("__torch__", "Net") + b")R" + STOP, NET_CODE,
                   "__torch__.Net is called (REDUCE), which torch.jit.load refuses"),
        "newobj-arguments": (PROTO2 + g("__torch__", "Net") + b"(" + i(1) + b"t\x81" + STOP,
                             NET_CODE, "NEWOBJ gave __torch__.Net arguments"),
        "global-outside-the-allow-list": (net_pickle(weight=touch), NET_CODE,
                                          "refused to load pickled global 'os.system'"),
        "parameter-missing": (PROTO2 + module("__torch__.Net", attributes(training=FALSE)) + STOP,
                              NET_CODE, "has no value for its attribute 'weight'"),
        "parameter-not-a-tensor": (net_pickle(weight=i(3)), NET_CODE,
                                   "parameter 'weight' holds 3, not a tensor"),
        "contains-itself": (PROTO2 + g("__torch__", "Net") + NEWOBJ + b"q\x00"
                            + attributes(**NESTED, child=b"h\x00") + BUILD + STOP,
                            CHILD_CODE, "an object of __torch__.Net contains itself"),
        "child-of-another-class": (child_pickle(plain("__torch__.Other")),
                                   CHILD_CODE + NET_CODE.replace("Net", "Other"),
                                   "an attribute declared __torch__.Net holds an object of "
                                   "__torch__.Other"),
        "append": (net_pickle(extra=b"]" + i(1) + b"a"), NET_CODE,
                   "it uses pickle opcode APPEND, which torch.jit.load does not read"),
        "no-proto": (net_pickle()[2:], NET_CODE, "it does not start with PROTO 2"),
    }  # fmt: skip


PICKLES = list(pickles(Path("x")))


@pytest.mark.parametrize("name", PICKLES)
def test_a_crafted_data_pkl_is_refused_in_one_line(
    refused: Callable[..., Refusal], tmp_path: Path, sentinel: Path, name: str
) -> None:
    data_pkl, code, problem = pickles(sentinel)[name]
    assert_refused(refused(jit_archive(tmp_path / "hostile.jit", data_pkl, code)), problem)
    assert not sentinel.exists()


def test_storages_too_short_are_refused(refused: Callable[..., Refusal], tmp_path: Path) -> None:
    short = {"0": WEIGHT[:2].tobytes()}
    hostile = jit_archive(tmp_path / "short.jit", net_pickle(), storages=short)
    assert_refused(refused(hostile), "storage '0' holds 8 bytes, the pickle says 16")


def test_a_duplicate_code_member_is_refused_as_ambiguous(
    refused: Callable[..., Refusal], tmp_path: Path
) -> None:
    """Torch and zipfile need not read the same copy of a class's declarations."""
    twice = (("net/code/__torch__.py", NET_CODE.replace('"weight", ', "").encode()),)
    hostile = jit_archive(tmp_path / "twice.jit", net_pickle(), extra=twice)
    assert_refused(refused(hostile), "zip member 'net/code/__torch__.py' appears twice")


# --- code/: read as declarations, never run ----------------------------------------------------


def codes(sentinel: Path) -> dict[str, tuple[str, str]]:
    """name -> (code/__torch__.py, the problem); each payload would touch sentinel if run."""
    payload = f'__import__("os").system("touch {sentinel}")'
    hidden = f'    """\n  _x = {payload}\n"""\n    return'
    return {
        "top-level-statement": (f"{payload}\n{NET_CODE}", "is not a class or a function"),
        "class-level-statement": (NET_CODE.replace("  training : bool\n",
                                                   f"  training : bool\n  _x = {payload}\n"),
                                  "not in the form torch.jit.save writes"),
        "setstate": (NET_CODE + f"  def __setstate__(self: __torch__.Net, state: int) -> None:\n"
                     f"    {payload}\n", "defines __setstate__, code torch.jit.load runs"),
        "declaration-after-methods": (NET_CODE + '  __buffers__ = ["weight", ]\n',
                                      "has line '__buffers__ = [\"weight\", ]' among its methods"),
        "hidden-in-a-string": (NET_CODE.replace("    return", hidden),
                               "it holds a triple-quoted string or a line continuation"),
        "continued-line": (NET_CODE.replace("  training : bool", "  training : \\\nbool"),
                           "it holds a triple-quoted string or a line continuation"),
        "tab-indented": (NET_CODE.replace("  training", "\ttraining"), "control character"),
        "unbalanced-constant": (NET_CODE.replace("  training : bool\n",
                                                 "  training : bool\n  k : Final[int] = (1,\n"),
                                "declares 'k : Final[int] = (1,', not in the form"),
        "both-kinds": (NET_CODE.replace("__buffers__ = []", '__buffers__ = ["weight", ]'),
                       "lists 'weight' as both kinds"),
        "foreign-base": (NET_CODE.replace("(Module)", "(Evil)"), "derives from Evil"),
        "two-definitions": (NET_CODE + NET_CODE, "class __torch__.Net is defined twice"),
    }  # fmt: skip


CODES = list(codes(Path("x")))


@pytest.mark.parametrize("name", CODES)
def test_a_code_file_not_as_torch_writes_it_is_refused_and_never_run(
    refused: Callable[..., Refusal], tmp_path: Path, sentinel: Path, name: str
) -> None:
    code, problem = codes(sentinel)[name]
    hostile = jit_archive(tmp_path / "hostile.jit", net_pickle(), code=code)
    refusal = refused(hostile)
    assert_refused(refusal, problem)
    assert "hostile.jit: net/code/__torch__.py: " in refusal.err
    assert refusal.err.endswith("; refused, nothing was run\n")
    assert not sentinel.exists()


def test_the_top_level_payload_is_live_when_run(tmp_path: Path, sentinel: Path) -> None:
    """So the refusal above is of code that would really run: Python runs its first line."""
    code, _ = codes(sentinel)["top-level-statement"]
    with pytest.raises(NameError):
        exec(compile(code, "payload", "exec"), {})  # the payload only; nothing from a model
    assert sentinel.exists()


def test_code_in_a_method_body_is_ignored_and_never_run(run_cli, tmp_path, sentinel) -> None:
    """Methods are never read past their first line: the archive reads, and nothing runs."""
    payload = f'    _0 = __import__("os").system("touch {sentinel}")\n'
    code = NET_CODE.replace("    return self.weight", payload + "    return self.weight")
    path = jit_archive(tmp_path / "body.jit", net_pickle(), code=code)
    save_file({"weight": WEIGHT}, tmp_path / "net.safetensors")
    assert run_cli(path, tmp_path / "net.safetensors").code == 0
    assert not sentinel.exists()


# --- bounded -----------------------------------------------------------------------------------


def deep(levels: int) -> bytes:
    """A chain of ``levels`` nested Nets, innermost first built."""
    inner = plain("__torch__.Net")
    for _ in range(levels):
        inner = module("__torch__.Net", attributes(**NESTED, child=inner))
    return PROTO2 + inner + STOP


def wide(levels: int) -> bytes:
    """Each level's two children the same object: 2**levels paths through levels objects."""
    leaf = attributes(**NESTED, child=b"N", other=b"N")
    inner = module("__torch__.Net", leaf) + b"q\x00"
    for level in range(1, levels + 1):
        below = b"h" + bytes([level - 1])
        state = attributes(**NESTED, child=inner, other=below)
        inner = module("__torch__.Net", state) + b"q" + bytes([level])
    return PROTO2 + inner + STOP


WIDE_CODE = CHILD_CODE.replace("  child : __torch__.Net\n",
                               "  child : __torch__.Net\n  other : __torch__.Net\n")  # fmt: skip


def test_nesting_and_sharing_bombs_are_bounded(tmp_path: Path) -> None:
    hostiles = [
        jit_archive(tmp_path / "deep.jit", deep(400), code=CHILD_CODE),
        jit_archive(tmp_path / "wide.jit", wide(60), code=WIDE_CODE),
    ]
    deep_refusal, wide_refusal = run_bounded(hostiles)
    assert_refused(deep_refusal, "its modules nest deeper than 200")
    assert_refused(wide_refusal, "its module tree holds over 100,000 modules")
