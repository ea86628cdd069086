"""Spaces and neighbor lists: jax-md's, with the checks jax-md leaves to the caller.

Periodic systems use ``space.periodic_general`` with fractional coordinates,
which handles triclinic cells; its displacement function returns Cartesian
Å, and jax-md defines its derivative so that gradients with respect to
fractional positions are Cartesian forces. The list is rebuilt when any
atom has moved more than half the skin since the last build (jax-md's
rule), so no pair can cross into the cutoff unseen.
"""

from __future__ import annotations

import dataclasses
import logging
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax_md import partition, space

from mdengine import distributed
from mdengine.cell_list import CellListNeighbors
from mdengine.cell_windows import WindowNeighbors, window_cells
from mdengine.config import InputError
from mdengine.system import System

log = logging.getLogger(__name__)

# Above this, an all-pairs candidate search is refused instead of allocated.
ALL_PAIRS_LIMIT_BYTES = 4 * 2**30
OVERFLOW_GROWTH = 1.5
# Cells (and windows of cells) grow less, because the search visits every
# slot of every cell or window it reads for each atom. Measured with the
# 27-cell search: in the LAMMPS in.lj input at 4,000 atoms, the fcc lattice
# allocates 40 slots per cell (1.25 × 32 atoms) and the melt overflows them
# once (largest cell about 41 atoms). This growth gives 56 slots (51, rounded
# up to a multiple of 8) instead of 64 at 1.5 ×, and the run was 3 % faster.
CELL_GROWTH = 1.25
# Name of the vmapped axis that runs independent replicas of a system.
REPLICA_AXIS = "replica"
# Attempts at a shared capacity before a replica allocation gives up.
MAX_ALLOCATION_ROUNDS = 10


def make_space(system: System, dtype):
    """Return ``(displacement_fn, shift_fn, coordinates)`` for the system.

    ``coordinates`` is ``[N, 3]``: fractional when periodic, Å when free.
    """
    if system.cell is None:
        displacement_fn, shift_fn = space.free()
        return displacement_fn, shift_fn, jnp.asarray(system.positions, dtype)
    box = jnp.asarray(system.box_matrix, dtype)
    displacement_fn, shift_fn = space.periodic_general(box, fractional_coordinates=True)
    return displacement_fn, shift_fn, jnp.asarray(system.fractional(), dtype)


@jax.custom_jvp
def _fractional_to_cartesian(box, d):
    """``box @ d`` for ``d`` of shape ``[..., 3]``, written out element by element."""
    x, y, z = d[..., 0], d[..., 1], d[..., 2]
    return jnp.stack([box[i, 0] * x + box[i, 1] * y + box[i, 2] * z for i in range(3)], axis=-1)


@_fractional_to_cartesian.defjvp
def _fractional_to_cartesian_jvp(primals, tangents):
    # Tangents pass through unscaled, so the gradient of an energy with respect
    # to fractional positions is the Cartesian gradient (jax-md's convention
    # for periodic_general, which the integrators rely on).
    box, d = primals
    box_dot, d_dot = tangents
    return _fractional_to_cartesian(box, d), d_dot + _fractional_to_cartesian(box_dot, d)


def periodic_displacement(box):
    """``displacement(Ra, Rb) -> [3]`` Cartesian minimum-image vector (Å) between
    fractional positions, with jax-md's ``periodic_general`` convention for
    derivatives.

    The same vector as jax-md's, computed element by element. In a neighbor
    search over millions of candidate pairs, XLA on CPU ran jax-md's per-pair
    einsum as a matrix product with 3×3 inner dimensions, several times slower.
    For the forces, over the far fewer listed pairs, both cost the same, so
    the potentials keep jax-md's function.
    """
    def displacement(Ra, Rb, **unused):
        d = Ra - Rb
        return _fractional_to_cartesian(box, d - jnp.round(d))

    return displacement


def periodic_metric(box):
    """``metric(Ra, Rb) -> distance (Å)`` between fractional positions under the
    minimum image, for neighbor searches (no gradient convention needed)."""
    displacement = periodic_displacement(box)

    def metric(Ra, Rb, **unused):
        return jnp.sqrt(jnp.sum(displacement(Ra, Rb) ** 2, axis=-1))

    return metric


def to_cartesian(coordinates, system: System):
    """Engine coordinates ``[..., N, 3]`` to Cartesian Å (works on JAX arrays inside jit)."""
    if system.cell is None:
        return coordinates
    return coordinates @ jnp.asarray(system.cell, coordinates.dtype)


def check_cutoff(system: System, cutoff_A: float, skin_A: float) -> None:
    """Reject a list radius beyond half the shortest cell height.

    The minimum-image convention finds one image of each neighbor, so beyond
    half the height further images would be missed silently.
    """
    if system.cell is None:
        return
    heights = system.heights()
    radius = cutoff_A + skin_A
    half = 0.5 * heights.min()
    if radius > half:
        repeats = [max(1, math.ceil(2 * radius / h)) for h in heights]
        fixes = [f"replicate the cell {repeats[0]}x{repeats[1]}x{repeats[2]}"
                 + (" (system.lattice.repeats)" if "lattice" in system.source else "")]
        if cutoff_A < half:
            fixes.append(f"reduce neighbor.skin_A below {half - cutoff_A:.4f} Å")
        raise InputError(
            f"{system.source}: cutoff {cutoff_A:g} Å + skin {skin_A:g} Å = {radius:g} Å exceeds half "
            f"the shortest cell height ({half:.4f} Å; cell heights {np.round(heights, 4).tolist()} Å); "
            + " or ".join(fixes))


@dataclasses.dataclass(frozen=True)
class SlotMajorNeighbors:
    """jax-md ``Dense`` neighbor functions whose lists store ``idx`` as ``[K, N]``.

    jax-md builds and updates ``[N, K]`` rows, and this wrapper transposes them
    on the way in and out. So pair potentials read one layout whatever the
    search. Only small systems take this path: free space, or boxes under
    2.5 list radii high.
    """

    inner: partition.NeighborListFns

    def _columns(self, neighbors: partition.NeighborList) -> partition.NeighborList:
        return neighbors.set(idx=neighbors.idx.T, update_fn=self.update)

    def allocate(self, position, extra_capacity: int = 0, **kwargs) -> partition.NeighborList:
        return self._columns(self.inner.allocate(position, extra_capacity=extra_capacity, **kwargs))

    def update(self, position, neighbors: partition.NeighborList, **kwargs) -> partition.NeighborList:
        rows = neighbors.set(idx=neighbors.idx.T)
        return self._columns(self.inner.update(position, rows, **kwargs))


@dataclasses.dataclass
class NeighborBuilder:
    """A jax-md neighbor function plus the allocation policy mdengine uses."""

    neighbor_fn: partition.NeighborListFns
    n_atoms: int
    format: partition.NeighborListFormat
    uses_cell_list: bool
    periodic: bool
    metric: object   # metric or displacement function the list is built with
    slot_major: bool = False   # Dense lists stored as [K, N]

    @property
    def layout(self) -> str:
        """Name of the list's array layout, recorded in checkpoints."""
        return self.format.name + ("_slot_major" if self.slot_major else "")

    def allocate(self, coordinates, min_capacity: int = 0, min_cell_capacity: int = 0
                 ) -> partition.NeighborList:
        """Allocate a list for ``coordinates`` with at least ``min_capacity`` slots and,
        for mdengine's cell lists, at least ``min_cell_capacity`` atoms per cell."""
        extra = {"min_cell_capacity": min_cell_capacity} if isinstance(self.neighbor_fn, CellListNeighbors) else {}
        neighbors = self.neighbor_fn.allocate(coordinates, **extra)
        if neighbors.max_occupancy >= min_capacity:
            return neighbors
        missing = min_capacity - neighbors.max_occupancy
        per_row = self.n_atoms if partition.is_sparse(self.format) else 1
        return self.neighbor_fn.allocate(coordinates, extra_capacity=math.ceil(missing / per_row), **extra)

    def grow(self, coordinates, old: partition.NeighborList, overflowed=None) -> partition.NeighborList:
        """Reallocate after an overflow with at least ``OVERFLOW_GROWTH`` × the old pair
        capacity or ``CELL_GROWTH`` × the old cell capacity.

        ``coordinates`` is ``[N, 3]``, or ``[R, N, 3]`` for replicas sharing one capacity.
        ``overflowed`` is the list that reported the overflow: only the buffer it
        names grows (the pair slots, the cells or both). Without it both grow.
        """
        pairs_full = cells_full = True
        if overflowed is not None:
            code = np.asarray(distributed.to_host(overflowed.error.code))
            pairs_full = bool(np.any(code & int(partition.PEC.NEIGHBOR_LIST_OVERFLOW)))
            cells_full = bool(np.any(code & int(partition.PEC.CELL_LIST_OVERFLOW)))
        capacity = math.ceil(old.max_occupancy * OVERFLOW_GROWTH) + 1 if pairs_full else old.max_occupancy
        cell_capacity = 0
        if cells_full and old.cell_list_capacity:
            cell_capacity = math.ceil(old.cell_list_capacity * CELL_GROWTH) + 1
        if coordinates.ndim == 3:
            return self.allocate_replicas(coordinates, capacity, cell_capacity)
        return self.allocate(coordinates, capacity, cell_capacity)

    def allocate_replicas(self, coordinates, min_capacity: int = 0, min_cell_capacity: int = 0
                          ) -> partition.NeighborList:
        """Allocate one list per replica of ``[R, N, 3]`` coordinates, all with the same capacity.

        The lists are built from the coordinates of each replica, so each is the
        list a single run of that replica would hold at the same capacity.
        Returns a batched list: every array gains a leading replica axis.

        Raises:
          InputError: no shared capacity fits every replica.
        """
        template = self.allocate(coordinates[0], min_capacity, min_cell_capacity)
        build = jax.jit(jax.vmap(self._rebuild, in_axes=(0, None)))
        for _ in range(MAX_ALLOCATION_ROUNDS):
            lists = build(coordinates, template)
            overflow = np.asarray(lists.did_buffer_overflow)
            if not overflow.any():
                return lists
            worst = int(np.argmax(overflow))
            capacity = math.ceil(template.max_occupancy * OVERFLOW_GROWTH) + 1
            cell_capacity = math.ceil((template.cell_list_capacity or 0) * OVERFLOW_GROWTH) + 1
            template = self.allocate(coordinates[worst], capacity, cell_capacity)
        raise InputError(f"no neighbor-list capacity fits all replicas after {MAX_ALLOCATION_ROUNDS} "
                         "attempts; the replicas' structures differ too much in density")

    def _rebuild(self, coordinates, template: partition.NeighborList) -> partition.NeighborList:
        """Rebuild a list for ``coordinates`` with the template's capacity, whatever it moved."""
        # A reference half a cell away (fractional 0.5, or far away in free
        # space) exceeds the rebuild threshold, so jax-md builds anew.
        offset = 0.5 if self.periodic else 1.0e4
        stale = dataclasses.replace(template, reference_position=coordinates + offset)
        return self.neighbor_fn.update(coordinates, stale)

    def replica_update_fn(self, skin_A: float):
        """``update(neighbor, position)`` for use under ``vmap(axis_name=REPLICA_AXIS)``.

        When any replica has moved more than half the skin, every replica
        rebuilds its list (a real branch, not a masked one). Under vmap a
        rebuild is computed for all replicas anyway, and rebuilding them
        together keeps their lists equally fresh, so the next rebuild comes
        about as late as in a single run instead of R times as often.
        """
        threshold_sq = (0.5 * skin_A) ** 2
        if self.periodic:
            square_distance = lambda a, b: self.metric(a, b) ** 2   # noqa: E731
        else:
            square_distance = jax.vmap(lambda a, b: space.square_distance(self.metric(a, b)))

        def update(neighbor, position):
            moved = jnp.max(square_distance(position, neighbor.reference_position)) > threshold_sq
            any_moved = lax.psum(moved.astype(jnp.int32), REPLICA_AXIS) > 0
            return lax.cond(any_moved, lambda n: self._rebuild(position, n), lambda n: n, neighbor)

        return update


def make_neighbor_builder(system: System, displacement_fn, cutoff_A: float, skin_A: float,
                          capacity_multiplier: float, fmt: partition.NeighborListFormat,
                          dtype, slot_major: bool = False) -> NeighborBuilder:
    """Build the neighbor function for a potential's cutoff and format.

    ``slot_major`` stores a ``Dense`` list as ``[K, N]`` (see ``Potential``).
    """
    check_cutoff(system, cutoff_A, skin_A)
    radius = cutoff_A + skin_A
    n_atoms = system.n_atoms

    if system.cell is None:
        use_cell_list = False
        box = 1.0
    else:
        box = jnp.asarray(system.box_matrix, dtype)
        cells_per_side = np.floor(system.heights() / radius)
        use_cell_list = bool(np.all(cells_per_side > 3))
    # Dense lists take the window search wherever it fits, which includes boxes
    # between 2.5 and 4 radii high that are too small for the 27-cell search.
    windows = None
    if system.cell is not None and fmt is partition.Dense:
        windows = window_cells(system.heights(), radius)
    use_cell_list = use_cell_list or windows is not None
    if not use_cell_list:
        _check_all_pairs_memory(system, radius)

    metric = displacement_fn if system.cell is None else periodic_metric(box)
    if windows is not None:
        neighbor_fn = WindowNeighbors(np.asarray(system.box_matrix, np.float64), windows, radius,
                                      skin_A, False, capacity_multiplier, dense=True,
                                      slot_major=slot_major)
        log.info("neighbor search: windows of 5 cells, %d x %d x %d cells", *windows)
    elif use_cell_list:
        cells = tuple(int(c) for c in cells_per_side)
        neighbor_fn = CellListNeighbors(np.asarray(system.box_matrix, np.float64), cells, radius,
                                        skin_A, fmt is partition.OrderedSparse, capacity_multiplier,
                                        dense=fmt is partition.Dense, slot_major=slot_major)
        log.info("neighbor search: %s cell list, %d x %d x %d cells",
                 "full-shell" if fmt is partition.Dense else "half-shell", *cells)
    else:
        neighbor_fn = partition.neighbor_list(
            metric, box, cutoff_A, dr_threshold=skin_A,
            capacity_multiplier=capacity_multiplier, disable_cell_list=not use_cell_list,
            fractional_coordinates=system.cell is not None, format=fmt)
        if slot_major:
            neighbor_fn = SlotMajorNeighbors(neighbor_fn)
    return NeighborBuilder(neighbor_fn, n_atoms, fmt, use_cell_list, system.cell is not None, metric,
                           slot_major)


def _check_all_pairs_memory(system: System, radius: float) -> None:
    """jax-md falls back to an N×N candidate search when the cell list cannot be
    used (free boundaries, or fewer than four cells along a side)."""
    n = system.n_atoms
    estimate = 3 * 4 * n * n   # candidate indices, distances and mask, 4 bytes each
    reason = ("free boundaries" if system.cell is None else
              f"a cell height of {system.heights().min():.2f} Å is under 4 × {radius:g} Å")
    if estimate > ALL_PAIRS_LIMIT_BYTES:
        raise InputError(
            f"{system.source}: {reason} forces an all-pairs neighbor search for {n} atoms, "
            f"about {estimate / 2**30:.1f} GiB; enlarge the thin side of the box or use fewer atoms")
    log.info("neighbor search: all pairs (%s), about %.1f MiB", reason, estimate / 2**20)
