"""Buckingham pair potential as an mdengine ``custom`` plug-in.

    V(r) = A exp(−r/ρ) − C / r⁶ − V(r_c)   for r < r_c, else 0

with A in eV, ρ in Å, C in eV·Å⁶ and r_c in Å. The energy is shifted so it
is zero at the cutoff. One parameter set applies to every pair, whatever
the species.

The energy function reads a full sparse neighbor list (``neighbor_format:
sparse``), in which each pair appears twice, so the pair sum is halved.
Unused slots of the list hold the index N (the number of atoms). They are
masked so that they add exactly zero to the energy and to its gradient.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
from jax_md import space


def buckingham(displacement_fn, species, A_eV, rho_A, C_eV_A6, cutoff_A):
    """Return ``energy_fn(positions, neighbor)`` (eV) for the Buckingham potential.

    Args:
      displacement_fn: ``displacement_fn(Ra, Rb)`` returning Cartesian Å.
      species: ``[N]`` species indices; unused (one parameter set for all pairs).
      A_eV: repulsive prefactor A (eV).
      rho_A: repulsive decay length ρ (Å).
      C_eV_A6: dispersion coefficient C (eV·Å⁶).
      cutoff_A: cutoff r_c (Å).
    """
    del species
    A, rho, C, cutoff = float(A_eV), float(rho_A), float(C_eV_A6), float(cutoff_A)
    if rho <= 0 or cutoff <= 0:
        raise ValueError(f"rho_A and cutoff_A must be positive, got {rho} and {cutoff}")
    shift = A * math.exp(-cutoff / rho) - C / cutoff**6
    pair_displacement = space.map_bond(displacement_fn)

    def energy_fn(positions, neighbor):
        n_atoms = positions.shape[0]
        receivers, senders = neighbor.idx[0], neighbor.idx[1]
        real = (receivers < n_atoms) & (senders < n_atoms)
        # Padded slots point at atom 0 on both sides: a zero displacement whose
        # distance and gradient are finite with space.distance.
        i = jnp.where(real, receivers, 0)
        j = jnp.where(real, senders, 0)
        r = space.distance(pair_displacement(positions[i], positions[j]))
        inside = real & (r > 0) & (r < cutoff)
        # Substitute the cutoff where the pair does not count, so neither the
        # division nor its gradient ever sees a zero distance.
        r_safe = jnp.where(inside, r, cutoff)
        pair = A * jnp.exp(-r_safe / rho) - C / r_safe**6 - shift
        return 0.5 * jnp.sum(jnp.where(inside, pair, 0.0))

    return energy_fn
