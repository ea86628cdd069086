#!/usr/bin/env python3
"""Generate a single-element Cu ``eam/alloy`` (setfl) table from the analytic
EAM of X. W. Zhou, R. A. Johnson and H. N. G. Wadley, Phys. Rev. B 69, 144113
(2004) ("ZJW04").

Units: distances in Angstrom, energies in eV, electron density in the
(arbitrary) units of the paper, mass in g/mol.

Functional form (ZJW04, Eqs. 2-6), with x = r / r_e:

    phi(r) = A exp(-alpha (x - 1)) / (1 + (x - kappa)^20)
             - B exp(-beta (x - 1)) / (1 + (x - lambda)^20)        (pair, eV)
    f(r)   = f_e exp(-beta (x - 1)) / (1 + (x - lambda)^20)        (density)
    F(rho) = sum_i Fn_i (rho/rho_n - 1)^i           rho <  rho_n = 0.85 rho_e
           = sum_i F_i  (rho/rho_e - 1)^i           rho_n <= rho < rho_0
           = F_e [1 - ln((rho/rho_s)^eta)] (rho/rho_s)^eta   rho >= rho_0 = 1.15 rho_e

The Cu parameters below are those of Table III of ZJW04. They were checked
value by value against the Cu entry of ``tools/eam_database/EAM_code`` in the
LAMMPS source tree, a transcription of the same table (identical to all
printed digits). Note F(0) = Fn0 - Fn1 + Fn2 - Fn3 = 0 to the printed digits,
so an isolated atom has zero energy.

Cutoff and smoothing. The ZJW functions have no finite range; the
(x - lambda)^20 denominators make them fall off very steeply beyond the
third-neighbour shell (at r = 5.2 Angstrom, |phi| ~ 5e-5 eV and
f ~ 1e-4). The table cuts both phi and f at r_c = 5.4 Angstrom by multiplying
them with the quintic switch

    S(t) = 1 - 10 t^3 + 15 t^4 - 6 t^5,   t = (r - r_on) / (r_c - r_on),

applied between r_on = 5.2 Angstrom and r_c, so the tabulated functions and
their first and second derivatives go continuously to zero at r_c. In perfect
fcc Cu at a = 3.615 Angstrom the switch lies between the fourth shell
(5.112 Angstrom) and the fifth (5.716 Angstrom), and the truncation changes
the cohesive energy by 1.2e-5 eV/atom (the script prints both values).
r_c is kept below half the edge of the 3x3x3 fcc supercell (10.845 Angstrom)
used for reference tests, so a minimum-image calculation in that cell
includes every interacting pair exactly once.

Table layout (LAMMPS setfl, as read by pair_style eam/alloy and by
jax_md.energy.load_lammps_eam_parameters): three comment lines, the first
containing "setfl"; "1 Cu"; "Nrho drho Nr dr cutoff"; "Z mass a0 lattice";
then F(rho_i) at rho_i = i drho (i = 0..Nrho-1), f(r_j) and r_j phi(r_j) at
r_j = j dr (j = 0..Nr-1), five values per line, each block starting on a new
line. Defaults: Nr = 2701,
dr = 0.002 Angstrom (r_max = 5.4 Angstrom = cutoff) and Nrho = 3001,
drho = 0.02 (rho_max = 60, almost three times rho_e). The file ends without
a trailing newline, because jax-md's reader parses every line after the
header and rejects an empty last line.

Usage:
    python tools/make_eam_cu.py --output inputs/potentials/Cu_zhou04.eam.alloy
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

# ZJW04 Table III, Cu.
CU = dict(
    r_e=2.556162,  # Angstrom
    f_e=1.554485,
    rho_e=21.175871,
    rho_s=21.175395,
    alpha=8.127620,
    beta=4.334731,
    A=0.396620,  # eV
    B=0.548085,  # eV
    kappa=0.308782,
    lam=0.756515,
    Fn=(-2.170269, -0.263788, 1.088878, -0.817603),  # eV
    F=(-2.19, 0.0, 0.561830, -2.100595),  # eV
    eta=0.310490,
    F_e=-2.186568,  # eV
)
ATOMIC_NUMBER = 29
MASS = 63.546  # g/mol
LATTICE_CONSTANT = 3.615  # Angstrom, fcc
PUBLISHED_COHESIVE_ENERGY = -3.54  # eV/atom, ZJW04 fit target for Cu

R_ON = 5.2  # Angstrom, start of the switch
CUTOFF = 5.4  # Angstrom
NR, DR = 2701, 0.002
NRHO, DRHO = 3001, 0.02


def switch(r: np.ndarray) -> np.ndarray:
    """Return the quintic switch: 1 below R_ON, 0 above CUTOFF, C2-continuous."""
    t = np.clip((r - R_ON) / (CUTOFF - R_ON), 0.0, 1.0)
    return 1.0 - t**3 * (10.0 - 15.0 * t + 6.0 * t * t)


def pair_raw(r: np.ndarray, p: dict = CU) -> np.ndarray:
    """Return the ZJW pair potential phi(r) in eV, without the cutoff switch."""
    x = r / p["r_e"]
    rep = p["A"] * np.exp(-p["alpha"] * (x - 1.0)) / (1.0 + (x - p["kappa"]) ** 20)
    att = p["B"] * np.exp(-p["beta"] * (x - 1.0)) / (1.0 + (x - p["lam"]) ** 20)
    return rep - att


def density_raw(r: np.ndarray, p: dict = CU) -> np.ndarray:
    """Return the ZJW atomic electron density f(r), without the cutoff switch."""
    x = r / p["r_e"]
    return p["f_e"] * np.exp(-p["beta"] * (x - 1.0)) / (1.0 + (x - p["lam"]) ** 20)


def pair(r: np.ndarray) -> np.ndarray:
    """Return phi(r) in eV as tabulated, with the cutoff switch applied."""
    return pair_raw(r) * switch(r)


def density(r: np.ndarray) -> np.ndarray:
    """Return f(r) as tabulated, with the cutoff switch applied."""
    return density_raw(r) * switch(r)


def embedding(rho: np.ndarray, p: dict = CU) -> np.ndarray:
    """Return the ZJW three-branch embedding energy F(rho) in eV."""
    rho = np.asarray(rho, dtype=float)
    rho_n, rho_0 = 0.85 * p["rho_e"], 1.15 * p["rho_e"]
    low = sum(c * (rho / rho_n - 1.0) ** i for i, c in enumerate(p["Fn"]))
    mid = sum(c * (rho / p["rho_e"] - 1.0) ** i for i, c in enumerate(p["F"]))
    # Guard the log at rho = 0, where the high-density branch is not selected.
    s = np.maximum(rho, 1e-300) / p["rho_s"]
    high = p["F_e"] * (1.0 - p["eta"] * np.log(s)) * s ** p["eta"]
    return np.where(rho < rho_n, low, np.where(rho < rho_0, mid, high))


def fcc_neighbour_shells(a: float, rmax: float) -> list[tuple[float, int]]:
    """Return (distance, count) of the fcc neighbour shells closer than rmax."""
    basis = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
    n = int(math.ceil(rmax / a)) + 1
    cells = np.array([(i, j, k) for i in range(-n, n + 1)
                      for j in range(-n, n + 1) for k in range(-n, n + 1)], float)
    pts = (cells[:, None, :] + basis[None, :, :]).reshape(-1, 3) * a
    d = np.linalg.norm(pts, axis=1)
    d = d[(d > 1e-9) & (d < rmax)]
    shells: dict[float, int] = {}
    for v in np.round(d, 8):
        shells[v] = shells.get(v, 0) + 1
    return sorted(shells.items())


def fcc_energy(a: float, smoothed: bool = True) -> float:
    """Return the energy per atom (eV) of perfect fcc at lattice constant a (Angstrom)."""
    shells = fcc_neighbour_shells(a, CUTOFF if smoothed else 12.0)
    r = np.array([s[0] for s in shells])
    z = np.array([s[1] for s in shells])
    phi_fn, f_fn = (pair, density) if smoothed else (pair_raw, density_raw)
    rho = float(np.sum(z * f_fn(r)))
    return float(embedding(rho)) + 0.5 * float(np.sum(z * phi_fn(r)))


def write_setfl(path: Path) -> None:
    r = np.arange(NR) * DR
    rho = np.arange(NRHO) * DRHO
    header = [
        "Cu setfl (LAMMPS eam/alloy) from the analytic EAM of Zhou, Johnson and "
        "Wadley, Phys. Rev. B 69, 144113 (2004)",
        f"Units eV and Angstrom; phi and f cut at {CUTOFF} A with a quintic "
        f"switch from {R_ON} A; generated by tools/make_eam_cu.py",
        "Blocks: F(rho), f(r), r*phi(r) in eV*A; grids rho_i = i*drho, r_j = j*dr",
        "1 Cu",
        f"{NRHO} {DRHO!r} {NR} {DR!r} {CUTOFF!r}",
        f"{ATOMIC_NUMBER} {MASS} {LATTICE_CONSTANT} fcc",
    ]
    # Each block starts on a new line: LAMMPS reads a block line by line and
    # rejects a line that runs past the end of the block.
    rows = [" ".join(f"{v:.16e}" for v in block[i:i + 5])
            for block in (embedding(rho), density(r), r * pair(r))
            for i in range(0, len(block), 5)]
    # No trailing newline: jax-md's reader fails on an empty final line.
    path.write_text("\n".join(header + rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path,
                        default=Path("inputs/potentials/Cu_zhou04.eam.alloy"),
                        help="setfl file to write")
    args = parser.parse_args()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_setfl(args.output)

    e_cut = fcc_energy(LATTICE_CONSTANT, smoothed=True)
    e_raw = fcc_energy(LATTICE_CONSTANT, smoothed=False)
    shells = fcc_neighbour_shells(LATTICE_CONSTANT, CUTOFF)
    rho_bar = sum(z * float(density(np.array(d))) for d, z in shells)
    print(f"wrote {args.output}")
    print(f"fcc Cu a = {LATTICE_CONSTANT} A: E = {e_cut:.6f} eV/atom with the "
          f"cutoff, {e_raw:.6f} eV/atom untruncated (12 A), published "
          f"{PUBLISHED_COHESIVE_ENERGY} eV/atom")
    print(f"host density {rho_bar:.6f} (rho_e = {CU['rho_e']})")


if __name__ == "__main__":
    main()
