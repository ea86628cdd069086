"""Langevin dynamics with the BAOAB splitting.

Reference: B. Leimkuhler and C. Matthews, Appl. Math. Res. Express 2013,
34 (2013). The O step is exact for the Ornstein–Uhlenbeck part, so a free
particle's velocity autocorrelation after one step is exp(−γ dt).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mdengine.integrators.base import (Integrator, drift, half_kick, kinetic_energy,
                                       new_forces)


def langevin(energy_and_force_fn, shift_fn, dt, friction, degrees_of_freedom) -> Integrator:
    """BAOAB Langevin integrator.

    Args:
      dt: time step (internal time units).
      friction: γ (1 / internal time unit).
    """
    c1 = jnp.exp(-friction * dt)
    noise_scale = jnp.sqrt(1 - c1**2)

    def init_fn(state, kT):
        return state.set(thermostat=())

    def ornstein_uhlenbeck(state, kT):
        rng, key = jax.random.split(state.rng)
        noise = jax.random.normal(key, state.velocity.shape, state.velocity.dtype)
        velocity = c1 * state.velocity + noise_scale * jnp.sqrt(kT / state.mass) * noise
        heat = kinetic_energy(velocity, state.mass) - kinetic_energy(state.velocity, state.mass)
        return state.set(velocity=velocity, rng=rng, heat=state.heat + heat)

    def step_fn(state, neighbor, kT):
        state = half_kick(state, dt)
        state = drift(state, shift_fn, dt / 2)
        state = ornstein_uhlenbeck(state, kT)
        state = drift(state, shift_fn, dt / 2)
        state, neighbor = new_forces(state, neighbor, energy_and_force_fn)
        state = half_kick(state, dt)
        return state, neighbor

    return Integrator("nvt/langevin", init_fn, step_fn, degrees_of_freedom)
