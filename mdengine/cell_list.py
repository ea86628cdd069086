"""Neighbor lists for periodic cells, built from cell lists.

jax-md's cell-list search gathers, for every atom, all atoms of the 27
surrounding cells, then compacts the hits through arrays as long as all
candidates. On a CPU that search, not the force, dominated a step: in a
4,000-atom Lennard-Jones liquid whose cell capacity had grown to 65, each
atom examined 27 × 65 = 1,755 candidates to find about 75 neighbors.

The sparse formats (``Sparse``, ``OrderedSparse``: ``idx`` ``[2, capacity]``,
padding N) are built from a half shell: each cell pair is examined once (the
atom's own cell and 13 of its 26 neighbors), so every unordered pair is
found once and compacted straight into the list's capacity. The ``Dense``
format (``idx`` ``[N, K]``, padding N, both directions of each pair) takes
all 27 cells and compacts each atom's row; pair potentials read it without
scatter-adds. Both keep the cell capacity to the cell occupancy alone, and
both search over blocks of atoms, so temporary arrays stay bounded: a
million-atom LJ run took about 6 kB per atom in all with the sparse list.

Every result is a jax-md ``NeighborList``, so jax-md ``smap`` potentials and
the learned models read it unchanged. Positions are fractional coordinates
in a cell with at least three cells (of side ≥ cutoff + skin) along each axis.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax_md import partition

# The cell itself and the 13 neighbor cells whose offset is positive in
# lexicographic order: each pair of adjacent cells appears exactly once.
HALF_SHELL = np.array([(0, 0, 0)] + [o for o in itertools.product((-1, 0, 1), repeat=3)
                                     if o > (0, 0, 0)], dtype=np.int32)
# The atom's own cell and its 26 neighbors: the dense list contains both directions of a pair.
FULL_SHELL = np.array(list(itertools.product((-1, 0, 1), repeat=3)), dtype=np.int32)
# Atoms per block of the dense search; its [B, 27, M] temporaries then stay in cache.
DENSE_BLOCK_ATOMS = 256
# Cell capacities are rounded up to a multiple of this, the group of the running count.
PREFIX_GROUP = 8


def cartesian_components(box: np.ndarray, fractional: list) -> list:
    """Return the Cartesian components (Å) of fractional ``[dx, dy, dz]`` arrays.

    ``box`` ``[3, 3]`` has the lattice vectors as columns. It is a NumPy
    constant, so its zero entries are skipped when tracing.
    """
    return [sum(float(row[b]) * fractional[b] for b in range(3) if row[b] != 0.0) for row in box]


def _ones_triangle(size: int, strict: bool):
    """``[size, size]`` float32 with ones on and above the diagonal (above it only if ``strict``)."""
    return jnp.asarray(np.triu(np.ones((size, size), np.float32), 1 if strict else 0))


def inclusive_prefix(mask):
    """Running count of true entries along the last two axes of ``[B, C, M]`` bools.

    Computed with small matrix products by triangular matrices of ones:
    XLA's cumulative sum on the CPU was 5–8 times slower on these shapes.
    When M is a multiple of ``PREFIX_GROUP``, the count runs within groups of
    that many entries first, so the products cost about ``PREFIX_GROUP``
    multiply-adds per entry instead of M. The counts are small integers,
    exact in float32.
    """
    b, c, m = mask.shape
    highest = lax.Precision.HIGHEST
    group = PREFIX_GROUP if m % PREFIX_GROUP == 0 else m
    values = mask.astype(jnp.float32).reshape(b, c, m // group, group)
    inner = jnp.matmul(values, _ones_triangle(group, False), precision=highest)
    totals = inner[..., -1]                                                   # [B, C, M / g]
    within_cell = jnp.matmul(totals, _ones_triangle(m // group, True), precision=highest)
    cell_totals = within_cell[..., -1] + totals[..., -1]                      # [B, C]
    before_cell = jnp.matmul(cell_totals, _ones_triangle(c, True), precision=highest)
    running = inner + within_cell[..., None] + before_cell[..., None, None]
    return running.reshape(b, c, m).astype(jnp.int32)


@dataclasses.dataclass(frozen=True, eq=False)
class CellListNeighbors:
    """Neighbor lists of radius ``cutoff + skin`` for a fixed periodic cell.

    Offers ``allocate(position, extra_capacity=0)`` and ``update(position,
    neighbors)`` like jax-md's ``NeighborListFns``.
    """

    box: np.ndarray                    # [3, 3] lattice vectors as columns (Å)
    cells: tuple[int, int, int]        # cells along each fractional axis, each ≥ 3
    radius_A: float                    # cutoff + skin
    skin_A: float
    ordered: bool                      # OrderedSparse (each pair once) or Sparse (both directions)
    capacity_multiplier: float
    block_atoms: int = 16384           # atoms whose candidates are searched at once
    dense: bool = False                # Dense: [N, K] rows of partners, both directions
    slot_major: bool = False           # Dense stored as [K, N]: idx[k, i] is atom i's k-th partner

    @property
    def format(self):
        if self.dense:
            return partition.Dense
        return partition.OrderedSparse if self.ordered else partition.Sparse

    # ---------------------------------------------------------------- geometry

    def _square_distance(self, a, b):
        """Minimum-image squared distance (Å²) between fractional positions ``[..., 3]``."""
        d = a - b
        d = d - jnp.round(d)
        box = jnp.asarray(self.box, d.dtype)
        x, y, z = d[..., 0], d[..., 1], d[..., 2]
        cartesian = [box[i, 0] * x + box[i, 1] * y + box[i, 2] * z for i in range(3)]
        return cartesian[0] ** 2 + cartesian[1] ** 2 + cartesian[2] ** 2

    def _cell_of(self, position):
        """``[N, 3]`` integer cell of each atom."""
        counts = jnp.asarray(self.cells, jnp.int32)
        return jnp.floor(position * counts).astype(jnp.int32) % counts

    def _hash(self, cell):
        nx, ny, _ = self.cells
        return cell[..., 0] + nx * (cell[..., 1] + ny * cell[..., 2])

    # ---------------------------------------------------------------- building

    def _cell_table(self, position, cell_capacity: int):
        """``([cells, M] atom ids padded with N, [cells] occupancy)``."""
        n = position.shape[0]
        key = self._hash(self._cell_of(position))
        order = jnp.argsort(key).astype(jnp.int32)
        ids = jnp.arange(math.prod(self.cells), dtype=jnp.int32)
        start = jnp.searchsorted(key[order], ids, side="left")
        occupancy = jnp.searchsorted(key[order], ids, side="right") - start
        slot = jnp.arange(cell_capacity, dtype=jnp.int32)
        members = order[jnp.minimum(start[:, None] + slot[None, :], n - 1)]
        return jnp.where(slot[None, :] < occupancy[:, None], members, n), occupancy

    def _pairs(self, position, table, atoms, cell_capacity: int):
        """Candidate partners ``[B, 14 M]`` of ``atoms`` ``[B]`` (N = padding) and the
        mask of those within the radius."""
        n = position.shape[0]
        atom = jnp.minimum(atoms, n - 1)
        counts = jnp.asarray(self.cells, jnp.int32)
        own = self._cell_of(position[atom])
        neighbor_cells = self._hash((own[:, None, :] + HALF_SHELL[None]) % counts)
        partner = table[neighbor_cells].reshape(atoms.shape[0], -1)
        own_cell = (jnp.arange(partner.shape[1]) < cell_capacity)[None, :]
        valid = (partner < n) & (atoms < n)[:, None] & jnp.where(own_cell, partner < atoms[:, None], True)
        r2 = self._square_distance(position[atom][:, None, :], position[jnp.minimum(partner, n - 1)])
        return partner, valid & (r2 < self.radius_A**2)

    def _blocks(self, n: int) -> tuple[int, int]:
        """``(atoms per block, blocks)``: the search runs on blocks of atoms so that
        its candidate arrays stay bounded for large systems."""
        size = min(n, self.block_atoms)
        return size, -(-n // size)

    def _build(self, position, cell_capacity: int, capacity: int):
        """``(idx [2, capacity], pairs needed, largest cell occupancy)``.

        Two passes over the blocks: the first counts each atom's pairs, which
        fixes where each atom's pairs go; the second writes them.
        """
        n = position.shape[0]
        table, occupancy = self._cell_table(position, cell_capacity)
        size, blocks = self._blocks(n)
        atom_blocks = jnp.arange(size * blocks, dtype=jnp.int32).reshape(blocks, size)
        atom_blocks = jnp.where(atom_blocks < n, atom_blocks, n)

        def count(atoms):
            return jnp.sum(self._pairs(position, table, atoms, cell_capacity)[1], axis=1, dtype=jnp.int32)

        per_atom = lax.map(count, atom_blocks).reshape(-1)
        found = jnp.sum(per_atom)
        first = (jnp.cumsum(per_atom) - per_atom).reshape(blocks, size)
        drop = jnp.int32(capacity)

        def write(k, lists):
            receivers, senders = lists
            atoms = atom_blocks[k]
            partner, mask = self._pairs(position, table, atoms, cell_capacity)
            running = inclusive_prefix(mask.reshape(len(atoms), -1, cell_capacity)).reshape(mask.shape)
            slot = first[k][:, None] + running - 1
            low = jnp.minimum(atoms[:, None], partner)
            high = jnp.maximum(atoms[:, None], partner)
            where = jnp.where(mask, slot, drop)
            receivers = receivers.at[where].set(low, mode="drop")
            senders = senders.at[where].set(high, mode="drop")
            if not self.ordered:
                # Sparse: the reversed pairs follow the first copy.
                where = jnp.where(mask, slot + found, drop)
                receivers = receivers.at[where].set(high, mode="drop")
                senders = senders.at[where].set(low, mode="drop")
            return receivers, senders

        empty = jnp.full((capacity,), n, jnp.int32)
        receivers, senders = lax.fori_loop(0, blocks, write, (empty, empty))
        needed = found if self.ordered else 2 * found
        return jnp.stack([receivers, senders]), needed, jnp.max(occupancy)

    def _dense_rows(self, position, table, coordinates, atoms, row_capacity: int):
        """``([B, K] partners of ``atoms`` within the radius, padding N; [B] counts)``.

        Candidates come from the 27 cells around each atom. Their coordinates
        are read as whole cell rows from the per-axis ``coordinates`` tables.
        With ``slot_major`` the partners come as ``[K, B]`` instead.
        """
        n = position.shape[0]
        counts = jnp.asarray(self.cells, jnp.int32)
        own = self._cell_of(position[atoms])
        cells = self._hash((own[:, None, :] + FULL_SHELL[None]) % counts)   # [B, 27]
        partner = table[cells]                                               # [B, 27, M]
        difference = []
        for axis in range(3):
            d = coordinates[axis][cells] - position[atoms, axis][:, None, None]
            difference.append(d - jnp.round(d))
        cartesian = cartesian_components(self.box, difference)
        r2 = cartesian[0] ** 2 + cartesian[1] ** 2 + cartesian[2] ** 2
        mask = (partner != atoms[:, None, None]) & (r2 < self.radius_A**2)

        return self._compact(partner, mask, row_capacity, n)

    def _compact(self, partner, mask, row_capacity: int, n: int):
        """Keep the ``partner`` ids ``[B, C, M]`` where ``mask`` is set, in order, as
        ``([B, K] rows, or [K, B] when slot-major, padding N; [B] counts)``."""
        running = inclusive_prefix(mask)
        found = running[:, -1, -1]
        size = partner.shape[0]
        local = jnp.arange(size, dtype=jnp.int32)[:, None, None]
        keep = mask & (running <= row_capacity)
        # Flat position of partner number `running` of atom `local` in the output block.
        slot = (running - 1) * size + local if self.slot_major else local * row_capacity + running - 1
        where = jnp.where(keep, slot, size * row_capacity).reshape(-1)
        rows_out = jnp.full((size * row_capacity,), n, jnp.int32)
        rows_out = rows_out.at[where].set(partner.reshape(-1), mode="drop")
        shape = (row_capacity, size) if self.slot_major else (size, row_capacity)
        return rows_out.reshape(shape), found

    def _build_dense(self, position, cell_capacity: int, row_capacity: int):
        """``(idx [N, K] or, slot-major, [K, N]; largest row count; largest cell occupancy)``."""
        n = position.shape[0]
        table, occupancy = self._cell_table(position, cell_capacity)
        # Per-axis coordinates of each cell slot, NaN in empty slots so that no
        # distance test accepts them. Built once for all blocks.
        member = jnp.minimum(table, n - 1)
        coordinates = [jnp.where(table >= n, jnp.nan, position[member, axis]) for axis in range(3)]
        atoms = self._atom_blocks(n)
        rows, found = lax.map(lambda a: self._dense_rows(position, table, coordinates, a, row_capacity),
                              atoms)
        return self._join_blocks(rows, row_capacity, n), jnp.max(found), jnp.max(occupancy)

    def _atom_blocks(self, n: int):
        """Return ``[blocks, B]`` atom ids for the dense search. The last block repeats atom N − 1."""
        size = min(n, DENSE_BLOCK_ATOMS)
        blocks = -(-n // size)
        return jnp.minimum(jnp.arange(size * blocks, dtype=jnp.int32), n - 1).reshape(blocks, size)

    def _join_blocks(self, rows, row_capacity: int, n: int):
        """Join ``[blocks, B, K]`` blocks into an ``[N, K]`` list, or ``[blocks, K, B]`` into ``[K, N]``."""
        if self.slot_major:
            # [blocks, K, B] -> [K, blocks × B]: moves whole runs of B atoms.
            return jnp.transpose(rows, (1, 0, 2)).reshape(row_capacity, -1)[:, :n]
        return rows.reshape(-1, row_capacity)[:n]

    def _neighbor_list(self, position, cell_capacity: int, capacity: int) -> partition.NeighborList:
        build = self._build_dense if self.dense else self._build
        idx, needed, largest = build(position, cell_capacity, capacity)
        error = partition.PartitionError(jnp.zeros((), jnp.uint8))
        error = error.update(partition.PEC.NEIGHBOR_LIST_OVERFLOW, needed > capacity)
        error = error.update(partition.PEC.CELL_LIST_OVERFLOW, largest > cell_capacity)
        return partition.NeighborList(
            idx=idx, reference_position=position, error=error, cell_list_capacity=cell_capacity,
            max_occupancy=capacity, format=self.format, cell_size=None, cell_list_fn=None,
            update_fn=self.update)

    def _largest_occupancy(self, position) -> int:
        """Count the atoms in the fullest cell, which ``cell_capacity`` must fit."""
        return int(jnp.max(jnp.bincount(self._hash(self._cell_of(position)),
                                        length=math.prod(self.cells))))

    # ---------------------------------------------------------------- interface

    def allocate(self, position, extra_capacity: int = 0, min_cell_capacity: int = 0
                 ) -> partition.NeighborList:
        """Allocate a list for ``position`` with ``capacity_multiplier`` headroom in the
        cells and the pairs, plus ``extra_capacity`` slots per atom (jax-md's meaning):
        × N pair slots in the sparse formats, one more column in the dense one.
        The cells hold at least ``min_cell_capacity`` atoms."""
        position = jnp.asarray(position)   # host (NumPy) coordinates when resuming
        n = position.shape[0]
        occupancy = self._largest_occupancy(position)
        cell_capacity = max(1, math.ceil(occupancy * self.capacity_multiplier), min_cell_capacity)
        cell_capacity = -(-cell_capacity // PREFIX_GROUP) * PREFIX_GROUP
        build = self._build_dense if self.dense else self._build
        needed = int(jax.jit(lambda x: build(x, cell_capacity, 1)[1])(position))
        capacity = max(1, math.ceil(needed * self.capacity_multiplier))
        capacity += extra_capacity * (1 if self.dense else n)
        return self._neighbor_list(position, cell_capacity, capacity)

    def update(self, position, neighbors: partition.NeighborList, **unused) -> partition.NeighborList:
        """Rebuild when any atom has moved more than half the skin since the last build."""
        moved = self._square_distance(position, neighbors.reference_position)
        rebuild = jnp.any(moved > (0.5 * self.skin_A) ** 2)
        return lax.cond(rebuild,
                        lambda x: self._neighbor_list(x, neighbors.cell_list_capacity,
                                                      neighbors.max_occupancy),
                        lambda x: neighbors, position)
