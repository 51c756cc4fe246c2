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

from diffai.components import BLOCK_COMPONENTS, COMPONENTS, Placement, placement

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


class GridCells:
    """The cells of every stack (a model has one or two), filled tensor by tensor as a
    renderer walks them once; ``grid`` keeps the deepest stack's. Placing 100,000 names in
    two walks, and measuring each tensor again for the comment's table, cost 0.5 s."""

    def __init__(self) -> None:
        self._cells: dict[Placement, Cell] = {}

    def add(self, tensor: dict[str, Any], gained: bool, value: float | None) -> None:
        """Take in one tensor, whose ``gained_non_finite`` and ``tensor_change`` are given."""
        name = tensor["name"]
        where = placement(name)
        cell = self._cells.get(where)
        if cell is None:
            cell = self._cells[where] = Cell()
        cell.tensors += 1
        cell.changed += tensor["status"] != "unchanged"
        cell.non_finite |= gained
        if value is not None and (cell.largest is None or value > cell.largest):
            cell.largest, cell.worst = value, name

    def grid(self) -> DepthGrid | None:
        """The grid of the stack with the most blocks, or None when none has ``MIN_BLOCKS``."""
        stacks: dict[str, set[int]] = {}
        for stack, block, _ in self._cells:
            if stack is not None:
                stacks.setdefault(stack, set()).add(block)  # type: ignore[arg-type]
        stack = max(stacks, key=lambda name: len(stacks[name]), default=None)
        if stack is None or len(stacks[stack]) < MIN_BLOCKS:
            return None
        return self._kept(DepthGrid(stack, sorted(stacks[stack]), [], {}))

    def _kept(self, grid: DepthGrid) -> DepthGrid:
        """The grid's own cells and those outside every stack, in the order their tensors came."""
        for (stack, block, component), cell in self._cells.items():
            if stack == grid.stack:
                grid.cells[(block, component)] = cell  # type: ignore[index]
            elif stack is None:
                grid.outside[component] = cell
        present = {component for _, component in grid.cells}
        grid.components = [c for c in BLOCK_COMPONENTS if c in present]
        grid.outside = {c: grid.outside[c] for c in COMPONENTS if c in grid.outside}
        return grid
