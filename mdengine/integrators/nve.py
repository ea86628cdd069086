"""Microcanonical dynamics: velocity Verlet (Swope et al., J. Chem. Phys. 76, 637, 1982)."""

from __future__ import annotations

from mdengine.integrators.base import Integrator, velocity_verlet


def nve(energy_and_force_fn, shift_fn, dt, degrees_of_freedom) -> Integrator:
    """Velocity-Verlet integrator with time step ``dt`` (internal time units)."""

    def init_fn(state, kT):
        return state.set(thermostat=())

    def step_fn(state, neighbor, kT):
        return velocity_verlet(state, neighbor, shift_fn, energy_and_force_fn, dt)

    return Integrator("nve", init_fn, step_fn, degrees_of_freedom)
