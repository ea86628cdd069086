"""Replicas: equal to single runs with the same seeds, sharded equal to unsharded,
overflow in one replica regrows the shared list, resume restores every replica."""

from __future__ import annotations

import copy
import os
import subprocess
import sys

import mdtraj
import numpy as np
import pytest

from conftest import REPO, argon_input, build, read_thermo, run
from mdengine.runner import execute

CSVR = {"kind": "csvr", "tau_fs": 100.0}


def frames(path):
    return mdtraj.load(str(path), top=str(path.with_suffix(".topology.pdb"))).xyz


def replica_input(replicas, steps=60, **kwargs):
    spec = argon_input(steps=steps, ensemble="nvt", thermostat=CSVR, precision="float64", **kwargs)
    spec["run"]["replicas"] = replicas
    return spec


def test_replicas_equal_single_runs_with_the_same_seeds(tmp_path):
    spec = replica_input(3)
    stats, thermo = run(spec, tmp_path / "batch")
    assert stats.compilations == 1
    assert set(thermo["replica"]) == {0, 1, 2}

    for r in range(3):
        single = copy.deepcopy(spec)
        single["run"]["replicas"] = 1
        single["seed"] = spec["seed"] + r
        _, alone = run(single, tmp_path / f"single{r}")
        mine = thermo["replica"] == r
        # Each replica runs the single run's operations on its own slice of the
        # batch. Joint rebuilds may rebuild a replica's list earlier than its single
        # run does, but this all-pairs list keeps pairs in index order and pairs
        # beyond the cutoff add exact zeros, so the numbers agree bit for bit.
        for column in ("step", "potential_energy_eV", "kinetic_energy_eV", "conserved_energy_eV"):
            np.testing.assert_array_equal(thermo[column][mine], alone[column], err_msg=column)
        np.testing.assert_array_equal(frames(tmp_path / f"batch/trajectory.replica{r}.dcd"),
                                      frames(tmp_path / f"single{r}/trajectory.dcd"))


SHARDED_RUN = """
import sys, jax
from pathlib import Path
sys.path.insert(0, {tests!r})
from conftest import build
from mdengine.runner import execute
import json
spec = json.loads({spec!r})
simulation = build(spec)
print("devices", len(jax.devices()), "sharded", simulation.sharding is not None)
execute(simulation, Path(spec["output"]["directory"]))
"""


def run_with_devices(spec, output_dir, devices):
    import json
    spec = copy.deepcopy(spec)
    spec["output"]["directory"] = str(output_dir)
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    script = SHARDED_RUN.format(tests=str(REPO / "tests"), spec=json.dumps(spec))
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_sharded_over_four_devices_equals_one_device(tmp_path):
    spec = replica_input(4, steps=80)
    spec["integrator"]["thermostat"] = {"kind": "langevin", "friction_per_ps": 5.0}
    spec["neighbor"] = {"skin_A": 0.6}
    out = run_with_devices(spec, tmp_path / "four", 4)
    assert "devices 4 sharded True" in out
    out = run_with_devices(spec, tmp_path / "one", 1)
    assert "devices 1 sharded False" in out

    assert (tmp_path / "four/thermo.csv").read_bytes() == (tmp_path / "one/thermo.csv").read_bytes()
    for r in range(4):
        np.testing.assert_array_equal(frames(tmp_path / f"four/trajectory.replica{r}.dcd"),
                                      frames(tmp_path / f"one/trajectory.replica{r}.dcd"))


def test_overflow_in_any_replica_regrows_and_redoes(tmp_path):
    # A list sized exactly for the perfect lattice (multiplier 1) overflows once
    # the replicas melt; the shared list regrows and the chunk is redone.
    spec = replica_input(3, steps=300, temperature_K=300.0,
                         neighbor={"skin_A": 1.4, "capacity_multiplier": 1.0})
    spec["integrator"]["thermostat"] = {"kind": "langevin", "friction_per_ps": 5.0}
    spec["run"]["chunk_steps"] = 50
    spec["system"]["lattice"]["displacement_A"] = 0.0
    stats, thermo = run(spec, tmp_path / "batch")
    assert stats.reallocations >= 1
    assert stats.compilations == 1 + stats.reallocations

    # A single run with room to spare never regrows. The lists differ in
    # length, so sums over them may round differently: agreement to float64
    # rounding grown by 1.5 ps of chaos, not bit for bit.
    single = copy.deepcopy(spec)
    single["run"]["replicas"] = 1
    single["seed"] = spec["seed"] + 2
    single["neighbor"]["capacity_multiplier"] = 2.0
    single_stats, alone = run(single, tmp_path / "single")
    assert single_stats.reallocations == 0
    mine = thermo["replica"] == 2
    np.testing.assert_allclose(thermo["potential_energy_eV"][mine], alone["potential_energy_eV"],
                               rtol=1e-9)


def straight_and_split(tmp_path, run_first_half):
    """Run 2 replicas for 120 steps straight, and as 60 steps by ``run_first_half(spec,
    directory)`` resumed here to 120. Returns the two output directories."""
    spec = replica_input(2, steps=120)
    spec["output"]["checkpoint"] = {"interval_steps": 60}
    run(spec, tmp_path / "straight")

    half = copy.deepcopy(spec)
    half["run"]["steps"] = 60
    run_first_half(half, tmp_path / "split")
    spec["output"]["directory"] = str(tmp_path / "split")
    execute(build(spec), tmp_path / "split", resume=True)
    return tmp_path / "straight", tmp_path / "split"


def test_replica_run_resumes_bit_identically(tmp_path):
    straight, split = straight_and_split(tmp_path, run)

    assert (split / "thermo.csv").read_bytes() == (straight / "thermo.csv").read_bytes()
    for r in range(2):
        np.testing.assert_array_equal(frames(split / f"trajectory.replica{r}.dcd"),
                                      frames(straight / f"trajectory.replica{r}.dcd"))


def test_checkpoint_from_two_devices_resumes_on_one(tmp_path):
    # Orbax records the device layout a checkpoint was written on; the restore
    # must place the arrays on this run's devices instead of rejecting them.
    def on_two_devices(spec, directory):
        assert "devices 2 sharded True" in run_with_devices(spec, directory, 2)

    straight, split = straight_and_split(tmp_path, on_two_devices)

    assert not (split / "checkpoints.corrupt").exists()
    assert (split / "thermo.csv").read_bytes() == (straight / "thermo.csv").read_bytes()


def test_replica_count_change_is_refused_on_resume(tmp_path):
    from mdengine.config import InputError
    spec = replica_input(2, steps=20)
    run(spec, tmp_path / "out")
    spec["run"]["replicas"] = 3
    spec["output"]["directory"] = str(tmp_path / "out")
    with pytest.raises(InputError, match="replicas: 2 -> 3"):
        execute(build(spec), tmp_path / "out", resume=True)
    # The checkpoint is readable, just another input's: it stays where it was.
    assert not (tmp_path / "out/checkpoints.corrupt").exists()


def test_non_finite_replica_stops_a_plain_run_naming_it(tmp_path):
    from mdengine.simulation import SimulationError
    # A plug-in energy undefined below 2 Å, driven hot with a long step.
    spec = argon_input(integrator={"ensemble": "nve", "timestep_fs": 20.0}, temperature_K=3000.0,
                       output={"frame_stride": 1, "thermo_stride": 1},
                       run={"steps": 400, "chunk_steps": 50, "replicas": 2})
    spec["potential"] = {"kind": "custom", "function": "log_barrier:log_barrier", "cutoff_A": 6.0,
                         "search_path": ["tests/plugins"]}
    with pytest.raises(SimulationError, match="in replica [01]") as err:
        run(spec, tmp_path / "out")
    bad_step = int(str(err.value).split("at step ")[1].split()[0])
    thermo = read_thermo(tmp_path / "out/thermo.csv")
    assert thermo["step"].max() == bad_step - 1
    assert np.all(np.isfinite(thermo["potential_energy_eV"]))


def write_frames(path, count, seed=3):
    """``count`` frames of a 256-atom argon fcc box, each displaced differently (extended XYZ)."""
    from mdengine.config import LatticeSpec
    from mdengine.system import make_lattice
    base = make_lattice(LatticeSpec(kind="fcc", element="Ar", lattice_constant_A=5.754,
                                    repeats=(4, 4, 4)), 0)
    rng = np.random.default_rng(seed)
    lattice = " ".join(f"{v:.6f}" for v in base.cell.reshape(-1))
    blocks = []
    for _ in range(count):
        positions = base.positions + rng.uniform(-0.2, 0.2, base.positions.shape)
        lines = [f"Ar {x:.6f} {y:.6f} {z:.6f}" for x, y, z in positions]
        blocks.append(f"{len(lines)}\nLattice=\"{lattice}\" Properties=species:S:1:pos:R:3\n"
                      + "\n".join(lines))
    path.write_text("\n".join(blocks) + "\n")
    return path


def test_replicas_start_from_the_frames_of_a_structure_file(tmp_path):
    from mdengine.system import read_extxyz
    path = write_frames(tmp_path / "frames.extxyz", 3)
    spec = replica_input(3, steps=20)
    spec["system"] = {"structure": str(path), "replica_frames": True}
    run(spec, tmp_path / "out")
    for r in range(3):
        start = frames(tmp_path / f"out/trajectory.replica{r}.dcd")[0] * 10   # nm -> Å
        frame = read_extxyz(path, r)
        # The engine wraps atoms into the cubic cell: compare under the minimum image.
        side = frame.cell[0, 0]
        difference = start - frame.positions
        difference -= side * np.round(difference / side)
        assert np.abs(difference).max() < 1e-4


def test_too_few_frames_for_the_replicas_is_rejected(tmp_path):
    from mdengine.config import InputError
    path = write_frames(tmp_path / "frames.extxyz", 2)
    spec = replica_input(3, steps=20)
    spec["system"] = {"structure": str(path), "replica_frames": True}
    with pytest.raises(InputError, match="has 2 frame\\(s\\), but frame 3 is needed"):
        build(spec)
