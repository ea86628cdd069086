"""Tabulated SchNet filters against the filter networks they replace."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO
from mdengine.config import load_input
from mdengine.learned.model_io import load_model
from mdengine.learned.potential import species_indices
from mdengine.simulation import Simulation


def energy_and_forces(input_name, precision, tabulate):
    spec = load_input(REPO / "inputs" / input_name)
    spec = spec.model_copy(update={"precision": precision})
    simulation = Simulation(spec, REPO / "inputs")
    state, neighbor = simulation.initial_state()
    model = load_model(REPO / "inputs" / spec.potential.model)
    species = species_indices(model.species, simulation.system, Path(spec.potential.model))
    atomic = model.atomic_energy_fn(simulation.displacement_fn, simulation.dtype,
                                    tabulate_filters=tabulate)
    energy, gradient = jax.jit(jax.value_and_grad(
        lambda x: jnp.sum(atomic(species, x, neighbor.idx))))(state.position)
    return float(energy), -np.asarray(gradient, np.float64)


# The spline's own error is about 1e-6 of the largest force; in float32 the
# rounding of a sum over ~70 neighbors (about 1e-5 relative) dominates.
@pytest.mark.parametrize("precision, energy_tol_eV, force_tol", [
    ("float64", 1e-6, 1e-5), ("float32", 2e-3, 5e-4)])
@pytest.mark.parametrize("input_name", ["water32_schnet_nve.yaml", "ethanol_schnet_nve.yaml"])
def test_tables_match_the_network(input_name, precision, energy_tol_eV, force_tol):
    exact_e, exact_f = energy_and_forces(input_name, precision, False)
    table_e, table_f = energy_and_forces(input_name, precision, True)
    assert abs(table_e - exact_e) < energy_tol_eV
    assert np.abs(table_f - exact_f).max() < force_tol



def test_nve_with_tables_conserves_energy(tmp_path):
    # The spline has continuous first derivatives, so velocity Verlet keeps
    # the total energy as it does with the network: the shipped 1 ps NVE run
    # of this model drifts by 2.6e-5 eV/atom/ps (docs/models.md).
    from conftest import read_thermo
    from mdengine.runner import execute
    spec = load_input(REPO / "inputs" / "water32_schnet_nve.yaml",
                      {"run": {"steps": 400}, "output": {"directory": str(tmp_path),
                                                         "thermo_stride": 10}})
    simulation = Simulation(spec, REPO / "inputs")
    execute(simulation, tmp_path)
    total = read_thermo(tmp_path / "thermo.csv")["total_energy_eV"]
    # Float32 over 0.2 ps: fluctuations of a few 1e-5 eV/atom, no trend.
    assert np.abs(total - total[0]).max() / simulation.system.n_atoms < 1e-4
