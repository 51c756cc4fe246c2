"""The change of a block-stacked model over depth and component, for the comment and the HTML page.

A cell is one component of one block (``diffai.components``); its value is the
largest relative change (``diffai.change``, as the policy judges it) of a
tensor in it, so a cell is red exactly when one of its tensors is, and it is
flagged when a tensor in it gained NaN or Inf. A model is drawn this way when
its largest stack has at least ``MIN_BLOCKS`` blocks; other models show their
most-changed layers instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from diffai.components import BLOCK_COMPONENTS, COMPONENTS, placement

MIN_BLOCKS = 3


@dataclass
class Cell:
    largest: float | None = None
    tensors: int = 0
    changed: int = 0
    non_finite: bool = False
    worst: str | None = None

    def merge(self, other: Cell | None) -> None:
        """Take in another cell's tensors (a row that stands for several blocks)."""
        if other is None:
            return
        self.tensors += other.tensors
        self.changed += other.changed
        self.non_finite |= other.non_finite
        if other.largest is not None and (self.largest is None or other.largest > self.largest):
            self.largest, self.worst = other.largest, other.worst

    def add(self, tensor: dict[str, Any]) -> None:
        self.tensors += 1
        self.changed += tensor["status"] != "unchanged"
        self.non_finite |= gained_non_finite(tensor)
        value = tensor_change(tensor)
        if value is not None and (self.largest is None or value > self.largest):
            self.largest, self.worst = value, tensor["name"]


@dataclass
class DepthGrid:
    stack: str
    blocks: list[int]
    components: list[str]
    cells: dict[tuple[int, str], Cell]
    outside: dict[str, Cell] = field(default_factory=dict)  # embeddings, final norm, head

    def cell(self, block: int, component: str) -> Cell | None:
        return self.cells.get((block, component))

    def rows(self, most: int) -> list[Row]:
        """At most ``most`` rows: one per block, or runs of consecutive blocks merged, so that
        a model of 5,000 blocks still makes a table and a chart of ``most`` rows."""
        size = -(-len(self.blocks) // most)
        runs = [self.blocks[i : i + size] for i in range(0, len(self.blocks), size)]
        return [Row(run[0], run[-1], self._merged(run)) for run in runs]

    def _merged(self, run: list[int]) -> dict[str, Cell | None]:
        merged: dict[str, Cell | None] = {}
        for component in self.components:
            cells = [cell for block in run if (cell := self.cell(block, component))]
            merged[component] = Cell() if cells else None
            for cell in cells:
                merged[component].merge(cell)  # type: ignore[union-attr]
        return merged


@dataclass(frozen=True)
class Row:
    """One block (``first == last``) or a run of them, with a cell per component."""

    first: int
    last: int
    cells: dict[str, Cell | None]

    @property
    def label(self) -> str:
        return str(self.first) if self.first == self.last else f"{self.first}-{self.last}"

    def value(self, component: str) -> float:
        """The largest change, 0 where there is none (a line chart cannot skip a point)."""
        cell = self.cells[component]
        return (cell.largest or 0.0) if cell else 0.0


def tensor_change(tensor: dict[str, Any]) -> float | None:
    diff = tensor["diff"]
    return None if diff is None else diff["relative_change"]


def gained_non_finite(tensor: dict[str, Any]) -> bool:
    """Whether the candidate holds more NaN or more ±Inf elements than the baseline did."""
    base, cand = tensor["baseline"], tensor["candidate"]
    if cand is None:
        return False
    before = (base["nan"], base["inf"]) if base else (0, 0)
    return cand["nan"] > before[0] or cand["inf"] > before[1]


def depth_grid(tensors: list[dict[str, Any]]) -> DepthGrid | None:
    """The grid of the stack with the most blocks, or None when no stack has ``MIN_BLOCKS``."""
    stacks: dict[str, set[int]] = {}
    for tensor in tensors:
        where = placement(tensor["name"])
        if where.stack is not None:
            stacks.setdefault(where.stack, set()).add(where.block)  # type: ignore[arg-type]
    stack = max(stacks, key=lambda name: len(stacks[name]), default=None)
    if stack is None or len(stacks[stack]) < MIN_BLOCKS:
        return None
    return _fill(DepthGrid(stack, sorted(stacks[stack]), [], {}), tensors)


def _fill(grid: DepthGrid, tensors: list[dict[str, Any]]) -> DepthGrid:
    for tensor in tensors:
        where = placement(tensor["name"])
        if where.stack == grid.stack:
            key = (where.block, where.component)
            grid.cells.setdefault(key, Cell()).add(tensor)  # type: ignore[arg-type]
        elif where.stack is None:
            grid.outside.setdefault(where.component, Cell()).add(tensor)
    present = {component for _, component in grid.cells}
    grid.components = [c for c in BLOCK_COMPONENTS if c in present]
    grid.outside = {c: grid.outside[c] for c in COMPONENTS if c in grid.outside}
    return grid
