#!/usr/bin/env python
"""Time to failure of a molecular trajectory by the bond-length criterion.

A trajectory fails at the first frame in which any covalent bond of the
starting structure (pairs closer than 1.2 × the sum of covalent radii)
differs from its starting length by more than ``--threshold-A`` (default
0.5 Å), the criterion of the MD-stability literature for molecules. Also
fails at the first non-finite position. Prints the time to failure in ps,
or that the trajectory stayed stable for its whole length.

    .venv/bin/python tools/bond_stability.py runs/ethanol_schnet_nvt/trajectory.dcd
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import mdtraj
import numpy as np

from mdengine.analysis import bonds_from_radii, frame_interval_ps, load_trajectory


def time_to_failure(trajectory: mdtraj.Trajectory, interval_ps: float, threshold_A: float) -> dict:
    bonds = bonds_from_radii(trajectory[0])
    # Minimum-image lengths: a bond is far shorter than half the cell, and a molecule that
    # started split across a face stays split in continuous output.
    lengths = mdtraj.compute_distances(trajectory, bonds, periodic=trajectory.unitcell_vectors is not None) * 10
    deviation = np.abs(lengths - lengths[0])
    broken = np.any(deviation > threshold_A, axis=1) | ~np.all(np.isfinite(trajectory.xyz), axis=(1, 2))
    failed = np.nonzero(broken)[0]
    result = {"frames": trajectory.n_frames, "length_ps": (trajectory.n_frames - 1) * interval_ps,
              "bonds": len(bonds), "threshold_A": threshold_A,
              "max_deviation_A": float(np.nanmax(deviation))}
    result["time_to_failure_ps"] = None if len(failed) == 0 else float(failed[0] * interval_ps)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trajectory", type=Path)
    parser.add_argument("--topology", type=Path)
    parser.add_argument("--threshold-A", type=float, default=0.5)
    parser.add_argument("--frame-interval-ps", type=float)
    args = parser.parse_args()
    trajectory = load_trajectory(args.trajectory, args.topology)
    interval = frame_interval_ps(args.trajectory, args.frame_interval_ps)
    print(json.dumps(time_to_failure(trajectory, interval, args.threshold_A), indent=2))


if __name__ == "__main__":
    main()
