"""MD state and the velocity-Verlet pieces every integrator is built from.

Units inside the state: positions in the engine's coordinates (fractional in
a periodic cell, Å in free space), velocities in Å per internal time unit
sqrt(amu·Å²/eV), forces in eV/Å, energies in eV, masses in amu.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax_md import dataclasses as jmd_dataclasses


@jmd_dataclasses.dataclass
class MDState:
    """Everything that evolves during a run, as one pytree.

    Attributes:
      position: ``[N, 3]`` positions (engine coordinates).
      velocity: ``[N, 3]`` Cartesian velocities (Å / internal time unit).
      force: ``[N, 3]`` Cartesian forces (eV/Å) at ``position``.
      potential_energy: scalar potential energy (eV) at ``position``.
      mass: ``[N, 1]`` masses (amu).
      rng: PRNG key for stochastic thermostats; split on every use.
      heat: scalar kinetic energy the thermostat has added so far (eV), so
        ``potential + kinetic − heat`` is conserved by every integrator.
      thermostat: thermostat-specific state (a pytree; empty for NVE).
      image: ``[N, 3]`` int32 periodic image of each atom: the number of cell
        vectors it has crossed since the start, so ``position + image`` (in
        fractional coordinates) is its continuous, unwrapped position.
    """

    position: jax.Array
    velocity: jax.Array
    force: jax.Array
    potential_energy: jax.Array
    mass: jax.Array
    rng: jax.Array
    heat: jax.Array
    thermostat: Any
    image: jax.Array


@dataclasses.dataclass(frozen=True)
class Integrator:
    """An integrator bound to a potential, a shift function and a time step.

    Attributes:
      name: e.g. ``"nvt/csvr"``.
      init_fn: ``init_fn(state, kT) -> state`` sets up the thermostat fields.
      step_fn: ``step_fn(state, neighbor, kT) -> (state, neighbor)``
        advances one time step; ``kT`` (eV) is traced, so it may change
        between calls without recompiling.
      degrees_of_freedom: N_f used for the temperature.
    """

    name: str
    init_fn: Callable
    step_fn: Callable
    degrees_of_freedom: int


def kinetic_energy(velocity, mass):
    """½ Σ m v² (eV) for ``[N, 3]`` velocities and ``[N, 1]`` masses."""
    return 0.5 * jnp.sum(mass * velocity**2)


def half_kick(state: MDState, dt) -> MDState:
    """v ← v + (dt/2) F/m."""
    return state.set(velocity=state.velocity + 0.5 * dt * state.force / state.mass)


def drift(state: MDState, shift_fn, dt) -> MDState:
    """x ← x + dt·v, through the space's shift function (wraps periodic positions)."""
    return state.set(position=shift_fn(state.position, dt * state.velocity))


@dataclasses.dataclass(frozen=True)
class ForceFn:
    """A potential's energy and forces, and the neighbor-list update they need.

    Calling it as ``forces(position, neighbor)`` returns ``(energy eV,
    [N, 3] forces eV/Å)``. ``update_neighbors(neighbor, position)`` returns the
    list for the new positions (jax-md's update unless replaced, for example by
    one that rebuilds the lists of all replicas together).
    """

    energy_and_force: Callable
    update_neighbors: Callable = lambda neighbor, position: neighbor.update(position)

    def __call__(self, position, neighbor):
        return self.energy_and_force(position, neighbor)


def new_forces(state: MDState, neighbor, energy_and_force_fn):
    """Update the neighbor list at the new positions, then the energy and forces.

    ``energy_and_force_fn`` is a :class:`ForceFn` or a plain
    ``(position, neighbor) -> (energy, force)`` function.
    """
    update = getattr(energy_and_force_fn, "update_neighbors", None)
    neighbor = neighbor.update(state.position) if update is None else update(neighbor, state.position)
    energy, force = energy_and_force_fn(state.position, neighbor)
    return state.set(potential_energy=energy, force=force), neighbor


def velocity_verlet(state: MDState, neighbor, shift_fn, energy_and_force_fn, dt):
    """Advance one velocity-Verlet step: half kick, drift, new forces, half kick."""
    state = half_kick(state, dt)
    state = drift(state, shift_fn, dt)
    state, neighbor = new_forces(state, neighbor, energy_and_force_fn)
    state = half_kick(state, dt)
    return state, neighbor


def remove_com_velocity(velocity, mass):
    """Subtract the centre-of-mass velocity from ``[N, 3]`` velocities."""
    com = jnp.sum(mass * velocity, axis=0) / jnp.sum(mass)
    return velocity - com
