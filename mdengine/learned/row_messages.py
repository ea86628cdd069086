"""SchNet messages summed along the rows of a symmetric dense neighbor list.

A SchNet interaction sends atom i the message m_i = Σ_k x[j_ik] W(r_ik),
where j_ik is the k-th partner in row i of a dense ``[N, K]`` list and W
the tabulated filter (times the cosine cutoff). Written with jax
primitives, the gather x[j_ik] becomes a scatter-add in the gradient, and
the ``[N, K, F]`` filters are materialised in memory. On a 2-core CPU in
float32, 192 atoms with K = 90 and F = 128, that took 56 ms for the
gradient of one interaction.

Here the sum runs over blocks of atoms, so each block's filters stay in
cache, and the gradient needs no scatter-add. Row i of a full list contains
j exactly when row j contains i, and W depends only on r_ij, which both rows
see alike. So the gradient with respect to x, Σ_(i,k: j_ik = j) W(r_ik) g_i,
is again a row sum: Σ_k W(r_jk) g[j_jk]. The same example then took 8 ms.
The distances of the two directions of a pair may differ in the last bit
(periodic wrapping rounds them separately), so the gradient is exact to
float rounding.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from mdengine.learned.filter_table import FilterTable, interpolate
from mdengine.learned.graph import cosine_cutoff

# Atoms per block: their [B, K, F] temporaries stay in the L2 cache.
BLOCK_ATOMS = 16


def row_messages(x, distances, idx, table: FilterTable, cutoff_A: float):
    """``[N, F]`` messages m_i = Σ_k x[idx[i, k]] W(distances[i, k]) cutoff(distances[i, k]).

    Args:
      x: ``[N, F]`` atom features.
      distances: ``[N, K]`` edge lengths (Å); padded and masked slots have a
        length beyond the cutoff, so their filters are zero.
      idx: ``[N, K]`` int32 partners, each in range (masked slots any atom).
        The list must be symmetric: j in row i exactly when i in row j.
      table: the interaction's tabulated filter.
      cutoff_A: cosine-cutoff radius (Å).

    Gradients flow to ``x`` and ``distances``, not to the table.
    """
    n = idx.shape[0]
    size = min(n, BLOCK_ATOMS)
    padded = -(-n // size) * size
    if padded != n:
        # Padding rows send nothing and receive nothing: zero filters, partner 0.
        distances = jnp.pad(distances, ((0, padded - n), (0, 0)), constant_values=2.0 * cutoff_A)
        idx = jnp.pad(idx, ((0, padded - n), (0, 0)))
    result = _messages(x, distances, idx, table.values, table.slopes, table.spacing, cutoff_A)
    return result[:n]


def _weights(distances, values, slopes, spacing, cutoff_A):
    """``[..., F]`` filters times the cosine cutoff at ``distances`` ``[...]``."""
    shape = distances.shape
    table = FilterTable(values, slopes, spacing)
    filters = interpolate(table, distances.reshape(-1)).reshape(*shape, -1)
    return filters * cosine_cutoff(distances, cutoff_A)[..., None]


def _blocks(array):
    """Split the leading (atom) axis into blocks of ``BLOCK_ATOMS``, or one block when shorter."""
    return array.reshape(-1, min(array.shape[0], BLOCK_ATOMS), *array.shape[1:])


def _map_blocks(fn, arrays):
    """``fn`` over the leading block axis of ``arrays``, results stacked.

    A single block (systems of up to ``BLOCK_ATOMS`` atoms, unpadded) is
    computed without the loop.
    """
    if arrays[0].shape[0] == 1:
        return jax.tree.map(lambda a: a[None], fn(tuple(a[0] for a in arrays)))
    return lax.map(fn, arrays)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def _messages(x, distances, idx, values, slopes, spacing, cutoff_A):
    def block(arguments):
        rows, lengths = arguments
        return jnp.sum(x[rows] * _weights(lengths, values, slopes, spacing, cutoff_A), axis=1)

    return _map_blocks(block, (_blocks(idx), _blocks(distances))).reshape(idx.shape[0], x.shape[1])


def _messages_forward(x, distances, idx, values, slopes, spacing, cutoff_A):
    return _messages(x, distances, idx, values, slopes, spacing, cutoff_A), (x, distances, idx, values, slopes)


def _messages_backward(spacing, cutoff_A, saved, cotangent):
    x, distances, idx, values, slopes = saved
    n = x.shape[0]

    def block(arguments):
        rows, lengths, incoming = arguments
        weights, weight_slopes = jax.jvp(lambda r: _weights(r, values, slopes, spacing, cutoff_A),
                                    (lengths,), (jnp.ones_like(lengths),))
        to_x = jnp.sum(weights * cotangent[rows], axis=1)
        to_distances = jnp.sum(x[rows] * incoming[:, None, :] * weight_slopes, axis=-1)
        return to_x, to_distances

    to_x, to_distances = _map_blocks(block, (_blocks(idx), _blocks(distances), _blocks(cotangent)))
    # Rows past N are padding, and no real atom has them as partners.
    to_x = to_x.reshape(idx.shape[0], -1)[:n]
    return (to_x, to_distances.reshape(distances.shape), None,
            jnp.zeros_like(values), jnp.zeros_like(slopes))


_messages.defvjp(_messages_forward, _messages_backward)
