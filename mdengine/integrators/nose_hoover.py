"""Nosé–Hoover chain thermostat.

References: G. J. Martyna, M. L. Klein and M. Tuckerman, J. Chem. Phys. 97,
2635 (1992); G. J. Martyna, M. E. Tuckerman, D. J. Tobias and M. L. Klein,
Mol. Phys. 87, 1117 (1996), the multiple-time-step factorisation with
Suzuki–Yoshida weights. Chain masses: Q₁ = N_f kT τ², Q_j = kT τ² for j > 1.
The chain loops run over a Python range, so a chain of length one takes the
same code path with no out-of-range index.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax_md import dataclasses as jmd_dataclasses

from mdengine.integrators.base import Integrator, kinetic_energy, velocity_verlet

SUZUKI_YOSHIDA_WEIGHTS = {
    1: (1.0,),
    3: (1 / (2 - 2 ** (1 / 3)), 1 - 2 / (2 - 2 ** (1 / 3)), 1 / (2 - 2 ** (1 / 3))),
    5: (1 / (4 - 4 ** (1 / 3)),) * 2 + (1 - 4 / (4 - 4 ** (1 / 3)),) + (1 / (4 - 4 ** (1 / 3)),) * 2,
    7: (0.784513610477560, 0.235573213359357, -1.17767998417887, 1.31518632068391,
        -1.17767998417887, 0.235573213359357, 0.784513610477560),
}


@jmd_dataclasses.dataclass
class ChainState:
    """Thermostat positions ``xi`` (dimensionless) and velocities ``v_xi``
    (1 / internal time unit), each ``[chain_length]``."""

    xi: jnp.ndarray
    v_xi: jnp.ndarray


def nose_hoover(energy_and_force_fn, shift_fn, dt, tau, chain_length, chain_steps,
                sy_order, degrees_of_freedom) -> Integrator:
    """Velocity Verlet wrapped in two Nosé–Hoover-chain half steps.

    Args:
      dt, tau: time step and thermostat period (internal time units).
      chain_length: M ≥ 1 thermostats in the chain.
      chain_steps: outer substeps n_c per half step.
      sy_order: Suzuki–Yoshida order (1, 3, 5 or 7).
      degrees_of_freedom: N_f ≥ 1.
    """
    n_f = degrees_of_freedom
    weights = SUZUKI_YOSHIDA_WEIGHTS[sy_order]

    def masses(kT):
        q = kT * tau**2 * jnp.ones(chain_length)
        return q.at[0].multiply(n_f)

    def init_fn(state, kT):
        zeros = jnp.zeros(chain_length, state.velocity.dtype)
        return state.set(thermostat=ChainState(xi=zeros, v_xi=zeros))

    def chain_force(j, v_xi, q, kinetic, kT):
        if j == 0:
            return (2 * kinetic - n_f * kT) / q[0]
        return (q[j - 1] * v_xi[j - 1] ** 2 - kT) / q[j]

    def substep(v_xi, xi, kinetic, scale, h, q, kT):
        """Propagate the chain for a time ``h``; returns the velocity scale factor too."""
        last = chain_length - 1
        v_xi = v_xi.at[last].add(0.5 * h * chain_force(last, v_xi, q, kinetic, kT))
        for j in range(last - 1, -1, -1):
            damping = jnp.exp(-0.25 * h * v_xi[j + 1])
            v_xi = v_xi.at[j].set(damping * (damping * v_xi[j] + 0.5 * h * chain_force(j, v_xi, q, kinetic, kT)))

        factor = jnp.exp(-h * v_xi[0])
        scale = scale * factor
        kinetic = kinetic * factor**2
        xi = xi + h * v_xi

        for j in range(last):
            damping = jnp.exp(-0.25 * h * v_xi[j + 1])
            v_xi = v_xi.at[j].set(damping * (damping * v_xi[j] + 0.5 * h * chain_force(j, v_xi, q, kinetic, kT)))
        v_xi = v_xi.at[last].add(0.5 * h * chain_force(last, v_xi, q, kinetic, kT))
        return v_xi, xi, kinetic, scale

    def half_step(state, kT):
        q = masses(kT).astype(state.velocity.dtype)
        chain = state.thermostat
        v_xi, xi = chain.v_xi, chain.xi
        kinetic = kinetic_energy(state.velocity, state.mass)
        scale = jnp.ones((), state.velocity.dtype)
        for _ in range(chain_steps):
            for weight in weights:
                h = weight * 0.5 * dt / chain_steps
                v_xi, xi, kinetic, scale = substep(v_xi, xi, kinetic, scale, h, q, kT)
        velocity = state.velocity * scale
        heat = kinetic_energy(velocity, state.mass) - kinetic_energy(state.velocity, state.mass)
        return state.set(velocity=velocity, heat=state.heat + heat,
                         thermostat=ChainState(xi=xi, v_xi=v_xi))

    def step_fn(state, neighbor, kT):
        state = half_step(state, kT)
        state, neighbor = velocity_verlet(state, neighbor, shift_fn, energy_and_force_fn, dt)
        state = half_step(state, kT)
        return state, neighbor

    return Integrator(f"nvt/nose_hoover(M={chain_length})", init_fn, step_fn, degrees_of_freedom)
