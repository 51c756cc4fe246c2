"""Pairing: which baseline tensor is which candidate tensor (DESIGN.md's second stage).

One module per way names are made to meet: ``maps`` (name maps given or built in,
applied first, to the names as stored) and ``prefixes`` (wrapper prefixes given or
detected). Callers import from here; what each module did is stated in the report's
``mapping`` section.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from diffai.pairing.maps import apply_maps, check_maps
from diffai.pairing.prefixes import WRAPPER_PREFIXES, Mapping, align

if TYPE_CHECKING:
    from diffai.comparison import CompareOptions
    from diffai.model import Model

__all__ = ["WRAPPER_PREFIXES", "Mapping", "align", "apply_maps", "check_maps", "prepare"]


def prepare(
    baseline: Model, candidate: Model, options: CompareOptions
) -> tuple[Model, Model, Mapping]:
    """Both models under the names they pair by: maps on the stored names, then prefixes.
    One place, for a run and for ``diffai merge`` reopening the files to confirm renames."""
    baseline, candidate, maps = apply_maps(baseline, candidate, options.maps, options.auto_maps)
    baseline, candidate, mapping = align(
        baseline, candidate, options.strip_prefixes, options.detect_prefixes
    )
    return baseline, candidate, dataclasses.replace(mapping, maps=maps)
