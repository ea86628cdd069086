"""Checkpoints and resume: bit-identical continuation, kills, signals, bad checkpoints."""

import copy
import os
import random
import signal
import subprocess
import sys
import time

import mdtraj
import numpy as np
import pytest
import yaml

from mdengine.checkpoint import Checkpointer, inspect_checkpoint
from mdengine.config import InputError, InputSpec
from mdengine.runner import CheckpointHooks, RunInterrupted, _state_template, execute
from mdengine.simulation import Simulation
from tests.conftest import REPO, argon_input

THERMOSTATS = {
    "nve": None,
    "nose_hoover": {"kind": "nose_hoover", "tau_fs": 100.0, "chain_length": 3},
    "langevin": {"kind": "langevin", "friction_per_ps": 5.0},
    "csvr": {"kind": "csvr", "tau_fs": 100.0},
}


def resumable_input(thermostat=None, precision="float64", steps=300):
    ensemble = "nve" if thermostat is None else "nvt"
    spec = argon_input(steps=steps, ensemble=ensemble, thermostat=thermostat, precision=precision,
                       output={"frame_stride": 20, "thermo_stride": 10,
                               "checkpoint": {"interval_steps": 100, "keep": 3}},
                       run={"steps": steps, "chunk_steps": 60})
    spec["run"]["equilibration"] = {"steps": 50, "temperature_K": 100.0,
                                    "thermostat": {"kind": "langevin", "friction_per_ps": 2.0}}
    return spec


def run_to(spec, output_dir, steps, resume=False):
    spec = copy.deepcopy(spec)
    spec["run"]["steps"] = steps
    spec["output"]["directory"] = str(output_dir)
    return execute(Simulation(InputSpec.model_validate(spec), REPO), output_dir, resume=resume)


def final_state(spec, output_dir):
    simulation = Simulation(InputSpec.model_validate(spec), REPO)
    checkpointer = Checkpointer(output_dir / "checkpoints")
    step = checkpointer.steps()[-1]
    metadata = checkpointer.read_metadata(step)
    state, _, _ = checkpointer.restore(step, _state_template(simulation, metadata["phase_index"]),
                                       simulation.dtype)
    checkpointer.close()
    return step, state


def frames(output_dir):
    with mdtraj.open(str(output_dir / "trajectory.dcd")) as handle:
        return handle.read()[0]


def assert_same_run(spec, first, second):
    step_a, state_a = final_state(spec, first)
    step_b, state_b = final_state(spec, second)
    assert step_a == step_b
    assert np.array_equal(np.asarray(state_a.position), np.asarray(state_b.position))
    assert np.array_equal(np.asarray(state_a.velocity), np.asarray(state_b.velocity))
    assert np.array_equal(np.asarray(state_a.rng), np.asarray(state_b.rng))
    assert (first / "thermo.csv").read_bytes() == (second / "thermo.csv").read_bytes()
    assert np.array_equal(frames(first), frames(second))


@pytest.mark.parametrize("precision", ["float32", "float64"])
@pytest.mark.parametrize("name", list(THERMOSTATS))
def test_resume_bit_identical(tmp_path, name, precision):
    # 50 equilibration + 300 steps straight, against 50 + 130 then a resume to 300.
    spec = resumable_input(THERMOSTATS[name], precision)
    run_to(spec, tmp_path / "straight", 300)
    run_to(spec, tmp_path / "split", 130)
    run_to(spec, tmp_path / "split", 300, resume=True)
    assert_same_run(spec, tmp_path / "straight", tmp_path / "split")


def test_resume_with_cell_list(tmp_path):
    # Cutoff 4.5 Å + skin 0.5 Å in a 23 Å box: four cells per side, so jax-md bins atoms in
    # a cell list whose buffer size depends on the positions it was allocated for. The
    # resumed run must rebuild its lists with the original buffers to stay bit-identical.
    spec = resumable_input(THERMOSTATS["langevin"], "float32", steps=600)
    spec["potential"]["cutoff_A"] = 4.5
    spec["neighbor"] = {"skin_A": 0.5}
    spec["integrator"]["temperature_K"] = 300.0
    run_to(spec, tmp_path / "straight", 600)
    run_to(spec, tmp_path / "split", 230)
    run_to(spec, tmp_path / "split", 600, resume=True)
    assert_same_run(spec, tmp_path / "straight", tmp_path / "split")


def test_resume_twice_extends(tmp_path):
    # A finished run extended twice never rewrites or duplicates a step.
    spec = resumable_input(THERMOSTATS["csvr"])
    run_to(spec, tmp_path / "straight", 300)
    run_to(spec, tmp_path / "split", 100)
    run_to(spec, tmp_path / "split", 200, resume=True)
    run_to(spec, tmp_path / "split", 300, resume=True)
    assert_same_run(spec, tmp_path / "straight", tmp_path / "split")
    steps = np.loadtxt(tmp_path / "split" / "thermo.csv", delimiter=",", skiprows=1, usecols=0)
    assert len(steps) == len(np.unique(steps))


def test_resume_complete_run_noop(tmp_path):
    spec = resumable_input()
    run_to(spec, tmp_path, 100)
    before = (tmp_path / "thermo.csv").read_bytes()
    stats = run_to(spec, tmp_path, 100, resume=True)
    assert stats.steps == 0
    assert (tmp_path / "thermo.csv").read_bytes() == before


def test_incompatible_input_refused(tmp_path):
    spec = resumable_input()
    run_to(spec, tmp_path, 100)
    changed = copy.deepcopy(spec)
    changed["potential"]["species"]["Ar"]["epsilon_eV"] = 0.011
    with pytest.raises(InputError) as err:
        run_to(changed, tmp_path, 200, resume=True)
    assert "potential.species.Ar.epsilon_eV: 0.0104 -> 0.011" in str(err.value)


def test_strides_may_change(tmp_path):
    spec = resumable_input()
    run_to(spec, tmp_path, 100)
    changed = copy.deepcopy(spec)
    changed["output"]["thermo_stride"] = 5
    stats = run_to(changed, tmp_path, 200, resume=True)
    assert stats.steps == 100


def test_corrupt_newest_falls_back(tmp_path, caplog):
    # Damage every data file of the newest checkpoint: it must be reported and skipped.
    spec = resumable_input(THERMOSTATS["langevin"])
    run_to(spec, tmp_path / "straight", 300)
    run_to(spec, tmp_path / "split", 250)
    newest = tmp_path / "split" / "checkpoints" / "300"
    for root, _, files in os.walk(newest / "state"):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "r+b") as handle:
                handle.truncate(max(os.path.getsize(path) // 3, 1))
    with caplog.at_level("ERROR"):
        run_to(spec, tmp_path / "split", 300, resume=True)
    assert "checkpoint of step 300" in caplog.text
    assert (tmp_path / "split" / "checkpoints.corrupt").is_dir()
    assert_same_run(spec, tmp_path / "straight", tmp_path / "split")


def test_inspect_reads_run(tmp_path):
    spec = resumable_input(THERMOSTATS["nose_hoover"])
    run_to(spec, tmp_path, 150)
    record = inspect_checkpoint(tmp_path)
    assert record["step"] == 200
    assert record["time_ps"] == pytest.approx(1.0)
    assert record["phase"] == "main"
    assert record["ensemble"].startswith("nvt/nose_hoover")
    assert 50 < record["temperature_K"] < 250
    assert record["available_steps"] == [100, 200]


# ---------------------------------------------------------------- real processes


def cli(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "mdengine.cli", *map(str, args)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **kwargs)


def write_input(tmp_path, spec):
    path = tmp_path / "input.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def wait_for_checkpoint(directory, process, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if directory.is_dir() and any(p.name.isdigit() for p in directory.iterdir()):
            return
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared")


def long_input():
    spec = resumable_input(THERMOSTATS["csvr"], steps=3000)
    spec["run"]["chunk_steps"] = 50
    spec["output"]["checkpoint"]["interval_steps"] = 200
    return spec


def test_sigkill_then_resume(tmp_path):
    spec = long_input()
    path = write_input(tmp_path, spec)
    straight = cli("run", path, "--output-dir", tmp_path / "straight")
    killed = cli("run", path, "--output-dir", tmp_path / "killed")
    wait_for_checkpoint(tmp_path / "killed" / "checkpoints", killed)
    time.sleep(random.Random(1).uniform(0.0, 1.5))
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert straight.wait(timeout=600) == 0
    resumed = cli("run", path, "--output-dir", tmp_path / "killed", "--resume")
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    assert_same_run(spec, tmp_path / "straight", tmp_path / "killed")


def test_sigint_checkpoints_and_exits(tmp_path):
    spec = long_input()
    path = write_input(tmp_path, spec)
    # As tools/mdengine starts it: the printed resume command begins with the wrapper's path.
    env = dict(os.environ, MDENGINE_COMMAND="./tools/mdengine")
    process = cli("run", path, "--output-dir", tmp_path / "out", env=env)
    wait_for_checkpoint(tmp_path / "out" / "checkpoints", process)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 130
    assert f"Resume with: ./tools/mdengine run {path} --resume" in err
    record = inspect_checkpoint(tmp_path / "out")
    thermo_steps = np.loadtxt(tmp_path / "out" / "thermo.csv", delimiter=",", skiprows=1, usecols=0)
    # The stop checkpoint is at the last step written, and the files end there.
    assert thermo_steps[-1] == record["step"]
    assert record["step"] < 3050

    resumed = cli("run", path, "--output-dir", tmp_path / "out", "--resume")
    assert resumed.wait(timeout=600) == 0
    straight = cli("run", path, "--output-dir", tmp_path / "straight")
    assert straight.wait(timeout=600) == 0
    assert_same_run(spec, tmp_path / "straight", tmp_path / "out")


def test_rerun_without_resume_refused(tmp_path):
    spec = resumable_input(steps=20)
    path = write_input(tmp_path, spec)
    first = cli("run", path, "--output-dir", tmp_path / "out")
    assert first.wait(timeout=300) == 0
    before = (tmp_path / "out" / "thermo.csv").read_bytes()
    second = cli("run", path, "--output-dir", tmp_path / "out")
    _, err = second.communicate(timeout=300)
    assert second.returncode == 2
    assert "--resume" in err
    assert (tmp_path / "out" / "thermo.csv").read_bytes() == before


class SignalAfterDecision(CheckpointHooks):
    """Hooks that receive SIGTERM right after the first chunk's checkpoint decision."""

    def after_chunk(self, step, state, neighbor, phase):
        super().after_chunk(step, state, neighbor, phase)
        if self.signals.signum is None:
            self.signals.signum = signal.SIGTERM


def test_late_signal_still_checkpoints(tmp_path):
    # A signal that lands between the checkpoint decision and the stop decision
    # must not stop the run without a checkpoint: the run takes one more chunk.
    spec = resumable_input(steps=300)
    del spec["run"]["equilibration"]   # one phase, so that the first chunk ends inside it
    spec["output"]["directory"] = str(tmp_path)
    simulation = Simulation(InputSpec.model_validate(spec), REPO)
    with pytest.raises(RunInterrupted) as stopped:
        execute(simulation, tmp_path, hooks_class=SignalAfterDecision)
    checkpointer = Checkpointer(tmp_path / "checkpoints")
    steps = checkpointer.steps()
    checkpointer.close()
    assert stopped.value.step in steps
    assert stopped.value.step < 300
