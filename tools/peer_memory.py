#!/usr/bin/env python3
"""Peak host memory of ``mdengine run`` against atom count, for the LJ benchmark system.

For each size the tool writes the LAMMPS ``in.lj`` system of tools/peer_lj.py
(fcc at ρ* = 0.8442, T* = 1.44, cutoff 2.5 σ, skin 0.3 σ, argon units,
float32) with n × n × n cells (4 n³ atoms) as an input file, and runs it with
``mdengine run`` in its own process for a few NVE steps, with no trajectory
and no checkpoints. The peak resident set size (RSS) of that process comes
from ``os.wait4``. It covers everything a run does: building the lattice, the
overlap check, allocating the neighbor list, compiling and stepping.

While a run goes on, its RSS is polled from /proc every 0.2 s. The run is
killed when the RSS passes ``--limit-gib`` or when the machine's available
memory falls under 2 GiB, so a size that does not fit is reported as such
and does not push other processes into the out-of-memory killer.

Run it with mdengine's own interpreter::

    .venv/bin/python tools/peer_memory.py --cells 10,20,40,63 --output runs/peer_memory.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peer_lj  # noqa: E402  (the benchmark definition shared with tools/peer_lj.py)

log = logging.getLogger("peer_memory")

REPO = Path(__file__).resolve().parent.parent
POLL_S = 0.2
MIN_AVAILABLE_BYTES = 2 * 2**30


def available_memory_bytes() -> int:
    """MemAvailable from /proc/meminfo (bytes)."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("MemAvailable is missing from /proc/meminfo")


def resident_bytes(pid: int) -> int | None:
    """Current RSS of a process (bytes), or None once it has exited."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def measure(cells: int, steps: int, limit_bytes: int, work_dir: Path, source: Path | None) -> dict:
    """Run ``mdengine run`` on the benchmark with ``cells``³ fcc cells; return one record."""
    atoms = 4 * cells**3
    input_path = work_dir / f"lj_{atoms}.yaml"
    output_dir = work_dir / f"run_{atoms}"
    input_path.write_text(peer_lj.mdengine_input_yaml(cells, steps, output_dir))
    command = [str(Path(sys.executable).parent / "mdengine"), "run", str(input_path),
               "--overwrite", "--output-dir", str(output_dir)]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    if source is not None:
        env["PYTHONPATH"] = str(source) + (f":{env['PYTHONPATH']}" if env.get("PYTHONPATH") else "")
    log_path = work_dir / f"run_{atoms}.log"

    log.info("%d atoms (%d^3 cells): %s", atoms, cells, shlex.join(command))
    begin = time.perf_counter()
    with log_path.open("w") as log_file:
        process = subprocess.Popen(command, env=env, stdout=log_file, stderr=subprocess.STDOUT)
        killed_reason = None
        while True:
            # os.wait4 reaps the child itself and returns its own resource usage.
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid != 0:
                break
            if killed_reason is None:
                rss = resident_bytes(process.pid) or 0
                if rss > limit_bytes:
                    killed_reason = (f"RSS {rss / 2**30:.1f} GiB passed the limit of "
                                     f"{limit_bytes / 2**30:.1f} GiB")
                elif available_memory_bytes() < MIN_AVAILABLE_BYTES:
                    killed_reason = (f"the machine's available memory fell under "
                                     f"{MIN_AVAILABLE_BYTES / 2**30:.0f} GiB at RSS {rss / 2**30:.1f} GiB")
                if killed_reason is not None:
                    log.warning("%d atoms: killing mdengine (pid %d): %s", atoms, process.pid,
                                killed_reason)
                    os.kill(process.pid, signal.SIGKILL)
            time.sleep(POLL_S)
        process.returncode = os.waitstatus_to_exitcode(status)
    wall_s = time.perf_counter() - begin
    # ru_maxrss is in KiB on Linux.
    peak_bytes = usage.ru_maxrss * 1024
    exit_code = process.returncode
    summary = [line.strip() for line in log_path.read_text().splitlines()
               if "atom-steps/s" in line or "error" in line.lower()][-3:]
    record = {"cells": cells, "atoms": atoms, "steps": steps, "exit_code": exit_code,
              "completed": exit_code == 0, "killed": killed_reason,
              "peak_rss_MiB": peak_bytes / 2**20, "peak_rss_bytes_per_atom": peak_bytes / atoms,
              "wall_s": wall_s, "log": str(log_path), "log_summary": summary}
    log.info("%d atoms: exit %d, peak RSS %.0f MiB (%.0f bytes/atom), %.0f s%s", atoms, exit_code,
             record["peak_rss_MiB"], record["peak_rss_bytes_per_atom"], wall_s,
             f", killed: {killed_reason}" if killed_reason else "")
    return record


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Peak host memory (RSS) of mdengine on the LJ benchmark against atom count.")
    parser.add_argument("--cells", default="10,20,30,40,50,63",
                        help="fcc cells per side n, one run each with 4 n^3 atoms "
                             "(default: 10,20,30,40,50,63 = 4,000 to 1,000,188 atoms)")
    parser.add_argument("--steps", type=int, default=10, help="NVE steps per run (default: 10)")
    parser.add_argument("--limit-gib", type=float, default=20.0,
                        help="kill a run whose RSS passes this many GiB (default: 20)")
    parser.add_argument("--work-dir", type=Path, default=REPO / "runs" / "peer_memory",
                        help="folder for inputs, logs and run outputs (default: runs/peer_memory)")
    parser.add_argument("--output", type=Path, default=None,
                        help="JSON results file (default: WORK_DIR/peer_memory.json)")
    parser.add_argument("--mdengine-source", type=Path, default=None,
                        help="folder containing the mdengine package to import, e.g. a snapshot "
                             "made with 'git archive'; default: the installed mdengine")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cells_list = peer_lj.parse_int_list(args.cells, "--cells")
    if args.steps < 1:
        raise SystemExit(f"error: --steps: expected a positive integer, got {args.steps}")
    if args.limit_gib <= 0:
        raise SystemExit(f"error: --limit-gib: expected a positive number, got {args.limit_gib}")
    if args.mdengine_source is not None and not (args.mdengine_source / "mdengine").is_dir():
        raise SystemExit(f"error: --mdengine-source: {args.mdengine_source} contains no mdengine "
                         "package folder")
    # Below 4 cells per side (a box under 6.7 σ) the cutoff plus the skin, 2.8 σ,
    # exceeds half the box, which mdengine rejects.
    if min(cells_list) < 4:
        raise SystemExit("error: --cells: use at least 4 cells per side, so that the cutoff plus "
                         "the skin (2.8 sigma) stays under half the box")

    work_dir = args.work_dir.resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    output = args.output or work_dir / "peer_memory.json"
    limit_bytes = int(args.limit_gib * 2**30)
    records = []
    for cells in sorted(cells_list):
        record = measure(cells, args.steps, limit_bytes, work_dir, args.mdengine_source)
        records.append(record)
        if not record["completed"]:
            log.info("stopping: %d atoms did not complete, so larger sizes are skipped",
                     record["atoms"])
            break

    report = {"date": date.today().isoformat(),
              "command": shlex.join([Path(sys.executable).name] + sys.argv),
              "machine": peer_lj.machine_description(), "versions": peer_lj.mdengine_versions(),
              "python": platform.python_version(), "limit_GiB": args.limit_gib, "records": records}
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")

    print("| atoms | steps | completed | peak RSS (MiB) | bytes/atom | wall (s) |")
    print("|---:|---:|---|---:|---:|---:|")
    for record in records:
        print(f"| {record['atoms']:,} | {record['steps']} | {'yes' if record['completed'] else 'no'} | "
              f"{record['peak_rss_MiB']:.0f} | {record['peak_rss_bytes_per_atom']:.0f} | "
              f"{record['wall_s']:.0f} |")
    print(f"results in {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
