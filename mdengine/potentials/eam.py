"""Embedded-atom method from a LAMMPS ``eam/alloy`` (setfl) file, single element.

E = Σ_i F(ρ_i) + ½ Σ_i Σ_{j≠i} φ(r_ij), with ρ_i = Σ_{j≠i} f(r_ij). The
tabulated F, f and r·φ are interpolated with not-a-knot cubic splines
(scipy) and evaluated in Horner form, so the derivative is finite at the
table knots too. f and φ are zero at and beyond the file's cutoff; F is
extrapolated with its end polynomial beyond the tabulated density range.
"""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np
from jax_md import partition, space
from jax import ops
from scipy.interpolate import CubicSpline

from mdengine.config import InputError
from mdengine.potentials.base import Potential


def read_setfl(path: Path, element: str) -> dict:
    """Tables of a single-element setfl file: F(ρ), f(r), φ(r) and their grids (eV, Å)."""
    lines = path.read_text().splitlines()
    if len(lines) < 6:
        raise InputError(f"{path}: too short for an eam/alloy setfl file (3 comment lines, "
                         "element line, grid line, element header, tables)")
    header = lines[3].split()
    if header[1:] != [element]:
        raise InputError(f"{path}: line 4 lists element(s) {' '.join(header[1:])}; mdengine reads "
                         f"single-element files and the system contains {element}")
    try:
        n_rho, d_rho, n_r, d_r, cutoff = lines[4].split()[:5]
        n_rho, n_r = int(n_rho), int(n_r)
        d_rho, d_r, cutoff = float(d_rho), float(d_r), float(cutoff)
        values = np.array(" ".join(lines[6:]).split(), dtype=np.float64)
    except ValueError as err:
        raise InputError(f"{path}: cannot parse the grid line or tables: {err}") from None
    if values.size < n_rho + 2 * n_r:
        raise InputError(f"{path}: expected {n_rho + 2 * n_r} tabulated values "
                         f"(Nrho {n_rho} + 2 × Nr {n_r}), found {values.size}")
    r = np.arange(n_r) * d_r
    r_phi = values[n_rho + n_r:n_rho + 2 * n_r]
    phi = np.empty(n_r)
    phi[1:] = r_phi[1:] / r[1:]
    phi[0] = phi[1]   # r = 0 is never sampled: atoms closer than 0.5 Å are rejected
    return {"embedding": values[:n_rho], "d_rho": d_rho, "density": values[n_rho:n_rho + n_r],
            "pair": phi, "d_r": d_r, "cutoff": cutoff}


def cubic_table(values: np.ndarray, spacing: float, dtype, zero_beyond: float | None = None):
    """A JAX function interpolating ``values`` tabulated at 0, spacing, 2·spacing, …"""
    grid = np.arange(len(values)) * spacing
    coefficients = CubicSpline(grid, values).c    # [4, n − 1], highest power first
    table = jnp.asarray(coefficients.T, dtype)    # [n − 1, 4]
    last = len(values) - 2

    def interpolate(x):
        index = jnp.clip(jnp.floor(x / spacing).astype(jnp.int32), 0, last)
        t = x - index * spacing
        c = table[index]
        result = ((c[..., 0] * t + c[..., 1]) * t + c[..., 2]) * t + c[..., 3]
        if zero_beyond is not None:
            result = jnp.where(x < zero_beyond, result, 0.0)
        return result

    return interpolate


def eam_potential(path: Path, element: str, displacement_fn, dtype) -> Potential:
    """EAM energy on a sparse neighbor list."""
    tables = read_setfl(path, element)
    cutoff = tables["cutoff"]
    embedding = cubic_table(tables["embedding"], tables["d_rho"], dtype)
    density = cubic_table(tables["density"], tables["d_r"], dtype, zero_beyond=cutoff)
    pair = cubic_table(tables["pair"], tables["d_r"], dtype, zero_beyond=cutoff)
    metric = space.map_bond(space.metric(displacement_fn))

    def energy_fn(position, neighbor):
        n_atoms = position.shape[0]
        senders, receivers = neighbor.idx
        valid = senders < n_atoms
        r = metric(position[senders], position[receivers])
        r = jnp.where(valid, r, cutoff)
        rho = ops.segment_sum(jnp.where(valid, density(r), 0.0), senders, n_atoms)
        pair_energy = jnp.sum(jnp.where(valid, pair(r), 0.0))
        return jnp.sum(embedding(rho)) + 0.5 * pair_energy

    return Potential(energy_fn=energy_fn, cutoff_A=cutoff, neighbor_format=partition.Sparse,
                     description=f"EAM {element} from {path.name} (cutoff {cutoff:g} Å)")
