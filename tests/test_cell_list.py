"""The cell lists against brute force, in a triclinic cell, for the two
sparse formats and the dense one, and their overflow flags."""

from __future__ import annotations

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdengine.cell_list import CellListNeighbors

# Upper-triangular cell (lattice vectors as columns), sheared in two directions.
BOX = np.array([[40.0, 6.0, -4.0],
                [0.0, 38.0, 5.0],
                [0.0, 0.0, 36.0]])
RADIUS = 8.0


def heights(box):
    volume = abs(np.linalg.det(box))
    a, b, c = box.T
    return np.array([volume / np.linalg.norm(np.cross(b, c)), volume / np.linalg.norm(np.cross(c, a)),
                     volume / np.linalg.norm(np.cross(a, b))])


def brute_force_pairs(fractional, box, radius):
    """Unordered pairs (i < j) within ``radius`` under the minimum image, checking all 27 images."""
    cartesian_shifts = np.array(list(itertools.product((-1, 0, 1), repeat=3))) @ box.T
    found = set()
    n = len(fractional)
    for i in range(n):
        d = fractional[i + 1:] - fractional[i]
        d -= np.round(d)
        vectors = d @ box.T
        shortest = np.min(np.linalg.norm(vectors[:, None, :] + cartesian_shifts[None], axis=-1), axis=1)
        for j in np.nonzero(shortest < radius)[0]:
            found.add((i, i + 1 + j))
    return found


def listed_pairs(neighbors, n):
    idx = np.asarray(neighbors.idx)
    keep = (idx[0] < n) & (idx[1] < n)
    return [tuple(p) for p in idx[:, keep].T.tolist()]


@pytest.fixture(scope="module")
def atoms():
    rng = np.random.default_rng(5)
    return rng.uniform(0.0, 1.0, size=(700, 3))


def builder(ordered, skin=1.0, block_atoms=16384, dense=False):
    cells = tuple(int(c) for c in np.floor(heights(BOX) / (RADIUS + skin)))
    assert min(cells) >= 3
    return CellListNeighbors(BOX, cells, RADIUS + skin, skin, ordered, 1.25, block_atoms, dense)


# 700 atoms in one block, or in blocks of 128 (the last one padded).
@pytest.mark.parametrize("block_atoms", [16384, 128])
@pytest.mark.parametrize("ordered", [True, False])
def test_pairs_equal_brute_force_in_a_triclinic_cell(atoms, ordered, block_atoms):
    expected = brute_force_pairs(atoms, BOX, RADIUS + 1.0)
    neighbors = builder(ordered, block_atoms=block_atoms).allocate(jnp.asarray(atoms))
    assert not bool(neighbors.did_buffer_overflow)
    pairs = listed_pairs(neighbors, len(atoms))
    if ordered:
        assert len(pairs) == len(set(pairs)) == len(expected)   # each pair exactly once
        assert all(i < j for i, j in pairs)
        assert set(pairs) == expected
    else:
        assert len(pairs) == 2 * len(expected)
        assert set(pairs) == expected | {(j, i) for i, j in expected}


def test_dense_rows_equal_brute_force(atoms):
    expected = brute_force_pairs(atoms, BOX, RADIUS + 1.0)
    neighbors = builder(False, dense=True).allocate(jnp.asarray(atoms))
    assert not bool(neighbors.did_buffer_overflow)
    idx = np.asarray(neighbors.idx)
    assert idx.shape[0] == len(atoms)

    rows = [set(row[row < len(atoms)].tolist()) for row in idx]
    assert sum(len(row) for row in rows) == 2 * len(expected)   # no partner twice in a row
    assert sum(int(np.sum(row < len(atoms))) for row in idx) == 2 * len(expected)
    assert {(i, j) for i, row in enumerate(rows) for j in row if i < j} == expected
    assert all(j in rows[i] for i, row in enumerate(rows) for j in row)     # symmetric


@pytest.mark.parametrize("block_atoms", [16384, 128])
def test_slot_major_dense_is_rows_transposed(atoms, block_atoms):
    position = jnp.asarray(atoms)
    rows = builder(False, block_atoms=block_atoms, dense=True).allocate(position)
    slot_major = dataclasses.replace(builder(False, block_atoms=block_atoms, dense=True),
                                     slot_major=True)
    columns = slot_major.allocate(position)
    assert columns.idx.shape == rows.idx.shape[::-1]
    np.testing.assert_array_equal(np.asarray(columns.idx), np.asarray(rows.idx).T)

    moved = position + 0.02
    updated_rows = jax.jit(rows.update_fn)(moved, rows)
    updated_columns = jax.jit(columns.update_fn)(moved, columns)
    np.testing.assert_array_equal(np.asarray(updated_columns.idx), np.asarray(updated_rows.idx).T)


def test_dense_rows_overflow_is_flagged(atoms):
    fns = builder(False, dense=True)
    neighbors = fns.allocate(jnp.asarray(atoms))
    squeezed = jnp.asarray(atoms) * 0.6
    assert bool(jax.jit(fns.update)(squeezed, neighbors).did_buffer_overflow)


def test_update_rebuilds_only_past_half_the_skin_and_flags_overflow(atoms):
    fns = builder(True)
    neighbors = fns.allocate(jnp.asarray(atoms))
    update = jax.jit(fns.update)

    nudged = jnp.asarray(atoms) + 0.4 / 40.0 * np.array([1.0, 0.0, 0.0])   # 0.4 Å < half the skin
    kept = update(nudged, neighbors)
    np.testing.assert_array_equal(kept.reference_position, neighbors.reference_position)

    moved = jnp.asarray(atoms) + 0.6 / 40.0 * np.array([1.0, 0.0, 0.0])    # 0.6 Å > half the skin
    rebuilt = update(moved, neighbors)
    np.testing.assert_array_equal(rebuilt.reference_position, moved)
    assert not bool(rebuilt.did_buffer_overflow)

    # Every atom squeezed into a corner: both the cells and the pair slots overflow.
    squeezed = jnp.asarray(atoms) * 0.2
    assert bool(update(squeezed, neighbors).did_buffer_overflow)
