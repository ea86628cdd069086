#!/usr/bin/env python
"""MD speed of one SchNet model in mdengine and in PyTorch peers (schnetpack, torch-sim).

Run with mdengine's interpreter::

    .venv/bin/python tools/peer_learned.py [--peer-python tools/peers/.venv/bin/python]

The tool builds a seeded random schnetpack SchNet (128 features,
3 interactions, 20 Gaussians, 5 Å cosine cutoff) and imports it into mdengine
with ``mdengine import``. It then times NVE velocity Verlet at 0.5 fs in float32
on ethanol (9 atoms, free space), a 64-molecule water box (192 atoms) and a
512-molecule water box (1,536 atoms, inputs/data/water32.extxyz replicated
4×2×2). The 9.865 Å water32 cell replicated 2×1×1 has a 9.865 Å height,
shorter than 2 × (cutoff + skin), so the 192-atom box is built instead
as a 4×4×4 lattice of water molecules at the same density (12.43 Å cube).

Engines, each in its own long-lived worker process:

- ``mdengine``: one compiled ``lax.scan`` chunk of the integrator and the
  neighbor-list update (the fused path of ``mdengine run``); compilation is
  excluded.
- ``spk-md``: schnetpack's own simulator (``schnetpack.md``) with its
  velocity Verlet and ``NeighborListMD`` (matscipy, skin as mdengine's).
- ``spk-ase``: schnetpack's ASE calculator (``SpkCalculator``, matscipy
  neighbor list built every step) driven by ASE's ``VelocityVerlet``.
- ``torch-sim``: torch-sim's NVE integrator with the wrapper in
  tools/peers/torchsim_schnetpack.py (vesin neighbor list every step).

Every worker warms up first, then the engines take turns, one timed run each
per round, for ``--repeats`` rounds, so that load from other processes falls
on all of them alike. Each run restarts from the same initial positions and
velocities, so every run does the same work and a random-weight model stays
near its starting structure (the final temperature of each run is recorded
as a stability check). The thread count is
set with ``taskset`` (cores 0, or 0 and 1) plus ``torch.set_num_threads`` for
torch and, for one thread, ``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false``
for XLA. Within those cores mdengine sizes XLA's thread pool as ``mdengine
run`` does by default (``--cpu-threads auto``): one thread for ethanol.
Each run records the process's CPU time over wall time, which shows how
many cores it used.

Output: a printed table and ``--output`` (JSON).
"""

from __future__ import annotations

import argparse
import copy
import inspect
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger("peer_learned")
REPO = Path(__file__).resolve().parents[1]
EXPORTER = REPO / "tools" / "peers" / "export_schnetpack.py"
DEFAULT_PEER_PYTHON = REPO / "tools" / "peers" / ".venv" / "bin" / "python"
ENGINES = ("mdengine", "spk-md", "spk-ase", "torch-sim")
SYSTEMS = ("ethanol", "water192", "water1536")
# Timed steps per run, per system and engine: about 1–8 s per run on a 2-core EPYC VM.
STEPS = {
    "ethanol": {"mdengine": 1000, "spk-md": 200, "spk-ase": 200, "torch-sim": 200},
    "water192": {"mdengine": 40, "spk-md": 10, "spk-ase": 10, "torch-sim": 10},
    "water1536": {"mdengine": 4, "spk-md": 2, "spk-ase": 2, "torch-sim": 2},
}
TIMESTEP_FS = 0.5
TEMPERATURE_K = 300.0
CUTOFF_A = 5.0
SKIN_A = 0.5
# mdengine's default neighbor-list headroom (``neighbor.capacity_multiplier``).
CAPACITY_MULTIPLIER = 1.25
SEED = 0
# Factor on the last readout layer of the random model: it scales energies and forces
# down tenfold, so that the random potential heats the unrelaxed structures less.
WEIGHT_SCALE = 0.1
WATER_DENSITY_PER_A3 = 96 / 9.865**3   # atoms per Å³ in inputs/data/water32.extxyz


# ---------------------------------------------------------------- structures


def water_lattice_box(path: Path, molecules_per_side: int = 4, seed: int = SEED) -> Path:
    """Write a cubic box of water molecules on a simple cubic lattice, random orientations.

    The geometry of each molecule is the first molecule of water32.extxyz;
    the box side gives water32's atom density. For each molecule, the
    orientation with the largest distance to the atoms placed so far, out of
    200 random ones, is kept.
    """
    import ase
    import ase.io
    import numpy as np
    from scipy.spatial.transform import Rotation

    template = ase.io.read(REPO / "inputs" / "data" / "water32.extxyz")[:3]
    template.positions -= template.positions[0]
    count = molecules_per_side**3
    side = (3 * count / WATER_DENSITY_PER_A3) ** (1 / 3)
    spacing = side / molecules_per_side
    rng = np.random.default_rng(seed)
    atoms = ase.Atoms(cell=[side] * 3, pbc=True)
    for index in np.ndindex(*(molecules_per_side,) * 3):
        centre = (np.array(index) + 0.5) * spacing
        best, best_distance = None, -1.0
        for _ in range(200 if len(atoms) else 1):
            rotation = Rotation.random(random_state=rng.integers(1 << 31)).as_matrix()
            candidate = ase.Atoms(template.get_chemical_symbols(),
                                  positions=template.positions @ rotation.T + centre)
            if len(atoms) == 0:
                best = candidate
                break
            combined = atoms.copy()
            combined.extend(candidate)
            distance = combined.get_all_distances(mic=True)[len(atoms):, :len(atoms)].min()
            if distance > best_distance:
                best, best_distance = candidate, distance
        atoms.extend(best)
    ase.io.write(path, atoms, format="extxyz")
    return path


def prepare_structures(folder: Path) -> dict[str, dict]:
    """Write the three structures; returns name → {path, periodic, atoms}."""
    import ase.io

    ethanol = folder / "ethanol.xyz"
    ethanol.write_text((REPO / "inputs" / "data" / "ethanol.xyz").read_text())
    water192 = water_lattice_box(folder / "water192.extxyz")
    water1536 = folder / "water1536.extxyz"
    ase.io.write(water1536, ase.io.read(REPO / "inputs" / "data" / "water32.extxyz").repeat((4, 2, 2)),
                 format="extxyz")
    return {
        "ethanol": {"path": str(ethanol), "periodic": False, "atoms": 9},
        "water192": {"path": str(water192), "periodic": True, "atoms": len(ase.io.read(water192))},
        "water1536": {"path": str(water1536), "periodic": True, "atoms": 1536},
    }


def prepare_model(folder: Path, peer_python: Path) -> tuple[Path, Path]:
    """Build the random schnetpack model, export it and import it: (model.pt, mdengine dir)."""
    model_file, export = folder / "schnet.pt", folder / "schnet.npz"
    for arguments in (["random", str(model_file), "--features", "128", "--interactions", "3",
                       "--gaussians", "20", "--cutoff", str(CUTOFF_A), "--seed", str(SEED),
                       "--weight-scale", str(WEIGHT_SCALE)],
                      ["export", str(model_file), "--output", str(export)]):
        subprocess.run([str(peer_python), str(EXPORTER), *arguments], check=True)
    model_dir = folder / "mdengine_model"
    subprocess.run([str(Path(sys.executable).parent / "mdengine"), "import", str(export), "--output",
                    str(model_dir), "--species", "H,C,O", "--overwrite"], check=True, cwd=REPO)
    return model_file, model_dir


# ---------------------------------------------------------------- workers


class Worker:
    """A worker process that replies to ``run`` with one timed MD run (a JSON line)."""

    def __init__(self, engine: str, command: list[str], env: dict):
        self.engine = engine
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True, env=env, cwd=REPO)
        self.ready = self._read()

    def _read(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            code = self.process.wait()
            raise RuntimeError(f"{self.engine} worker exited with status {code} before its first reply")
        return json.loads(line)

    def run(self) -> dict:
        self.process.stdin.write("run\n")
        self.process.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.write("quit\n")
            self.process.stdin.flush()
            self.process.wait(timeout=60)


def worker_command(engine: str, threads: int, structure: dict, model_file: Path, model_dir: Path,
                   peer_python: Path, steps: int, skin_A: float,
                   script: Path = Path(__file__).resolve()) -> tuple[list[str], dict]:
    """Command line and environment of one worker, pinned to ``threads`` cores.

    ``script`` is the tool whose ``--worker ENGINE`` runs the worker. It is this
    file by default, and tools/peer_equivariant.py passes itself.
    """
    env = dict(os.environ)
    cores = "0" if threads == 1 else "0,1"
    python = sys.executable if engine == "mdengine" else str(peer_python)
    model = str(model_dir if engine == "mdengine" else model_file)
    command = ["taskset", "-c", cores, python, str(script), "--worker", engine,
               "--structure", structure["path"], "--model", model, "--threads", str(threads),
               "--steps", str(steps), "--skin", str(skin_A)]
    if structure["periodic"]:
        command.append("--periodic")
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    if engine == "mdengine" and threads == 1:
        env["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false"
    if engine != "mdengine":
        env["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"   # schnetpack's loaders call torch.load(file)
    return command, env


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def serve(advance, reset, temperature, steps: int, setup: dict) -> None:
    """Reply to ``run`` lines on stdin with timed runs of ``advance()`` (``steps`` steps each).

    ``reset()`` restores the initial state before each run, outside the timing.
    """
    advance()   # warm-up: compilation, caches, first neighbor list
    print(json.dumps(dict(setup, ready=True)), flush=True)
    for line in sys.stdin:
        if line.strip() != "run":
            break
        reset()
        cpu, begin = cpu_seconds(), time.perf_counter()
        advance()
        wall = time.perf_counter() - begin
        cpu = cpu_seconds() - cpu
        value = float(temperature())
        print(json.dumps({"steps": steps, "wall_s": wall, "cpu_s": cpu,
                          "steps_per_s": steps / wall, "cores_used": cpu / wall,
                          "temperature_K": value, "finite": value == value and value < 1e5}),
              flush=True)


def mdengine_worker(args) -> None:
    import jax
    import jax.numpy as jnp

    from mdengine.config import InputSpec
    from mdengine.cpu_threads import configure_for_input

    spec = InputSpec.model_validate({
        "system": {"structure": args.structure, "periodic": args.periodic},
        "potential": {"kind": "learned", "model": args.model},
        "integrator": {"ensemble": "nve", "timestep_fs": TIMESTEP_FS},
        "velocities": {"source": "maxwell_boltzmann", "temperature_K": TEMPERATURE_K},
        "neighbor": {"skin_A": args.skin, "capacity_multiplier": CAPACITY_MULTIPLIER},
        "run": {"steps": args.steps},
        "output": {"frame_stride": args.steps, "thermo_stride": args.steps, "trajectory": None},
        "seed": SEED,
        "precision": "float32",
    })
    # The pool size that `mdengine run` would choose, set before jax_md starts JAX.
    configure_for_input(spec, Path(args.structure).parent)
    from mdengine.simulation import Simulation, make_chunk_fn
    from mdengine.units import kelvin_to_kT

    simulation = Simulation(spec, Path(args.structure).parent)
    phase = simulation.phases[-1]
    kT = jnp.asarray(kelvin_to_kT(0.0), simulation.dtype)
    state, neighbor = simulation.initial_state()
    state = phase.integrator.init_fn(state, kT)
    chunk_fn = make_chunk_fn(phase.integrator, simulation.system, args.steps, args.steps,
                             args.steps)
    initial = {"state": state, "neighbor": neighbor}
    current = dict(initial)
    start, count = jnp.asarray(0, jnp.int32), jnp.asarray(args.steps, jnp.int32)
    # Newer engine versions add a ``frozen`` flag (stop stepping a failed replica).
    extra = (jnp.asarray(False),) if "frozen" in inspect.signature(chunk_fn).parameters else ()
    compiled = jax.jit(chunk_fn).lower(state, neighbor, start, count, kT, *extra).compile()
    n_atoms, masses = simulation.system.n_atoms, jnp.asarray(simulation.system.masses)

    def advance():
        out = compiled(current["state"], current["neighbor"], start, count, kT, *extra)
        jax.block_until_ready(out.state.position)
        if bool(out.neighbor.did_buffer_overflow):
            raise RuntimeError("neighbor list overflow; raise capacity_multiplier")
        current["state"], current["neighbor"] = out.state, out.neighbor

    def temperature():
        velocity = current["state"].velocity
        kinetic = 0.5 * jnp.sum(masses[:, None] * velocity**2)
        return float(2 * kinetic / (3 * n_atoms - 3) / kelvin_to_kT(1.0))

    idx = neighbor.idx
    slots = int(idx.shape[1])
    serve(advance, lambda: current.update(initial), temperature, args.steps,
          {"engine": "mdengine", "neighbor_slots": slots,
                                             "jax": jax.__version__})


def torch_threads(threads: int):
    """Import torch, set ``threads`` intra-op threads and one inter-op thread, and return torch."""
    import torch

    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    return torch


def torch_setup(threads: int):
    torch = torch_threads(threads)
    sys.path.insert(0, str(REPO / "tools" / "peers"))
    import export_schnetpack

    return torch, export_schnetpack.import_schnetpack()


def read_atoms(path: str, periodic: bool):
    import ase.io

    atoms = ase.io.read(path)
    atoms.pbc = periodic
    return atoms


def spk_md_worker(args) -> None:
    torch, spk = torch_setup(args.threads)
    from schnetpack import md
    from schnetpack.md.calculators import SchNetPackCalculator

    atoms = read_atoms(args.structure, args.periodic)
    system = md.System()
    system.load_molecules(atoms, n_replicas=1, position_unit_input="Angstrom")
    torch.manual_seed(SEED)
    md.initial_conditions.MaxwellBoltzmannInit(TEMPERATURE_K).initialize_system(system)
    neighbor_list = md.neighborlist_md.NeighborListMD(
        cutoff=CUTOFF_A, cutoff_shell=args.skin, base_nbl=spk.transform.MatScipyNeighborList)
    calculator = SchNetPackCalculator(args.model, force_key="forces", energy_unit="eV",
                                      position_unit="Angstrom", neighbor_list=neighbor_list,
                                      energy_key="energy")
    integrator = md.integrators.VelocityVerlet(time_step=TIMESTEP_FS)
    simulator = md.Simulator(system, integrator, calculator, progress=False).to(torch.float32)
    initial = (system.positions.clone(), system.momenta.clone())

    def reset():
        system.positions, system.momenta = initial[0].clone(), initial[1].clone()

    serve(lambda: simulator.simulate(args.steps), reset,
          lambda: system.temperature.reshape(-1)[0], args.steps,
          {"engine": "spk-md", "torch": torch.__version__})


def spk_ase_worker(args) -> None:
    torch, spk = torch_setup(args.threads)
    from ase import units
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from ase.md.verlet import VelocityVerlet
    from schnetpack.interfaces import SpkCalculator

    atoms = read_atoms(args.structure, args.periodic)
    atoms.calc = SpkCalculator(args.model, neighbor_list=spk.transform.MatScipyNeighborList(
        cutoff=CUTOFF_A), energy_key="energy", force_key="forces", energy_unit="eV",
        position_unit="Angstrom", dtype=torch.float32)
    MaxwellBoltzmannDistribution(atoms, temperature_K=TEMPERATURE_K,
                                 rng=__import__("numpy").random.default_rng(SEED))
    dynamics = VelocityVerlet(atoms, timestep=TIMESTEP_FS * units.fs)
    initial = (atoms.get_positions(), atoms.get_momenta())

    def reset():
        atoms.set_positions(initial[0])
        atoms.set_momenta(initial[1])

    serve(lambda: dynamics.run(args.steps), reset, atoms.get_temperature, args.steps,
          {"engine": "spk-ase", "torch": torch.__version__})


def torch_sim_worker(args) -> None:
    torch, _ = torch_setup(args.threads)
    from torchsim_schnetpack import SchNetPackModel

    sys.path.insert(0, str(REPO / "tools" / "peers"))
    import export_schnetpack

    model = SchNetPackModel(export_schnetpack.load_model(args.model, "float32"), CUTOFF_A,
                            dtype=torch.float32)
    serve_torch_sim(model, args, {"engine": "torch-sim"})


def serve_torch_sim(model, args, setup: dict) -> None:
    """Serve timed runs of torch-sim's NVE velocity Verlet with ``model`` (float32, CPU).

    ``args`` gives the structure, periodicity and steps per run. The ready reply
    is ``setup`` with torch-sim's version added.
    """
    import torch
    import torch_sim as ts
    from torch_sim.units import MetalUnits

    atoms = read_atoms(args.structure, args.periodic)
    if not args.periodic:
        atoms.cell = [50.0, 50.0, 50.0]   # vesin ignores the cell without periodicity
    state = ts.io.atoms_to_state(atoms, torch.device("cpu"), torch.float32)
    kT = torch.tensor(TEMPERATURE_K * MetalUnits.temperature, dtype=torch.float32)
    dt = torch.tensor(TIMESTEP_FS * 1e-3 * MetalUnits.time, dtype=torch.float32)
    init_fn, update_fn = ts.integrators.nve(model, dt=dt, kT=kT, seed=SEED)
    initial = init_fn(state)
    current = {"state": copy.deepcopy(initial)}

    def advance():
        for _ in range(args.steps):
            current["state"] = update_fn(current["state"])

    def temperature():
        s = current["state"]
        kinetic = 0.5 * torch.sum(s.momenta**2 / s.masses[:, None])
        return float(2 * kinetic / (3 * s.positions.shape[0] - 3) / MetalUnits.temperature)

    serve(advance, lambda: current.update(state=copy.deepcopy(initial)), temperature,
          args.steps, dict(setup, torch_sim=getattr(ts, "__version__", "?")))


WORKERS = {"mdengine": mdengine_worker, "spk-md": spk_md_worker, "spk-ase": spk_ase_worker,
           "torch-sim": torch_sim_worker}


# ---------------------------------------------------------------- profile


def profile_mdengine(structure: dict, model_dir: Path, skin_A: float, capacity: float,
                     repeats: int = 5) -> dict:
    """Measure where one mdengine step goes.

    Returns the neighbor-list slots against the real pairs, and the time of the
    model's energy and forces on the padded list, on an exact pair list, and of one step.
    """
    import ase.io
    import jax
    import jax.numpy as jnp
    import numpy as np
    from ase.neighborlist import neighbor_list

    from mdengine.config import InputSpec
    from mdengine.learned.graph import make_edges
    from mdengine.learned.model_io import load_model
    from mdengine.simulation import Simulation
    from mdengine.units import kelvin_to_kT

    spec = InputSpec.model_validate({
        "system": {"structure": structure["path"], "periodic": structure["periodic"]},
        "potential": {"kind": "learned", "model": str(model_dir)},
        "integrator": {"ensemble": "nve", "timestep_fs": TIMESTEP_FS},
        "velocities": {"source": "maxwell_boltzmann", "temperature_K": TEMPERATURE_K},
        "neighbor": {"skin_A": skin_A, "capacity_multiplier": capacity},
        "run": {"steps": 1}, "seed": SEED, "precision": "float32"})
    simulation = Simulation(spec, Path(structure["path"]).parent)
    state, neighbor = simulation.initial_state()
    phase = simulation.phases[-1]
    kT = jnp.asarray(kelvin_to_kT(0.0), simulation.dtype)
    state = phase.integrator.init_fn(state, kT)

    atoms = ase.io.read(structure["path"])
    atoms.pbc = structure["periodic"]
    pairs_cutoff = len(neighbor_list("i", atoms, CUTOFF_A))
    pairs_radius = len(neighbor_list("i", atoms, CUTOFF_A + skin_A)) if skin_A > 0 else pairs_cutoff
    slots = int(neighbor.idx.shape[1])

    def timed(function, *arguments) -> float:
        jax.block_until_ready(function(*arguments))
        times = []
        for _ in range(repeats):
            begin = time.perf_counter()
            jax.block_until_ready(function(*arguments))
            times.append(time.perf_counter() - begin)
        return statistics.median(times)

    energy_and_force = jax.jit(simulation.energy_and_force)
    padded_s = timed(energy_and_force, state.position, neighbor)

    # The same network on exactly the pairs within the cutoff, without padding.
    model = load_model(model_dir)
    i, j, shift = neighbor_list("ijS", atoms, CUTOFF_A)
    cell = np.asarray(atoms.cell[:]) if structure["periodic"] else np.zeros((3, 3))
    species_index = {s: k for k, s in enumerate(model.species)}
    species = jnp.asarray([species_index[s] for s in atoms.get_chemical_symbols()], jnp.int32)
    module = model.module
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), model.params)
    shift_e, scale_e = model.shift_scale(jnp.float32)
    offsets = jnp.asarray(shift @ cell, jnp.float32)
    dst, src = jnp.asarray(i, jnp.int32), jnp.asarray(j, jnp.int32)

    def exact_energy(positions):
        from mdengine.learned.architectures import atomic_energies
        vectors = positions[src] + offsets - positions[dst]
        edges = make_edges(vectors, dst, src, jnp.ones(dst.shape, bool), positions.shape[0],
                           CUTOFF_A)
        return jnp.sum(atomic_energies(module, params, shift_e, scale_e, species, edges))

    exact = jax.jit(jax.value_and_grad(exact_energy))
    exact_s = timed(exact, jnp.asarray(atoms.positions, jnp.float32))

    step = jax.jit(lambda s, n: phase.integrator.step_fn(s, n, kT))
    step_s = timed(step, state, neighbor)
    return {"system": structure["path"], "atoms": len(atoms), "skin_A": skin_A,
            "capacity_multiplier": capacity, "neighbor_slots": slots,
            "pairs_within_cutoff": pairs_cutoff, "pairs_within_cutoff_plus_skin": pairs_radius,
            "slots_per_real_pair": slots / pairs_cutoff,
            "force_call_padded_s": padded_s, "force_call_exact_pairs_s": exact_s,
            "jitted_step_s": step_s}


# ---------------------------------------------------------------- orchestration


def alternate_rounds(label: str, commands: dict[str, tuple[list[str], dict]],
                     repeats: int) -> tuple[dict[str, dict], dict[str, list[dict]]]:
    """Start one worker per engine, then run ``repeats`` rounds of one timed run each.

    ``commands`` maps engine → (command line, environment). Returns each
    engine's ready reply and its runs, in round order.
    """
    workers = {}
    try:
        for engine, (command, env) in commands.items():
            log.info("starting %s on %s", engine, label)
            workers[engine] = Worker(engine, command, env)
        runs = {engine: [] for engine in workers}
        for round_index in range(repeats):
            for engine, worker in workers.items():
                result = worker.run()
                runs[engine].append(result)
                log.info("%s %s round %d: %.1f steps/s, %.2f cores, %.0f K", label, engine,
                         round_index, result["steps_per_s"], result["cores_used"],
                         result["temperature_K"])
    finally:
        for worker in workers.values():
            worker.close()
    return {engine: worker.ready for engine, worker in workers.items()}, runs


def summarize(system: str, atoms: int, threads: int, engine: str, steps: int, ready: dict,
              runs: list[dict]) -> dict:
    """Summarize one engine's runs: median and range of steps/s, cores used, stability."""
    rates = [r["steps_per_s"] for r in runs]
    return {"system": system, "atoms": atoms, "threads": threads, "engine": engine,
            "steps_per_run": steps, "median_steps_per_s": statistics.median(rates),
            "range_steps_per_s": [min(rates), max(rates)],
            "cores_used": statistics.median(r["cores_used"] for r in runs),
            "final_temperature_K": runs[-1]["temperature_K"],
            "stable": all(r["finite"] for r in runs), "setup": ready, "runs": runs}


def measure(args, structures, model_file, model_dir) -> list[dict]:
    records = []
    for threads in args.threads:
        for system in args.systems:
            commands = {engine: worker_command(engine, threads, structures[system], model_file,
                                               model_dir, args.peer_python,
                                               STEPS[system][engine], args.skin)
                        for engine in args.engines}
            ready, runs = alternate_rounds(f"{system} {threads}t", commands, args.repeats)
            records += [summarize(system, structures[system]["atoms"], threads, engine,
                                  STEPS[system][engine], ready[engine], runs[engine])
                        for engine in args.engines]
    return records


def table(records: list[dict]) -> str:
    rows = ["| system | threads | engine | steps/s median | range | cores used | mdengine / engine |",
            "|---|---|---|---|---|---|---|"]
    for record in records:
        reference = next((r for r in records if r["system"] == record["system"]
                          and r["threads"] == record["threads"] and r["engine"] == "mdengine"), None)
        ratio = (f"{reference['median_steps_per_s'] / record['median_steps_per_s']:.2f}"
                 if reference and record["engine"] != "mdengine" else "")
        low, high = record["range_steps_per_s"]
        rows.append(f"| {record['system']} ({record['atoms']}) | {record['threads']} | "
                    f"{record['engine']} | {record['median_steps_per_s']:.1f} | {low:.1f}–{high:.1f} | "
                    f"{record['cores_used']:.2f} | {ratio} |")
    return "\n".join(rows)


def add_worker_arguments(parser: argparse.ArgumentParser, engines) -> None:
    """Add the hidden options that a worker process of ``engines`` is started with."""
    parser.add_argument("--worker", choices=engines, help=argparse.SUPPRESS)
    parser.add_argument("--structure", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--periodic", action="store_true", help=argparse.SUPPRESS)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="MD speed of one SchNet in mdengine and PyTorch peers")
    parser.add_argument("--peer-python", type=Path, default=DEFAULT_PEER_PYTHON,
                        help="Python of the peer environment (torch, schnetpack, torch-sim)")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated systems")
    parser.add_argument("--engines", default=",".join(ENGINES), help="comma-separated engines")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per engine")
    parser.add_argument("--skin", type=float, default=SKIN_A, help="neighbor-list skin (Å)")
    parser.add_argument("--work-dir", type=Path, default=REPO / "runs" / "peer_learned",
                        help="folder for the model and structures")
    parser.add_argument("--output", type=Path, default=None,
                        help="JSON results (default: WORK_DIR/peer_learned.json)")
    parser.add_argument("--profile", action="store_true",
                        help="instead of the comparison, profile mdengine on the water boxes at "
                             "skin 0.5 and 0 Å")
    add_worker_arguments(parser, ENGINES)
    args = parser.parse_args(argv)

    if args.worker:
        args.threads = int(args.threads)
        WORKERS[args.worker](args)
        return 0

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    args.systems = [s for s in args.systems.split(",") if s]
    args.engines = [e for e in args.engines.split(",") if e]
    args.threads = [int(t) for t in args.threads.split(",")]
    unknown = sorted(set(args.systems) - set(SYSTEMS)) + sorted(set(args.engines) - set(ENGINES))
    if unknown:
        parser.error(f"unknown systems or engines {unknown}; known: {SYSTEMS} and {ENGINES}")
    if not args.peer_python.exists():
        parser.error(f"--peer-python {args.peer_python} not found; run tools/peers/setup.sh")
    check = ("import sys; sys.path.insert(0, sys.argv[1]); import export_schnetpack, torch_sim; "
             "export_schnetpack.import_schnetpack()")
    probe = subprocess.run([str(args.peer_python), "-c", check, str(EXPORTER.parent)],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["no output"])[-1]
        parser.error(f"--peer-python {args.peer_python} cannot import schnetpack and torch-sim "
                     f"({last}); give an environment that has both")
    args.work_dir = args.work_dir.resolve()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    begin = time.perf_counter()
    structures = prepare_structures(args.work_dir)
    model_file, model_dir = prepare_model(args.work_dir, args.peer_python)
    if args.profile:
        profiles = [profile_mdengine(structures[system], model_dir, skin, CAPACITY_MULTIPLIER)
                    for system in args.systems if system != "ethanol" for skin in (args.skin, 0.0)]
        output = args.output or args.work_dir / "profile.json"
        output.write_text(json.dumps(profiles, indent=2))
        for profile in profiles:
            print(json.dumps(profile))
        return 0
    records = measure(args, structures, model_file, model_dir)
    versions = subprocess.run(
        [str(args.peer_python), "-c", "import importlib.metadata as m; import json; print(json.dumps("
         "{p: m.version(p) for p in ('torch', 'schnetpack', 'torch-sim-atomistic', 'ase')}))"],
        capture_output=True, text=True, check=True).stdout
    import jax
    result = {"date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv),
              "versions": dict(json.loads(versions), jax=jax.__version__),
              "timestep_fs": TIMESTEP_FS, "skin_A": args.skin, "precision": "float32",
              "total_s": time.perf_counter() - begin, "records": records}
    output = args.output or args.work_dir / "peer_learned.json"
    output.write_text(json.dumps(result, indent=2))
    print(table(records))
    print(f"{output}: written in {result['total_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
