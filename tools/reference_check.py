#!/usr/bin/env python
"""Force error of a learned potential along its own MD trajectory, against GFN2-xTB.

Takes frames evenly from a trajectory written by ``mdengine run`` with a
learned potential, recomputes each with GFN2-xTB (tblite's ASE calculator,
the method the shipped models were trained on) and with the model, and
reports force MAE and RMSE (meV/Å) and energy differences. Frames before
``--until-ps`` only, so a trajectory that later fails can still be checked
where it was stable. Needs the ``data`` extra (tblite).

    .venv/bin/python tools/reference_check.py inputs/ethanol_schnet_nvt.yaml \\
        runs/ethanol_schnet_nvt/trajectory.dcd --frames 20
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from mdengine.analysis import frame_interval_ps, load_trajectory
from mdengine.config import load_input
from mdengine.simulation import Simulation


def model_forces(input_path: Path, elements, positions_A, cell_A, scratch: Path):
    """Energy (eV) and forces (eV/Å) of the input's potential on one configuration."""
    path = scratch / "frame.xyz"
    lattice = "" if cell_A is None else 'Lattice="' + " ".join(map(str, np.ravel(cell_A))) + '" '
    rows = [f"{e} {x:.8f} {y:.8f} {z:.8f}" for e, (x, y, z) in zip(elements, positions_A)]
    path.write_text(f"{len(elements)}\n{lattice}Properties=species:S:1:pos:R:3\n" + "\n".join(rows) + "\n")
    spec = load_input(input_path, {"system": {"structure": str(path.resolve())},
                                   "velocities": {"source": "zero"}, "precision": "float64"})
    return Simulation(spec, input_path.parent).single_point()


def reference_forces(elements, positions_A, cell_A):
    from ase import Atoms
    from tblite.ase import TBLite
    atoms = Atoms(symbols=elements, positions=positions_A, cell=cell_A, pbc=cell_A is not None)
    atoms.calc = TBLite(method="GFN2-xTB", verbosity=0)
    return atoms.get_potential_energy(), atoms.get_forces()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", type=Path, help="the input file the trajectory was run with")
    parser.add_argument("trajectory", type=Path)
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--until-ps", type=float, help="use frames up to this time only")
    args = parser.parse_args()

    trajectory = load_trajectory(args.trajectory, None)
    interval = frame_interval_ps(args.trajectory, None)
    last = trajectory.n_frames - 1
    if args.until_ps is not None:
        last = min(last, int(args.until_ps / interval))
    picks = np.linspace(0, last, args.frames).round().astype(int)
    elements = [atom.element.symbol for atom in trajectory.topology.atoms]
    errors, energy_differences = [], []
    with tempfile.TemporaryDirectory() as scratch:
        for index in picks:
            positions = trajectory.xyz[index].astype(np.float64) * 10
            cell = None
            if trajectory.unitcell_vectors is not None and "periodic: false" not in args.input.read_text():
                cell = trajectory.unitcell_vectors[index].astype(np.float64) * 10
            model_energy, model_force = model_forces(args.input, elements, positions, cell, Path(scratch))
            reference_energy, reference_force = reference_forces(elements, positions, cell)
            errors.append(model_force - reference_force)
            energy_differences.append(model_energy - reference_energy)
    errors = np.array(errors)
    energy_differences = np.array(energy_differences)
    # The models' energy zero is fitted, so only the spread of the differences is meaningful.
    result = {
        "frames": picks.tolist(), "time_ps": (picks * interval).tolist(),
        "force_mae_meV_per_A": float(np.mean(np.abs(errors)) * 1000),
        "force_rmse_meV_per_A": float(np.sqrt(np.mean(errors**2)) * 1000),
        "energy_difference_std_meV_per_atom": float(np.std(energy_differences) / len(elements) * 1000),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
