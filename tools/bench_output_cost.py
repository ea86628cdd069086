#!/usr/bin/env python
"""Measure what trajectory, thermo and checkpoint output cost in throughput.

Runs one input twice per repeat, alternating: once as written (its own
output intervals), once with output reduced to the minimum (no trajectory,
one thermo row at the end, no checkpoints), after untimed warm-up runs.
Compilation is excluded from
both timings (the run's own accounting); everything else, including the
final checkpoint write, is included. Prints steps/s of each and the
median ratio, and appends a Markdown row to --record if given.

    .venv/bin/python tools/bench_output_cost.py inputs/argon.yaml --repeats 3
"""

from __future__ import annotations

import argparse
import logging
import platform
import statistics
import tempfile
from pathlib import Path

import jax

from mdengine import __version__
from mdengine.config import load_input
from mdengine.runner import execute
from mdengine.simulation import Simulation


def steps_per_s(input_path: Path, overrides: dict, work_dir: Path) -> float:
    spec = load_input(input_path, overrides)
    simulation = Simulation(spec, input_path.parent)
    stats = execute(simulation, work_dir)
    return stats.steps_per_s()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, help="override run.steps")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first (page cache, allocator)")
    parser.add_argument("--record", type=Path, help="Markdown file to append the result to")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    base = load_input(args.input)
    steps = args.steps or base.run.steps
    total = steps + (base.run.equilibration.steps if base.run.equilibration else 0)
    minimal = {"run": {"steps": steps},
               "output": {"trajectory": None, "thermo_stride": total, "checkpoint": None}}
    with_output = {"run": {"steps": steps}}

    results = {"with output": [], "minimal output": []}
    with tempfile.TemporaryDirectory() as scratch:
        for warmup in range(args.warmup):
            steps_per_s(args.input, with_output, Path(scratch) / f"warmup-{warmup}")
        for repeat in range(args.repeats):
            for name, overrides in (("with output", with_output), ("minimal output", minimal)):
                rate = steps_per_s(args.input, overrides, Path(scratch) / f"{name}-{repeat}".replace(" ", "_"))
                results[name].append(rate)
                print(f"repeat {repeat + 1}: {name:15s} {rate:10.2f} steps/s", flush=True)

    ratios = [a / b for a, b in zip(results["with output"], results["minimal output"])]
    median_ratio = statistics.median(ratios)
    out = base.output
    checkpoint = out.checkpoint
    settings = (f"frames every {out.frame_stride}, thermo every {out.thermo_stride}, checkpoint "
                + ("off" if checkpoint is None else
                   f"every {checkpoint.interval_steps or '-'} steps / {checkpoint.interval_minutes} min and at the end"))
    summary = (f"{args.input} ({total} steps; {settings}): with output "
               f"{statistics.median(results['with output']):.2f} steps/s, minimal "
               f"{statistics.median(results['minimal output']):.2f} steps/s, ratio {median_ratio:.4f} "
               f"(range {min(ratios):.4f}-{max(ratios):.4f}, {args.repeats} repeats); cost "
               f"{(1 - median_ratio) * 100:.2f} %")
    print(summary)
    if args.record:
        machine = f"{platform.machine()}, {jax.devices()[0].platform}, jax {jax.__version__}, mdengine {__version__}"
        with args.record.open("a") as handle:
            handle.write(f"| {summary} | {machine} |\n")


if __name__ == "__main__":
    main()
