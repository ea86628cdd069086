"""Shared builders for test inputs: small argon systems run through the real engine."""

from __future__ import annotations

import copy
import csv
from pathlib import Path

import numpy as np
import pytest

from mdengine.config import InputSpec
from mdengine.runner import execute
from mdengine.simulation import Simulation

REPO = Path(__file__).resolve().parents[1]

ARGON_LJ = {"kind": "lennard_jones", "cutoff_A": 8.5, "shift_energy": True,
            "species": {"Ar": {"epsilon_eV": 0.0104, "sigma_A": 3.40}}}


def argon_input(repeats=(4, 4, 4), steps=100, ensemble="nve", thermostat=None, temperature_K=120.0,
                precision="float32", **sections) -> dict:
    """An input dict for fcc argon at 0.021 Å⁻³ (a = 5.754 Å), randomly displaced by 0.2 Å."""
    spec = {
        "system": {"lattice": {"kind": "fcc", "element": "Ar", "lattice_constant_A": 5.754,
                               "repeats": list(repeats), "displacement_A": 0.2}},
        "potential": copy.deepcopy(ARGON_LJ),
        "integrator": {"ensemble": ensemble, "timestep_fs": 5.0},
        "velocities": {"source": "maxwell_boltzmann", "temperature_K": temperature_K},
        "neighbor": {"skin_A": 1.0},
        "run": {"steps": steps},
        "output": {"frame_stride": 10, "thermo_stride": 10},
        "seed": 7,
        "precision": precision,
    }
    if ensemble == "nvt":
        spec["integrator"]["thermostat"] = thermostat
        spec["integrator"]["temperature_K"] = temperature_K
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key].update(value)
        else:
            spec[key] = value
    return spec


def build(spec: dict, base_dir: Path = REPO) -> Simulation:
    return Simulation(InputSpec.model_validate(spec), base_dir)


def run(spec: dict, output_dir: Path, base_dir: Path = REPO):
    """Run an input dict; returns (stats, thermo rows as dicts of floats/str)."""
    spec = copy.deepcopy(spec)
    spec.setdefault("output", {})["directory"] = str(output_dir)
    simulation = build(spec, base_dir)
    stats = execute(simulation, output_dir)
    return stats, read_thermo(output_dir / simulation.spec.output.thermo)


def read_thermo(path: Path) -> dict[str, np.ndarray]:
    with open(path) as handle:
        rows = list(csv.DictReader(handle))
    columns = {}
    for name in rows[0]:
        values = [row[name] for row in rows]
        columns[name] = np.array(values) if name == "phase" else np.array(values, dtype=float)
    return columns


@pytest.fixture
def argon():
    return argon_input
