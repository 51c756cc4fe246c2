"""Wrapper prefixes: the names training code puts every key under, given or detected.

Names pair exactly, after the wrapper prefixes training code adds are taken off:
``torch.nn.parallel.DistributedDataParallel`` saves every key under ``module.``,
``torch.compile`` under ``_orig_mod.``, Lightning under ``model.``. Without this a DDP
checkpoint against its plain counterpart is N removed and N added tensors and a failed
gate. Two ways, both stated in the report's ``mapping``:

- **given**: ``--strip-prefix P`` (repeatable) takes ``P`` off every name of both sides
  that starts with it;
- **detected** (on by default): a wrapper prefix that *every* tensor name of one side has
  and *no* tensor name of the other has is taken off that side, repeatedly, so that
  ``module._orig_mod.`` (DDP around a compiled model) goes too. "Every" and "none" keep
  it conservative: ``model.`` is never taken off a Hugging Face model whose head
  (``lm_head.weight``) sits outside it.

Two names that become one are refused, naming both: silently keeping one would judge
a tensor the file does not hold under that name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import TYPE_CHECKING, Any

from diffai.errors import UsageError
from diffai.model import Model

if TYPE_CHECKING:
    from diffai.pairing.maps import AppliedMap

#: The prefixes training wrappers put on every key, in the order they nest outside in.
WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.")


@dataclass(frozen=True)
class Mapping:
    """What pairing did to the names, for the report (``mapping``) and the text output."""

    baseline_prefixes: tuple[str, ...] = ()
    candidate_prefixes: tuple[str, ...] = ()
    given: tuple[str, ...] = ()
    #: Name maps applied before the prefixes (``diffai.pairing.maps``), in order.
    maps: tuple[AppliedMap, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.baseline_prefixes or self.candidate_prefixes or self.given or self.maps)

    @classmethod
    def from_json(cls, record: dict[str, Any] | None) -> Mapping:
        """A report's ``mapping`` back (``diffai merge``); an older report has none."""
        if not record:
            return cls()
        from diffai.pairing.maps.rules import AppliedMap  # here: see diffai.pairing.maps

        detected = record["detected"]
        maps = tuple(AppliedMap.from_json(applied) for applied in record.get("maps", ()))
        return cls(tuple(detected["baseline"]), tuple(detected["candidate"]),
                   tuple(record["strip_prefixes"]), maps)  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return {
            "strip_prefixes": list(self.given),
            "detected": {
                "baseline": list(self.baseline_prefixes),
                "candidate": list(self.candidate_prefixes),
            },
            "maps": [applied.to_json() for applied in self.maps],
        }


def align(
    baseline: Model, candidate: Model, given: Sequence[str] = (), detect: bool = True
) -> tuple[Model, Model, Mapping]:
    """Both models under the names they pair by, and what was done to get there."""
    for prefix in given:
        baseline, candidate = _strip(baseline, prefix), _strip(candidate, prefix)
    detected: tuple[list[str], list[str]] = ([], [])
    while detect:
        found = _wrapper(baseline, candidate)
        if found is None:
            break
        side, prefix = found
        detected[side].append(prefix)
        if side == 0:
            baseline = _strip(baseline, prefix)
        else:
            candidate = _strip(candidate, prefix)
    return baseline, candidate, Mapping(tuple(detected[0]), tuple(detected[1]), tuple(given))


def _wrapper(baseline: Model, candidate: Model) -> tuple[int, str] | None:
    """(side, prefix) of a wrapper one side has on every tensor name and the other on none."""
    for prefix in WRAPPER_PREFIXES:
        for side, (this, other) in enumerate([(baseline, candidate), (candidate, baseline)]):
            # this side's first name, then the other side's: when both have the prefix, it is
            # on the other's first name, where this side's every name would have been read
            # (0.2 us a pair at 100,000)
            on_this = _on_first(this.tensors, prefix) and not _on_any(other.tensors, prefix)
            if on_this and _on_every(this.tensors, prefix):
                return side, prefix
    return None


def _on_first(names: Iterable[str], prefix: str) -> bool:
    return next(iter(names), "").startswith(prefix)


def _on_every(names: Collection[str], prefix: str) -> bool:
    """Tested in C (``map`` of ``str.startswith``): a generator took 0.1 us a name, and
    ``model.`` is on every name of most models, read to the end on both sides."""
    return len(names) > 0 and all(map(str.startswith, names, repeat(prefix)))


def _on_any(names: Iterable[str], prefix: str) -> bool:
    return any(map(str.startswith, names, repeat(prefix)))


def _strip(model: Model, prefix: str) -> Model:
    """The model with ``prefix`` taken off every tensor and scalar name that has it."""
    if not (_on_any(model.tensors, prefix) or _on_any(model.scalars, prefix)):
        return model
    tensors = _renamed(model, model.tensors, prefix, "tensor")
    tensors = {name: dataclasses.replace(ref, name=name) for name, ref in tensors.items()}
    scalars = _renamed(model, model.scalars, prefix, "scalar")
    return dataclasses.replace(model, tensors=tensors, scalars=scalars)


def _renamed(model: Model, items: dict[str, Any], prefix: str, kind: str) -> dict[str, Any]:
    renamed: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for name, value in items.items():
        new = name.removeprefix(prefix) if name.startswith(prefix) and name != prefix else name
        if new in renamed:
            raise UsageError(
                f"{model.path}: taking {prefix!r} off the names makes {kind}s {origin[new]!r} "
                f"and {name!r} both {new!r}; compare without that prefix removed"
            )
        renamed[new], origin[new] = value, name
    return renamed
