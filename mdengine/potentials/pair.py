"""Pair potentials with per-species parameters: Lennard-Jones, Morse, soft sphere.

Energies and forces are evaluated on a ``Dense`` neighbor list, whose row i
contains every partner of atom i, so each pair is computed twice. In exchange
the force on atom i is a sum along its own row, with no scatter-add. On a CPU
the scatter-adds cost more than the doubled pair arithmetic: the force of the
4,000-atom in.lj liquid took 1.5 ms, against 3.2 ms on a half list
differentiated by jax.
The derivative of the radial function comes from jax, element by element.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax_md import partition

from mdengine.cell_list import cartesian_components
from mdengine.config import (InputError, LennardJonesPotential, MorsePotential,
                             SoftSpherePotential)
from mdengine.potentials.base import Potential


def lennard_jones_pair(dr, sigma, epsilon, cutoff, shift):
    """4ε[(σ/r)^12 − (σ/r)^6] − shift for r < cutoff, else 0 (eV; r, σ in Å)."""
    inside = (dr < cutoff) & (dr > 0)
    r = jnp.where(inside, dr, cutoff)
    x6 = (sigma / r) ** 6
    return jnp.where(inside, 4 * epsilon * (x6 * x6 - x6) - shift, 0.0)


def morse_pair(dr, D, alpha, r0, cutoff, shift):
    """D[(1 − e^{−α(r−r0)})² − 1] − shift for r < cutoff, else 0 (eV)."""
    inside = (dr < cutoff) & (dr > 0)
    r = jnp.where(inside, dr, cutoff)
    decay = jnp.exp(-alpha * (r - r0))
    return jnp.where(inside, D * ((1 - decay) ** 2 - 1) - shift, 0.0)


def soft_sphere_pair(dr, sigma, epsilon, exponent):
    """(ε/α)(1 − r/σ)^α for r < σ, else 0 (eV)."""
    inside = (dr < sigma) & (dr > 0)
    overlap = jnp.where(inside, 1 - dr / sigma, 0.0)
    return jnp.where(inside, epsilon / exponent * overlap ** exponent, 0.0)


def _pair_table(spec, system, field: str, mix) -> np.ndarray:
    """``[S, S]`` table of one parameter over the system's species."""
    names = system.species_names
    missing = [name for name in names if name not in spec.species]
    if missing:
        raise InputError(f"potential.species: no parameters for element(s) {', '.join(missing)} "
                         f"present in the system; add an entry for each of {', '.join(names)}")
    pairs = getattr(spec, "pairs", {})
    table = np.zeros((len(names), len(names)))
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            explicit = pairs.get(f"{a}-{b}") or pairs.get(f"{b}-{a}")
            if explicit is not None:
                table[i, j] = getattr(explicit, field)
            else:
                table[i, j] = mix(getattr(spec.species[a], field), getattr(spec.species[b], field))
    return table


def _arithmetic(x, y):
    return 0.5 * (x + y)


def _geometric(x, y):
    return float(np.sqrt(x * y))


def build_pair_potential(spec, system, displacement_fn) -> Potential:
    """Build a Lennard-Jones, Morse or soft-sphere potential for ``system``."""
    species = jnp.asarray(system.species) if len(system.species_names) > 1 else None
    kind = spec.kind

    if isinstance(spec, LennardJonesPotential):
        sigma = _pair_table(spec, system, "sigma_A", _arithmetic)
        epsilon = _pair_table(spec, system, "epsilon_eV", _geometric)
        cutoff = spec.cutoff_A
        shift = np.zeros_like(sigma)
        if spec.shift_energy:
            x6 = (sigma / cutoff) ** 6
            shift = 4 * epsilon * (x6 * x6 - x6)
        params = dict(sigma=sigma, epsilon=epsilon, cutoff=cutoff, shift=shift)
        fn = lennard_jones_pair
    elif isinstance(spec, MorsePotential):
        D = _pair_table(spec, system, "D_eV", _arithmetic)
        alpha = _pair_table(spec, system, "alpha_per_A", _arithmetic)
        r0 = _pair_table(spec, system, "r0_A", _arithmetic)
        cutoff = spec.cutoff_A
        shift = np.zeros_like(D)
        if spec.shift_energy:
            shift = D * ((1 - np.exp(-alpha * (cutoff - r0))) ** 2 - 1)
        params = dict(D=D, alpha=alpha, r0=r0, cutoff=cutoff, shift=shift)
        fn = morse_pair
    elif isinstance(spec, SoftSpherePotential):
        sigma = _pair_table(spec, system, "sigma_A", _arithmetic)
        epsilon = _pair_table(spec, system, "epsilon_eV", _geometric)
        cutoff = float(sigma.max())
        params = dict(sigma=sigma, epsilon=epsilon, exponent=spec.exponent)
        fn = soft_sphere_pair
    else:
        raise TypeError(f"not a pair potential: {kind}")

    if species is None:
        params = {k: (v[0, 0] if isinstance(v, np.ndarray) else v) for k, v in params.items()}
    energy_and_force = dense_energy_and_force(fn, params, species, system)
    return Potential(energy_fn=lambda position, neighbor: energy_and_force(position, neighbor)[0],
                     cutoff_A=cutoff, neighbor_format=partition.Dense,
                     description=f"{kind} (cutoff {cutoff:g} Å)",
                     energy_and_force_fn=energy_and_force)


def dense_energy_and_force(pair_fn, params: dict, species, system):
    """``(positions, neighbor) -> (energy eV, [N, 3] forces eV/Å)`` on a Dense list.

    ``pair_fn(r, **params)`` is the pair energy at distance r (Å). Parameters
    that are ``[S, S]`` tables are looked up per pair from ``species`` ``[N]``.
    Positions are ``[N, 3]``: fractional in a periodic cell, Cartesian (Å)
    without one. Each coordinate axis is gathered on its own, which XLA's CPU
    code handles much faster than gathering ``[N, K, 3]`` blocks.
    """
    box = None if system.cell is None else np.asarray(system.box_matrix, np.float64)
    n = system.n_atoms
    tables = {k: jnp.asarray(v) for k, v in params.items() if isinstance(v, np.ndarray)}
    scalars = {k: v for k, v in params.items() if not isinstance(v, np.ndarray)}

    def energy_and_force(position, neighbor):
        partner = jnp.minimum(neighbor.idx, n - 1)
        difference = [position[:, a][partner] - position[:, a][:, None] for a in range(3)]
        if box is not None:
            fractional = [d - jnp.round(d) for d in difference]
            difference = cartesian_components(box, fractional)
        r2 = difference[0] ** 2 + difference[1] ** 2 + difference[2] ** 2
        inside = (neighbor.idx < n) & (r2 > 0)
        r = jnp.sqrt(jnp.where(inside, r2, 1.0))

        pair_params = dict(scalars)
        if tables:
            own = species[:, None]
            pair_params.update({k: v[own, species[partner]] for k, v in tables.items()})
        energy, slope = jax.jvp(lambda x: pair_fn(x, **pair_params), (r,), (jnp.ones_like(r),))
        energy = jnp.where(inside, energy, 0.0)
        coefficient = jnp.where(inside, slope / r, 0.0)

        # F_i = Σ_j (dU/dr)(r_ij) (r_j − r_i) / r_ij; each pair appears in both rows.
        force = jnp.stack([jnp.sum(coefficient * d, axis=1) for d in difference], axis=-1)
        return 0.5 * jnp.sum(energy), force

    return energy_and_force
