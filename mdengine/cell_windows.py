"""Dense neighbor lists searched through windows of half-height cells.

The full-shell search of :mod:`mdengine.cell_list` gives each atom the 27
cells around its own, each cell at least one list radius high. In the
4,000-atom in.lj liquid (5 cells per side, 56 slots per cell after the
melt) that is 1,512 candidates for about 75 partners.

Here the cells are at least half a radius high, so every partner lies
within two cells along each axis. The atoms are sorted by cell with x
fastest, so the five cells x − 2 … x + 2 of one (y, z) row of cells are
consecutive in that order. Each row is extended periodically by two cells
at either end, and an atom's candidates are 25 such windows, one per
(dy, dz), of W slots each. W is the atom count of the fullest window of
five consecutive cells. In the same liquid (11 cells per side) that is
25 × 32 = 800 candidates per atom.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from mdengine.cell_list import CellListNeighbors, cartesian_components

# A window spans cells x − 2 … x + 2 of one row.
WINDOW_CELLS = 5
# (dy, dz) of the 25 rows of cells around an atom's own row.
ROW_OFFSETS = np.array([(dy, dz) for dz in range(-2, 3) for dy in range(-2, 3)], np.int32)


def extended_source(nx: int) -> np.ndarray:
    """Return the cell of each of the ``nx + 4`` extended cells of a row, (e − 2) mod nx for cell e."""
    return (np.arange(nx + 4) - 2) % nx


def window_cells(heights: np.ndarray, radius_A: float) -> tuple[int, int, int] | None:
    """Return the cells per axis for a window search, each at least half a radius high,
    or None when an axis would have fewer than ``WINDOW_CELLS`` cells."""
    cells = np.floor(np.asarray(heights) / (0.5 * radius_A)).astype(int)
    if np.any(cells < WINDOW_CELLS):
        return None
    return tuple(int(c) for c in cells)


@dataclasses.dataclass(frozen=True, eq=False)
class WindowNeighbors(CellListNeighbors):
    """Dense neighbor lists from windows of five half-height cells.

    ``cells`` must be at least ``WINDOW_CELLS`` along each axis. The lists'
    ``cell_list_capacity`` is the window capacity W, a multiple of 8. A
    window with more atoms than W flags a cell-list overflow.
    """

    def _row_length(self, window_capacity: int) -> int:
        """Return the slots of one extended row: room for its ``nx + 4`` cells, plus one
        window so that a window starting anywhere in the row stays inside it."""
        return (math.ceil((self.cells[0] + 4) / WINDOW_CELLS) + 1) * window_capacity

    def _window_starts(self, position):
        """``(order [N], cell_start [C + 1], start [R, nx + 5])``.

        ``order`` sorts the atoms by cell. Extended cell e of a row is cell
        (e − 2) mod nx, and ``start[r, e]`` is where it begins in row r's
        extended sequence, so the window of cell x is ``start[r, x]`` to
        ``start[r, x + 5]``.
        """
        nx, ny, nz = self.cells
        key = self._hash(self._cell_of(position))
        order = jnp.argsort(key).astype(jnp.int32)
        cell_start = jnp.searchsorted(key[order], jnp.arange(nx * ny * nz + 1), side="left")
        counts = jnp.diff(cell_start).reshape(ny * nz, nx)
        extended = counts[:, extended_source(nx)]
        start = jnp.concatenate([jnp.zeros((ny * nz, 1), extended.dtype),
                                 jnp.cumsum(extended, axis=1)], axis=1)
        return order, cell_start.astype(jnp.int32), start.astype(jnp.int32)

    def _largest_window(self, start):
        """Count the atoms in the fullest window, from the extended-row ``start`` ``[R, nx + 5]``."""
        return jnp.max(start[:, WINDOW_CELLS:] - start[:, :self.cells[0]])

    def _largest_occupancy(self, position) -> int:
        return int(self._largest_window(self._window_starts(position)[2]))

    def _row_table(self, position, window_capacity: int):
        """``(ids [R, L] padded with N, 3 × [R, L] fractional coordinates NaN-padded,
        start [R, nx + 5], largest window)`` of the extended rows."""
        n = position.shape[0]
        nx, ny, nz = self.cells
        order, cell_start, start = self._window_starts(position)
        length = self._row_length(window_capacity)
        place = jnp.arange(length, dtype=jnp.int32)

        # Extended cell of each place in each row, and the sorted index of its atom.
        cell = jax.vmap(lambda row: jnp.searchsorted(row, place, side="right"))(start) - 1
        cell = jnp.minimum(cell, nx + 3)
        first = cell_start[:-1].reshape(ny * nz, nx)[:, extended_source(nx)]
        sorted_index = (jnp.take_along_axis(first, cell, axis=1) + place
                        - jnp.take_along_axis(start, cell, axis=1))
        filled = place[None, :] < start[:, -1:]
        ids = jnp.where(filled, order[jnp.clip(sorted_index, 0, n - 1)], n)
        member = jnp.minimum(ids, n - 1)
        coordinates = [jnp.where(filled, position[member, axis], jnp.nan) for axis in range(3)]
        return ids, coordinates, start, self._largest_window(start)

    def _window_rows(self, position, ids, coordinates, start, atoms, row_capacity: int,
                     window_capacity: int):
        """``([B, K] partners of ``atoms``, padding N; [B] counts)``, or ``[K, B]``
        partners when slot-major, from the 25 windows around each atom."""
        n = position.shape[0]
        _, ny, nz = self.cells
        own = self._cell_of(position[atoms])                                   # [B, 3]
        row = ((own[:, 1:2] + ROW_OFFSETS[:, 0]) % ny
               + ny * ((own[:, 2:3] + ROW_OFFSETS[:, 1]) % nz))                # [B, 25]
        x = own[:, 0:1]
        begin = start[row, x]
        size = start[row, x + WINDOW_CELLS] - begin                            # [B, 25]
        slot = jnp.arange(window_capacity, dtype=jnp.int32)

        # Each window is one contiguous slice of its extended row.
        def window(table):
            take = lambda r, b: lax.dynamic_slice(table, (r, b), (1, window_capacity))[0]  # noqa: E731
            return jax.vmap(jax.vmap(take))(row, begin)                       # [B, 25, W]

        partner = window(ids)
        difference = []
        for axis in range(3):
            d = window(coordinates[axis]) - position[atoms, axis][:, None, None]
            difference.append(d - jnp.round(d))
        cartesian = cartesian_components(self.box, difference)
        r2 = cartesian[0] ** 2 + cartesian[1] ** 2 + cartesian[2] ** 2
        inside = slot < size[..., None]
        mask = inside & (partner != atoms[:, None, None]) & (r2 < self.radius_A**2)
        return self._compact(partner, mask, row_capacity, n)

    def _build_dense(self, position, window_capacity: int, row_capacity: int):
        """``(idx [N, K] or, slot-major, [K, N]; largest row count; largest window)``."""
        n = position.shape[0]
        ids, coordinates, start, largest = self._row_table(position, window_capacity)
        rows, found = lax.map(
            lambda a: self._window_rows(position, ids, coordinates, start, a, row_capacity,
                                        window_capacity),
            self._atom_blocks(n))
        return self._join_blocks(rows, row_capacity, n), jnp.max(found), largest
