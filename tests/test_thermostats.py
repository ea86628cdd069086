"""Thermostat details: Langevin noise keys and autocorrelation, seeds, phase hand-over."""

import jax
import numpy as np
import pytest

from tests.conftest import argon_input, build, run


def ideal_gas(friction_per_ps, steps=1, seed=3):
    # 1,000 argon atoms as soft spheres of 2 Å diameter at 0.0021 Å⁻³: they never touch.
    spec = argon_input(repeats=(5, 5, 5), steps=steps, ensemble="nvt", temperature_K=300.0,
                       thermostat={"kind": "langevin", "friction_per_ps": friction_per_ps},
                       integrator={"ensemble": "nvt", "timestep_fs": 2.0})
    spec["system"]["lattice"]["lattice_constant_A"] = 12.0
    spec["system"]["lattice"]["displacement_A"] = 0.0
    spec["potential"] = {"kind": "soft_sphere", "species": {"Ar": {"epsilon_eV": 0.01, "sigma_A": 2.0}}}
    spec["neighbor"] = {"skin_A": 1.0}
    spec["seed"] = seed
    return spec


def test_langevin_one_step_correlation():
    # BAOAB's O step is exact: after one 2 fs step at γ = 100 ps⁻¹ the velocity correlation is
    # exp(−γΔt) = 0.8187. A value near 1 would mean the noise reused the initial-velocity key.
    simulation = build(ideal_gas(100.0))
    state, neighbor = simulation.initial_state()
    phase = simulation.phases[0]
    kT = jax.numpy.asarray(300.0 * 8.617333262e-5, simulation.dtype)
    state = phase.integrator.init_fn(state, kT)
    after, _ = jax.jit(phase.integrator.step_fn)(state, neighbor, kT)
    before = np.ravel(np.asarray(state.velocity))
    after = np.ravel(np.asarray(after.velocity))
    correlation = np.corrcoef(before, after)[0, 1]
    # 3,000 samples: standard error of a correlation near 0.82 is about (1 − ρ²)/sqrt(n) ≈ 0.006.
    assert correlation == pytest.approx(np.exp(-0.2), abs=0.02)


def test_same_seed_identical(tmp_path):
    spec = argon_input(steps=100, ensemble="nvt", thermostat={"kind": "langevin"}, precision="float64")
    _, first = run(spec, tmp_path / "a")
    _, second = run(spec, tmp_path / "b")
    assert np.array_equal(first["total_energy_eV"], second["total_energy_eV"])


def test_different_seed_differs(tmp_path):
    spec = argon_input(steps=100, ensemble="nvt", thermostat={"kind": "csvr"})
    _, first = run(spec, tmp_path / "a")
    spec["seed"] = 8
    _, second = run(spec, tmp_path / "b")
    assert not np.array_equal(first["kinetic_energy_eV"], second["kinetic_energy_eV"])


def test_phases_continue_steps(tmp_path):
    # Equilibration then main: one step numbering, each sample labelled with its phase.
    spec = argon_input(steps=60, ensemble="nve")
    spec["run"]["equilibration"] = {"steps": 40, "temperature_K": 120.0,
                                    "thermostat": {"kind": "csvr", "tau_fs": 100.0}}
    stats, thermo = run(spec, tmp_path)
    assert list(thermo["step"]) == list(range(0, 101, 10))
    assert list(thermo["phase"][:5]) == ["equilibration"] * 5
    assert list(thermo["phase"][5:]) == ["main"] * 6
    assert stats.compilations == 2
