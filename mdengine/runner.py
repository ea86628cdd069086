"""Run an input end to end: outputs, phases, summary."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from mdengine import neighbors as nbr

from mdengine.config import resolved_yaml
from mdengine.integrators import kinetic_energy
from mdengine.reporters import Progress, ThermoWriter, TrajectoryWriter, format_duration
from mdengine.simulation import RunStats, Simulation

log = logging.getLogger(__name__)

RESOLVED_INPUT = "input.resolved.yaml"


def execute(simulation: Simulation, output_dir: Path) -> RunStats:
    """Run a built simulation, writing its outputs into ``output_dir``.

    Building the :class:`Simulation` checks the input completely, so an
    invalid input fails before the output directory is touched.
    """
    spec = simulation.spec
    log.info("system: %d atoms (%s), %s", simulation.system.n_atoms,
             ", ".join(simulation.system.species_names), simulation.system.source)
    log.info("potential: %s; neighbor list %s, skin %g Å", simulation.potential.description,
             simulation.potential.neighbor_format.name, spec.neighbor.skin_A)
    for phase in simulation.phases:
        log.info("phase %s: %s, %d steps of %g fs", phase.name, phase.integrator.name,
                 phase.steps, spec.timestep_fs())

    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / RESOLVED_INPUT).write_text(resolved_yaml(spec))
    stats = RunStats()
    state, neighbor = simulation.initial_state()
    writers = _open_writers(spec, simulation, output_dir)
    progress = Progress(simulation.total_steps, spec.timestep_fs(), spec.output.log_interval_s)
    begin = time.perf_counter()
    try:
        _write_initial_sample(simulation, state, writers)
        step = 0
        for phase in simulation.phases:
            state, neighbor = simulation.run_phase(phase, state, neighbor, step, writers, progress, stats)
            step += phase.steps
        progress.update(step, force=True)
    finally:
        progress.finish()
        stats.wall_s = time.perf_counter() - begin
        for writer in writers:
            if writer is not None:
                writer.close()
    stats.files = {"thermo": str(writers[1].path), "input": str(output_dir / RESOLVED_INPUT)}
    if writers[0] is not None:
        stats.files["trajectory"] = str(writers[0].path)
        if writers[0].topology_path is not None:
            stats.files["topology"] = str(writers[0].topology_path)
    _energy_statistics(simulation, stats, writers[1].path)
    log_summary(simulation, stats)
    return stats


def _open_writers(spec, simulation, output_dir):
    out = spec.output
    trajectory = None
    if out.trajectory is not None:
        trajectory = TrajectoryWriter(output_dir / out.trajectory, simulation.system.topology,
                                      simulation.system.cell, spec.timestep_fs() / 1000)
    return trajectory, ThermoWriter(output_dir / out.thermo)


def _write_initial_sample(simulation, state, writers):
    trajectory, thermo = writers
    if trajectory is not None:
        positions = np.asarray(nbr.to_cartesian(state.position, simulation.system))
        trajectory.write(np.array([0]), positions[None])
    sample = np.array([[float(state.potential_energy),
                        float(kinetic_energy(state.velocity, state.mass)), 0.0]])
    thermo.write(simulation.thermo_rows(np.array([0]), sample, simulation.phases[0]))


def _energy_statistics(simulation, stats: RunStats, thermo_path: Path) -> None:
    """Drift of the conserved energy in NVE phases and mean temperature of NVT phases."""
    data = np.genfromtxt(thermo_path, delimiter=",", names=True, dtype=None, encoding="utf-8")
    data = np.atleast_1d(data)
    n_atoms = simulation.system.n_atoms
    for phase in simulation.phases:
        rows = data[data["phase"] == phase.name]
        if len(rows) < 2:
            continue
        if phase.thermostat is None:
            energy = rows["total_energy_eV"]
            time_ps = rows["time_ps"]
            slope = np.polyfit(time_ps - time_ps[0], energy, 1)[0]
            stats.nve_drift_eV_per_atom_per_ps = float(slope / n_atoms)
            stats.nve_max_deviation_eV_per_atom = float(np.max(np.abs(energy - energy[0])) / n_atoms)
        else:
            stats.mean_temperature_K[phase.name] = float(np.mean(rows["temperature_K"][1:]))


def log_summary(simulation, stats: RunStats) -> None:
    n_atoms = simulation.system.n_atoms
    rate = stats.steps_per_s()
    ns_per_day = rate * simulation.timestep_fs * 86400 / 1e6
    lines = [
        "run finished",
        f"  steps:            {stats.steps}",
        f"  wall time:        {format_duration(stats.wall_s)} ({stats.wall_s:.2f} s, of which "
        f"compilation {stats.compile_s:.2f} s in {stats.compilations} compilation(s))",
        f"  speed:            {rate:,.1f} steps/s, {ns_per_day:.4g} ns/day, "
        f"{rate * n_atoms:.4g} atom-steps/s (compilation excluded)",
        f"  neighbor list:    {stats.reallocations} reallocation(s)",
    ]
    if stats.nve_drift_eV_per_atom_per_ps is not None:
        lines.append(f"  NVE energy drift: {stats.nve_drift_eV_per_atom_per_ps:.3e} eV/atom/ps, "
                     f"max deviation {stats.nve_max_deviation_eV_per_atom:.3e} eV/atom")
    for name, value in stats.mean_temperature_K.items():
        lines.append(f"  mean temperature: {value:.2f} K ({name})")
    for kind, path in stats.files.items():
        lines.append(f"  {kind + ':':<17} {path}")
    for line in lines:
        log.info(line)
