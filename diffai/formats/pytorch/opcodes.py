"""The opcodes of a torch ``data.pkl``, checked before any of them is unpickled.

Two reasons to read the program before running it. A gate must judge what
``torch.load(weights_only=True)`` loads, and torch's weights-only unpickler
runs only a subset of pickle's opcodes (protocol 2's binary ones): a pickle
that uses any other (``PUT`` spelt in decimal, protocol 4's ``MEMOIZE`` and
``FRAME``, ``STACK_GLOBAL`` ...) is one torch refuses, and one whose reading by
CPython's unpickler nobody has checked against torch's, so it is refused here.
And CPython's C unpickler sizes its memo by the largest index a ``PUT`` names
(six bytes could make it zero 23 GB), so each index must be below the number of
objects the pickle actually stores.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable

#: What torch's ``_weights_only_unpickler`` reads: opcodes without an argument ...
_BARE = (
    pickle.NEWOBJ, pickle.REDUCE, pickle.BUILD, pickle.APPEND, pickle.APPENDS, pickle.SETITEM,
    pickle.SETITEMS, pickle.MARK, pickle.TUPLE, pickle.TUPLE1, pickle.TUPLE2, pickle.TUPLE3,
    pickle.NONE, pickle.NEWFALSE, pickle.NEWTRUE, pickle.EMPTY_TUPLE, pickle.EMPTY_LIST,
    pickle.EMPTY_DICT, pickle.EMPTY_SET, pickle.BINPERSID,
)  # fmt: skip
#: ... opcode -> size of its fixed argument ...
_FIXED = {
    **{ord(code): 0 for code in _BARE},
    ord(pickle.BININT): 4, ord(pickle.BININT1): 1, ord(pickle.BININT2): 2,
    ord(pickle.BINFLOAT): 8, ord(pickle.BINGET): 1, ord(pickle.LONG_BINGET): 4,
    ord(pickle.PROTO): 1,
}  # fmt: skip
#: ... opcode -> width of the length that precedes its bytes ...
_SIZED = {ord(pickle.BINUNICODE): 4, ord(pickle.SHORT_BINSTRING): 1, ord(pickle.LONG1): 1}
#: ... and opcode -> width of the memo index it stores under (plus GLOBAL and STOP).
_PUTS = {ord(pickle.BINPUT): 1, ord(pickle.LONG_BINPUT): 4}
_GLOBAL, _STOP = ord(pickle.GLOBAL), ord(pickle.STOP)
_NAMES = {code: name for name in dir(pickle) if isinstance(code := getattr(pickle, name), bytes)
          and len(code) == 1 and name.isupper()}  # fmt: skip


class PickleRefused(ValueError):
    """The pickle uses an opcode torch does not read, or a memo index beyond its objects.

    ``position`` is where the refused opcode is: torch's unpickler runs everything before it.
    """

    def __init__(self, message: str, position: int | None = None) -> None:
        super().__init__(message)
        self.position = position


def check_opcodes(data: bytes, check_global: Callable[[str, str], object]) -> int:
    """Raise ``PickleRefused`` unless every opcode up to ``STOP`` is one torch reads.

    Each ``GLOBAL`` goes to ``check_global`` as it comes, so a global the allow-list
    refuses is named before a later opcode is. A pickle cut short is left to the
    unpickler, which fails on it as torch does. Returns where the pickle ends (past
    its ``STOP``, or the end of ``data``): a legacy file holds several in a row.
    """
    position, end, indexes = 0, len(data), []
    try:
        while position < end:
            code, position = data[position], position + 1
            if code == _STOP:
                break
            if code == _GLOBAL:
                position = _read_global(data, position, check_global)
            else:
                position = _skip_argument(code, data, position, indexes)
    except PickleRefused:
        # What comes before a refused opcode may still be run (``sizing`` counts it, as torch
        # runs it): its memo indexes must be bounded too, or one PUT allocates gigabytes.
        _check_memo(indexes)
        raise
    _check_memo(indexes)
    return min(position, end)


def _read_global(data: bytes, position: int, check_global: Callable[[str, str], object]) -> int:
    """Two lines, module and name, in UTF-8 as both unpicklers decode them."""
    module_end = data.find(b"\n", position)
    name_end = data.find(b"\n", module_end + 1) if module_end >= 0 else -1
    if name_end < 0:
        return len(data)
    try:
        module = data[position:module_end].decode("utf-8")
        name = data[module_end + 1 : name_end].decode("utf-8")
    except UnicodeDecodeError:
        return len(data)  # the unpickler refuses it
    check_global(module, name)
    return name_end + 1


def _skip_argument(code: int, data: bytes, position: int, indexes: list[int]) -> int:
    """Where the argument of ``code`` ends; memo indexes are collected on the way."""
    if code in _FIXED:
        return position + _FIXED[code]
    if code in _SIZED:
        width = _SIZED[code]
        length = int.from_bytes(data[position : position + width], "little")
        return position + width + length
    if code in _PUTS:
        width = _PUTS[code]
        indexes.append(int.from_bytes(data[position : position + width], "little"))
        return position + width
    raise PickleRefused(
        f"it uses pickle opcode {_opcode_name(code)}, which torch.load(weights_only=True) "
        "does not read; refused as ambiguous",
        position - 1,
    )


def _check_memo(indexes: list[int]) -> None:
    """Real pickles number the objects they store from 0; the memo is sized by the largest."""
    stored = len(indexes)
    beyond = next((index for index in indexes if index >= stored), None)
    if beyond is not None:
        raise PickleRefused(
            f"memo index {beyond:,} is beyond the {stored:,} objects the pickle stores"
        )


def _opcode_name(code: int) -> str:
    byte = bytes([code])
    return _NAMES.get(byte, f"{byte!r}")
