"""A plug-in pair potential whose energy is undefined (NaN) below a hard-core distance.

E = Σ_pairs ε·ln((r − r_core)/(cutoff − r_core)) for r < cutoff, zero at the
cutoff. Atoms pushed inside ``r_core`` give the logarithm of a negative
number: a realistic plug-in domain error for testing non-finite detection.
"""

import jax.numpy as jnp
from jax_md import space


def log_barrier(displacement_fn, species, epsilon_eV=0.01, r_core_A=2.0, cutoff_A=6.0):
    """Factory following mdengine's plug-in contract (sparse neighbor list)."""
    del species

    def energy_fn(positions, neighbor):
        n = positions.shape[0]
        senders, receivers = neighbor.idx
        valid = senders < n
        dr = space.map_bond(displacement_fn)(positions[senders], positions[receivers])
        r = jnp.where(valid, space.distance(dr), cutoff_A)
        inside = valid & (r < cutoff_A)
        pair = epsilon_eV * jnp.log((r - r_core_A) / (cutoff_A - r_core_A))
        return 0.5 * jnp.sum(jnp.where(inside, pair, 0.0))

    return energy_fn
