"""Stability study: R replicas of one input, each watched for failure.

A replica fails at the first step where its energy or positions are not
finite, its temperature exceeds ``temperature_factor`` × the reference
temperature, or (for molecules) a bond deviates from its starting length by
more than ``bond_threshold_A``. These are checked on the device at every
step; the failed replica is frozen there and the others go on. For liquids
and solids the radial distribution function of each chunk's frames is
compared on the host with a reference (the pooled RDF of all replicas over
the first ``rdf_reference_ps``, or a CSV file); an RMS deviation above
``rdf_threshold`` fails the replica at the end of that chunk.

Outputs in the output directory: ``stability.json`` (one entry per replica,
time to failure in ps or null), ``stability.csv``, ``survival.png``, and
``failures/`` with the last good and first bad configuration of every
failed replica (PDB), beside the usual per-replica trajectories and thermo.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import mdtraj
import numpy as np

from mdengine import distributed, replicas
from mdengine import neighbors as nbr
from mdengine.analysis import bonds_from_radii
from mdengine.config import InputError, InputSpec
from mdengine.runner import CheckpointHooks, execute
from mdengine.simulation import ChunkOutput, Simulation
from mdengine.units import NM_PER_ANGSTROM, kelvin_to_kT

log = logging.getLogger(__name__)

STABILITY_JSON = "stability.json"
RDF_BIN_A = 0.1
# Atoms sampled for the RDF check: pairs among at most this many atoms.
RDF_MAX_ATOMS = 400


@dataclasses.dataclass(frozen=True)
class StabilityOptions:
    """Settings of a stability study (thresholds in Å, K ratios, ps)."""

    replicas: int
    time_ps: float
    check: str = "auto"                 # auto, bonds, rdf or none (finite and temperature always)
    bond_threshold_A: float = 0.5
    rdf_threshold: float = 0.5          # RMS of g(r) − g_ref(r) over the bins
    rdf_reference_ps: float = 1.0
    rdf_reference: Path | None = None   # CSV with columns r_A, g
    temperature_factor: float = 3.0

    def validate(self) -> None:
        if self.replicas < 1:
            raise InputError(f"--replicas: must be at least 1 (got {self.replicas})")
        if not self.time_ps > 0:
            raise InputError(f"--time-ps: must be positive (got {self.time_ps})")
        if self.check not in ("auto", "bonds", "rdf", "none"):
            raise InputError(f"--check: {self.check!r} is not one of auto, bonds, rdf, none")
        for name in ("bond_threshold_A", "rdf_threshold", "rdf_reference_ps", "temperature_factor"):
            if not getattr(self, name) > 0:
                raise InputError(f"--{name.replace('_', '-')}: must be positive (got {getattr(self, name)})")
        if self.rdf_reference is not None and not Path(self.rdf_reference).is_file():
            raise InputError(f"--rdf-reference: {self.rdf_reference} does not exist")


@dataclasses.dataclass
class Failure:
    step: int
    time_ps: float
    reason: str


def study_spec(spec: InputSpec, options: StabilityOptions, output_dir: Path) -> InputSpec:
    """The input as the study runs it: R replicas, main phase long enough for
    ``time_ps`` in all, no checkpoints."""
    total_steps = math.ceil(options.time_ps * 1000 / spec.timestep_fs())
    equilibration = spec.run.equilibration.steps if spec.run.equilibration else 0
    if total_steps <= equilibration:
        raise InputError(f"--time-ps: {options.time_ps} ps ends inside the equilibration "
                         f"({equilibration} steps); ask for a longer time")
    data = spec.model_dump(mode="json")
    data["run"].update(steps=total_steps - equilibration, replicas=options.replicas)
    data["output"].update(directory=str(output_dir), checkpoint=None)
    return InputSpec.model_validate(data)


def system_trajectory(simulation: Simulation, positions_A: np.ndarray) -> mdtraj.Trajectory:
    """Make an mdtraj trajectory of ``[F, N, 3]`` Cartesian positions (Å) with the system's cell."""
    system = simulation.system
    traj = mdtraj.Trajectory(np.asarray(positions_A, np.float32) * NM_PER_ANGSTROM, system.topology)
    if system.cell is not None:
        traj.unitcell_vectors = np.tile(system.cell * NM_PER_ANGSTROM, (len(traj), 1, 1)).astype(np.float32)
    return traj


def choose_checks(simulation: Simulation, requested: str) -> tuple[np.ndarray, bool]:
    """``(bonds [B, 2], use_rdf)``: bonds for molecules, the RDF for periodic
    liquids and solids (a lattice, one element, or no covalent bonds)."""
    system = simulation.system
    bonds = np.zeros((0, 2), int)
    if requested in ("auto", "bonds"):
        bonds = bonds_from_radii(system_trajectory(simulation, system.positions[None]))
    molecular = (len(bonds) > 0 and simulation.spec.system.lattice is None
                 and len(set(system.elements)) > 1)
    if requested == "bonds":
        if len(bonds) == 0:
            raise InputError(f"--check bonds: {system.source} has no bonds (topology or covalent radii)")
        return bonds, False
    if requested == "rdf":
        if system.cell is None:
            raise InputError(f"--check rdf: {system.source} has no periodic cell")
        return np.zeros((0, 2), int), True
    if requested == "none":
        return np.zeros((0, 2), int), False
    if molecular:
        return bonds, False
    return np.zeros((0, 2), int), system.cell is not None


def make_failure_fn(simulation: Simulation, bonds: np.ndarray, options: StabilityOptions):
    """Device test ``state -> bool``: temperature too high or a bond too far from its
    starting length (for one replica; the engine vmaps it)."""
    reference_K = reference_temperature(simulation)
    limit_kT = kelvin_to_kT(options.temperature_factor * reference_K)
    n_f = max(3 * simulation.system.n_atoms - 3, 1)
    displacement = jax.vmap(simulation.displacement_fn)
    start = jnp.asarray(simulation._initial_coordinates)
    i, j = jnp.asarray(bonds[:, 0]), jnp.asarray(bonds[:, 1])
    reference = jnp.linalg.norm(displacement(start[i], start[j]), axis=-1) if len(bonds) else None

    def failed(state):
        kinetic = 0.5 * jnp.sum(state.mass * state.velocity**2)
        hot = 2 * kinetic / n_f > limit_kT
        if reference is None:
            return hot
        lengths = jnp.linalg.norm(displacement(state.position[i], state.position[j]), axis=-1)
        return hot | (jnp.max(jnp.abs(lengths - reference)) > options.bond_threshold_A)

    return failed, reference


def reference_temperature(simulation: Simulation) -> float:
    """Return the highest target or initial temperature of the run (K), for the temperature check."""
    temperatures = [p.temperature_K for p in simulation.phases if p.temperature_K]
    temperatures.append(simulation.spec.initial_temperature_K() or 0.0)
    reference = max(temperatures)
    if reference <= 0:
        raise InputError("stability: the input sets no temperature (thermostat or initial "
                         "velocities), so the temperature check has no reference")
    return reference


class StabilityHooks(CheckpointHooks):
    """Keeps failed replicas frozen, records why and when they failed, and runs the RDF check."""

    def __init__(self, simulation, checkpointer, writers, signals, *, study: "Study"):
        super().__init__(simulation, checkpointer, writers, signals)
        self.study = study

    def tolerates_failures(self) -> bool:
        return True

    def frozen_replicas(self):
        return np.array([r in self.study.failures for r in range(self.simulation.replicas)])

    def check_chunk(self, output: ChunkOutput, first_step, last_step, frozen):
        bad = distributed.to_host(output.bad_step)
        for r in np.nonzero(bad >= 0)[0]:
            self.study.record_device_failure(int(r), int(bad[r]), output)
        return self.study.check_rdf(output, first_step, last_step, frozen | (bad >= 0))


class Study:
    """State of one stability study while it runs."""

    def __init__(self, simulation: Simulation, options: StabilityOptions, output_dir: Path):
        self.simulation = simulation
        self.options = options
        self.output_dir = output_dir
        self.failures: dict[int, Failure] = {}
        self.bonds, self.use_rdf = choose_checks(simulation, options.check)
        failure_fn, self.bond_reference = make_failure_fn(simulation, self.bonds, options)
        simulation.failure_fn = failure_fn
        self.reference_K = reference_temperature(simulation)
        self.rdf_reference = self._read_rdf_reference() if options.rdf_reference else None
        self._reference_frames: list[np.ndarray] = []
        self._last_frame: dict[int, np.ndarray] = {}
        rng = np.random.default_rng(0)
        n = simulation.system.n_atoms
        self.rdf_atoms = np.sort(rng.choice(n, min(n, RDF_MAX_ATOMS), replace=False))

    # ---------------------------------------------------------------- failures on the device

    def record_device_failure(self, replica: int, step: int, output: ChunkOutput) -> None:
        sim = self.simulation
        state = replicas.take(output.state, replica)
        before = np.asarray(output.before_bad[replica])
        reason = self._device_reason(state)
        self._record(replica, step, reason, before, np.asarray(state.position))

    def _device_reason(self, state) -> str:
        sim = self.simulation
        if not (np.isfinite(float(state.potential_energy)) and np.isfinite(np.asarray(state.position)).all()):
            return "non-finite energy or positions"
        kinetic = 0.5 * float(jnp.sum(state.mass * state.velocity**2))
        temperature = 2 * kinetic / max(3 * sim.system.n_atoms - 3, 1) / kelvin_to_kT(1.0)
        if temperature > self.options.temperature_factor * self.reference_K:
            return (f"temperature {temperature:.0f} K above {self.options.temperature_factor:g} × "
                    f"{self.reference_K:g} K")
        position = jnp.asarray(state.position)
        i, j = self.bonds[:, 0], self.bonds[:, 1]
        lengths = np.linalg.norm(np.asarray(jax.vmap(sim.displacement_fn)(position[i], position[j])), axis=-1)
        deviation = np.abs(lengths - np.asarray(self.bond_reference))
        k = int(np.argmax(deviation))
        return (f"bond {i[k] + 1}-{j[k] + 1} ({sim.system.elements[i[k]]}-{sim.system.elements[j[k]]}) "
                f"length {lengths[k]:.3f} Å, {deviation[k]:.3f} Å from its starting length")

    def _record(self, replica, step, reason, last_good, first_bad) -> None:
        time_ps = step * self.simulation.timestep_fs / 1000
        self.failures[replica] = Failure(step, time_ps, reason)
        log.warning("replica %d failed at step %d (t = %g ps): %s; the others continue",
                    replica, step, time_ps, reason)
        if not distributed.is_primary():
            return
        folder = self.output_dir / "failures"
        folder.mkdir(exist_ok=True)
        for name, coordinates in (("last_good", last_good), ("first_bad", first_bad)):
            positions = np.asarray(nbr.to_cartesian(jnp.asarray(coordinates), self.simulation.system))
            path = folder / f"replica{replica}_{name}.pdb"
            system_trajectory(self.simulation, positions[None]).save_pdb(str(path))

    # ---------------------------------------------------------------- RDF on the host

    def check_rdf(self, output: ChunkOutput, first_step, last_step, frozen) -> np.ndarray | None:
        if not self.use_rdf:
            return None
        stride = self.simulation.spec.output.frame_stride
        steps = np.arange((first_step // stride + 1) * stride, last_step + 1, stride)
        if len(steps) == 0:
            return None
        frames = distributed.to_host(output.frames)[:, :len(steps)]
        reference_steps = self.options.rdf_reference_ps * 1000 / self.simulation.timestep_fs
        if self.rdf_reference is None:
            in_reference = steps <= reference_steps
            self._reference_frames += [frames[r, in_reference] for r in range(len(frames)) if not frozen[r]]
            if steps[-1] < reference_steps or not self._reference_frames:
                return None
            self.rdf_reference = self._rdf(np.concatenate(self._reference_frames))
            log.info("RDF reference: %d frames of the first %g ps", sum(map(len, self._reference_frames)),
                     self.options.rdf_reference_ps)
            steps_after = ~in_reference
            if not steps_after.any():
                return None
            frames, steps = frames[:, steps_after], steps[steps_after]
        more = np.zeros(len(frozen), bool)
        r_ref, g_ref = self.rdf_reference
        for r in np.nonzero(~frozen)[0]:
            _, g = self._rdf(frames[r], r_ref)
            deviation = float(np.sqrt(np.mean((g - g_ref) ** 2)))
            if deviation > self.options.rdf_threshold:
                cartesian_to_engine = self._to_engine
                last_good = self._last_frame.get(r, frames[r, 0])
                self._record(int(r), int(steps[-1]), f"RDF RMS deviation {deviation:.3f} from the "
                             f"reference (threshold {self.options.rdf_threshold:g})",
                             cartesian_to_engine(last_good), cartesian_to_engine(frames[r, -1]))
                more[r] = True
            else:
                self._last_frame[r] = frames[r, -1]
        return more

    def _to_engine(self, positions_A: np.ndarray) -> np.ndarray:
        system = self.simulation.system
        return positions_A if system.cell is None else positions_A @ np.linalg.inv(system.cell)

    def _rdf(self, frames_A: np.ndarray, r_grid=None) -> tuple[np.ndarray, np.ndarray]:
        traj = system_trajectory(self.simulation, frames_A)
        pairs = np.array([(a, b) for k, a in enumerate(self.rdf_atoms) for b in self.rdf_atoms[k + 1:]])
        r_max = 0.5 * float(self.simulation.system.heights().min())
        r_nm, g = mdtraj.compute_rdf(traj, pairs, r_range=(0.0, r_max * NM_PER_ANGSTROM),
                                     bin_width=RDF_BIN_A * NM_PER_ANGSTROM)
        r_A = r_nm / NM_PER_ANGSTROM
        if r_grid is not None:
            g = np.interp(r_grid, r_A, g)
            r_A = r_grid
        return r_A, g

    def _read_rdf_reference(self):
        path = Path(self.options.rdf_reference)
        try:
            data = np.genfromtxt(path, delimiter=",", names=True)
            return np.asarray(data["r_A"], float), np.asarray(data["g"], float)
        except (ValueError, KeyError) as err:
            raise InputError(f"--rdf-reference: {path} must be a CSV with columns r_A and g ({err})") from None

    # ---------------------------------------------------------------- report

    def report(self) -> dict:
        sim, options = self.simulation, self.options
        entries = []
        for r in range(sim.replicas):
            failure = self.failures.get(r)
            entries.append({"replica": r, "seed": sim.spec.seed + r,
                            "time_to_failure_ps": None if failure is None else failure.time_ps,
                            "failure_step": None if failure is None else failure.step,
                            "reason": None if failure is None else failure.reason})
        stable = np.array([options.time_ps if e["time_to_failure_ps"] is None else e["time_to_failure_ps"]
                           for e in entries])
        times, surviving = survival_curve(entries, options.time_ps)
        return {
            "input": str(sim.input_path) if sim.input_path else None,
            "replicas": sim.replicas,
            "time_ps": options.time_ps,
            "timestep_fs": sim.timestep_fs,
            "checks": {"finite": True, "temperature_max_K": options.temperature_factor * self.reference_K,
                       "bonds": int(len(self.bonds)), "bond_threshold_A": options.bond_threshold_A,
                       "rdf": self.use_rdf, "rdf_threshold": options.rdf_threshold,
                       "rdf_reference": str(options.rdf_reference) if options.rdf_reference
                       else f"first {options.rdf_reference_ps:g} ps of the run"},
            "survived": int(sum(e["time_to_failure_ps"] is None for e in entries)),
            "stable_time_ps": {"mean": float(stable.mean()), "std": float(stable.std()),
                               "median": float(np.median(stable)), "min": float(stable.min())},
            "survival": {"time_ps": times.tolist(), "fraction": surviving.tolist()},
            "per_replica": entries,
        }


def survival_curve(entries: list[dict], time_ps: float) -> tuple[np.ndarray, np.ndarray]:
    """Fraction of replicas still stable at each failure time (a step function from 1)."""
    failures = sorted(e["time_to_failure_ps"] for e in entries if e["time_to_failure_ps"] is not None)
    times = np.array([0.0] + failures + [time_ps])
    alive = len(entries) - np.concatenate([[0], np.arange(1, len(failures) + 1), [len(failures)]])
    return times, alive / len(entries)


def write_report(report: dict, output_dir: Path) -> None:
    """``stability.json``, ``stability.csv`` and ``survival.png``."""
    (output_dir / STABILITY_JSON).write_text(json.dumps(report, indent=2) + "\n")
    with open(output_dir / "stability.csv", "w") as handle:
        handle.write("replica,seed,time_to_failure_ps,failure_step,reason\n")
        for e in report["per_replica"]:
            ttf = "" if e["time_to_failure_ps"] is None else f"{e['time_to_failure_ps']:g}"
            step = "" if e["failure_step"] is None else str(e["failure_step"])
            reason = (e["reason"] or "").replace('"', "'")
            handle.write(f"{e['replica']},{e['seed']},{ttf},{step},\"{reason}\"\n")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figure, axis = plt.subplots(figsize=(5, 3.5))
    survival = report["survival"]
    axis.step(survival["time_ps"], survival["fraction"], where="post")
    axis.set_xlim(0, report["time_ps"])
    axis.set_ylim(-0.02, 1.02)
    axis.set_xlabel("time (ps)")
    axis.set_ylabel("fraction of replicas stable")
    axis.set_title(f"{report['survived']} of {report['replicas']} replicas stable for {report['time_ps']:g} ps")
    figure.tight_layout()
    figure.savefig(output_dir / "survival.png", dpi=120)
    plt.close(figure)


def format_table(report: dict) -> str:
    """Format the per-replica summary printed at the end of a study."""
    lines = [f"{'replica':>7}  {'seed':>6}  {'stable for (ps)':>15}  result"]
    for e in report["per_replica"]:
        if e["time_to_failure_ps"] is None:
            lines.append(f"{e['replica']:>7}  {e['seed']:>6}  {report['time_ps']:>15g}  survived")
        else:
            lines.append(f"{e['replica']:>7}  {e['seed']:>6}  {e['time_to_failure_ps']:>15g}  "
                         f"failed: {e['reason']}")
    stable = report["stable_time_ps"]
    lines.append(f"{report['survived']}/{report['replicas']} replicas stable for {report['time_ps']:g} ps; "
                 f"stable time {stable['mean']:.4g} ± {stable['std']:.2g} ps (mean ± std, survivors "
                 f"counted at {report['time_ps']:g} ps), median {stable['median']:.4g} ps")
    return "\n".join(lines)


def run_study(spec: InputSpec, base_dir: Path, options: StabilityOptions, output_dir: Path,
              input_path: Path | None = None) -> dict:
    """Run the study and write its report; returns the report dict."""
    options.validate()
    spec = study_spec(spec, options, output_dir)
    simulation = Simulation(spec, base_dir, input_path=input_path)
    output_dir.mkdir(parents=True, exist_ok=True)
    study = Study(simulation, options, output_dir)
    log.info("stability study: %d replicas for %g ps; checks: finite, temperature ≤ %g K%s%s",
             simulation.replicas, options.time_ps, options.temperature_factor * study.reference_K,
             f", {len(study.bonds)} bonds within {options.bond_threshold_A:g} Å" if len(study.bonds) else "",
             f", RDF RMS deviation ≤ {options.rdf_threshold:g}" if study.use_rdf else "")
    execute(simulation, output_dir, hooks_class=functools.partial(StabilityHooks, study=study))
    report = study.report()
    if distributed.is_primary():
        write_report(report, output_dir)
    return report
