"""Pair potentials with per-species parameters: Lennard-Jones, Morse, soft sphere.

Pair energies are evaluated on a half (``OrderedSparse``) neighbor list, so
each pair is computed once. Distances come from the metric of the
displacement function (Cartesian Å).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax_md import partition, smap, space

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
    metric = space.metric(displacement_fn)
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
    params = {k: (jnp.asarray(v) if isinstance(v, np.ndarray) else v) for k, v in params.items()}
    energy_fn = smap.pair_neighbor_list(fn, metric, species=species, **params)
    return Potential(energy_fn=energy_fn, cutoff_A=cutoff,
                     neighbor_format=partition.OrderedSparse,
                     description=f"{kind} (cutoff {cutoff:g} Å)")
