"""Edges of an atomic graph and the masks that make padding inert.

An edge ``e`` points from a source atom ``src[e]`` to a destination atom
``dst[e]``. Its vector is ``r_src − r_dst`` in Cartesian Å (the image the
neighbor list or the periodic shift selects). Messages flow from source to
destination, so ``dst`` is where they are summed.

Padded edges (jax-md fills unused slots with index N) and zero-length edges
are replaced by a fixed vector outside the cutoff before any square root.
Neither their value nor their gradient can then be NaN, and the networks
multiply their contributions by an exact zero.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class Edges(NamedTuple):
    """Edges of one graph (or of a batch of disjoint graphs).

    Attributes:
      vectors: ``[E, 3]`` Cartesian vectors ``r_src − r_dst`` (Å); masked
        edges hold a vector outside the cutoff.
      distances: ``[E]`` lengths of ``vectors`` (Å).
      dst: ``[E]`` int32 destination atoms; masked edges point at N (dropped
        by segment sums over N atoms).
      src: ``[E]`` int32 source atoms, clamped into range for masked edges.
      mask: ``[E]`` bool, True for real edges inside the cutoff.
      rows: K when the edges come from a dense ``[N, K]`` list, in row order
        (edge e ends at atom e // K); 0 otherwise.
    """

    vectors: jax.Array
    distances: jax.Array
    dst: jax.Array
    src: jax.Array
    mask: jax.Array
    rows: int = 0


def make_edges(vectors, dst, src, valid, n_atoms: int, cutoff_A: float) -> Edges:
    """Mask edges and make their geometry safe to differentiate.

    Args:
      vectors: ``[E, 3]`` raw edge vectors (Å), possibly zero or garbage for
        padded edges.
      dst, src: ``[E]`` integer atom indices; padding may equal ``n_atoms``.
      valid: ``[E]`` bool, False for padding.
      n_atoms: number of atoms N (segment count).
      cutoff_A: cutoff radius (Å); longer edges are masked.
    """
    if vectors.shape[0] == 0:   # an empty list (one atom): one masked edge keeps shapes non-empty
        vectors = jnp.zeros((1, 3), vectors.dtype)
        dst = src = jnp.full((1,), n_atoms, jnp.int32)
        valid = jnp.zeros((1,), bool)
    squared = jnp.sum(vectors * vectors, axis=-1)   # differentiable at zero, unlike a norm
    mask = valid & (squared > 0) & (squared < cutoff_A * cutoff_A)
    outside = jnp.zeros_like(vectors).at[:, 0].set(2.0 * cutoff_A)
    safe = jnp.where(mask[:, None], vectors, outside)
    distances = jnp.sqrt(jnp.sum(safe * safe, axis=-1))
    dst = jnp.where(mask, dst, n_atoms).astype(jnp.int32)
    src = jnp.where(mask, src, 0).astype(jnp.int32)
    return Edges(safe, distances, dst, src, mask)


def neighbor_edges(positions, idx, displacement_fn, cutoff_A: float) -> Edges:
    """Edges from a jax-md sparse neighbor list.

    Args:
      positions: ``[N, 3]`` engine coordinates (fractional in a periodic
        cell, Cartesian Å in free space).
      idx: ``[2, C]`` int neighbor indices (row 0 receives, row 1 sends);
        padding entries equal N.
      displacement_fn: ``displacement_fn(Ra, Rb) -> Ra − Rb`` in Cartesian Å.
      cutoff_A: model cutoff (Å).
    """
    n_atoms = positions.shape[0]
    dst, src = idx[0], idx[1]
    valid = (dst < n_atoms) & (src < n_atoms) & (dst != src)
    # Gathers at index N clamp to atom N − 1: those zero-length edges are masked.
    vectors = jax.vmap(displacement_fn)(positions[src], positions[dst])
    return make_edges(vectors, dst, src, valid, n_atoms, cutoff_A)


def dense_neighbor_edges(positions, idx, displacement_fn, cutoff_A: float) -> Edges:
    """Edges from a jax-md dense neighbor list, in row order.

    Args:
      positions: ``[N, 3]`` engine coordinates.
      idx: ``[N, K]`` int neighbor indices: row i lists the atoms that send
        to atom i; padding entries equal N.
      displacement_fn: ``displacement_fn(Ra, Rb) -> Ra − Rb`` in Cartesian Å.
      cutoff_A: model cutoff (Å).
    """
    n_atoms, rows = idx.shape
    dst = jnp.repeat(jnp.arange(n_atoms, dtype=jnp.int32), rows)
    src = idx.reshape(-1)
    valid = (src < n_atoms) & (src != dst)
    vectors = jax.vmap(displacement_fn)(positions[src], positions[dst])
    edges = make_edges(vectors, dst, src, valid, n_atoms, cutoff_A)
    return edges._replace(rows=rows)


def cosine_cutoff(distances, cutoff_A: float):
    """Behler's cosine cutoff ½[cos(π r / r_c) + 1] for r < r_c, else 0 (dimensionless)."""
    inside = distances < cutoff_A
    return jnp.where(inside, 0.5 * (jnp.cos(jnp.pi * distances / cutoff_A) + 1.0), 0.0)


def gather_sum(values, dst, n_atoms: int, rows: int = 0):
    """Sum per-edge ``values [E, ...]`` onto destination atoms: ``[N, ...]``.

    Indices equal to ``n_atoms`` (masked edges) are dropped. With ``rows``
    (edges of a dense list, in row order) the sum runs along each row
    instead, so the values of masked edges must already be zero. A row sum
    needs no scatter-add, in the forward pass or in its gradient.
    """
    if rows:
        return jnp.sum(values.reshape(n_atoms, rows, *values.shape[1:]), axis=1)
    return jax.ops.segment_sum(values, dst, num_segments=n_atoms)
