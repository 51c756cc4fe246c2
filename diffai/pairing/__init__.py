"""Pairing: which baseline tensor is which candidate tensor (DESIGN.md's second stage).

One module per way names are made to meet: ``maps`` (name maps given or built in,
applied first, to the names as stored) and ``prefixes`` (wrapper prefixes given or
detected). Callers import from here; what each module did is stated in the report's
``mapping`` section.
"""

from diffai.pairing.maps import apply_maps, check_maps
from diffai.pairing.prefixes import WRAPPER_PREFIXES, Mapping, align

__all__ = ["WRAPPER_PREFIXES", "Mapping", "align", "apply_maps", "check_maps"]
