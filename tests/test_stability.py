"""Stability studies: failures found at the right step, failed replicas frozen
while the others go on, and the report files."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from conftest import REPO, argon_input, read_thermo, run
from mdengine.config import InputError, InputSpec
from mdengine.stability import StabilityOptions, run_study


def first_hot_step(thermo, limit_K):
    """First step whose temperature exceeds ``limit_K`` (or is not finite)."""
    temperature = thermo["temperature_K"]
    bad = ~np.isfinite(temperature) | (temperature > limit_K)
    return int(thermo["step"][np.argmax(bad)]) if bad.any() else None


def test_large_time_step_failure_steps(tmp_path):
    # 100 fs is several times too long for argon: every replica heats up and
    # blows up, but each at a step set by its own seed.
    spec = argon_input(steps=100, precision="float64")
    spec["integrator"]["timestep_fs"] = 100.0
    spec["output"]["thermo_stride"] = 1
    options = StabilityOptions(replicas=3, time_ps=10.0)
    report = run_study(InputSpec.model_validate(spec), REPO, options, tmp_path / "study")

    saved = json.loads((tmp_path / "study/stability.json").read_text())
    assert saved == json.loads(json.dumps(report))
    steps = [entry["failure_step"] for entry in report["per_replica"]]
    assert all(step is not None for step in steps)
    # The failed replica stops there; the others keep going past it.
    assert len(set(steps)) > 1

    limit_K = 3 * 120.0
    for r, entry in enumerate(report["per_replica"]):
        single = copy.deepcopy(spec)
        single["seed"] = spec["seed"] + r
        _, alone = run(single, tmp_path / f"single{r}")
        # The single run goes on (periodic positions stay finite); its first
        # step above 3 × 120 K is where the study must have stopped the replica.
        assert entry["failure_step"] == first_hot_step(alone, limit_K), entry
        assert entry["time_to_failure_ps"] == pytest.approx(entry["failure_step"] * 0.1)
        assert "temperature" in entry["reason"]
        assert (tmp_path / f"study/failures/replica{r}_last_good.pdb").is_file()
        assert (tmp_path / f"study/failures/replica{r}_first_bad.pdb").is_file()

    thermo = read_thermo(tmp_path / "study/thermo.csv")
    for r, step in enumerate(steps):
        mine = thermo["step"][thermo["replica"] == r]
        assert mine.max() == step - 1   # rows end one step before the failure
    assert (tmp_path / "study/survival.png").stat().st_size > 1000
    csv_lines = (tmp_path / "study/stability.csv").read_text().splitlines()
    assert len(csv_lines) == 4


def test_stable_liquid_survives_with_the_rdf_check(tmp_path):
    spec = argon_input(steps=10)
    spec["output"]["frame_stride"] = 20
    options = StabilityOptions(replicas=2, time_ps=2.0, rdf_reference_ps=0.5)
    report = run_study(InputSpec.model_validate(spec), REPO, options, tmp_path / "study")
    assert report["checks"]["rdf"] is True
    assert report["checks"]["bonds"] == 0
    assert report["survived"] == 2
    assert [e["time_to_failure_ps"] for e in report["per_replica"]] == [None, None]
    assert report["stable_time_ps"]["mean"] == pytest.approx(2.0)


def test_broken_bond_is_detected_for_molecules(tmp_path):
    # Ethanol on a soft-sphere potential that ignores chemistry: the molecule
    # falls apart at 3000 K, and the bond check names the bond.
    spec = {
        "system": {"structure": "inputs/data/ethanol.xyz", "periodic": False},
        "potential": {"kind": "soft_sphere",
                      "species": {e: {"sigma_A": 1.0, "epsilon_eV": 0.01} for e in ("C", "H", "O")}},
        "integrator": {"ensemble": "nvt", "timestep_fs": 0.5, "temperature_K": 3000.0,
                       "thermostat": {"kind": "langevin", "friction_per_ps": 1.0}},
        "velocities": {"source": "maxwell_boltzmann", "temperature_K": 3000.0},
        "run": {"steps": 10},
        "output": {"frame_stride": 10, "thermo_stride": 10},
        "seed": 1,
    }
    options = StabilityOptions(replicas=2, time_ps=0.5, temperature_factor=10.0)
    report = run_study(InputSpec.model_validate(spec), REPO, options, tmp_path / "study")
    assert report["checks"]["bonds"] == 8
    for entry in report["per_replica"]:
        assert entry["time_to_failure_ps"] is not None and entry["time_to_failure_ps"] < 0.5
        assert entry["reason"].startswith("bond ")


def test_bad_options_are_refused(tmp_path):
    spec = InputSpec.model_validate(argon_input(steps=10))
    with pytest.raises(InputError, match="--time-ps"):
        run_study(spec, REPO, StabilityOptions(replicas=2, time_ps=0.0), tmp_path / "a")
    with pytest.raises(InputError, match="--check"):
        run_study(spec, REPO, StabilityOptions(replicas=2, time_ps=1.0, check="maybe"), tmp_path / "b")
    assert not (tmp_path / "a").exists()
    assert not (tmp_path / "b").exists()


def test_cli_rejects_a_time_inside_equilibration(tmp_path):
    import subprocess
    import sys
    out = tmp_path / "study"
    done = subprocess.run([sys.executable, "-m", "mdengine.cli", "stability", "inputs/argon.yaml",
                           "--time-ps", "0.5", "--output-dir", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "--time-ps: 0.5 ps ends inside the equilibration" in done.stderr
    assert not out.exists()
