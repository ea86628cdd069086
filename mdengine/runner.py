"""Run an input end to end: outputs, phases, checkpoints, resume, signals, summary."""

from __future__ import annotations

import dataclasses
import logging
import signal
import threading
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from mdengine import distributed, replicas
from mdengine import neighbors as nbr
from mdengine.checkpoint import (CheckpointError, Checkpointer, differences, fingerprint,
                                 fingerprint_sections)
from mdengine.config import InputError, resolved_yaml
from mdengine.integrators import MDState, kinetic_energy
from mdengine.reporters import (DiscardWriter, Progress, ThermoWriter, TrajectoryWriter,
                                format_duration)
from mdengine.simulation import RunHooks, RunStats, Simulation
from mdengine.units import kelvin_to_kT

log = logging.getLogger(__name__)

RESOLVED_INPUT = "input.resolved.yaml"


class RunInterrupted(RuntimeError):
    """The run stopped on SIGINT or SIGTERM after writing a checkpoint."""

    def __init__(self, signum: int, step: int, checkpoint_dir: Path | None):
        self.signum = signum
        self.step = step
        self.checkpoint_dir = checkpoint_dir
        super().__init__(f"stopped at step {step} on {signal.Signals(signum).name}")


class StopSignals:
    """Turn the first SIGINT or SIGTERM into a stop request; a second SIGINT stops at once."""

    def __init__(self):
        self.signum: int | None = None
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum, frame):
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        log.warning("%s received: finishing the current chunk, then writing a checkpoint; "
                    "press Ctrl-C again to stop at once", signal.Signals(signum).name)


class CheckpointHooks(RunHooks):
    """Write checkpoints at the configured intervals and honour stop requests."""

    def __init__(self, simulation: Simulation, checkpointer: Checkpointer | None, writers,
                 signals: StopSignals):
        self.simulation = simulation
        self.checkpointer = checkpointer
        self.writers = writers
        self.signals = signals
        spec = simulation.spec.output.checkpoint
        self.interval_steps = spec.interval_steps if spec else None
        self.interval_s = spec.interval_minutes * 60 if spec and spec.interval_minutes else None
        self._stopping = False

    def chunk_limit(self, first_step):
        if self.checkpointer is None or self.interval_steps is None:
            return None
        return (first_step // self.interval_steps + 1) * self.interval_steps

    def stop_requested(self) -> bool:
        # A signal may reach one process only; all must stop at the same step.
        return distributed.any_process(self.signals.signum is not None)

    def stops_after_chunk(self) -> bool:
        return self._stopping

    def after_chunk(self, step, state, neighbor, phase):
        # The stop is decided once per chunk, here, together with the checkpoint.
        # A second decision could see a later signal and stop without a checkpoint.
        self._stopping = self.stop_requested()
        if self.checkpointer is None:
            return
        self.checkpointer.check()
        due = self._stopping
        if self.interval_steps is not None and step % self.interval_steps == 0:
            due = True
        if self.interval_s is not None and time.monotonic() - self.checkpointer.last_saved_time >= self.interval_s:
            due = True
        if distributed.any_process(due):
            self.save(step, state, neighbor, phase)

    def save(self, step, state, neighbor, phase) -> None:
        if self.checkpointer is None or self.checkpointer.last_saved_step == step:
            return
        self.checkpointer.save(step, state, neighbor, self.metadata(step, state, neighbor, phase))

    def metadata(self, step, state, neighbor, phase) -> dict:
        simulation = self.simulation
        trajectory, thermo = self.writers
        kinetic = np.mean(replica_kinetic(simulation, state))
        return {
            "phase": phase.name,
            "phase_index": simulation.phases.index(phase),
            "ensemble": phase.integrator.name,
            "time_ps": step * simulation.timestep_fs / 1000,
            "timestep_fs": simulation.timestep_fs,
            "temperature_K": float(simulation.temperature_K(np.array(kinetic), phase)),
            "potential_energy_eV": float(np.mean(distributed.to_host(state.potential_energy))),
            "replicas": simulation.replicas,
            "potential": simulation.potential.description,
            "n_atoms": simulation.system.n_atoms,
            "frames_written": 0 if trajectory is None else trajectory.frames_written,
            "thermo_rows_written": thermo.rows_written,
            "neighbor_idx_shape": list(neighbor.idx.shape),
            "neighbor_settings": simulation.spec.neighbor.model_dump(mode="json"),
            "neighbor_format": simulation.neighbors.layout,
            "fingerprint": fingerprint(simulation.spec),
            "input_sections": fingerprint_sections(simulation.spec),
            "input_path": str(simulation.input_path) if simulation.input_path else None,
        }


def phase_bounds(simulation: Simulation) -> list[tuple[int, int]]:
    """``(first, last)`` global steps of each phase: the phase runs steps first+1 … last."""
    bounds, start = [], 0
    for phase in simulation.phases:
        bounds.append((start, start + phase.steps))
        start += phase.steps
    return bounds


def execute(simulation: Simulation, output_dir: Path, resume: bool = False,
            hooks_class=None) -> RunStats:
    """Run a built simulation, writing its outputs into ``output_dir``.

    Building the :class:`Simulation` checks the input completely, so an
    invalid input fails before the output directory is touched. With
    ``resume``, the run continues from the newest readable checkpoint; the
    trajectory and thermo files are cut back to that checkpoint first.
    ``hooks_class`` replaces :class:`CheckpointHooks` (same constructor), for
    example to keep failed replicas frozen while the others go on.

    Raises:
      InputError: nothing to resume, or a checkpoint from an incompatible input.
      RunInterrupted: SIGINT or SIGTERM; a checkpoint was written first.
      SimulationError, CheckpointError: the run failed.
    """
    spec = simulation.spec
    output_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_spec = spec.output.checkpoint
    checkpointer = None
    if checkpoint_spec is not None:
        checkpointer = Checkpointer(output_dir / checkpoint_spec.directory, checkpoint_spec.keep)

    if resume:
        state, neighbor, start_step, phase_index, counts = _restore(simulation, checkpointer, output_dir)
    else:
        state, neighbor = simulation.initial_state()
        start_step, phase_index, counts = 0, 0, None
    if distributed.is_primary():
        (output_dir / RESOLVED_INPUT).write_text(resolved_yaml(spec))

    stats = RunStats()
    writers = _open_writers_everywhere(spec, simulation, output_dir, counts)
    progress = Progress(simulation.total_steps, spec.timestep_fs(), spec.output.log_interval_s)
    begin = time.perf_counter()
    bounds = phase_bounds(simulation)
    interrupted = None
    try:
        with StopSignals() as signals:
            hooks = (hooks_class or CheckpointHooks)(simulation, checkpointer, writers, signals)
            if not resume:
                _write_initial_sample(simulation, state, writers)
            step = start_step
            for index in range(phase_index, len(simulation.phases)):
                phase = simulation.phases[index]
                first, last = bounds[index]
                if step >= last:
                    continue
                state, neighbor, stopped = simulation.run_phase(
                    phase, state, neighbor, step, last, writers, progress, stats, hooks,
                    fresh=step == first)
                # The signal may have reached another process only.
                signum = distributed.max_over_processes(signals.signum or 0) if stopped else 0
                if stopped and not signum:
                    break   # every replica has failed
                if stopped:
                    step = _last_saved(checkpointer, step)
                    interrupted = RunInterrupted(signum, step, checkpointer and checkpointer.directory)
                    break
                step = last
            if interrupted is None:
                hooks.save(step, state, neighbor, simulation.phases[-1])
                progress.update(step, force=True)
    finally:
        progress.finish()
        stats.wall_s = time.perf_counter() - begin
        for writer in writers:
            if writer is not None:
                writer.close()
        if checkpointer is not None:
            checkpointer.close()
    if interrupted is not None:
        raise interrupted

    stats.files = {"thermo": str(writers[1].path), "input": str(output_dir / RESOLVED_INPUT)}
    if writers[0] is not None:
        stats.files["trajectory"] = str(writers[0].path)
        if writers[0].topology_path is not None:
            stats.files["topology"] = str(writers[0].topology_path)
    if checkpointer is not None:
        stats.files["checkpoints"] = str(checkpointer.directory)
    if distributed.is_primary():
        _energy_statistics(simulation, stats, writers[1].path)
        log_summary(simulation, stats)
    return stats


def _last_saved(checkpointer, step):
    return step if checkpointer is None or checkpointer.last_saved_step is None else checkpointer.last_saved_step


def _state_template(simulation: Simulation, phase_index: int) -> MDState:
    """Shapes and dtypes of the state while phase ``phase_index`` runs."""
    n, dtype = simulation.system.n_atoms, simulation.dtype
    vector = jax.ShapeDtypeStruct((n, 3), dtype)
    scalar = jax.ShapeDtypeStruct((), dtype)
    base = MDState(position=vector, velocity=vector, force=vector, potential_energy=scalar,
                   mass=jax.ShapeDtypeStruct((n, 1), dtype),
                   rng=jax.eval_shape(lambda: jax.random.PRNGKey(0)), heat=scalar, thermostat=(),
                   image=jax.ShapeDtypeStruct((n, 3), jnp.int32))
    phase = simulation.phases[phase_index]
    kT = jnp.asarray(kelvin_to_kT(phase.temperature_K or 0.0), dtype)
    if simulation.replicas > 1:
        base = jax.tree_util.tree_map(
            lambda leaf: jax.ShapeDtypeStruct((simulation.replicas, *leaf.shape), leaf.dtype), base)
    init = simulation.batched(phase.integrator.init_fn, (0, None))
    template = jax.eval_shape(lambda state: init(state, kT), base)
    # An explicit placement lets orbax restore a checkpoint written on another
    # device layout (for example 4 devices, resumed on 1).
    sharding = simulation.sharding or jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree_util.tree_map(
        lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding), template)


def _restore(simulation: Simulation, checkpointer: Checkpointer | None, output_dir: Path):
    """Load the newest readable checkpoint and check it belongs to this input."""
    if checkpointer is None:
        raise InputError("--resume needs checkpoints, but output.checkpoint is null in the input")
    if not checkpointer.steps():
        raise InputError(f"--resume: no checkpoint in {checkpointer.directory}; "
                         "run without --resume to start a new run")
    def template(metadata):
        # Checked before any array is read: another input's arrays may not fit.
        if metadata["fingerprint"] != fingerprint(simulation.spec):
            changed = differences(metadata["input_sections"], fingerprint_sections(simulation.spec))
            raise InputError(f"--resume: the checkpoint of step {metadata['step']} was written for a "
                             f"different input ({'; '.join(changed)}); only run.steps, run.chunk_steps, "
                             "output and neighbor settings may change between runs")
        return _state_template(simulation, metadata["phase_index"])

    restored = checkpointer.restore_latest(template, simulation.dtype)
    if restored is None:
        raise InputError(f"--resume: no readable checkpoint in {checkpointer.directory}; "
                         "the unreadable ones were moved aside")
    state, neighbor_arrays, metadata = restored
    step = metadata["step"]
    checkpointer.last_saved_step = step
    log.info("resuming from the checkpoint of step %d (t = %g ps, %s) in %s", step,
             metadata["time_ps"], metadata["phase"], checkpointer.directory)
    if step >= simulation.total_steps:
        log.info("the run is complete at step %d; raise run.steps to extend it", step)
    neighbor = _restored_neighbor(simulation, state, neighbor_arrays, metadata)
    counts = (metadata["frames_written"], metadata["thermo_rows_written"])
    return state, neighbor, step, metadata["phase_index"], counts


def _restored_neighbor(simulation, state, arrays, metadata):
    """Rebuild the neighbor list as it was at the checkpoint, or allocate a fresh one if the
    neighbor settings changed."""
    if simulation.replicas > 1:
        coordinates = distributed.to_host(state.position)
        fresh = simulation.place(simulation.neighbors.allocate_replicas(coordinates))
    else:
        fresh = simulation.neighbors.allocate(state.position)
    if arrays is None:
        return fresh
    if metadata["neighbor_settings"] != simulation.spec.neighbor.model_dump(mode="json"):
        log.info("neighbor settings changed since the checkpoint: the neighbor list is rebuilt, "
                 "so the continuation is not bit-identical to an uninterrupted run")
        return fresh
    if metadata.get("neighbor_format") != simulation.neighbors.layout:
        log.info("the checkpoint's neighbor list has another layout (%s, this version uses %s): "
                 "it is rebuilt, so the continuation is not bit-identical to an uninterrupted run",
                 metadata.get("neighbor_format", "unrecorded"), simulation.neighbors.layout)
        return fresh
    return dataclasses.replace(fresh, idx=arrays["idx"], reference_position=arrays["reference_position"],
                               max_occupancy=arrays["capacity"],
                               cell_list_capacity=arrays["cell_list_capacity"])


def _open_writers_everywhere(spec, simulation, output_dir, counts):
    """Open the writers on every process; when process 0 cannot (a trajectory cut
    back on resume is missing or short), every process raises."""
    error = None
    try:
        writers = _open_writers(spec, simulation, output_dir, counts, distributed.is_primary())
    except InputError as err:
        error = err
    if distributed.any_process(error is not None):
        raise error or InputError(f"{output_dir}: process 0 could not open the output files; "
                                  "its log names the file")
    return writers


def _open_writers(spec, simulation, output_dir, counts, write=True):
    """Open the trajectory and thermo writers; with ``counts`` (frames, rows), cut
    existing files back to that many entries and append after them. Without
    ``write``, the writers only count what they are given."""
    out = spec.output
    frames, rows = counts if counts is not None else (None, None)
    trajectory = None
    if out.trajectory is not None:
        def make_writer(path, keep_frames):
            if not write:
                return DiscardWriter(path, keep=keep_frames)
            return TrajectoryWriter(path, simulation.system.topology, simulation.system.cell,
                                    spec.timestep_fs() / 1000, keep_frames=keep_frames)

        if simulation.replicas > 1:
            trajectory = replicas.ReplicaTrajectories(output_dir / out.trajectory, simulation.replicas,
                                                      make_writer, frames)
        else:
            trajectory = make_writer(output_dir / out.trajectory, frames)
    if not write:
        return trajectory, DiscardWriter(output_dir / out.thermo, keep=rows)
    return trajectory, ThermoWriter(output_dir / out.thermo, keep_rows=rows,
                                    replicas=simulation.replicas > 1)


def replica_kinetic(simulation, state) -> np.ndarray:
    """``[R]`` kinetic energies (eV) of each replica (R = 1 for a single run)."""
    kinetic = simulation.batched(kinetic_energy, (0, 0))(state.velocity, state.mass)
    return np.atleast_1d(distributed.to_host(kinetic).astype(np.float64))


def _write_initial_sample(simulation, state, writers):
    trajectory, thermo = writers
    positions = distributed.to_host(nbr.to_cartesian(state.position, simulation.system))
    if simulation.replicas == 1:
        positions = positions[None]
    for r, writer in enumerate(replicas.writer_list(trajectory)):
        writer.write(np.array([0]), positions[r][None])
    kinetic = replica_kinetic(simulation, state)
    potential = np.atleast_1d(distributed.to_host(state.potential_energy).astype(np.float64))
    rows = []
    for r in range(simulation.replicas):
        sample = np.array([[potential[r], kinetic[r], 0.0]])
        rows += simulation.thermo_rows(np.array([0]), sample, simulation.phases[0], r)
    thermo.write(rows)


def _energy_statistics(simulation, stats: RunStats, thermo_path: Path) -> None:
    """Drift of the total energy in NVE phases and mean temperature of NVT phases."""
    data = np.genfromtxt(thermo_path, delimiter=",", names=True, dtype=None, encoding="utf-8")
    data = np.atleast_1d(data)
    n_atoms = simulation.system.n_atoms
    replica = data["replica"] if simulation.replicas > 1 else np.zeros(len(data), int)
    for phase in simulation.phases:
        drifts, deviations, temperatures = [], [], []
        for r in range(simulation.replicas):
            rows = data[(data["phase"] == phase.name) & (replica == r)]
            if len(rows) < 2:
                continue
            if phase.thermostat is None:
                energy = rows["total_energy_eV"]
                time_ps = rows["time_ps"]
                drifts.append(np.polyfit(time_ps - time_ps[0], energy, 1)[0] / n_atoms)
                deviations.append(np.max(np.abs(energy - energy[0])) / n_atoms)
            else:
                temperatures.append(np.mean(rows["temperature_K"][1:]))
        # With replicas: the mean drift and the largest deviation over replicas.
        if drifts:
            stats.nve_drift_eV_per_atom_per_ps = float(np.mean(drifts))
            stats.nve_max_deviation_eV_per_atom = float(np.max(deviations))
        if temperatures:
            stats.mean_temperature_K[phase.name] = float(np.mean(temperatures))


def log_summary(simulation, stats: RunStats) -> None:
    n_atoms = simulation.system.n_atoms * simulation.replicas
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
    if simulation.replicas > 1:
        lines.insert(4, f"  replicas:         {simulation.replicas} ({simulation.system.n_atoms} atoms each; "
                        "atom-steps/s counts all replicas)")
    if stats.nve_drift_eV_per_atom_per_ps is not None:
        lines.append(f"  NVE energy drift: {stats.nve_drift_eV_per_atom_per_ps:.3e} eV/atom/ps, "
                     f"max deviation {stats.nve_max_deviation_eV_per_atom:.3e} eV/atom")
    for name, value in stats.mean_temperature_K.items():
        lines.append(f"  mean temperature: {value:.2f} K ({name})")
    for kind, path in stats.files.items():
        lines.append(f"  {kind + ':':<17} {path}")
    for line in lines:
        log.info(line)


__all__ = ["execute", "RunInterrupted", "CheckpointError"]
