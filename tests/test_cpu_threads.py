"""XLA's CPU pool size: the automatic choice, the option, and the pool JAX really starts."""

import argparse
import os
import subprocess
import sys

import pytest
import yaml

from mdengine.cpu_threads import auto_threads, available_cores, parse_threads
from tests.conftest import REPO, argon_input

MULTI_CORE = pytest.mark.skipif(available_cores() < 2, reason="needs at least 2 usable cores")


@pytest.mark.parametrize("atoms, learned, cores, expected", [
    (9, True, 2, 1),          # ethanol: one thread was 1.5x faster than two
    (36, True, 2, 1),
    (96, True, 2, 2),         # water: the equivariant model ran 1.9x faster on two
    (9, True, 16, 1),
    (960, True, 16, 16),
    (4000, False, 2, 1),      # 4,000 argon atoms: one thread was 8 % faster
    (32000, False, 2, 2),
    (32000, False, 1, 1),
    (0, False, 4, 1),
])
def test_auto_threads_table(atoms, learned, cores, expected):
    assert auto_threads(atoms, learned, cores) == expected


def test_parse_threads_values():
    assert parse_threads("auto") == "auto"
    assert parse_threads("3") == 3
    for bad in ("0", "-2", "two", ""):
        with pytest.raises(argparse.ArgumentTypeError, match="positive integer"):
            parse_threads(bad)


PROBE = """
import os, sys
from mdengine.cpu_threads import start_backend
allowed = os.sched_getaffinity(0)
started = start_backend(int(sys.argv[1]))
import jax.numpy as jnp
(jnp.ones((512, 512)) @ jnp.ones((512, 512))).block_until_ready()
pool = [t for t in os.listdir("/proc/self/task")
        if open(f"/proc/self/task/{t}/comm").read().strip().endswith("XLAEigen")]
pinned = [t for t in os.listdir("/proc/self/task") if os.sched_getaffinity(int(t)) != allowed]
print(started, len(pool), len(pinned))
"""


@MULTI_CORE
@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="reads thread names from /proc")
@pytest.mark.parametrize("threads", [1, 2])
def test_pool_size_and_affinity_restored(threads):
    result = subprocess.run([sys.executable, "-c", PROBE, str(threads)], capture_output=True,
                            text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    started, pool, pinned = map(int, result.stdout.split())
    assert started == threads
    # XLA names its pool's threads "...XLAEigen"; one per pool slot.
    assert pool == threads
    assert pinned == 0


@MULTI_CORE
def test_run_logs_one_thread_for_small_system(tmp_path):
    path = tmp_path / "input.yaml"
    path.write_text(yaml.safe_dump(argon_input(steps=20)))
    command = [sys.executable, "-m", "mdengine.cli", "run", str(path), "--output-dir",
               str(tmp_path / "out")]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr
    cores = available_cores()
    expected = (f"XLA CPU thread pool: 1 of {cores} cores (auto: one thread per 8000 atoms "
                "with a classical potential, 256 atoms")
    assert expected in result.stderr
    assert expected in (tmp_path / "out" / "mdengine.log").read_text()
    # Counting the atoms before JAX starts must not repeat the structure's log lines.
    assert result.stderr.count("wrapped ") == 1

    result = subprocess.run(command + ["--overwrite", "--cpu-threads", "2"], capture_output=True,
                            text=True, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr
    assert f"XLA CPU thread pool: 2 of {cores} cores (--cpu-threads)" in result.stderr

    result = subprocess.run(command + ["--overwrite", "--cpu-threads", str(cores + 1)],
                            capture_output=True, text=True, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr
    assert (f"XLA CPU thread pool: {cores} of {cores} cores (--cpu-threads {cores + 1}, capped "
            f"at the {cores} cores this process may use)") in result.stderr


def test_run_rejects_zero_threads(tmp_path):
    path = tmp_path / "input.yaml"
    path.write_text(yaml.safe_dump(argon_input(steps=20)))
    result = subprocess.run([sys.executable, "-m", "mdengine.cli", "run", str(path),
                             "--cpu-threads", "0"], capture_output=True, text=True, cwd=REPO,
                            timeout=120)
    assert result.returncode == 2
    assert result.stderr == ("mdengine run: error: argument --cpu-threads: expected 'auto' or a "
                             "positive integer, got '0' (see mdengine run --help)\n")
    assert not (tmp_path / "out").exists()
