"""The declarations of TorchScript classes, read from an archive's ``code/`` as text, never run.

What makes an attribute of a scripted module a parameter or a buffer is
recorded nowhere in ``data.pkl``: a buffer and a plain tensor attribute are
pickled alike. ``torch.jit.load`` learns it by compiling the class from
``code/<qualifier path>.py``, whose head ``torch.jit.save`` writes as
declarations::

    class Conv1d(Module):
      __parameters__ = ["weight", "bias", ]
      __buffers__ = []
      weight : Tensor
      __annotations__["0"] = __torch__.foo.Block
      groups : Final[int] = 1
      def forward(self: ...

So those lines are read here as data, each against a strict pattern of what
the printer writes; nothing is compiled, evaluated or imported. Where a file
could read otherwise to torch's lexer than to these patterns (a line they do
not match, a triple-quoted string or a line continuation that could hide a
declaration, a class-level line after its methods), the file is refused.
A class that defines ``__getstate__`` or ``__setstate__`` is refused too:
``torch.jit.load`` runs that code to rebuild its state, so what it holds
cannot be known without running it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from diffai.formats.limits import MAX_NAME_CHARS

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_QUOTED = r'"[^"\\\x00-\x1f]*"'
_TYPE = r"[A-Za-z0-9_.\[\], ]+"
#: ``["a", "b", ]``, the printer's spelling of a list of names (``[]`` when empty).
_NAMES = rf"\[((?:{_QUOTED}, )*)\]"
_LIST_DECLARATION = re.compile(
    rf"(__parameters__|__buffers__|__forward_hooks__|__forward_pre_hooks__) = {_NAMES}"
)
_ATTRIBUTE = re.compile(rf"({_IDENT}) : ({_TYPE})")
_ODD_ATTRIBUTE = re.compile(rf"__annotations__\[({_QUOTED})\] = ({_TYPE})")
#: ``eps : Final[float] = 1e-05``: a constant; its value may hold brackets, parsed no further.
_CONSTANT = re.compile(rf"{_IDENT} : Final\[{_TYPE}\] = (?:[-+\w.,() \[\]]|{_QUOTED})*")
_CLASS = re.compile(rf"class ({_IDENT})\(({_IDENT})\):")
_FUNCTION = re.compile(rf"def {_IDENT}\(.*")
_METHOD = re.compile(rf"  def ({_IDENT})\(.*")
#: What could make torch's lexer join lines that these patterns read one by one.
_JOINERS = ('"""', "'''", "\\\n")
#: Methods ``torch.jit.load`` runs to rebuild an object, instead of taking its attribute dict.
_STATE_METHODS = frozenset({"__getstate__", "__setstate__"})
#: The bases ``torch.jit.save`` writes: a module, or a plain class (never in ``state_dict``).
_KINDS = {"Module": True, "object": False}


class CodeRefused(ValueError):
    """A ``code/`` file is not in the form ``torch.jit.save`` writes, or needs running."""


@dataclass(frozen=True)
class ScriptClass:
    """One class's declarations: its attributes in slot order, and which are parameters."""

    qualname: str
    is_module: bool
    attributes: tuple[tuple[str, str], ...]
    parameters: frozenset[str]
    buffers: frozenset[str]


def read_classes(text: str, qualifier: str) -> dict[str, ScriptClass]:
    """Every class of one ``code/`` file, by qualified name (``qualifier.Name``)."""
    _check_text(text)
    classes: dict[str, ScriptClass] = {}
    for header, body in _blocks(text.split("\n")):
        found = _CLASS.fullmatch(header)
        if found is None:
            continue
        name, base = found.groups()
        qualname = f"{qualifier}.{name}"
        if qualname in classes:
            raise CodeRefused(f"class {qualname} is defined twice")
        classes[qualname] = _read_class(qualname, base, body)
    return classes


def _check_text(text: str) -> None:
    if any(joiner in text for joiner in _JOINERS):
        raise CodeRefused("it holds a triple-quoted string or a line continuation")
    if re.search(r"[\x00-\x09\x0b-\x1f\x7f]", text):
        raise CodeRefused("it holds a control character")


def _blocks(lines: list[str]) -> list[tuple[str, list[str]]]:
    """Top-level statements: a line at column 0 (a class or a function) and the lines below."""
    blocks: list[tuple[str, list[str]]] = []
    for line in lines:
        if not line:
            continue
        if not line[0].isspace():
            if _CLASS.fullmatch(line) is None and _FUNCTION.fullmatch(line) is None:
                raise CodeRefused(f"top-level line {line!r:.80} is not a class or a function")
            blocks.append((line, []))
        elif not blocks:
            raise CodeRefused("it starts with an indented line")
        else:
            blocks[-1][1].append(line)
    return blocks


def _read_class(qualname: str, base: str, body: list[str]) -> ScriptClass:
    if base not in _KINDS:
        raise CodeRefused(f"class {qualname} derives from {base}, which diffai does not read")
    methods = next((i for i, line in enumerate(body) if line.startswith("  def ")), len(body))
    _check_methods(qualname, body[methods:])
    declared = _Declarations(qualname)
    for line in body[:methods]:
        declared.add(line)
    return declared.result(_KINDS[base])


def _check_methods(qualname: str, lines: list[str]) -> None:
    """After the first method, only more methods and their indented bodies."""
    for line in lines:
        method = _METHOD.fullmatch(line)
        if method is None and not line.startswith("    "):
            raise CodeRefused(f"class {qualname} has line {line.strip()!r:.80} among its methods")
        if method is not None and method.group(1) in _STATE_METHODS:
            raise CodeRefused(
                f"class {qualname} defines {method.group(1)}, code torch.jit.load runs to "
                "rebuild its state"
            )


class _Declarations:
    """The head of one class body, line by line."""

    def __init__(self, qualname: str) -> None:
        self.qualname = qualname
        self.attributes: dict[str, str] = {}
        self.lists: dict[str, set[str]] = {"__parameters__": set(), "__buffers__": set()}

    def add(self, line: str) -> None:
        statement = line[2:] if line.startswith("  ") and not line[2:3].isspace() else None
        if statement is None or not self._add(statement):
            raise CodeRefused(
                f"class {self.qualname} declares {line.strip()!r:.80}, not in the form "
                "torch.jit.save writes"
            )

    def _add(self, statement: str) -> bool:
        if listed := _LIST_DECLARATION.fullmatch(statement):
            names = re.findall(_QUOTED, listed.group(2))
            self.lists.setdefault(listed.group(1), set()).update(n[1:-1] for n in names)
            return True
        attribute = _ATTRIBUTE.fullmatch(statement) or _ODD_ATTRIBUTE.fullmatch(statement)
        if attribute is not None:
            name, declared_type = attribute.groups()
            self._attribute(name.strip('"'), declared_type.strip())
            return True
        return _CONSTANT.fullmatch(statement) is not None and _balanced(statement)

    def _attribute(self, name: str, declared_type: str) -> None:
        if len(name) > MAX_NAME_CHARS:
            raise CodeRefused(f"class {self.qualname} declares an attribute name too long")
        if name in self.attributes:
            raise CodeRefused(f"class {self.qualname} declares attribute {name!r:.80} twice")
        self.attributes[name] = declared_type

    def result(self, is_module: bool) -> ScriptClass:
        parameters, buffers = self.lists["__parameters__"], self.lists["__buffers__"]
        both = sorted(parameters & buffers)
        if both:
            raise CodeRefused(f"class {self.qualname} lists {both[0]!r:.80} as both kinds")
        return ScriptClass(
            self.qualname,
            is_module,
            tuple(self.attributes.items()),
            frozenset(parameters),
            frozenset(buffers),
        )


def _balanced(statement: str) -> bool:
    """Brackets outside string literals close on the line, so nothing continues onto the next."""
    depth = 0
    for char in re.sub(_QUOTED, '""', statement):
        depth += {"(": 1, "[": 1, ")": -1, "]": -1}.get(char, 0)
        if depth < 0:
            return False
    return depth == 0
