"""Observables of a finished run: RDF, MSD and diffusion, bond lengths, thermo series.

Distances and RDFs use mdtraj's functions (minimum image in the stored
cell). The MSD needs continuous positions, which mdengine writes by default
(``output.wrap_positions: false``); a trajectory whose atoms jump by more
than half a cell between frames is reported as wrapped.
"""

from __future__ import annotations

import csv
import itertools
import logging
from pathlib import Path

import mdtraj
import numpy as np
import yaml

from mdengine.config import InputError

log = logging.getLogger(__name__)

# Single-bond covalent radii (Å): B. Cordero et al., Dalton Trans. 2008, 2832.
COVALENT_RADII_A = {"H": 0.31, "B": 0.84, "C": 0.76, "N": 0.71, "O": 0.66, "F": 0.57,
                    "Si": 1.11, "P": 1.07, "S": 1.05, "Cl": 1.02, "Br": 1.20, "I": 1.39}
BOND_TOLERANCE = 1.2   # a bond is a pair closer than 1.2 × the sum of covalent radii


def load_trajectory(path: Path, topology: Path | None) -> mdtraj.Trajectory:
    """Load a trajectory, finding the topology mdengine writes beside it if none is given."""
    if not path.is_file():
        raise InputError(f"{path}: trajectory not found")
    if topology is None and path.suffix.lower() != ".h5":
        candidate = path.with_suffix(".topology.pdb")
        if not candidate.is_file():
            raise InputError(f"{path}: no topology given and {candidate.name} not found; pass --topology")
        topology = candidate
    try:
        return mdtraj.load(str(path), top=None if topology is None else str(topology))
    except Exception as err:   # mdtraj raises many types for unreadable files
        raise InputError(f"{path}: cannot read trajectory: {err}") from None


def frame_interval_ps(trajectory_path: Path, given: float | None) -> float:
    """Time between frames (ps): given, or from the run's ``input.resolved.yaml``."""
    if given is not None:
        return given
    resolved = trajectory_path.parent / "input.resolved.yaml"
    if not resolved.is_file():
        raise InputError(f"{trajectory_path}: no input.resolved.yaml beside it to read the frame "
                         "interval from; pass --frame-interval-ps")
    spec = yaml.safe_load(resolved.read_text())
    return spec["integrator"]["timestep_fs"] * spec["output"]["frame_stride"] / 1000


def element_pairs(trajectory: mdtraj.Trajectory):
    elements = sorted({atom.element.symbol for atom in trajectory.topology.atoms})
    return list(itertools.combinations_with_replacement(elements, 2))


def radial_distribution(trajectory: mdtraj.Trajectory, a: str, b: str, r_max_A: float,
                        bin_A: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """g(r) between elements ``a`` and ``b``: ``(r in Å, g)``, each ``[bins]``."""
    top = trajectory.topology
    pairs = top.select_pairs(f"element {a}", f"element {b}")
    if len(pairs) == 0:
        return np.array([]), np.array([])
    r_nm, g = mdtraj.compute_rdf(trajectory, pairs, r_range=(0.0, r_max_A / 10), bin_width=bin_A / 10)
    return r_nm * 10, g


def mean_squared_displacement(xyz_A: np.ndarray, max_lag: int) -> np.ndarray:
    """MSD (Å²) for lags 0 … max_lag frames, averaged over atoms and time origins.

    Args:
      xyz_A: ``[frames, atoms, 3]`` continuous positions (Å).
    """
    msd = np.zeros(max_lag + 1)
    for lag in range(1, max_lag + 1):
        displacement = xyz_A[lag:] - xyz_A[:-lag]
        msd[lag] = np.mean(np.sum(displacement**2, axis=-1))
    return msd


def diffusion_coefficient(lag_ps: np.ndarray, msd_A2: np.ndarray) -> float:
    """D (Å²/ps) from the slope of the MSD over the second half of the lags (Einstein, 3D)."""
    start = len(lag_ps) // 2
    if len(lag_ps) - start < 2:
        return float("nan")
    slope = np.polyfit(lag_ps[start:], msd_A2[start:], 1)[0]
    return slope / 6


def looks_wrapped(trajectory: mdtraj.Trajectory) -> bool:
    if trajectory.unitcell_lengths is None or trajectory.n_frames < 2:
        return False
    jumps = np.abs(np.diff(trajectory.xyz, axis=0))
    return bool(np.any(jumps > 0.5 * trajectory.unitcell_lengths[0].min()))


def bonds_from_radii(trajectory: mdtraj.Trajectory) -> np.ndarray:
    """``[B, 2]`` atom pairs bonded by covalent radii in the first frame."""
    top = trajectory.topology
    if top.n_bonds:
        return np.array([[b[0].index, b[1].index] for b in top.bonds])
    elements = [atom.element.symbol for atom in top.atoms]
    known = [i for i, e in enumerate(elements) if e in COVALENT_RADII_A]
    pairs = np.array(list(itertools.combinations(known, 2)))
    if len(pairs) == 0:
        return pairs.reshape(0, 2)
    distances = mdtraj.compute_distances(trajectory[0], pairs)[0] * 10
    limits = np.array([BOND_TOLERANCE * (COVALENT_RADII_A[elements[i]] + COVALENT_RADII_A[elements[j]])
                       for i, j in pairs])
    return pairs[distances < limits]


def _save_figure(figure, path: Path, summary: dict) -> None:
    import matplotlib.pyplot as plt
    figure.savefig(path, dpi=120)
    plt.close(figure)
    summary["files"].append(path.name)


def write_csv(path: Path, header: list[str], columns: list[np.ndarray]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(zip(*[np.round(c, 8) for c in columns]))


def analyze(trajectory_path: Path, output_dir: Path, topology: Path | None = None,
            thermo: Path | None = None, frame_interval: float | None = None, skip: int = 0,
            r_max_A: float | None = None) -> dict:
    """Compute every observable and write CSV files and PNG plots into ``output_dir``.

    Returns a summary: first RDF peak (Å) per element pair, D (Å²/ps) per
    element, mean bond length (Å) per bond type, and the files written.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trajectory = load_trajectory(trajectory_path, topology)[skip:]
    if trajectory.n_frames == 0:
        raise InputError(f"{trajectory_path}: no frames left after skipping {skip}")
    output_dir.mkdir(parents=True, exist_ok=True)
    summary = {"frames": trajectory.n_frames, "rdf_first_peak_A": {}, "diffusion_A2_per_ps": {},
               "bond_length_mean_A": {}, "files": []}

    if trajectory.unitcell_lengths is not None:
        half_box = 0.5 * float(trajectory.unitcell_lengths.min()) * 10
        r_max = min(r_max_A or half_box, half_box)
        figure, axis = plt.subplots()
        for a, b in element_pairs(trajectory):
            r, g = radial_distribution(trajectory, a, b, r_max)
            if len(r) == 0:
                continue
            name = f"rdf_{a}-{b}.csv"
            write_csv(output_dir / name, ["r_A", "g"], [r, g])
            summary["files"].append(name)
            summary["rdf_first_peak_A"][f"{a}-{b}"] = float(r[np.argmax(g)])
            axis.plot(r, g, label=f"{a}–{b}")
        axis.set_xlabel("r (Å)")
        axis.set_ylabel("g(r)")
        axis.legend()
        _save_figure(figure, output_dir / "rdf.png", summary)

    if trajectory.n_frames >= 4:
        _msd(trajectory, trajectory_path, frame_interval, output_dir, summary, plt)
    _bond_lengths(trajectory, output_dir, summary, plt)
    if thermo is None and (trajectory_path.parent / "thermo.csv").is_file():
        thermo = trajectory_path.parent / "thermo.csv"
    if thermo is not None:
        _thermo_series(thermo, output_dir, summary, plt)
    return summary


def _msd(trajectory, trajectory_path, frame_interval, output_dir, summary, plt):
    interval_ps = frame_interval_ps(trajectory_path, frame_interval)
    if looks_wrapped(trajectory):
        log.warning("%s: atoms jump by more than half the cell between frames, so positions look "
                    "wrapped; the MSD is wrong unless positions are continuous", trajectory_path)
    xyz = trajectory.xyz * 10
    max_lag = trajectory.n_frames // 2
    lag_ps = np.arange(max_lag + 1) * interval_ps
    figure, axis = plt.subplots()
    for element in sorted({atom.element.symbol for atom in trajectory.topology.atoms}):
        atoms = trajectory.topology.select(f"element {element}")
        msd = mean_squared_displacement(xyz[:, atoms], max_lag)
        coefficient = diffusion_coefficient(lag_ps, msd)
        summary["diffusion_A2_per_ps"][element] = coefficient
        write_csv(output_dir / f"msd_{element}.csv", ["lag_ps", "msd_A2"], [lag_ps, msd])
        summary["files"].append(f"msd_{element}.csv")
        axis.plot(lag_ps, msd, label=f"{element}: D = {coefficient:.4g} Å²/ps")
    axis.set_xlabel("lag (ps)")
    axis.set_ylabel("MSD (Å²)")
    axis.legend()
    _save_figure(figure, output_dir / "msd.png", summary)


def _bond_lengths(trajectory, output_dir, summary, plt):
    bonds = bonds_from_radii(trajectory)
    if len(bonds) == 0:
        return
    lengths = mdtraj.compute_distances(trajectory, bonds) * 10
    elements = [atom.element.symbol for atom in trajectory.topology.atoms]
    kinds = ["-".join(sorted((elements[i], elements[j]))) for i, j in bonds]
    figure, axis = plt.subplots()
    for kind in sorted(set(kinds)):
        values = lengths[:, [k == kind for k in kinds]].ravel()
        summary["bond_length_mean_A"][kind] = float(values.mean())
        counts, edges = np.histogram(values, bins=60)
        centres = 0.5 * (edges[1:] + edges[:-1])
        write_csv(output_dir / f"bonds_{kind}.csv", ["length_A", "count"], [centres, counts])
        summary["files"].append(f"bonds_{kind}.csv")
        axis.plot(centres, counts / counts.sum(), label=kind)
    axis.set_xlabel("bond length (Å)")
    axis.set_ylabel("fraction")
    axis.legend()
    _save_figure(figure, output_dir / "bonds.png", summary)


def _thermo_series(thermo: Path, output_dir, summary, plt):
    data = np.genfromtxt(thermo, delimiter=",", names=True, dtype=None, encoding="utf-8")
    figure, axes = plt.subplots(2, 1, sharex=True, figsize=(6, 6))
    for column in ("potential_energy_eV", "kinetic_energy_eV", "total_energy_eV"):
        axes[0].plot(data["time_ps"], data[column], label=column.removesuffix("_eV").replace("_", " "))
    axes[0].set_ylabel("energy (eV)")
    axes[0].legend()
    axes[1].plot(data["time_ps"], data["temperature_K"])
    axes[1].set_ylabel("temperature (K)")
    axes[1].set_xlabel("time (ps)")
    _save_figure(figure, output_dir / "thermo.png", summary)
