"""Stand-ins for the plain values a training checkpoint pickles beside its tensors.

A Lightning or hand-rolled checkpoint holds its hyperparameters
(``argparse.Namespace``, Lightning's ``AttributeDict``), paths, timestamps, the
device it trained on and queues of recent values. None of them needs code to
rebuild, but each is a global the allow-list would refuse, losing the whole
file. Each becomes plain data here: a dict, a list, a string; no class the file
names is imported, and no constructor sees an argument it has not checked
(``datetime``'s pickled bytes are decoded here, then given to its ordinary,
range-checking constructor).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

from diffai.formats.pytorch.standins import is_count, refuse_state

#: Where Lightning's ``AttributeDict`` (its ``hyper_parameters``) is defined, as pickles name it.
LIGHTNING_MODULES = (
    "lightning.fabric.utilities.data",
    "lightning_fabric.utilities.data",
    "pytorch_lightning.utilities.parsing",
)


class _Namespace(dict):  # type: ignore[type-arg]
    """``argparse.Namespace``, as ``NEWOBJ`` then one ``BUILD`` of its attributes: a dict."""

    __slots__ = ("_built",)

    def __init__(self) -> None:  # a Namespace is never called with positional arguments
        super().__init__()

    def __setstate__(self, state: Any) -> None:
        if getattr(self, "_built", False):
            raise ValueError("BUILD gave an argparse.Namespace its state twice")
        if not (isinstance(state, dict) and all(isinstance(key, str) for key in state)):
            raise ValueError(f"BUILD may give a Namespace only named attributes, not {state!r:.60}")
        self._built = True
        self.update(state)


class _AttributeDict(dict):  # type: ignore[type-arg]
    """Lightning's ``AttributeDict``: ``NEWOBJ`` then its items, never a ``BUILD``."""

    __slots__ = ()
    __setstate__ = refuse_state

    def __init__(self) -> None:  # pickled by NEWOBJ, which calls no __init__; REDUCE would
        super().__init__()


class _Deque(list):  # type: ignore[type-arg]
    """``collections.deque(iterable, maxlen)``: a list that keeps the last ``maxlen`` appended."""

    __slots__ = ("_maxlen",)
    __setstate__ = refuse_state

    def __init__(self, maxlen: int | None) -> None:
        super().__init__()
        self._maxlen = maxlen

    def append(self, value: Any) -> None:
        self.extend([value])

    def extend(self, values: Iterable[Any]) -> None:
        super().extend(values)
        if self._maxlen is not None and len(self) > self._maxlen:
            del self[: len(self) - self._maxlen]


def _deque(iterable: Any = (), maxlen: Any = None) -> _Deque:
    """The values come after, as ``APPENDS``; a deque pickles an empty tuple here."""
    if iterable != () or not (maxlen is None or is_count(maxlen)):
        raise ValueError(f"deque({iterable!r:.40}, {maxlen!r:.40}) is not how a deque pickles")
    return _Deque(maxlen)


def _counter(counts: Any = None) -> dict[Any, Any]:
    if counts is None:
        return {}
    if not isinstance(counts, dict):
        raise ValueError(f"Counter of {counts!r:.40}, not of a dict")
    return dict(counts)


def _path_maker(flavour: type[PurePosixPath] | type[PureWindowsPath]) -> Callable[..., str]:
    """A path as the string it spells, made by a pure path class that never touches a disk."""

    def path(*parts: Any) -> str:
        if not all(isinstance(part, str) for part in parts):
            raise ValueError(f"a path of {parts!r:.60}, not of strings")
        return str(flavour(*parts))

    return path


def _timedelta(days: Any = 0, seconds: Any = 0, microseconds: Any = 0) -> datetime.timedelta:
    if not all(type(value) is int for value in (days, seconds, microseconds)):
        raise ValueError("a timedelta of other than integers")
    return datetime.timedelta(days, seconds, microseconds)


def _timezone(offset: Any, name: Any = None) -> datetime.timezone:
    if not isinstance(offset, datetime.timedelta) or not isinstance(name, (str, type(None))):
        raise ValueError("a timezone needs a timedelta and a name")
    return datetime.timezone(offset) if name is None else datetime.timezone(offset, name)


def _date(state: Any) -> str:
    """``date(b'YYMD')``: year in two bytes, big-endian, then month and day; read as ISO 8601."""
    if not (isinstance(state, bytes) and len(state) == 4):
        raise ValueError(f"a date of {state!r:.40}, not of the 4 bytes a date pickles")
    return datetime.date(state[0] * 256 + state[1], state[2], state[3]).isoformat()


def _datetime(state: Any, tzinfo: Any = None) -> str:
    """10 bytes: year (2), month (bit 7: ``fold``), day, hour, minute, second, microsecond (3)."""
    if not (isinstance(state, bytes) and len(state) == 10):
        raise ValueError(f"a datetime of {state!r:.40}, not of the 10 bytes a datetime pickles")
    if not isinstance(tzinfo, (datetime.timezone, type(None))):
        raise ValueError("a datetime's tzinfo must be a datetime.timezone")
    year, month, fold = state[0] * 256 + state[1], state[2] & 0x7F, state[2] >> 7
    microsecond = int.from_bytes(state[7:10], "big")
    when = datetime.datetime(year, month, *state[3:7], microsecond, tzinfo, fold=fold)
    return when.isoformat()


def _torch_device(kind: Any, index: Any = None) -> str:
    """``torch.device('cuda', 0)`` or ``('cuda:0',)``, as torch prints it: ``cuda:0``."""
    if not (isinstance(kind, str) and (index is None or is_count(index))):
        raise ValueError(f"torch.device({kind!r:.40}, {index!r:.40}), which torch refuses")
    return kind if index is None else f"{kind}:{index}"


_WINDOWS_PATHS = ("WindowsPath", "PureWindowsPath")
HARMLESS_FUNCTIONS: dict[tuple[str, str], Callable[..., Any]] = {
    ("collections", "deque"): _deque,
    ("collections", "Counter"): _counter,
    ("datetime", "timedelta"): _timedelta,
    ("datetime", "timezone"): _timezone,
    ("datetime", "date"): _date,
    ("datetime", "datetime"): _datetime,
    ("torch", "device"): _torch_device,
    **{("pathlib", name): _path_maker(PurePosixPath) for name in ("PosixPath", "PurePosixPath")},
    **{
        ("pathlib", name): _path_maker(PureWindowsPath)
        for name in ("WindowsPath", "PureWindowsPath")
    },
}
#: Classes ``NEWOBJ`` makes fresh instances of (immutable themselves: ``BUILD`` on the class
#: fails, as calling ``__setstate__`` without an instance does).
HARMLESS_CLASSES: dict[tuple[str, str], type] = {
    ("argparse", "Namespace"): _Namespace,
    **{(module, "AttributeDict"): _AttributeDict for module in LIGHTNING_MODULES},
}
