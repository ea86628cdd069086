"""Speed study: compile time, throughput and memory over system sizes.

For each size (the input's cell replicated n×n×n) the benchmark measures
the fused engine (one jitted ``lax.scan`` per chunk, as ``mdengine run``
uses it) against a plain Python loop that calls a jitted single step, on
the same state and with the same work per step. Warm-up is excluded, each
timing is repeated, and medians with their spread are reported. Output
files are not written, so this measures the engine alone. With R replicas
both variants advance all of them (vmapped), and atom-steps/s counts every
replica's atoms.
"""

from __future__ import annotations

import json
import logging
import platform
import resource
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from mdengine import __version__
from mdengine.cpu_threads import available_cores
from mdengine.config import InputSpec
from mdengine.simulation import Simulation, make_chunk_fn
from mdengine.system import build_system, replicate
from mdengine.units import kelvin_to_kT

log = logging.getLogger(__name__)


def peak_host_memory_mib() -> float:
    """Peak resident memory of this process so far (MiB; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_device_memory_mib() -> float | None:
    stats = jax.devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return None if peak is None else peak / 2**20


def _timed(function, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        begin = time.perf_counter()
        jax.block_until_ready(function())
        times.append(time.perf_counter() - begin)
    return times


def measure_size(spec: InputSpec, base_dir: Path, repeats_n: int, steps: int, repeats: int,
                 n_replicas: int = 1) -> dict:
    """Benchmark one replication of the input's cell with ``n_replicas`` replicas;
    returns one record."""
    base = build_system(spec.system, base_dir, spec.seed)
    system = replicate(base, (repeats_n,) * 3) if repeats_n > 1 else base
    spec = spec.model_copy(update={"run": spec.run.model_copy(update={"replicas": n_replicas})})
    simulation = Simulation(spec, base_dir, system=system)
    phase = simulation.phases[-1]
    kT = jnp.asarray(kelvin_to_kT(phase.temperature_K or 0.0), simulation.dtype)
    state, neighbor = simulation.initial_state()
    state = simulation.batched(phase.integrator.init_fn, (0, None))(state, kT)
    frozen = jnp.zeros((n_replicas,), bool) if n_replicas > 1 else jnp.asarray(False)

    # Fused: one chunk of `steps` steps with sampling, as in a run.
    out = spec.output
    chunk = jax.jit(simulation.batched(
        make_chunk_fn(phase.integrator, system, steps, out.frame_stride, out.thermo_stride),
        (0, 0, None, None, None, 0)))
    begin = time.perf_counter()
    args = (state, neighbor, jnp.asarray(0, jnp.int32), jnp.asarray(steps, jnp.int32), kT, frozen)
    compiled = chunk.lower(*args).compile()
    compile_s = time.perf_counter() - begin
    warm = compiled(*args)
    if bool(jnp.any(warm.neighbor.did_buffer_overflow)):
        neighbor = simulation.neighbors.grow(state.position, neighbor, warm.neighbor)
        args = (state, neighbor) + args[2:]
        compiled = chunk.lower(*args).compile()
    fused = _timed(lambda: compiled(*args).state.position, repeats)

    # Plain loop: a jitted single step called from Python.
    step = jax.jit(simulation.batched(lambda s, n: phase.integrator.step_fn(s, n, kT), (0, 0)))
    jax.block_until_ready(step(state, neighbor))

    def loop():
        s, n = state, neighbor
        for _ in range(steps):
            s, n = step(s, n)
        return s.position

    plain = _timed(loop, repeats)
    fused_rate = steps / statistics.median(fused)
    plain_rate = steps / statistics.median(plain)
    return {
        "atoms": system.n_atoms, "replicas": n_replicas, "cell_repeats": repeats_n, "steps": steps,
        "devices": 1 if simulation.sharding is None else len(simulation.sharding.mesh.devices.flat),
        "compile_s": compile_s,
        "fused_steps_per_s": fused_rate,
        "fused_steps_per_s_range": [steps / max(fused), steps / min(fused)],
        "loop_steps_per_s": plain_rate,
        "loop_steps_per_s_range": [steps / max(plain), steps / min(plain)],
        "fused_over_loop": fused_rate / plain_rate,
        "ns_per_day": fused_rate * simulation.timestep_fs * 86400 / 1e6,
        "atom_steps_per_s": fused_rate * system.n_atoms * n_replicas,
        "neighbor_capacity": int(neighbor.max_occupancy),
        "peak_host_memory_mib": peak_host_memory_mib(),
        "peak_device_memory_mib": peak_device_memory_mib(),
    }


def environment() -> dict:
    # bench keeps XLA's default CPU pool: one thread per core the process may use.
    return {"mdengine": __version__, "jax": jax.__version__, "backend": jax.default_backend(),
            "devices": [str(d) for d in jax.devices()], "machine": platform.machine(),
            "processor": platform.processor(), "python": platform.python_version(),
            "cpu_cores": available_cores()}


def run_benchmark(spec: InputSpec, base_dir: Path, sizes: list[int], steps: int, repeats: int,
                  output_dir: Path, replica_counts: tuple[int, ...] = (1,)) -> list[dict]:
    """Measure every size and replica count, then write ``bench.json`` and
    ``bench.png`` into ``output_dir``."""
    output_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for n in sizes:
        for n_replicas in replica_counts:
            record = measure_size(spec, base_dir, n, steps, repeats, n_replicas)
            log.info("%7d atoms x %d replicas: fused %.1f steps/s (%.3g atom-steps/s), plain loop "
                     "%.1f steps/s, ratio %.2f, compile %.1f s, peak memory %.0f MiB", record["atoms"],
                     n_replicas, record["fused_steps_per_s"], record["atom_steps_per_s"],
                     record["loop_steps_per_s"], record["fused_over_loop"], record["compile_s"],
                     record["peak_host_memory_mib"])
            records.append(record)
    report = {"environment": environment(), "precision": spec.precision, "records": records}
    (output_dir / "bench.json").write_text(json.dumps(report, indent=2))
    _plot(records, output_dir / "bench.png")
    return records


def _plot(records: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figure, axis = plt.subplots()
    for count in sorted({r["replicas"] for r in records}):
        group = [r for r in records if r["replicas"] == count]
        atoms = [r["atoms"] * count for r in group]
        tag = f", {count} replicas" if count > 1 else ""
        axis.loglog(atoms, [r["atom_steps_per_s"] for r in group], "o-", label="fused scan" + tag)
        axis.loglog(atoms, [r["loop_steps_per_s"] * a for r, a in zip(group, atoms)], "s--",
                    label="Python loop" + tag)
    axis.set_xlabel("atoms (all replicas)")
    axis.set_ylabel("atom-steps/s")
    axis.legend()
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)
