#!/usr/bin/env python
"""Generate GFN2-xTB reference data (energies and forces) for training learned potentials.

Every label is a GFN2-xTB energy and force computed by tblite through its ASE
calculator. Units are those of ASE: positions in Å, energies in eV, forces in
eV/Å. Each dataset is one extended XYZ file plus a JSON sidecar (same path,
``.json`` suffix) with the method, versions, settings, seed, sampling scheme
and energy/force statistics.

Datasets
--------
``ethanol``: one CH3CH2OH molecule in free space (``ase.build.molecule``),
Langevin MD driven by GFN2-xTB forces at 500 K (time step 0.5 fs, friction
0.01 1/fs). The first 1 ps is discarded as equilibration; then every 20th step
(10 fs) is kept until 1,500 configurations are stored. The energy and forces
of a kept frame are those the MD step computed, so each label costs one MD step.

``water``: 32 H2O in a periodic cubic box of edge 9.865 Å (0.997 g/cm³). One
GFN2-xTB energy+force call on this box took 6-11 s on one shared x86-64 core
with tblite 0.8.0, about 40 % in the periodic D4 dispersion and 55 % in the
periodic Coulomb terms (tblite's timing printout at verbosity 2). A GFN2-xTB MD
run long enough to equilibrate the liquid and then decorrelate a few hundred
frames needs tens of thousands of such calls, a day or more on that core. The tool
therefore samples configurations with a cheap classical model and labels each
kept configuration with one GFN2-xTB single point:

1. Sampler: flexible three-site water. The intermolecular part is SPC/Fw (Wu,
   Tepper and Voth, J. Chem. Phys. 124, 024503 (2006), values as tabulated on
   SklogWiki's SPC/Fw page: q_O = -0.82 e, q_H = +0.41 e, O-O Lennard-Jones
   σ = 3.165492 Å, ε = 0.1554253 kcal/mol). Electrostatics use damped shifted
   force (DSF) pair sums (Fennell and Gezelter, J. Chem. Phys. 124, 234104
   (2006), the form of LAMMPS pair_style coul/dsf) with α = 0.2 1/Å and a
   9 Å cutoff. The intramolecular harmonic bond and angle terms are fitted to
   the GFN2-xTB gas-phase monomer (equilibrium geometry and finite-difference
   curvatures). Bond lengths and angles are thus sampled around GFN2-xTB's
   minimum and not around SPC/Fw's longer 1.012 Å bond.
2. Several independent replicas, each started from its own random structure:
   molecules on a jittered fcc grid, random orientations, no O-O pair closer
   than 2.5 Å. Each replica is relaxed under the sampler, equilibrated by
   Langevin MD at 300 K for 3 ps, then sampled every 100 fs. Hydrogens get
   deuterium mass in the sampler only. The canonical distribution of positions
   does not depend on masses, and the heavier hydrogen allows a 1 fs step.
3. Labelling: one GFN2-xTB single point per kept configuration with a fresh
   calculator, in round-robin order over the replicas so that a labelling
   time limit (``--label-time-limit``) truncates all replicas evenly.

Trade-off: the configurations follow the sampler's Boltzmann distribution at
300 K, not GFN2-xTB's. The labels are exact GFN2-xTB, but the dataset covers
the region that flexible SPC/Fw-like water visits, so a potential trained on
it may meet unsampled GFN2-xTB configurations in its own MD. As a check of
the intramolecular bias, the sidecar stores the mean GFN2-xTB force along the
O-H bonds and on the H-O-H angles. Each is zero when the sampled geometry sits
where GFN2-xTB puts it in the liquid. In return, the configurations are 100 fs
apart and spread over independent replicas for the price of one GFN2-xTB call
each.

Periodic GFN2-xTB in tblite 0.8.0 is evaluated at the Γ point only (tblite has
no k-point sampling). The Ewald splitting parameter and the real- and
reciprocal-space cutoffs are chosen inside tblite and cannot be set through
its Python API.

Usage, as run for the shipped datasets (all other settings are the defaults)::

    OMP_NUM_THREADS=1 .venv/bin/python tools/generate_reference_data.py ethanol
    OMP_NUM_THREADS=1 .venv/bin/python tools/generate_reference_data.py water \\
        --label-time-limit 1800 --log-interval 60

Requires ``pip install -e ".[data]"`` (tblite and ASE).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation
from scipy.special import erfc

try:
    import ase
    import ase.io
    from ase import Atoms, units
    from ase.build import molecule
    from ase.calculators.calculator import CalculationFailed, Calculator, all_changes
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import Stationary, ZeroRotation, thermalize_momenta
    from ase.optimize import BFGS, FIRE
    from tblite.ase import TBLite
    from tblite.library import get_version as tblite_library_version
except ModuleNotFoundError as err:
    raise SystemExit(f"{err}; install the reference-data extra with: pip install -e \".[data]\"") from None

LOG = logging.getLogger("generate_reference_data")
REPO = Path(__file__).resolve().parent.parent
DATA_DIR = REPO / "inputs" / "data"
METHOD = "GFN2-xTB"

# Coulomb constant e²/(4πε0) in eV·Å (about 14.3996).
COULOMB_EV_A = units._e / (4.0 * math.pi * units._eps0 * 1e-10)
KCAL_PER_MOL = units.kcal / units.mol  # eV

# SPC/Fw intermolecular parameters (Wu, Tepper and Voth, J. Chem. Phys. 124, 024503 (2006)).
SPCFW_CHARGE_O = -0.82  # e
SPCFW_CHARGE_H = 0.41  # e
SPCFW_SIGMA_OO = 3.165492  # Å
SPCFW_EPSILON_OO = 0.1554253 * KCAL_PER_MOL  # eV
DEUTERIUM_MASS = 2.014  # amu, used for H in the water sampler only


# --------------------------------------------------------------------------
# GFN2-xTB through tblite
# --------------------------------------------------------------------------

def gfn2_settings(args: argparse.Namespace) -> dict:
    """Collect the tblite calculator settings used for every label."""
    return {
        "method": METHOD,
        "accuracy": args.accuracy,
        "electronic_temperature": args.electronic_temperature,
        "max_iterations": args.max_iterations,
        "charge": 0,
        "multiplicity": 1,
        "verbosity": 0,
    }


def make_gfn2_calculator(settings: dict) -> TBLite:
    return TBLite(**settings)


def method_record(settings: dict, periodic: bool) -> dict:
    """Describe the electronic-structure method and software for the sidecar."""
    record = {
        "name": METHOD,
        "program": "tblite (ASE calculator tblite.ase.TBLite)",
        "tblite_version": importlib.metadata.version("tblite"),
        "tblite_library_version": ".".join(str(v) for v in tblite_library_version()),
        "ase_version": ase.__version__,
        "numpy_version": np.__version__,
        "accuracy": settings["accuracy"],
        "electronic_temperature_K": settings["electronic_temperature"],
        "max_scf_iterations": settings["max_iterations"],
        "total_charge_e": settings["charge"],
        "spin_multiplicity": settings["multiplicity"],
        "scf_mixer": "broyden (tblite default)",
        "initial_guess": "sad (tblite default)",
        "periodic": periodic,
    }
    if periodic:
        record["k_points"] = "Gamma point only; tblite 0.8.0 has no k-point sampling"
        record["ewald"] = ("splitting parameter and real/reciprocal-space cutoffs chosen inside tblite "
                           "(not settable through its Python API); used for the isotropic and "
                           "anisotropic electrostatics")
        record["dispersion"] = "D4 with tblite's built-in periodic lattice-sum cutoffs"
    return record


# --------------------------------------------------------------------------
# Output: labelled frames, statistics, sidecar, progress
# --------------------------------------------------------------------------

def labelled_frame(atoms: Atoms, energy: float, forces: np.ndarray, info: dict) -> Atoms:
    """Return a bare copy of ``atoms`` (no masses, momenta or constraints) with energy and forces."""
    frame = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    frame.info.update({"method": METHOD, **info})
    frame.calc = SinglePointCalculator(frame, energy=float(energy), forces=np.array(forces))
    return frame


def start_structure(atoms: Atoms) -> Atoms:
    return Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)


def energy_force_statistics(frames: list[Atoms]) -> dict:
    """Mean and standard deviation of the labels (eV, eV/Å)."""
    energies = np.array([f.get_potential_energy() for f in frames])
    forces = np.concatenate([f.get_forces() for f in frames])
    n_atoms = len(frames[0])
    magnitudes = np.linalg.norm(forces, axis=1)
    return {
        "n_configurations": len(frames),
        "n_atoms": n_atoms,
        "energy_eV": {"min": energies.min(), "max": energies.max(), "range": np.ptp(energies),
                      "mean": energies.mean(), "std": energies.std()},
        "energy_per_atom_eV": {"mean": energies.mean() / n_atoms, "std": energies.std() / n_atoms},
        "force_component_eV_per_A": {
            "mean": dict(zip("xyz", forces.mean(axis=0))),
            "std": dict(zip("xyz", forces.std(axis=0))),
            "std_all_components": forces.std(),
            "rms_all_components": np.sqrt(np.mean(forces**2)),
        },
        "force_magnitude_eV_per_A": {"mean": magnitudes.mean(), "max": magnitudes.max()},
        # GFN2-xTB is translation invariant, so this is SCF noise; a large value means wrong labels.
        "max_net_force_eV_per_A": max(np.abs(f.get_forces().sum(axis=0)).max() for f in frames),
        "force_std_by_element_eV_per_A": {
            symbol: forces[np.tile(np.array(frames[0].get_chemical_symbols()) == symbol, len(frames))].std()
            for symbol in sorted(set(frames[0].get_chemical_symbols()))
        },
    }


def to_json_types(value):
    """Convert numpy scalars and arrays (recursively) to plain JSON types."""
    if isinstance(value, dict):
        return {str(k): to_json_types(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_types(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_json_types(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def write_sidecar(path: Path, record: dict) -> None:
    path.write_text(json.dumps(to_json_types(record), indent=2) + "\n")
    LOG.info("wrote %s", path)


def run_record(args: argparse.Namespace) -> dict:
    return {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "seed": args.seed,
        "host": {"python": platform.python_version(), "machine": platform.machine(),
                 "system": platform.system()},
        "units": {"positions": "Å", "energy": "eV", "forces": "eV/Å", "cell": "Å"},
    }


class Progress:
    """Log configurations done, rate and estimated time left.

    Messages come at most once per ``interval_s`` seconds, plus one at the last configuration.
    """

    def __init__(self, what: str, total: int, interval_s: float):
        self.what = what
        self.total = total
        self.interval_s = interval_s
        self.start = time.perf_counter()
        self.last_log = self.start

    def update(self, done: int) -> None:
        now = time.perf_counter()
        if done < self.total and now - self.last_log < self.interval_s:
            return
        self.last_log = now
        elapsed = now - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        LOG.info("%s: %d/%d configurations, %.3g configurations/s, elapsed %s, ETA %s",
                 self.what, done, self.total, rate, format_seconds(elapsed), format_seconds(eta))


def format_seconds(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "unknown"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:d}:{minutes:02d}:{secs:02d}"


# --------------------------------------------------------------------------
# Ethanol: GFN2-xTB Langevin MD
# --------------------------------------------------------------------------

def run_ethanol(args: argparse.Namespace) -> None:
    t_start = time.perf_counter()
    settings = gfn2_settings(args)
    rng = np.random.default_rng(args.seed)

    atoms = molecule("CH3CH2OH")
    atoms.center()  # free space: pbc stays False, so the cell does not enter the calculation
    atoms.calc = make_gfn2_calculator(settings)
    # ASE 3.28 deprecated Langevin(fixcm=True) because it does not sample the NVT distribution exactly,
    # most visibly for small systems, and recommends the FixCom constraint with fixcm=False instead.
    atoms.set_constraint(FixCom())
    thermalize_momenta(atoms, temperature_K=args.temperature, rng=rng)
    Stationary(atoms)
    ZeroRotation(atoms)
    dynamics = Langevin(atoms, timestep=args.timestep * units.fs, temperature_K=args.temperature,
                        friction=args.friction / units.fs, fixcm=False, rng=rng)

    equilibration_steps = int(round(args.equilibration / args.timestep))
    LOG.info("ethanol: equilibrating %d steps (%.0f fs) at %.0f K", equilibration_steps,
             args.equilibration, args.temperature)
    dynamics.run(equilibration_steps)
    LOG.info("ethanol: equilibration done in %s, T = %.0f K", format_seconds(time.perf_counter() - t_start),
             atoms.get_temperature())

    frames = []
    temperatures = []
    progress = Progress("ethanol", args.configurations, args.log_interval)
    for index in range(args.configurations):
        dynamics.run(args.stride)
        temperatures.append(atoms.get_temperature())
        time_fs = (equilibration_steps + (index + 1) * args.stride) * args.timestep
        # The MD step has just evaluated GFN2-xTB at these positions, so these calls return cached results.
        # apply_constraint=False: the label is the raw GFN2-xTB force, not the one FixCom projects.
        frames.append(labelled_frame(atoms, atoms.get_potential_energy(), atoms.get_forces(apply_constraint=False),
                                     {"config_index": index, "time_fs": time_fs}))
        progress.update(index + 1)

    wall_s = time.perf_counter() - t_start
    args.output.parent.mkdir(parents=True, exist_ok=True)
    ase.io.write(args.output, frames, format="extxyz")
    LOG.info("wrote %s (%d configurations)", args.output, len(frames))
    ase.io.write(args.start_structure, start_structure(frames[-1]), format="extxyz")
    LOG.info("wrote %s (last kept configuration, t = %.0f fs)", args.start_structure, frames[-1].info["time_fs"])

    record = {
        "dataset": "ethanol",
        "file": args.output.name,
        "system": {"formula": atoms.get_chemical_formula(), "n_atoms": len(atoms), "periodic": False,
                   "initial_structure": "ase.build.molecule('CH3CH2OH')"},
        "method": method_record(settings, periodic=False),
        "sampling": {
            "scheme": "Langevin MD driven by GFN2-xTB forces (ase.md.langevin.Langevin, FixCom constraint); "
                      "labels are the energies and forces of the kept MD steps",
            "temperature_K": args.temperature,
            "timestep_fs": args.timestep,
            "friction_per_fs": args.friction,
            "initial_velocities": "Maxwell-Boltzmann at the target temperature, zero linear and angular momentum",
            "equilibration_fs": args.equilibration,
            "stride_steps": args.stride,
            "stride_fs": args.stride * args.timestep,
            "production_fs": args.configurations * args.stride * args.timestep,
            "mean_kinetic_temperature_K": float(np.mean(temperatures)),
        },
        "start_structure": {"file": args.start_structure.name,
                            "source": f"last kept configuration (t = {frames[-1].info['time_fs']:.0f} fs)"},
        "n_configurations": len(frames),
        "wall_time_s": wall_s,
        "statistics": energy_force_statistics(frames),
        **run_record(args),
    }
    write_sidecar(args.output.with_suffix(".json"), record)
    LOG.info("ethanol: done in %s", format_seconds(wall_s))


# --------------------------------------------------------------------------
# Water: classical sampler
# --------------------------------------------------------------------------

def fit_monomer_terms(settings: dict) -> dict:
    """Fit harmonic O-H bond and H-O-H angle terms to the GFN2-xTB gas-phase water monomer.

    Returns the optimized monomer (``atoms``, order O H H), its bond length (Å)
    and angle (rad), and two curvatures from central finite differences of
    GFN2-xTB energies. d²E/dr² (eV/Å²) stretches one bond with the rest fixed,
    and d²E/dθ² (eV/rad²) bends one bond with both lengths fixed.
    """
    monomer = molecule("H2O")  # order O, H, H
    monomer.calc = make_gfn2_calculator(settings)
    BFGS(monomer, logfile=None).run(fmax=1e-4)
    vectors = monomer.positions[1:] - monomer.positions[0]
    lengths = np.linalg.norm(vectors, axis=1)
    r0 = lengths.mean()
    theta0 = math.acos(np.dot(vectors[0], vectors[1]) / (lengths[0] * lengths[1]))
    e0 = monomer.get_potential_energy()

    def energy_at(positions):
        trial = monomer.copy()
        trial.calc = make_gfn2_calculator(settings)
        trial.positions = positions
        return trial.get_potential_energy()

    dr = 0.005  # Å
    unit = vectors[0] / lengths[0]
    stretched = [monomer.positions.copy() for _ in range(2)]
    stretched[0][1] += dr * unit
    stretched[1][1] -= dr * unit
    k_bond = (energy_at(stretched[0]) + energy_at(stretched[1]) - 2 * e0) / dr**2

    dtheta = math.radians(0.5)
    axis = np.cross(vectors[0], vectors[1])
    axis /= np.linalg.norm(axis)
    bent = []
    for sign in (1, -1):
        positions = monomer.positions.copy()
        positions[1] = positions[0] + Rotation.from_rotvec(-sign * dtheta * axis).apply(vectors[0])
        bent.append(positions)
    k_angle = (energy_at(bent[0]) + energy_at(bent[1]) - 2 * e0) / dtheta**2

    monomer.positions -= monomer.positions[0]
    return {"atoms": start_structure(monomer), "r0_A": r0, "theta0_rad": theta0,
            "k_bond_eV_per_A2": k_bond, "k_angle_eV_per_rad2": k_angle}


class FlexibleWaterSampler(Calculator):
    """Flexible three-site water for sampling only: harmonic intramolecular terms,
    SPC/Fw charges and O-O Lennard-Jones, damped shifted force electrostatics.

    Atoms must be ordered O, H, H per molecule in a cubic periodic box with an
    edge longer than the cutoff. Intramolecular pairs have no Coulomb or
    Lennard-Jones interaction (as in SPC/Fw); their periodic images do.
    """

    implemented_properties = ["energy", "forces"]

    def __init__(self, r0, theta0, k_bond, k_angle, cutoff=9.0, alpha=0.2, **kwargs):
        super().__init__(**kwargs)
        self.r0, self.theta0 = r0, theta0
        self.k_bond, self.k_angle = k_bond, k_angle
        self.cutoff, self.alpha = cutoff, alpha
        self._pairs = None

    def _setup_pairs(self, n_atoms: int) -> None:
        i, j = np.triu_indices(n_atoms, k=1)
        charges = np.where(np.arange(n_atoms) % 3 == 0, SPCFW_CHARGE_O, SPCFW_CHARGE_H)
        # corners[0] == (0, 0, 0) is the unshifted pair; drop it for intramolecular pairs and keep
        # their periodic images.
        corners = np.array([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)], float)
        keep = np.ones((i.size, len(corners)), bool)
        keep[i // 3 == j // 3, 0] = False
        self._pairs = {"i": i, "j": j, "corners": corners, "keep": keep,
                       "qq": charges[i] * charges[j], "oo": (i % 3 == 0) & (j % 3 == 0)}

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        positions = self.atoms.positions
        box = np.diag(self.atoms.cell.array)
        if not np.allclose(self.atoms.cell.array, np.diag(box)) or box.min() <= self.cutoff:
            raise ValueError(f"sampler needs a cubic box with edges > {self.cutoff} Å, got cell "
                             f"{self.atoms.cell.array.tolist()}")
        if self._pairs is None:
            self._setup_pairs(len(self.atoms))
        forces = np.zeros_like(positions)
        energy = self._intramolecular(positions, box, forces)
        energy += self._intermolecular(positions, box, forces)
        self.results = {"energy": energy, "forces": forces}

    def _intramolecular(self, positions, box, forces) -> float:
        oxygen = positions[0::3]
        bond_vectors = [positions[h::3] - oxygen for h in (1, 2)]
        bond_vectors = [d - box * np.round(d / box) for d in bond_vectors]
        lengths = [np.linalg.norm(d, axis=1) for d in bond_vectors]
        units_ = [d / r[:, None] for d, r in zip(bond_vectors, lengths)]

        energy = 0.0
        for h, (r, u) in enumerate(zip(lengths, units_), start=1):
            stretch = r - self.r0
            energy += 0.5 * self.k_bond * np.sum(stretch**2)
            f_h = -self.k_bond * stretch[:, None] * u
            forces[h::3] += f_h
            forces[0::3] -= f_h

        cos_theta = np.clip(np.sum(units_[0] * units_[1], axis=1), -1.0, 1.0)
        theta = np.arccos(cos_theta)
        bend = theta - self.theta0
        energy += 0.5 * self.k_angle * np.sum(bend**2)
        sin_theta = np.maximum(np.sin(theta), 1e-8)
        # dθ/dr_H1 = -(u2 - cosθ u1) / (r1 sinθ), and symmetrically for H2.
        prefactor = self.k_angle * bend / sin_theta
        f_h1 = prefactor[:, None] * (units_[1] - cos_theta[:, None] * units_[0]) / lengths[0][:, None]
        f_h2 = prefactor[:, None] * (units_[0] - cos_theta[:, None] * units_[1]) / lengths[1][:, None]
        forces[1::3] += f_h1
        forces[2::3] += f_h2
        forces[0::3] -= f_h1 + f_h2
        return float(energy)

    def _intermolecular(self, positions, box, forces) -> float:
        p = self._pairs
        d = positions[p["j"]] - positions[p["i"]]
        d -= box * np.round(d / box)
        # With minimum-image d (|d_k| <= L/2) and cutoff < L, an image is within the cutoff only if
        # each component is d_k or d_k - sign(d_k) L (sign(0) taken as +1): other shifts exceed L.
        # That leaves the 8 corners of {0, 1}^3 instead of 27 shifts.
        vectors = d[:, None, :] - p["corners"][None, :, :] * (np.where(d >= 0, box, -box))[:, None, :]
        r = np.linalg.norm(vectors, axis=2)
        within = p["keep"] & (r < self.cutoff)
        pair_index, shift_index = np.nonzero(within)
        r = r[within]
        vectors = vectors[pair_index, shift_index]

        a, rc = self.alpha, self.cutoff
        erfc_rc = erfc(a * rc)
        force_at_rc = erfc_rc / rc**2 + 2 * a / math.sqrt(math.pi) * math.exp(-(a * rc) ** 2) / rc
        qq = COULOMB_EV_A * p["qq"][pair_index]
        energy = np.sum(qq * (erfc(a * r) / r - erfc_rc / rc + force_at_rc * (r - rc)))
        # Radial force, positive for repulsion.
        radial = qq * (erfc(a * r) / r**2 + 2 * a / math.sqrt(math.pi) * np.exp(-(a * r) ** 2) / r - force_at_rc)

        oo = p["oo"][pair_index]
        sr6 = (SPCFW_SIGMA_OO / r[oo]) ** 6
        sr6_cut = (SPCFW_SIGMA_OO / rc) ** 6
        energy += np.sum(4 * SPCFW_EPSILON_OO * (sr6**2 - sr6 - (sr6_cut**2 - sr6_cut)))
        radial[oo] += 24 * SPCFW_EPSILON_OO * (2 * sr6**2 - sr6) / r[oo]

        pair_forces = (radial / r)[:, None] * vectors  # on atom j
        n_atoms = len(positions)
        for axis in range(3):
            forces[:, axis] += np.bincount(p["j"][pair_index], pair_forces[:, axis], minlength=n_atoms)
            forces[:, axis] -= np.bincount(p["i"][pair_index], pair_forces[:, axis], minlength=n_atoms)
        return float(energy)


def build_water_box(monomer: Atoms, n_molecules: int, edge: float, min_oo: float,
                    rng: np.random.Generator, jitter: float = 0.4, attempts: int = 1000) -> Atoms:
    """Place molecules on a jittered fcc grid with random orientations.

    The grid has ceil((n/4)^(1/3))^3 cells with four sites each; n sites are
    drawn at random. A draw is rejected when any O-O distance (minimum image)
    is below ``min_oo`` Å or any intermolecular H-H or O-H distance is below
    1.5 Å, and retried up to ``attempts`` times.
    """
    cells = math.ceil((n_molecules / 4) ** (1 / 3))
    basis = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
    grid = np.array([(np.array([a, b, c]) + site) for a in range(cells) for b in range(cells)
                     for c in range(cells) for site in basis]) * edge / cells
    local = monomer.positions - monomer.positions[0]
    molecule_index = np.repeat(np.arange(n_molecules), 3)
    intermolecular = molecule_index[:, None] != molecule_index[None, :]
    for _ in range(attempts):
        sites = grid[rng.choice(len(grid), n_molecules, replace=False)]
        oxygens = sites + rng.uniform(-jitter, jitter, sites.shape)
        rotations = Rotation.random(n_molecules, random_state=rng)
        positions = np.concatenate([o + rot.apply(local) for o, rot in zip(oxygens, rotations)])
        d = positions[:, None, :] - positions[None, :, :]
        d -= edge * np.round(d / edge)
        r = np.linalg.norm(d, axis=2)
        oo = r[0::3, 0::3][~np.eye(n_molecules, dtype=bool)]
        if oo.min() >= min_oo and r[intermolecular].min() >= 1.5:
            return Atoms("OH2" * n_molecules, positions=positions, cell=[edge] * 3, pbc=True)
    raise RuntimeError(f"no water box with O-O distances >= {min_oo} Å after {attempts} attempts; "
                       "lower --min-oo-distance or the number of molecules")


def wrap_molecules(atoms: Atoms) -> Atoms:
    """Shift each molecule by lattice vectors so its O lies in the box; molecules stay whole."""
    wrapped = atoms.copy()
    edge = np.diag(wrapped.cell.array)
    shift = -edge * np.floor(wrapped.positions[0::3] / edge)
    wrapped.positions += np.repeat(shift, 3, axis=0)
    return wrapped


def water_geometry(frames: list[Atoms]) -> dict:
    """Mean and standard deviation of O-H bond lengths (Å) and H-O-H angles (degrees)."""
    lengths, angles = [], []
    for frame in frames:
        d1 = frame.positions[1::3] - frame.positions[0::3]
        d2 = frame.positions[2::3] - frame.positions[0::3]
        r1, r2 = np.linalg.norm(d1, axis=1), np.linalg.norm(d2, axis=1)
        lengths += [r1, r2]
        angles.append(np.degrees(np.arccos(np.sum(d1 * d2, axis=1) / (r1 * r2))))
    lengths, angles = np.concatenate(lengths), np.concatenate(angles)
    return {"OH_bond_A": {"mean": lengths.mean(), "std": lengths.std()},
            "HOH_angle_deg": {"mean": angles.mean(), "std": angles.std()}}


def intramolecular_forces(frames: list[Atoms]) -> dict:
    """Project GFN2-xTB forces onto the O-H stretch and H-O-H bend of each molecule.

    ``force_on_H_along_OH_eV_per_A`` is the force on H along its O->H bond:
    positive means GFN2-xTB would lengthen the bond. ``HOH_bend_generalized_force_eV_per_rad``
    is -dE/dθ for both H moved symmetrically with O fixed: positive means
    GFN2-xTB would open the angle. Means far from zero, compared with the
    standard deviations, flag a sampler whose intramolecular geometry is biased.
    """
    stretch, bend = [], []
    for frame in frames:
        forces = frame.get_forces()
        bonds = [frame.positions[h::3] - frame.positions[0::3] for h in (1, 2)]
        lengths = [np.linalg.norm(d, axis=1) for d in bonds]
        unit = [d / r[:, None] for d, r in zip(bonds, lengths)]
        cos_theta = np.sum(unit[0] * unit[1], axis=1)[:, None]
        sin_theta = np.sqrt(1.0 - cos_theta**2)
        torque = 0.0
        for h, other in ((0, 1), (1, 0)):
            stretch.append(np.sum(forces[h + 1::3] * unit[h], axis=1))
            # Unit vector in the molecular plane, normal to bond h, pointing to larger θ.
            opening = -(unit[other] - cos_theta * unit[h]) / sin_theta
            torque = torque + 0.5 * lengths[h] * np.sum(forces[h + 1::3] * opening, axis=1)
        bend.append(torque)
    stretch, bend = np.concatenate(stretch), np.concatenate(bend)
    return {"force_on_H_along_OH_eV_per_A": {"mean": stretch.mean(), "std": stretch.std()},
            "HOH_bend_generalized_force_eV_per_rad": {"mean": bend.mean(), "std": bend.std()}}


def sample_water_replica(replica: int, args: argparse.Namespace, monomer_fit: dict,
                         rng: np.random.Generator) -> tuple[list[Atoms], dict]:
    """Run one sampler replica: build, relax, equilibrate, then keep every stride-th configuration."""
    atoms = build_water_box(monomer_fit["atoms"], args.molecules, args.box, args.min_oo_distance, rng)
    atoms.calc = FlexibleWaterSampler(monomer_fit["r0_A"], monomer_fit["theta0_rad"],
                                      monomer_fit["k_bond_eV_per_A2"], monomer_fit["k_angle_eV_per_rad2"])
    FIRE(atoms, logfile=None).run(fmax=0.5, steps=500)

    masses = atoms.get_masses()
    masses[atoms.numbers == 1] = DEUTERIUM_MASS
    atoms.set_masses(masses)
    atoms.set_constraint(FixCom())
    thermalize_momenta(atoms, temperature_K=args.temperature, rng=rng)
    Stationary(atoms)
    # NOTE: with deuterium mass and 1 fs the O-D stretch has ω·Δt ≈ 0.5. For velocity Verlet on a harmonic
    # bond that widens the sampled bond-length variance by about 7 % (the exact figure depends on the
    # Langevin splitting). A smaller --sampler-timestep reduces it at more cost.
    dynamics = Langevin(atoms, timestep=args.sampler_timestep * units.fs, temperature_K=args.temperature,
                        friction=args.friction / units.fs, fixcm=False, rng=rng)
    dynamics.run(int(round(args.sampler_equilibration / args.sampler_timestep)))

    stride = int(round(args.sampler_stride / args.sampler_timestep))
    frames, temperatures = [], []
    for index in range(args.configurations_per_replica):
        dynamics.run(stride)
        temperatures.append(atoms.get_temperature())
        frame = wrap_molecules(start_structure(atoms))
        frame.info.update({"replica": replica, "config_index": index,
                           "sampler_time_fs": args.sampler_equilibration + (index + 1) * args.sampler_stride})
        frames.append(frame)
    LOG.info("water sampler replica %d: %d configurations, mean T = %.0f K", replica, len(frames),
             np.mean(temperatures))
    return frames, {"replica": replica, "mean_kinetic_temperature_K": float(np.mean(temperatures))}


def label_water(candidates: list[Atoms], settings: dict, args: argparse.Namespace) -> tuple[list[Atoms], dict]:
    """Label candidates with GFN2-xTB single points until done or the time limit is reached.

    Candidates come in rounds of one configuration per replica. The time limit
    is checked before each round, and a round starts only if it is predicted
    to finish in time. A truncated dataset therefore contains the first m
    configurations of every replica, the same set that
    ``--configurations-per-replica m`` produces without a time limit.
    """
    labelled, failures = [], []
    progress = Progress("water GFN2-xTB labels", len(candidates), args.log_interval)
    start = time.perf_counter()
    stopped_early = False
    for number, candidate in enumerate(candidates):
        elapsed = time.perf_counter() - start
        if args.label_time_limit is not None and number > 0 and number % args.replicas == 0:
            per_label = elapsed / number
            if elapsed + args.replicas * per_label > args.label_time_limit:
                LOG.warning("water: labelling time limit of %.0f s reached after %d of %d configurations "
                            "(%d per replica)", args.label_time_limit, number, len(candidates),
                            number // args.replicas)
                stopped_early = True
                break
        atoms = candidate.copy()
        atoms.calc = make_gfn2_calculator(settings)
        try:
            energy, forces = atoms.get_potential_energy(), atoms.get_forces()
        except CalculationFailed as err:
            LOG.error("water: GFN2-xTB failed on replica %d configuration %d: %s",
                      candidate.info["replica"], candidate.info["config_index"], err)
            failures.append({**candidate.info, "error": str(err)})
            continue
        labelled.append(labelled_frame(candidate, energy, forces, candidate.info))
        progress.update(number + 1)
    return labelled, {"label_wall_time_s": time.perf_counter() - start, "stopped_at_time_limit": stopped_early,
                      "candidates": len(candidates), "failed": failures}


def run_water(args: argparse.Namespace) -> None:
    t_start = time.perf_counter()
    settings = gfn2_settings(args)
    seeds = np.random.SeedSequence(args.seed).spawn(args.replicas)

    monomer_fit = fit_monomer_terms(settings)
    LOG.info("water: GFN2-xTB monomer r0 = %.4f Å, theta0 = %.2f deg, k_bond = %.1f eV/Å², k_angle = %.2f eV/rad²",
             monomer_fit["r0_A"], math.degrees(monomer_fit["theta0_rad"]), monomer_fit["k_bond_eV_per_A2"],
             monomer_fit["k_angle_eV_per_rad2"])

    t_sampler = time.perf_counter()
    per_replica, replica_records = [], []
    for replica, seed in enumerate(seeds):
        frames, record = sample_water_replica(replica, args, monomer_fit, np.random.default_rng(seed))
        per_replica.append(frames)
        replica_records.append(record)
    sampler_wall_s = time.perf_counter() - t_sampler
    # Round-robin order: a time limit then cuts every replica at about the same index.
    candidates = [frames[i] for i in range(args.configurations_per_replica) for frames in per_replica]

    labelled, label_record = label_water(candidates, settings, args)
    if not labelled:
        raise SystemExit("water: no configuration was labelled; see the errors above")

    wall_s = time.perf_counter() - t_start
    args.output.parent.mkdir(parents=True, exist_ok=True)
    ase.io.write(args.output, labelled, format="extxyz")
    LOG.info("wrote %s (%d configurations)", args.output, len(labelled))
    # Start structure: the last labelled configuration of replica 0, the longest-equilibrated one it has.
    start = [f for f in labelled if f.info["replica"] == 0][-1]
    ase.io.write(args.start_structure, start_structure(start), format="extxyz")
    LOG.info("wrote %s (replica 0, sampler time %.0f fs)", args.start_structure, start.info["sampler_time_fs"])

    density = args.molecules * 18.015 / (units._Nav * (args.box * 1e-8) ** 3)
    record = {
        "dataset": "water",
        "file": args.output.name,
        "system": {"formula": f"(H2O){args.molecules}", "n_atoms": 3 * args.molecules, "periodic": True,
                   "box_edge_A": args.box, "density_g_per_cm3": density, "min_initial_OO_distance_A":
                   args.min_oo_distance},
        "method": method_record(settings, periodic=True),
        "sampling": {
            "scheme": ("classical flexible-water sampler (SPC/Fw charges and O-O Lennard-Jones, damped shifted "
                       "force electrostatics with alpha 0.2 1/Å and cutoff 9 Å, harmonic bond and angle fitted "
                       "to the GFN2-xTB monomer), Langevin MD in independent replicas; one GFN2-xTB single "
                       "point per kept configuration"),
            "limitations": ("configurations follow the sampler's Boltzmann distribution, not GFN2-xTB's; "
                            "no GFN2-xTB dynamics was run"),
            "temperature_K": args.temperature,
            "replicas": args.replicas,
            "initial_structure": "jittered fcc grid, random orientations, relaxed with FIRE (fmax 0.5 eV/Å) "
                                 "under the sampler",
            "sampler_timestep_fs": args.sampler_timestep,
            "sampler_hydrogen_mass_amu": DEUTERIUM_MASS,
            "friction_per_fs": args.friction,
            "equilibration_fs": args.sampler_equilibration,
            "stride_fs": args.sampler_stride,
            "configurations_per_replica_sampled": args.configurations_per_replica,
            "label_order": "round-robin over replicas",
            "sampler_wall_time_s": sampler_wall_s,
            "replica_temperatures": replica_records,
            "gfn2_monomer_fit": {k: v for k, v in monomer_fit.items() if k != "atoms"}
                                | {"theta0_deg": math.degrees(monomer_fit["theta0_rad"])},
            "sampled_geometry": water_geometry(labelled),
        },
        "labelling": {**label_record, "time_limit_s": args.label_time_limit},
        "start_structure": {"file": args.start_structure.name,
                            "source": f"last labelled configuration of replica 0 (sampler time "
                                      f"{start.info['sampler_time_fs']:.0f} fs)"},
        "n_configurations": len(labelled),
        "wall_time_s": wall_s,
        "statistics": energy_force_statistics(labelled) | intramolecular_forces(labelled),
        **run_record(args),
    }
    write_sidecar(args.output.with_suffix(".json"), record)
    LOG.info("water: done in %s", format_seconds(wall_s))


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING"])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--seed", type=int, default=2024, help="seed for all random numbers")
    common.add_argument("--accuracy", type=float, default=1.0,
                        help="tblite numerical accuracy (smaller is tighter; tblite default 1.0)")
    common.add_argument("--electronic-temperature", type=float, default=300.0,
                        help="Fermi smearing temperature in K (tblite default 300)")
    common.add_argument("--max-iterations", type=int, default=250, help="maximum SCF iterations")
    common.add_argument("--log-interval", type=float, default=30.0, help="seconds between progress messages")
    subparsers = parser.add_subparsers(dest="dataset", required=True)

    ethanol = subparsers.add_parser("ethanol", parents=[common], help="ethanol in free space, GFN2-xTB MD")
    ethanol.add_argument("--output", type=Path, default=DATA_DIR / "ethanol_gfn2xtb_500K.extxyz",
                         help="extended XYZ dataset; the sidecar gets the same name with .json")
    ethanol.add_argument("--start-structure", type=Path, default=DATA_DIR / "ethanol.xyz",
                         help="extended XYZ file for the last kept configuration")
    ethanol.add_argument("--temperature", type=float, default=500.0, help="thermostat temperature in K")
    ethanol.add_argument("--timestep", type=float, default=0.5, help="MD time step in fs")
    ethanol.add_argument("--friction", type=float, default=0.01, help="Langevin friction in 1/fs")
    ethanol.add_argument("--equilibration", type=float, default=1000.0, help="discarded MD time in fs")
    ethanol.add_argument("--stride", type=int, default=20, help="MD steps between kept configurations")
    ethanol.add_argument("--configurations", type=int, default=1500, help="number of kept configurations")
    ethanol.set_defaults(run=run_ethanol)

    water = subparsers.add_parser("water", parents=[common],
                                  help="periodic liquid water: classical sampler, GFN2-xTB single points")
    water.add_argument("--output", type=Path, default=DATA_DIR / "water32_gfn2xtb_300K.extxyz",
                       help="extended XYZ dataset; the sidecar gets the same name with .json")
    water.add_argument("--start-structure", type=Path, default=DATA_DIR / "water32.extxyz",
                       help="extended XYZ file for a labelled configuration from replica 0")
    water.add_argument("--molecules", type=int, default=32, help="number of water molecules")
    water.add_argument("--box", type=float, default=9.865, help="cubic box edge in Å (9.865 Å gives 0.997 g/cm³ for 32 molecules)")
    water.add_argument("--min-oo-distance", type=float, default=2.5, help="minimum initial O-O distance in Å")
    water.add_argument("--temperature", type=float, default=300.0, help="sampler thermostat temperature in K")
    water.add_argument("--replicas", type=int, default=4, help="independent sampler runs")
    water.add_argument("--configurations-per-replica", type=int, default=64,
                       help="configurations kept from each replica before labelling")
    water.add_argument("--sampler-timestep", type=float, default=1.0, help="sampler MD time step in fs")
    water.add_argument("--sampler-equilibration", type=float, default=3000.0,
                       help="discarded sampler MD time per replica in fs")
    water.add_argument("--sampler-stride", type=float, default=100.0, help="sampler MD time between kept "
                       "configurations in fs")
    water.add_argument("--friction", type=float, default=0.01, help="Langevin friction in 1/fs")
    water.add_argument("--label-time-limit", type=float, default=None,
                       help="stop GFN2-xTB labelling before this many seconds and keep what is done")
    water.set_defaults(run=run_water)
    return parser


def main() -> None:
    args = build_parser().parse_args()
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(message)s")
    args.run(args)


if __name__ == "__main__":
    main()
