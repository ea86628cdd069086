#!/usr/bin/env python
"""MD speed of one input under several XLA CPU YNNPACK settings, each in a fresh process.

Run with mdengine's interpreter::

    .venv/bin/python tools/bench_xla_flags.py INPUT.yaml [--steps 200] [--threads 1]

XLA reads ``XLA_FLAGS`` once per process, so every setting runs in its own
worker process, pinned with ``taskset`` to ``--threads`` cores (one thread
also sets ``--xla_cpu_multi_thread_eigen=false``). A worker builds the
input's simulation, compiles one ``lax.scan`` chunk of ``--steps`` steps
(compilation excluded), runs it once to warm up and then ``--repeats``
times, and reports the median steps/s. A worker that dies, for example with
a segmentation fault inside XLA, is reported with its exit status. The
settings, in order, are mdengine's own (``LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT``,
see mdengine/xla_flags.py), jaxlib's default (the worker removes mdengine's
flag after importing mdengine, before JAX starts), the dot, element-wise and
reduction fusion types named explicitly, and YNNPACK off.

Output: a printed table and ``--output`` (JSON).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger("bench_xla_flags")
FLAG = "--xla_cpu_experimental_ynn_fusion_type"
SETTINGS = {
    "mdengine (individual dots)": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT",
    "jaxlib default": None,
    "dot, element-wise, reduction": "LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_ELTWISE,LIBRARY_FUSION_TYPE_REDUCE",
    "YNNPACK off": "LIBRARY_FUSION_TYPE_INVALID",
}


def worker(input_path: Path, steps: int, repeats: int, xla_flags: str) -> None:
    """Time ``repeats`` compiled chunks of ``steps`` steps and print one JSON line.

    ``xla_flags`` replaces ``XLA_FLAGS`` after mdengine's import has added its own.
    """
    import mdengine  # noqa: F401  (adds mdengine's flag, replaced below)

    os.environ["XLA_FLAGS"] = xla_flags
    import jax
    import jax.numpy as jnp

    from mdengine.config import load_input
    from mdengine.simulation import Simulation, make_chunk_fn
    from mdengine.units import kelvin_to_kT

    spec = load_input(input_path, {"run": {"steps": steps}})
    simulation = Simulation(spec, input_path.parent)
    phase = simulation.phases[-1]
    kT = jnp.asarray(kelvin_to_kT(0.0), simulation.dtype)
    state, neighbor = simulation.initial_state()
    state = phase.integrator.init_fn(state, kT)
    chunk_fn = make_chunk_fn(phase.integrator, simulation.system, steps, steps, steps)
    arguments = (state, neighbor, jnp.asarray(0, jnp.int32), jnp.asarray(steps, jnp.int32), kT,
                 jnp.asarray(False))
    compiled = jax.jit(chunk_fn).lower(*arguments).compile()

    jax.block_until_ready(compiled(*arguments))
    times = []
    for _ in range(repeats):
        begin = time.perf_counter()
        jax.block_until_ready(compiled(*arguments))
        times.append(time.perf_counter() - begin)
    rates = [steps / t for t in times]
    print(json.dumps({"atoms": simulation.system.n_atoms, "median_steps_per_s": statistics.median(rates),
                      "range_steps_per_s": [min(rates), max(rates)],
                      "jax": jax.__version__}), flush=True)


def run_setting(args, name: str, value: str | None) -> dict:
    """Run one worker with ``FLAG=value`` (no YNNPACK flag for None) and return its record."""
    flags = [] if value is None else [f"{FLAG}={value}"]
    if args.threads == 1:
        flags.append("--xla_cpu_multi_thread_eigen=false")
    xla_flags = " ".join(flags)
    cores = ",".join(str(core) for core in range(args.threads))
    command = ["taskset", "-c", cores, sys.executable, str(Path(__file__).resolve()), "--worker",
               str(args.input.resolve()), "--steps", str(args.steps), "--repeats", str(args.repeats),
               f"--xla-flags={xla_flags}"]
    result = subprocess.run(command, capture_output=True, text=True)
    record = {"setting": name, "xla_flags": xla_flags, "exit_status": result.returncode}
    if result.returncode == 0:
        record.update(json.loads(result.stdout.strip().splitlines()[-1]))
        log.info("%s: %.1f steps/s", name, record["median_steps_per_s"])
    else:
        log.warning("%s: worker exited with status %d: %s", name, result.returncode,
                    (result.stderr.strip().splitlines() or ["no output"])[-1])
    return record


def table(records: list[dict]) -> str:
    lines = ["| YNNPACK setting | steps/s median | range | exit status |", "|---|---:|---|---:|"]
    for record in records:
        if record["exit_status"] == 0:
            low, high = record["range_steps_per_s"]
            lines.append(f"| {record['setting']} | {record['median_steps_per_s']:.1f} | "
                         f"{low:.1f}–{high:.1f} | 0 |")
        else:
            lines.append(f"| {record['setting']} | crashed | | {record['exit_status']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="MD speed under several XLA YNNPACK settings")
    parser.add_argument("input", type=Path, help="mdengine YAML input")
    parser.add_argument("--steps", type=int, default=200, help="steps per timed chunk")
    parser.add_argument("--repeats", type=int, default=3, help="timed chunks per setting")
    parser.add_argument("--threads", type=int, default=1, choices=(1, 2), help="cores to pin to")
    parser.add_argument("--output", type=Path, default=None, help="JSON results file")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--xla-flags", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.input, args.steps, args.repeats, args.xla_flags)
        return 0

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    records = [run_setting(args, name, value) for name, value in SETTINGS.items()]
    print(table(records))
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps({"input": str(args.input), "steps": args.steps,
                                           "threads": args.threads, "records": records}, indent=1))
        print(f"{args.output}: written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
