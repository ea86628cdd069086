"""Multi-process runs: two local processes joined by jax.distributed, with gloo
collectives on the CPU and two devices each. They stop together when one of
them is signalled. After a resume, their files equal those of one process
with one device that ran straight through."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import yaml

from conftest import REPO
from test_replicas import frames, replica_input



def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_input(tmp_path, steps=400):
    spec = replica_input(4, steps=steps)
    spec["integrator"]["thermostat"] = {"kind": "langevin", "friction_per_ps": 5.0}
    spec["neighbor"] = {"skin_A": 0.6}
    spec["run"]["chunk_steps"] = 20
    spec["output"]["checkpoint"] = {"interval_steps": 100000}
    path = tmp_path / "input.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def cli(args, devices=1, process=None):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    return subprocess.Popen([sys.executable, "-m", "mdengine.cli", *map(str, args)], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def start_two_processes(input_path, output_dir, *extra):
    port = free_port()
    return [cli(["run", input_path, "--output-dir", output_dir, *extra,
                 "--coordinator", f"127.0.0.1:{port}", "--num-processes", 2, "--process-id", i],
                devices=2) for i in range(2)]


def finish(processes, returncode=0):
    results = [p.communicate(timeout=600) for p in processes]
    for process, (_, err) in zip(processes, results):
        assert process.returncode == returncode, err[-3000:]
    return results


def wait_for_thermo_step(path, step, processes):
    """Poll until process 0 has written the thermo row of ``step``."""
    for _ in range(1200):
        if path.is_file() and any(line.startswith(f"{step},") for line in path.read_text().splitlines()):
            return
        assert all(p.poll() is None for p in processes), "a process ended before the signal"
        time.sleep(0.1)
    raise AssertionError(f"no thermo row for step {step} in {path}")


def run_one_process(input_path, output_dir, *extra):
    process = cli(["run", input_path, "--output-dir", output_dir, *extra])
    _, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-3000:]


def assert_same_outputs(a, b):
    assert (a / "thermo.csv").read_bytes() == (b / "thermo.csv").read_bytes()
    for r in range(4):
        np.testing.assert_array_equal(frames(a / f"trajectory.replica{r}.dcd"),
                                      frames(b / f"trajectory.replica{r}.dcd"))


def test_signal_stops_both_processes(tmp_path):
    path = write_input(tmp_path)
    run_one_process(path, tmp_path / "one")

    processes = start_two_processes(path, tmp_path / "two")
    wait_for_thermo_step(tmp_path / "two/thermo.csv", 20, processes)
    processes[1].send_signal(signal.SIGTERM)
    results = finish(processes, returncode=128 + signal.SIGTERM)
    stops = [re.search(r"stopped at step (\d+) on SIGTERM", err) for _, err in results]
    assert stops[0] is not None
    assert stops[1] is not None
    assert stops[0].group(1) == stops[1].group(1)
    assert int(stops[0].group(1)) < 400

    results = finish(start_two_processes(path, tmp_path / "two", "--resume"))
    # Process 0 logs and writes. Process 1 only computes.
    assert f"resuming from the checkpoint of step {stops[0].group(1)}" in results[0][1]
    assert "resuming" not in results[1][1]
    assert_same_outputs(tmp_path / "two", tmp_path / "one")


def test_replicas_must_fill_devices(tmp_path):
    spec = replica_input(3, steps=10)
    path = tmp_path / "three.yaml"
    path.write_text(yaml.safe_dump(spec))
    port = free_port()
    processes = [cli(["run", path, "--output-dir", tmp_path / "out", "--coordinator", f"127.0.0.1:{port}",
                      "--num-processes", 2, "--process-id", i], devices=2) for i in range(2)]
    for process in processes:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 2
        assert "3 replicas cannot be spread over the 4 devices of 2 processes" in err
    assert not (tmp_path / "out").exists()


def test_coordinator_options_need_each_other(tmp_path):
    process = cli(["run", REPO / "inputs/argon.yaml", "--output-dir", tmp_path / "out", "--process-id", 0])
    _, err = process.communicate(timeout=120)
    assert process.returncode == 2
    assert "--num-processes and --process-id need --coordinator HOST:PORT" in err
