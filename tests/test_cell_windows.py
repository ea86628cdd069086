"""The window search for dense neighbor lists against brute force, its layouts,
its overflow flags, and where the engine chooses it."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax_md import partition

from mdengine.cell_list import CellListNeighbors
from mdengine.cell_windows import WINDOW_CELLS, WindowNeighbors, window_cells
from tests.test_cell_list import BOX, RADIUS, brute_force_pairs, heights

SKIN = 1.0
# Five cells along x: every window covers its whole row of cells.
NARROW_BOX = np.array([[23.0, 0.0, 0.0],
                       [0.0, 40.0, 3.0],
                       [0.0, 0.0, 36.0]])


def windows(box, slot_major=False) -> WindowNeighbors:
    cells = window_cells(heights(box), RADIUS + SKIN)
    assert cells is not None
    return WindowNeighbors(box, cells, RADIUS + SKIN, SKIN, False, 1.25, dense=True,
                           slot_major=slot_major)


def random_atoms(box, count, seed):
    return np.random.default_rng(seed).uniform(0.0, 1.0, size=(count, 3))


def assert_rows_match(idx, expected, n):
    rows = [set(row[row < n].tolist()) for row in idx]
    assert sum(int(np.sum(row < n)) for row in idx) == 2 * len(expected)   # no partner twice
    assert {(i, j) for i, row in enumerate(rows) for j in row if i < j} == expected
    assert all(i in rows[j] for i, row in enumerate(rows) for j in row)     # symmetric


@pytest.mark.parametrize("box", [BOX, NARROW_BOX], ids=["triclinic", "five cells"])
def test_window_rows_equal_brute_force(box):
    atoms = random_atoms(box, 700, seed=3)
    expected = brute_force_pairs(atoms, box, RADIUS + SKIN)
    neighbors = windows(box).allocate(jnp.asarray(atoms))
    assert not bool(neighbors.did_buffer_overflow)
    idx = np.asarray(neighbors.idx)
    assert idx.shape[0] == len(atoms)
    assert_rows_match(idx, expected, len(atoms))


def test_window_allocate_accepts_numpy():
    # A resumed run allocates from coordinates copied to the host.
    atoms = random_atoms(BOX, 700, seed=8)
    from_host = windows(BOX).allocate(atoms)
    from_device = windows(BOX).allocate(jnp.asarray(atoms))
    np.testing.assert_array_equal(np.asarray(from_host.idx), np.asarray(from_device.idx))


def test_narrow_box_has_five_cells_along_x():
    assert window_cells(heights(NARROW_BOX), RADIUS + SKIN)[0] == WINDOW_CELLS


def test_window_slot_major_is_rows_transposed():
    position = jnp.asarray(random_atoms(BOX, 700, seed=4))
    rows = windows(BOX).allocate(position)
    columns = windows(BOX, slot_major=True).allocate(position)
    np.testing.assert_array_equal(np.asarray(columns.idx), np.asarray(rows.idx).T)


def test_window_list_matches_full_shell_list():
    # Same partners as the 27-cell search, in another order within each row.
    position = jnp.asarray(random_atoms(BOX, 700, seed=5))
    cells = tuple(int(c) for c in np.floor(heights(BOX) / (RADIUS + SKIN)))
    shell = CellListNeighbors(BOX, cells, RADIUS + SKIN, SKIN, False, 1.25, dense=True)
    expected = [set(r[r < 700].tolist()) for r in np.asarray(shell.allocate(position).idx)]
    found = [set(r[r < 700].tolist()) for r in np.asarray(windows(BOX).allocate(position).idx)]
    assert found == expected


def test_window_update_rebuilds_after_moves():
    atoms = random_atoms(BOX, 700, seed=6)
    builder = windows(BOX, slot_major=True)
    neighbors = builder.allocate(jnp.asarray(atoms))
    # Move every atom by 0.6 Å along x, more than half the skin, so the list rebuilds.
    moved = (atoms + np.linalg.solve(BOX, [0.6, 0.0, 0.0])) % 1.0
    updated = jax.jit(builder.update)(jnp.asarray(moved), neighbors)
    assert not bool(updated.did_buffer_overflow)
    np.testing.assert_allclose(np.asarray(updated.reference_position), moved)
    assert_rows_match(np.asarray(updated.idx).T, brute_force_pairs(moved, BOX, RADIUS + SKIN), 700)


def test_crowded_window_flags_cell_overflow():
    atoms = random_atoms(BOX, 700, seed=7)
    builder = windows(BOX)
    neighbors = builder.allocate(jnp.asarray(atoms))
    # Pile a quarter of the atoms into one corner: their windows exceed W.
    crowded = atoms.copy()
    crowded[:175] = 0.01 * crowded[:175]
    updated = jax.jit(builder.update)(jnp.asarray(crowded), neighbors)
    assert bool(updated.did_buffer_overflow)
    assert int(updated.error.code) & int(partition.PEC.CELL_LIST_OVERFLOW)


@pytest.mark.parametrize("repeats", [4, 8])
def test_engine_uses_windows_for_pair_potentials(tmp_path, repeats):
    # 23 Å (2.6 list radii, too small for the 27-cell search) and 46 Å boxes.
    from tests.test_forces import ARGON_LJ, build, lattice
    simulation = build(tmp_path, lattice("fcc", "Ar", 5.754, (repeats,) * 3, 0.3), ARGON_LJ)
    assert isinstance(simulation.neighbors.neighbor_fn, WindowNeighbors)
    assert simulation.neighbors.layout == "Dense_slot_major"
