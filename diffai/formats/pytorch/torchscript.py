"""TorchScript archives (``torch.jit.save``): a module tree's parameters and buffers, no code run.

A TorchScript archive is a torch zip whose ``data.pkl`` pickles the module
tree: each module an instance of a ``__torch__.<qualname>`` class rebuilt by
``NEWOBJ`` and one ``BUILD`` of its attribute dict, tensors as in any
``torch.save`` file. ``torch.jit.load`` compiles those classes from ``code/``
and runs nothing else at load time unless a class defines ``__setstate__``.

Here ``data.pkl`` runs under the same allow-list unpickler as a checkpoint,
widened by two kinds of global only: ``__torch__`` classes, each an inert,
immutable attribute bag (``_ScriptObject``), and ``torch.jit._pickle``'s typed
list builders, which return their list. Which attributes are parameters and
buffers, and which classes are modules, is read from the classes' declarations
in ``code/`` as text (``script_classes``); the rest of ``code/``,
``constants.pkl`` (tensors the code uses as constants, never in a
``state_dict``), ``extra/`` and ``.debug_pkl`` files are never read. The names
are those ``torch.jit.load(path).state_dict()`` gives.
"""

from __future__ import annotations

import dataclasses
import pickletools
import re
from functools import partial
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar

from diffai.errors import MalformedModel, UnsafePickle
from diffai.formats.limits import MAX_TENSORS
from diffai.formats.pytorch import _model_from_pickle, _zip_names
from diffai.formats.pytorch.archive import TorchArchive
from diffai.formats.pytorch.layout import (
    PICKLE_MEMBER,
    archive_folder,
    byteorder,
    check_records,
    check_version,
)
from diffai.formats.pytorch.opcodes import PickleRefused
from diffai.formats.pytorch.script_classes import CodeRefused, ScriptClass, read_classes
from diffai.formats.pytorch.unpickler import (
    AllowListUnpickler,
    PickledTensor,
    _Function,
    unpickle_checkpoint,
)
from diffai.model import Model

FORMAT = "torchscript"
EXTENSIONS = (".jit", ".ts")

_ZIP_MAGIC = b"PK\x03\x04"
_QUALIFIER = re.compile(r"__torch__(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_CLASS_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: TorchBind classes live in torch's binary, not in ``code/``, and rebuild by running it.
_TORCHBIND = "__torch__.torch.classes"
#: All the ``code/`` files one archive may make us read, inflated, together.
MAX_CODE_BYTES = 64 << 20
#: Modules nested deeper than this are refused (torch.nn models nest a few dozen at most).
MAX_DEPTH = 200
#: Visits of modules, a shared one once per path to it: a few bytes of memo sharing could
#: make 2**60 paths. Real models hold thousands of modules; 100,000 are walked in 2.5 s.
MAX_MODULES = 100_000
#: Opcodes CPython and torch's weights-only reader take but ``torch.jit.load``'s does not.
_NOT_READ_BY_JIT = frozenset({"APPEND", "EMPTY_SET", "SHORT_BINSTRING"})


def matches(path: Path, head: bytes) -> bool:
    """A torch zip with ``constants.pkl`` and ``code/`` beside its ``data.pkl``."""
    return head.startswith(_ZIP_MAGIC) and is_script_archive(_zip_names(path))


def is_script_archive(names: list[str]) -> bool:
    """Whether a torch zip's member names are a TorchScript archive's."""
    folders = {name.partition("/")[0] for name in names if name.endswith(f"/{PICKLE_MEMBER}")}
    return any(
        f"{folder}/constants.pkl" in names
        and any(name.startswith(f"{folder}/code/") for name in names)
        for folder in folders
    )


def read(path: Path) -> Model:
    members = TorchArchive(path)  # torch.jit.load reads the zip as torch.load does
    try:
        folder = archive_folder(path, members)
        check_version(path, members, folder)
        check_records(path, members, folder)
        order = byteorder(path, members, folder)
        code = _Code(path, members, folder)
        unpickler = partial(_ScriptUnpickler, code=code)
        root = unpickle_checkpoint(path, members, f"{folder}{PICKLE_MEMBER}", folder, unpickler)
        tensors = _StateDict(path, code).of(root)
    finally:
        members.archive.close()
    metadata = {"torch_format": "torchscript", "byteorder": order}
    model = _model_from_pickle(path, tensors, order, metadata)
    return dataclasses.replace(model, format=FORMAT)


# --- the classes, from code/ -----------------------------------------------------------------


class _Code:
    """The archive's class declarations, each file read once, within ``MAX_CODE_BYTES``."""

    def __init__(self, path: Path, members: TorchArchive, folder: str) -> None:
        self._path = path
        self._members = members
        self._folder = folder
        self._classes: dict[str, ScriptClass] = {}
        self._files_read: set[str] = set()
        self._budget = MAX_CODE_BYTES

    def lookup(self, qualname: str) -> ScriptClass | None:
        qualifier = qualname.rpartition(".")[0]
        if qualifier not in self._files_read:
            self._files_read.add(qualifier)
            self._classes.update(self._read_file(qualifier))
        return self._classes.get(qualname)

    def _read_file(self, qualifier: str) -> dict[str, ScriptClass]:
        name = f"{self._folder}code/{qualifier.replace('.', '/')}.py"
        if not self._members.has(name):
            return {}
        data = self._members.read_bytes(name, self._budget)
        self._budget -= len(data)
        try:
            return read_classes(data.decode("utf-8"), qualifier)
        except UnicodeDecodeError as exc:
            raise MalformedModel(self._path, f"{name}: not UTF-8 text") from exc
        except CodeRefused as exc:
            raise MalformedModel(self._path, f"{name}: {exc}; refused, nothing was run") from exc


# --- data.pkl ---------------------------------------------------------------------------------


class _ScriptObject:
    """An instance of a ``__torch__`` class as data: its attribute dict, given once by BUILD.

    Subclassed per class and per read (``qualname`` the class's name), so nothing
    outlives the read; ``NEWOBJ`` with no arguments makes one, and nothing else can.
    """

    __slots__ = ("_attributes",)
    qualname: ClassVar[str] = ""

    def __new__(cls, *args: Any) -> _ScriptObject:
        if args or not cls.qualname:
            raise ValueError(
                f"NEWOBJ gave {cls.qualname} arguments, which torch.jit.save never writes"
            )
        instance = object.__new__(cls)
        object.__setattr__(instance, "_attributes", None)
        return instance

    def __init__(self, *_args: Any) -> None:
        raise ValueError(f"{self.qualname} is called (REDUCE), which torch.jit.load refuses")

    def __setstate__(self, state: Any) -> None:
        if self._attributes is not None:
            raise ValueError(f"BUILD gave {self.qualname} its state twice")
        if not (isinstance(state, dict) and all(isinstance(key, str) for key in state)):
            raise ValueError(f"BUILD gave {self.qualname} {type(state).__name__} state, not a dict")
        object.__setattr__(self, "_attributes", MappingProxyType(dict(state)))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{self.qualname} is immutable")

    @property
    def attributes(self) -> MappingProxyType[str, Any]:
        if self._attributes is None:
            raise ValueError(f"an object of {self.qualname} was never given its state by BUILD")
        return self._attributes

    def __repr__(self) -> str:
        return f"an object of {self.qualname}"


def _typed_list(items: Any) -> list[Any]:
    """``torch.jit._pickle.build_intlist`` and kin: ``(list,)`` -> the list."""
    if not isinstance(items, list):
        raise ValueError("a typed list builder needs a list")
    return items


def _restore_type_tag(container: Any, type_name: Any) -> Any:
    """The container; the type name only tags it for TorchScript."""
    if not (isinstance(container, (list, dict)) and isinstance(type_name, str)):
        raise ValueError("restore_type_tag needs a list or dict and a type name")
    return container


_JIT_PICKLE = {
    **{name: _typed_list for name in ("build_intlist", "build_doublelist", "build_boollist")},
    "build_tensorlist": _typed_list,
    "restore_type_tag": _restore_type_tag,
}
_JIT_ALLOWED = {
    ("torch.jit._pickle", name): _Function(f"torch.jit._pickle.{name}", call)
    for name, call in _JIT_PICKLE.items()
}


class _ScriptUnpickler(AllowListUnpickler):
    """The checkpoint allow-list plus ``__torch__`` classes declared in ``code/``, list builders."""

    def __init__(self, data: bytes, *args: Any, code: _Code) -> None:
        _check_jit_opcodes(data)
        super().__init__(data, *args)
        self._code = code
        self._types: dict[str, type[_ScriptObject]] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _JIT_ALLOWED:
            return _JIT_ALLOWED[module, name]
        if not (_QUALIFIER.fullmatch(module) and _CLASS_NAME.fullmatch(name)):
            return super().find_class(module, name)
        return self._script_type(f"{module}.{name}")

    def _script_type(self, qualname: str) -> type[_ScriptObject]:
        known = self._types.get(qualname)
        if known is not None:
            return known
        if qualname.startswith(f"{_TORCHBIND}."):
            raise UnsafePickle(
                self._path,
                qualname,
                f"it holds a TorchBind object ({qualname!r}, such as a quantized layer's packed "
                "parameters), which torch rebuilds by running its code; nothing was executed",
            )
        if self._code.lookup(qualname) is None:
            raise MalformedModel(self._path, f"class {qualname} is pickled but not in code/")
        made = type("ScriptObject", (_ScriptObject,), {"__slots__": (), "qualname": qualname})
        self._types[qualname] = made
        return made


def _check_jit_opcodes(data: bytes) -> None:
    """``torch.jit.load`` reads only protocol 2 from ``PROTO 2`` on, and 8-byte ``LONG1``s."""
    try:
        ops = pickletools.genops(data)
        first = next(ops, None)
        if first is None or first[0].name != "PROTO" or first[1] != 2:
            raise PickleRefused("it does not start with PROTO 2, which torch.jit.load refuses")
        for opcode, _, position in ops:
            long1 = opcode.name == "LONG1" and data[position + 1] != 8
            if opcode.name in _NOT_READ_BY_JIT or long1:
                raise PickleRefused(
                    f"it uses pickle opcode {opcode.name}, which torch.jit.load does not read; "
                    "refused as ambiguous"
                )
    except (ValueError, UnicodeDecodeError) as exc:
        if isinstance(exc, PickleRefused):
            raise
        raise PickleRefused(f"malformed pickle ({exc})") from exc


# --- state_dict() ----------------------------------------------------------------------------


class _StateDict:
    """The names ``state_dict()`` gives: own parameters, own buffers, then each submodule's."""

    def __init__(self, path: Path, code: _Code) -> None:
        self._path = path
        self._code = code
        self._found: dict[str, PickledTensor] = {}
        self._visits = 0

    def of(self, root: Any) -> dict[str, PickledTensor]:
        if not isinstance(root, _ScriptObject) or not self._module(root).is_module:
            raise MalformedModel(self._path, "its data.pkl does not hold a scripted module")
        try:
            self._visit(root, "", ())
        except ValueError as exc:
            raise MalformedModel(self._path, str(exc)) from exc
        return self._found

    def _module(self, obj: _ScriptObject) -> ScriptClass:
        declared = self._code.lookup(obj.qualname)
        assert declared is not None  # the unpickler made obj's class only for a class it found
        return declared

    def _visit(self, module: _ScriptObject, prefix: str, ancestors: tuple[int, ...]) -> None:
        self._check_walk(module, ancestors)
        declared = self._module(module)
        values = module.attributes
        missing = next((name for name, _ in declared.attributes if name not in values), None)
        if missing is not None:
            raise ValueError(f"{module} has no value for its attribute {missing!r}")
        for kind in ("parameter", "buffer"):
            for name, declared_type in declared.attributes:
                if _kind(declared, name, declared_type) == kind:
                    self._tensor(f"{prefix}{name}", kind, values[name])
        for name, declared_type in declared.attributes:
            child = self._child(declared_type, values[name])
            if child is not None:
                self._visit(child, f"{prefix}{name}.", (*ancestors, id(module)))

    def _check_walk(self, module: _ScriptObject, ancestors: tuple[int, ...]) -> None:
        self._visits += 1
        if id(module) in ancestors:
            raise ValueError(f"{module} contains itself")
        if len(ancestors) > MAX_DEPTH:
            raise ValueError(f"its modules nest deeper than {MAX_DEPTH}")
        if self._visits > MAX_MODULES:
            raise ValueError(f"its module tree holds over {MAX_MODULES:,} modules")

    def _tensor(self, name: str, kind: str, value: Any) -> None:
        """Torch leaves out a parameter or buffer that is None; any other non-tensor is refused."""
        if value is None:
            return
        if not isinstance(value, PickledTensor):
            raise ValueError(f"{kind} {name!r} holds {value!r:.60}, not a tensor")
        if len(self._found) >= MAX_TENSORS:
            raise ValueError(f"it holds over {MAX_TENSORS:,} parameters and buffers")
        self._found[name] = value

    def _child(self, declared_type: str, value: Any) -> _ScriptObject | None:
        """A submodule: an attribute declared as a module class, holding an object."""
        declared = self._code.lookup(declared_type) if _QUALIFIER.fullmatch(declared_type) else None
        if declared is None or not declared.is_module or value is None:
            return None
        if not isinstance(value, _ScriptObject) or value.qualname != declared_type:
            raise ValueError(f"an attribute declared {declared_type} holds {value!r:.80}")
        return value


def _kind(declared: ScriptClass, name: str, declared_type: str) -> str | None:
    """As torch's slot policies: a parameter by the list alone, a buffer only if typed Tensor."""
    if name in declared.parameters:
        return "parameter"
    if name in declared.buffers and declared_type == "Tensor":
        return "buffer"
    return None
