"""Canonical sampling through velocity rescaling.

Reference: G. Bussi, D. Donadio and M. Parrinello, J. Chem. Phys. 126,
014101 (2007), Eq. (A7). The kinetic energy is resampled for dt/2 before
and after each velocity-Verlet step. Each resampling draws its two random
numbers from separate keys, and a system with zero kinetic energy (where
rescaling is undefined) gets a fresh Maxwell–Boltzmann direction instead.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mdengine.integrators.base import (Integrator, kinetic_energy, remove_com_velocity,
                                       velocity_verlet)


def csvr(energy_and_force_fn, shift_fn, dt, tau, degrees_of_freedom) -> Integrator:
    """Bussi velocity-rescaling thermostat with relaxation time ``tau``.

    Args:
      dt, tau: time step and relaxation time (internal time units).
      degrees_of_freedom: N_f ≥ 1 (centre-of-mass motion is conserved).
    """
    n_f = degrees_of_freedom
    c = jnp.exp(-0.5 * dt / tau)

    def init_fn(state, kT):
        return state.set(thermostat=())

    def resample(state, kT):
        rng, key_normal, key_gamma, key_direction = jax.random.split(state.rng, 4)
        dtype = state.velocity.dtype
        kinetic = kinetic_energy(state.velocity, state.mass)
        target = 0.5 * n_f * kT

        r1 = jax.random.normal(key_normal, (), dtype)
        # Sum of N_f − 1 squared standard normals: a chi-squared variate.
        others = 2.0 * jax.random.gamma(key_gamma, 0.5 * (n_f - 1), (), dtype) if n_f > 1 else 0.0
        new_kinetic = ((jnp.sqrt(c * kinetic) + r1 * jnp.sqrt((1 - c) * target / n_f)) ** 2
                       + (1 - c) * target / n_f * others)

        # Rescale the current velocities; with zero kinetic energy there is no
        # direction to rescale, so draw one from the Maxwell–Boltzmann distribution.
        fresh = jax.random.normal(key_direction, state.velocity.shape, dtype) / jnp.sqrt(state.mass)
        fresh = remove_com_velocity(fresh, state.mass)
        has_motion = kinetic > 0
        direction = jnp.where(has_motion, state.velocity, fresh)
        direction_kinetic = jnp.where(has_motion, kinetic, kinetic_energy(fresh, state.mass))
        velocity = direction * jnp.sqrt(new_kinetic / direction_kinetic)

        return state.set(velocity=velocity, rng=rng, heat=state.heat + new_kinetic - kinetic)

    def step_fn(state, neighbor, kT):
        state = resample(state, kT)
        state, neighbor = velocity_verlet(state, neighbor, shift_fn, energy_and_force_fn, dt)
        state = resample(state, kT)
        return state, neighbor

    return Integrator("nvt/csvr", init_fn, step_fn, degrees_of_freedom)
