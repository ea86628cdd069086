"""The run loop: jit-compiled ``lax.scan`` chunks driven from the host.

One chunk advances up to ``chunk_steps`` steps on the device (integrator
step, neighbor-list update, sampling of frames and thermodynamics) and
returns the samples. The host then checks the neighbor list for overflow
(redoing the chunk from its start with more capacity if needed), dispatches
the next chunk, and writes the previous chunk's samples while it runs.

Every chunk of a phase has the same shapes: a shorter final chunk masks its
surplus steps with ``lax.cond``, so each phase compiles once unless the
neighbor list grows.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from mdengine import distributed, replicas
from mdengine import neighbors as nbr
from mdengine.config import InputError, InputSpec, default_chunk_steps
from mdengine.integrators import Integrator, MDState, kinetic_energy, make_integrator
from mdengine.integrators.base import ForceFn, remove_com_velocity
from mdengine.potentials import Potential, build_potential
from mdengine.system import System, build_system
from mdengine.units import TIME_UNIT_FS, kelvin_to_kT, kT_to_kelvin

log = logging.getLogger(__name__)

# jax-md requests float64 sums. In float32 runs JAX truncates them to float32, as intended.
warnings.filterwarnings("ignore", message="Explicitly requested dtype float64", category=UserWarning)
# jax-md 0.2.29's neighbor-list pruning scatters int64 into int32 under x64;
# the values are atom indices far below 2³¹, so the cast is exact.
warnings.filterwarnings("ignore", message="scatter inputs have incompatible types", category=FutureWarning)


class SimulationError(RuntimeError):
    """The run cannot continue (non-finite energy or positions, neighbor-list failure)."""


@dataclasses.dataclass
class Phase:
    """A stretch of the run with one integrator: equilibration or main."""

    name: str
    steps: int
    thermostat: object | None
    temperature_K: float | None
    integrator: Integrator | None = None


@dataclasses.dataclass
class ChunkOutput:
    state: MDState
    neighbor: object
    frames: jax.Array        # [max_frames + 1, N, 3] Cartesian Å; the last slot is scratch
    thermo: jax.Array        # [max_thermo + 1, 3] potential, kinetic, heat (eV)
    bad_step: jax.Array      # first failed step (non-finite, or the failure check), or −1
    frozen: jax.Array        # bool: failed in this or an earlier chunk; no longer stepped
    before_bad: jax.Array    # [N, 3] engine coordinates one step before bad_step


def set_precision(precision: str) -> None:
    """Enable float64 if asked, and full-precision matrix products on every backend
    (TF32 on recent GPUs keeps about three significant digits)."""
    jax.config.update("jax_enable_x64", precision == "float64")
    jax.config.update("jax_default_matmul_precision", "highest")
    log.debug("precision: %s, matmul precision: highest", precision)


def energy_and_force_fn(potential: Potential):
    """``(positions, neighbor) -> (energy eV, forces eV/Å)``: the potential's own
    function when it has one, else automatic differentiation of its energy."""
    if potential.energy_and_force_fn is not None:
        return potential.energy_and_force_fn
    value_and_grad = jax.value_and_grad(potential.energy_fn)

    def energy_and_force(position, neighbor):
        energy, gradient = value_and_grad(position, neighbor)
        return energy, -gradient

    return energy_and_force


def make_chunk_fn(integrator: Integrator, system: System, chunk_steps: int,
                  frame_stride: int, thermo_stride: int, wrap_positions: bool = False,
                  failure_fn=None):
    """Build the device function that runs one chunk.

    The returned ``chunk(state, neighbor, start_step, n_active, kT, frozen)``
    runs ``n_active ≤ chunk_steps`` steps from global step ``start_step`` and
    records a frame when the global step is a multiple of ``frame_stride``
    and a thermo sample when it is a multiple of ``thermo_stride``. It stops
    stepping after the first step whose energy or positions are not finite,
    or for which ``failure_fn(state)`` (optional, a traced bool) is true, and
    does not step at all when ``frozen``. Frames hold continuous (unwrapped)
    Cartesian positions unless ``wrap_positions``, which folds them into the cell.
    """
    max_frames = chunk_steps // frame_stride + 1
    max_thermo = chunk_steps // thermo_stride + 1
    periodic = system.cell is not None

    def advance(state, neighbor, kT):
        new, neighbor = integrator.step_fn(state, neighbor, kT)
        if periodic:
            # An atom moves far less than half a cell per step, so a fractional jump
            # of about ±1 means it was wrapped across that face.
            crossed = jnp.round(new.position - state.position).astype(jnp.int32)
            new = new.set(image=state.image - crossed)
        return new, neighbor

    def output_positions(state):
        if periodic and not wrap_positions:
            return nbr.to_cartesian(state.position + state.image, system)
        return nbr.to_cartesian(state.position, system)

    def slot(step, start_step, stride, limit, record):
        index = step // stride - start_step // stride - 1
        return jnp.where(record & (step % stride == 0), index, limit)

    def chunk(state, neighbor, start_step, n_active, kT, frozen):
        dtype = state.velocity.dtype
        frames = jnp.zeros((max_frames + 1, system.n_atoms, 3), dtype)
        thermo = jnp.zeros((max_thermo + 1, 3), dtype)

        def body(carry, i):
            state, neighbor, frames, thermo, bad_step, before_bad = carry
            step = start_step + i + 1
            active = (i < n_active) & (bad_step < 0) & ~frozen
            previous = state.position
            state, neighbor = lax.cond(active, lambda s, n: advance(s, n, kT),
                                       lambda s, n: (s, n), state, neighbor)

            good = jnp.isfinite(state.potential_energy) & jnp.all(jnp.isfinite(state.position))
            if failure_fn is not None:
                good = good & ~failure_fn(state)
            bad_step = jnp.where(active & ~good, step, bad_step)
            before_bad = jnp.where(active & ~good, previous, before_bad)
            record = active & good

            position = output_positions(state)
            frame_slot = slot(step, start_step, frame_stride, max_frames, record)
            zero = jnp.zeros((), frame_slot.dtype)
            frames = lax.dynamic_update_slice(frames, position[None], (frame_slot, zero, zero))
            sample = jnp.stack([state.potential_energy,
                                kinetic_energy(state.velocity, state.mass), state.heat])
            thermo_slot = slot(step, start_step, thermo_stride, max_thermo, record)
            thermo = lax.dynamic_update_slice(thermo, sample[None].astype(dtype), (thermo_slot, zero))
            return (state, neighbor, frames, thermo, bad_step, before_bad), None

        carry = (state, neighbor, frames, thermo, jnp.asarray(-1, jnp.int32), state.position)
        (state, neighbor, frames, thermo, bad_step, before_bad), _ = lax.scan(
            body, carry, jnp.arange(chunk_steps, dtype=jnp.int32))
        return ChunkOutput(state, neighbor, frames, thermo, bad_step, frozen | (bad_step >= 0),
                           before_bad)

    return chunk


jax.tree_util.register_dataclass(
    ChunkOutput, data_fields=["state", "neighbor", "frames", "thermo", "bad_step", "frozen",
                              "before_bad"], meta_fields=[])


@dataclasses.dataclass
class RunStats:
    """Summary of a finished run: throughput, energy conservation, files."""

    steps: int = 0
    wall_s: float = 0.0
    compile_s: float = 0.0
    compilations: int = 0
    reallocations: int = 0
    nve_drift_eV_per_atom_per_ps: float | None = None
    nve_max_deviation_eV_per_atom: float | None = None
    mean_temperature_K: dict = dataclasses.field(default_factory=dict)
    files: dict = dataclasses.field(default_factory=dict)

    def steps_per_s(self) -> float:
        run_time = self.wall_s - self.compile_s
        return self.steps / run_time if run_time > 0 else float("nan")


class RunHooks:
    """Callbacks of the run loop; the defaults do nothing."""

    def chunk_limit(self, first_step: int) -> int | None:
        """A step the chunk starting after ``first_step`` must end on, or None."""
        return None

    def after_chunk(self, step: int, state: MDState, neighbor, phase: Phase) -> None:
        """Called with the verified state after each chunk's samples are written."""

    def tolerates_failures(self) -> bool:
        """True if failed replicas are frozen and the run goes on; otherwise a
        failure stops the run with :class:`SimulationError`."""
        return False

    def frozen_replicas(self) -> np.ndarray | None:
        """``[R]`` bool: replicas that failed earlier and stay frozen, or None."""
        return None

    def check_chunk(self, output: ChunkOutput, first_step: int, last_step: int,
                    frozen: np.ndarray) -> np.ndarray | None:
        """Inspect a chunk (steps ``first_step + 1 … last_step``) after its samples are
        written; ``frozen`` ``[R]`` marks replicas that were frozen before it. Return
        ``[R]`` bool of further replicas to freeze, or None."""
        return None

    def stop_requested(self) -> bool:
        return False

    def stops_after_chunk(self) -> bool:
        """Return True when the run stops after the chunk last passed to :meth:`after_chunk`."""
        return self.stop_requested()


class Simulation:
    """A system, a potential and its phases, built from a validated input.

    Building checks the input completely (files, box, overlaps, cutoff,
    thermostat settings) before anything is compiled.
    """

    def __init__(self, spec: InputSpec, base_dir: Path, input_path: Path | None = None,
                 system: System | None = None):
        """Build from a validated input; ``system`` replaces the input's system
        (for example a replicated cell in benchmarks)."""
        self.spec = spec
        self.input_path = input_path
        set_precision(spec.precision)
        self.dtype = jnp.float64 if spec.precision == "float64" else jnp.float32
        self.system = system if system is not None else build_system(spec.system, base_dir, spec.seed)
        self.replicas = spec.run.replicas
        distributed.check_replicas(self.replicas)
        self.displacement_fn, self.shift_fn, coordinates = nbr.make_space(self.system, self.dtype)
        self.potential = build_potential(spec.potential, self.system, self.displacement_fn, base_dir,
                                         self.dtype)
        self.neighbors = nbr.make_neighbor_builder(
            self.system, self.displacement_fn, self.potential.cutoff_A, spec.neighbor.skin_A,
            spec.neighbor.capacity_multiplier, self.potential.neighbor_format, self.dtype,
            self.potential.slot_major)
        update = None
        if self.replicas > 1:
            update = self.neighbors.replica_update_fn(spec.neighbor.skin_A)
        self.energy_and_force = (ForceFn(energy_and_force_fn(self.potential)) if update is None else
                                 ForceFn(energy_and_force_fn(self.potential), update))
        self.sharding = replicas.replica_sharding(self.replicas) if self.replicas > 1 else None
        # A device-side failure test ``state -> bool`` (stability studies set it).
        self.failure_fn = None
        self.phases = self._build_phases()
        self.chunk_steps = default_chunk_steps(spec)
        self.timestep_fs = spec.timestep_fs()
        self._initial_coordinates = coordinates
        self._replica_coordinates = self._coordinates_per_replica(coordinates, base_dir, system is None)

    def _coordinates_per_replica(self, coordinates, base_dir, own_system: bool) -> list:
        """Starting coordinates of each replica: a lattice displaced at random is drawn
        with the replica's own seed (seed + r), as its single run would draw it."""
        lattice = self.spec.system.lattice
        frames = self.spec.system.replica_frames
        self._replica_velocities = [self.system.velocities] * self.replicas
        if not own_system or not (frames or (lattice is not None and lattice.displacement_A > 0)):
            return [coordinates] * self.replicas
        result = [coordinates]
        for r in range(1, self.replicas):
            system = build_system(self.spec.system, base_dir, self.spec.seed + r, frame=r if frames else 0)
            if frames and (system.elements != self.system.elements
                           or not np.allclose(system.cell if system.cell is not None else 0,
                                              self.system.cell if self.system.cell is not None else 0)):
                raise InputError(f"{system.source}: frame {r + 1} has other atoms or another cell than "
                                 "frame 1; system.replica_frames needs the same atoms and cell in every frame")
            self._replica_velocities[r] = system.velocities
            result.append(nbr.make_space(system, self.dtype)[2])
        return result

    def _build_phases(self) -> list[Phase]:
        spec = self.spec
        phases = []
        if spec.run.equilibration is not None:
            eq = spec.run.equilibration
            phases.append(Phase("equilibration", eq.steps, eq.thermostat, eq.temperature_K))
        integ = spec.integrator
        phases.append(Phase("main", spec.run.steps, integ.thermostat, integ.temperature_K))
        for phase, where in zip(phases, self._phase_keys()):
            phase.integrator = make_integrator(phase.thermostat, self.energy_and_force, self.shift_fn,
                                               spec.timestep_fs(), self.system.n_atoms, where)
        return phases

    def _phase_keys(self):
        keys = ["run.equilibration"] if self.spec.run.equilibration is not None else []
        return keys + ["integrator"]

    @property
    def total_steps(self) -> int:
        return sum(phase.steps for phase in self.phases)

    # ------------------------------------------------------------ initial state

    def initial_velocities(self, key, replica: int = 0) -> jax.Array:
        """``[N, 3]`` initial velocities (Å / internal time unit) of replica ``replica``."""
        spec, system = self.spec, self.system
        mass = jnp.asarray(system.masses, self.dtype)[:, None]
        if spec.velocities.source == "zero":
            return jnp.zeros((system.n_atoms, 3), self.dtype)
        if spec.velocities.source == "structure":
            velocities = self._replica_velocities[replica]
            if velocities is None:
                raise InputError(f"velocities.source: {system.source} has no velocity columns "
                                 "(extended XYZ 'vel:R:3', Å/fs)")
            return jnp.asarray(velocities * TIME_UNIT_FS, self.dtype)

        kT = kelvin_to_kT(spec.initial_temperature_K())
        velocity = jax.random.normal(key, (system.n_atoms, 3), self.dtype) * jnp.sqrt(kT / mass)
        velocity = remove_com_velocity(velocity, mass)
        n_f = self.phases[0].integrator.degrees_of_freedom
        if n_f == 0 or kT == 0:
            if n_f == 0:
                log.warning("no degrees of freedom after removing centre-of-mass motion: "
                            "velocities are zero and the temperature is reported as 0 K")
            return jnp.zeros_like(velocity)
        # Rescale so the initial temperature is exactly the requested one.
        scale = jnp.sqrt(0.5 * n_f * kT / kinetic_energy(velocity, mass))
        return velocity * scale

    def initial_state(self) -> tuple[MDState, object]:
        """Allocate the neighbor list and build the state at step 0.

        With R replicas every array gains a leading axis of length R; replica
        r is the state a single run with seed ``seed + r`` starts from.
        """
        coordinates = self._initial_coordinates
        neighbor = self.neighbors.allocate(coordinates)
        energy_and_force = jax.jit(self.energy_and_force)
        if self.replicas == 1:
            energy, force = energy_and_force(coordinates, neighbor)
            return self._state_for_seed(self.spec.seed, coordinates, energy, force), neighbor

        positions = jnp.stack(self._replica_coordinates)
        batched = self.neighbors.allocate_replicas(positions, neighbor.max_occupancy)
        states = []
        for r, coordinates in enumerate(self._replica_coordinates):
            energy, force = energy_and_force(coordinates, replicas.take(batched, r))
            states.append(self._state_for_seed(self.spec.seed + r, coordinates, energy, force, r))
        return self.place(replicas.stack(states)), self.place(batched)

    def _state_for_seed(self, seed, coordinates, energy, force, replica: int = 0) -> MDState:
        velocity_key, run_key = jax.random.split(jax.random.PRNGKey(seed))
        mass = jnp.asarray(self.system.masses, self.dtype)[:, None]
        return MDState(position=coordinates, velocity=self.initial_velocities(velocity_key, replica),
                       force=force, potential_energy=energy, mass=mass, rng=run_key,
                       heat=jnp.zeros((), self.dtype), thermostat=(),
                       image=jnp.zeros((self.system.n_atoms, 3), jnp.int32))

    def place(self, tree):
        """Shard a batched pytree's replica axis over the devices (no-op for one device)."""
        return replicas.place(tree, self.sharding)

    def batched(self, fn, in_axes):
        """``fn`` vmapped over the replica axis, or ``fn`` itself for a single run."""
        if self.replicas == 1:
            return fn
        return jax.vmap(fn, in_axes=in_axes, axis_name=nbr.REPLICA_AXIS)

    def single_point(self) -> tuple[float, np.ndarray]:
        """Potential energy (eV) and ``[N, 3]`` Cartesian forces (eV/Å) of the
        starting configuration, in the frame of the normalised cell."""
        coordinates = self._initial_coordinates
        neighbor = self.neighbors.allocate(coordinates)
        energy, force = jax.jit(self.energy_and_force)(coordinates, neighbor)
        return float(energy), np.asarray(force, dtype=np.float64)

    # ------------------------------------------------------------ running

    def temperature_K(self, kinetic_eV: np.ndarray, phase: Phase) -> np.ndarray:
        n_f = phase.integrator.degrees_of_freedom
        if n_f == 0:
            return np.zeros_like(kinetic_eV)
        return kT_to_kelvin(2 * kinetic_eV / n_f)

    def thermo_rows(self, steps, samples, phase: Phase, replica: int = 0) -> list[tuple]:
        """CSV rows for ``samples`` ``[T, 3]`` (potential, kinetic, heat in eV) at ``steps``;
        with replicas, the replica index follows the step."""
        samples = np.asarray(samples, dtype=np.float64)
        potential, kinetic, heat = samples[:, 0], samples[:, 1], samples[:, 2]
        temperature = self.temperature_K(kinetic, phase)
        tag = (replica,) if self.replicas > 1 else ()
        rows = []
        for k, step in enumerate(steps):
            total = potential[k] + kinetic[k]
            rows.append((int(step), *tag, step * self.timestep_fs / 1000, phase.name,
                         float(potential[k]), float(kinetic[k]), float(total),
                         float(total - heat[k]), float(temperature[k])))
        return rows

    def run_phase(self, phase: Phase, state: MDState, neighbor, start_step: int, end_step: int,
                  writers, progress, stats: RunStats, hooks=None,
                  fresh: bool = True) -> tuple[MDState, object, bool]:
        """Run steps ``start_step + 1 … end_step`` of one phase, chunk by chunk.

        Args:
          fresh: the phase starts here, so its thermostat is initialised; false
            when continuing a phase from a checkpoint.
          hooks: a :class:`RunHooks`; it may end chunks early (checkpoint steps),
            act after each chunk, request a stop, and keep failed replicas frozen
            instead of stopping (replicas it reports as frozen stay frozen).

        Returns:
          ``(state, neighbor, stopped)``; ``stopped`` is true when the hooks
          requested a stop before ``end_step``.
        """
        hooks = hooks or RunHooks()
        out = self.spec.output
        kT = jnp.asarray(kelvin_to_kT(phase.temperature_K or 0.0), self.dtype)
        if fresh:
            state = self.batched(phase.integrator.init_fn, (0, None))(state, kT)
        chunk_fn = jax.jit(self.batched(
            make_chunk_fn(phase.integrator, self.system, self.chunk_steps, out.frame_stride,
                          out.thermo_stride, out.wrap_positions, self.failure_fn),
            (0, 0, None, None, None, 0)))
        frozen = hooks.frozen_replicas()
        frozen_host = np.zeros(self.replicas, bool) if frozen is None else np.array(frozen, bool)
        compiled = None

        def dispatch(state, neighbor, first_step, frozen):
            n_active = min(self.chunk_steps, end_step - first_step)
            limit = hooks.chunk_limit(first_step)
            if limit is not None and first_step < limit < first_step + n_active:
                n_active = limit - first_step
            args = (state, neighbor, jnp.asarray(first_step, jnp.int32),
                    jnp.asarray(n_active, jnp.int32), kT, frozen)
            return compiled(*args), first_step, n_active, frozen

        def compile_for(state, neighbor):
            begin = time.perf_counter()
            result = chunk_fn.lower(state, neighbor, jnp.asarray(0, jnp.int32),
                                    jnp.asarray(0, jnp.int32), kT, self._frozen_arg(frozen_host)).compile()
            stats.compile_s += time.perf_counter() - begin
            stats.compilations += 1
            return result

        if end_step <= start_step:
            return state, neighbor, False
        compiled = compile_for(state, neighbor)
        progress.restart_clock(start_step)
        job = dispatch(state, neighbor, start_step, self._frozen_arg(frozen_host))

        while job is not None:
            output, first_step, n_active, frozen_in = job
            if bool(jnp.any(output.neighbor.did_buffer_overflow)):
                neighbor = self._reallocate(state, neighbor, output.neighbor, first_step, stats)
                compiled = compile_for(state, neighbor)
                job = dispatch(state, neighbor, first_step, frozen_in)
                continue

            bad = np.atleast_1d(distributed.to_host(output.bad_step))
            failed = (bad >= 0).any()
            next_step = first_step + n_active
            job = None
            go_on = not failed or hooks.tolerates_failures()
            if go_on and next_step < end_step and not hooks.stop_requested():
                # Replicas frozen on the host after the previous chunk join those the device froze.
                frozen_next = output.frozen | self._frozen_arg(frozen_host)
                job = dispatch(output.state, output.neighbor, next_step, frozen_next)

            self._write_samples(output, first_step, next_step, bad, frozen_host, phase, writers)
            progress.update(next_step if not failed else int(bad[bad >= 0].min()) - 1)
            if failed and not hooks.tolerates_failures():
                raise SimulationError(self._non_finite_message(output, bad, writers))
            more = hooks.check_chunk(output, first_step, next_step, frozen_host.copy())
            frozen_host |= bad >= 0
            if more is not None:
                frozen_host |= np.asarray(more, bool)
            state, neighbor = output.state, output.neighbor
            stats.steps += n_active
            hooks.after_chunk(next_step, state, neighbor, phase)
            if hooks.stops_after_chunk() and next_step < end_step:
                return state, neighbor, True
            if frozen_host.all() and next_step < end_step:
                log.warning("every replica has failed; stopping at step %d", next_step)
                return state, neighbor, True
        return state, neighbor, False

    def _frozen_arg(self, frozen_host: np.ndarray):
        """Return the ``frozen`` chunk argument: a bool, or ``[R]`` bools for replicas."""
        if self.replicas == 1:
            return jnp.asarray(bool(frozen_host[0]))
        return self.place(jnp.asarray(frozen_host))

    def _reallocate(self, state, neighbor, overflowed, first_step, stats):
        position = distributed.to_host(state.position) if self.replicas > 1 else state.position
        new = self.neighbors.grow(position, neighbor, overflowed)
        if self.replicas > 1:
            new = self.place(new)
        stats.reallocations += 1
        log.info("neighbor list overflowed in the chunk starting at step %d: capacity %d -> %d, "
                 "atoms per cell %s -> %s; redoing the chunk", first_step, neighbor.max_occupancy,
                 new.max_occupancy, neighbor.cell_list_capacity, new.cell_list_capacity)
        return new

    def _write_samples(self, output: ChunkOutput, first_step, next_step, bad, frozen, phase, writers):
        """Write each replica's frames and thermo rows up to its last good step;
        replicas frozen before the chunk have none."""
        out = self.spec.output
        trajectory, thermo = writers
        trajectories = replicas.writer_list(trajectory)
        frames = distributed.to_host(output.frames)
        samples = distributed.to_host(output.thermo)
        if self.replicas == 1:
            frames, samples = frames[None], samples[None]
        rows = []
        for r in range(self.replicas):
            if frozen[r]:
                continue
            last_step = next_step if bad[r] < 0 else bad[r] - 1
            frame_steps = _multiples(first_step, last_step, out.frame_stride)
            thermo_steps = _multiples(first_step, last_step, out.thermo_stride)
            if trajectories and len(frame_steps):
                trajectories[r].write(frame_steps, frames[r, :len(frame_steps)])
            rows += self.thermo_rows(thermo_steps, samples[r, :len(thermo_steps)], phase, r)
        if rows:
            thermo.write(sorted(rows, key=lambda row: row[:2]))

    def _non_finite_message(self, output: ChunkOutput, bad: np.ndarray, writers) -> str:
        replica = int(np.argmin(np.where(bad >= 0, bad, np.iinfo(bad.dtype).max)))
        bad_step = int(bad[replica])
        state = output.state if self.replicas == 1 else replicas.take(output.state, replica)
        which = f" in replica {replica}" if self.replicas > 1 else ""
        force = np.asarray(state.force, dtype=np.float64)
        position = np.asarray(state.position, dtype=np.float64)
        broken = np.where(~np.isfinite(force).all(axis=1) | ~np.isfinite(position).all(axis=1))[0]
        if len(broken):
            atoms = ", ".join(str(i + 1) for i in broken[:5])
            detail = f"atoms with non-finite positions or forces: {atoms}"
        else:
            magnitude = np.linalg.norm(force, axis=1)
            top = np.argsort(magnitude)[::-1][:3]
            detail = "largest forces on atoms " + ", ".join(
                f"{i + 1} ({magnitude[i]:.3g} eV/Å)" for i in top)
        trajectory, thermo = writers
        written = thermo.path.parent
        return (f"non-finite potential energy or positions at step {bad_step}{which} "
                f"(t = {bad_step * self.timestep_fs / 1000:g} ps); {detail}; "
                f"outputs up to step {bad_step - 1} are complete in {written}; "
                "check the time step, the starting structure and the potential")


def _multiples(first_step: int, last_step: int, stride: int) -> np.ndarray:
    """Multiples of ``stride`` in (first_step, last_step]."""
    start = (first_step // stride + 1) * stride
    return np.arange(start, last_step + 1, stride, dtype=np.int64)


