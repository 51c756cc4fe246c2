"""How much a tensor changed, relative to what: one definition for policy, sorting and text.

``relative_l2`` = ‖c−b‖/‖b‖ is the natural measure and stays in every report as
defined, but real models ship all-zero tensors (biases, zero-initialised heads,
LoRA ``B`` at init) where it is undefined, and nearly-zero ones (a bias a few
Adam steps from zero) where any ordinary step is many times the tensor's own
size. ``relative_change`` compares the change with the typical size of the
values around the tensor instead:

    relative_change = rms(c − b) / rms(basis),   rms(x) = ‖x‖ / √(elements of x)

where the basis is the first that is not negligible, i.e. whose rms is at least
``NEGLIGIBLE`` times the rms of the next one:

- ``self``: the tensor's own baseline (then relative_change = relative_l2);
- ``module``: the baseline tensors of the same role under the same name prefix
  (``encoder.pooler.dense`` for ``encoder.pooler.dense.bias``), the tensor included;
- ``model``: the baseline tensors of the same role in the whole model;
- ``none``: everything is zero: nothing to measure against (relative_change null).

A weight matrix or kernel is **scrambled** (replaced, permuted, re-initialised,
zeroed) when it has at least two dimensions and ``SCRAMBLE_MIN_ELEMENTS``
elements, its own baseline is its basis, and it lost its direction: cosine <
``SCRAMBLED_COSINE``, or no cosine because the candidate is all zero. Fine-tunes
keep cosine near 1 (0.99+ for small ones); a permuted or re-initialised matrix
has cosine ≈ 0 (and relative change ≈ √2). A norm that grows along the same
direction (a LoRA ``B`` matrix early in training) is not a replacement, and
anomaly_detection judges explosion. Small tensors, biases and norms
legitimately swing, so they are not judged by it.

So a zero bias that moves by 3e-6 while its module's weights have rms 0.04 changed
by 7.5e-5, and one trained to the size of its weights changed by about 100%.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # the policy judges report documents and needs no numpy
    from diffai.comparison import TensorComparison

Basis = Literal["self", "module", "model", "none"]

#: An rms below 1% of the next level's is negligible: trained biases and norms sit at 5-100%
#: of their module's weights; a bias a few optimizer steps from zero at 0.1-0.5%.
NEGLIGIBLE = 0.01


SCRAMBLED_COSINE = 0.5
SCRAMBLE_MIN_ELEMENTS = 256


def may_be_scrambled(shape: Sequence[int]) -> bool:
    """Whether a tensor of this shape is judged at all: a matrix or kernel big enough."""
    return len(shape) >= 2 and math.prod(shape) >= SCRAMBLE_MIN_ELEMENTS


def is_scrambled(
    shape: Sequence[int], cosine: float | None, relative_change: float | None, basis: str
) -> bool:
    """Whether a weight's values were replaced rather than trained (rule in the docstring above)."""
    if not may_be_scrambled(shape) or basis != "self":
        return False
    if cosine is None:  # the baseline has a norm, so the candidate has none: all zero now
        return bool(relative_change)
    return cosine < SCRAMBLED_COSINE


@dataclass(frozen=True)
class RelativeChange:
    value: float | None
    basis: Basis


def relative_changes(tensors: Iterable[TensorComparison]) -> dict[str, RelativeChange]:
    """The relative change of every same-shaped pair whose difference was measured."""
    # Imported here: the policy imports this module for is_scrambled and needs no numpy.
    from diffai.change_columns import relative_changes_of

    return relative_changes_of(tensors)
