"""Integrators: NVE velocity Verlet and NVT with Nosé–Hoover chain, Langevin or CSVR."""

from __future__ import annotations

from mdengine.config import CSVRSpec, InputError, LangevinSpec, NoseHooverSpec
from mdengine.integrators.base import Integrator, MDState, kinetic_energy
from mdengine.integrators.csvr import csvr
from mdengine.integrators.langevin import langevin
from mdengine.integrators.nose_hoover import nose_hoover
from mdengine.integrators.nve import nve
from mdengine.units import fs_to_internal

__all__ = ["Integrator", "MDState", "kinetic_energy", "make_integrator", "degrees_of_freedom"]

# A thermostat period shorter than this many time steps cannot be resolved.
MIN_TAU_STEPS = 5


def degrees_of_freedom(n_atoms: int, thermostat) -> int:
    """N_f: 3N, less the 3 centre-of-mass components unless Langevin friction
    (which does not conserve momentum) is on."""
    if isinstance(thermostat, LangevinSpec):
        return 3 * n_atoms
    return max(3 * n_atoms - 3, 0)


def make_integrator(thermostat, energy_and_force_fn, shift_fn, timestep_fs: float,
                    n_atoms: int, where: str) -> Integrator:
    """Build the integrator for a phase: NVE when ``thermostat`` is None.

    Raises:
      InputError: a thermostat with no degrees of freedom to act on, or a
        time constant shorter than ``MIN_TAU_STEPS`` time steps.
    """
    dt = fs_to_internal(timestep_fs)
    n_f = degrees_of_freedom(n_atoms, thermostat)
    if thermostat is None:
        return nve(energy_and_force_fn, shift_fn, dt, n_f)

    if n_f == 0:
        raise InputError(f"{where}.thermostat: a single atom has no degrees of freedom left after "
                         "removing centre-of-mass motion; use langevin or ensemble nve")
    if isinstance(thermostat, LangevinSpec):
        friction = thermostat.friction_per_ps / fs_to_internal(1000.0)
        return langevin(energy_and_force_fn, shift_fn, dt, friction, n_f)

    if thermostat.tau_fs < MIN_TAU_STEPS * timestep_fs:
        raise InputError(f"{where}.thermostat.tau_fs: {thermostat.tau_fs} fs is shorter than "
                         f"{MIN_TAU_STEPS} time steps ({MIN_TAU_STEPS * timestep_fs:g} fs); "
                         "use a longer tau_fs (100 fs is typical)")
    tau = fs_to_internal(thermostat.tau_fs)
    if isinstance(thermostat, CSVRSpec):
        return csvr(energy_and_force_fn, shift_fn, dt, tau, n_f)
    if isinstance(thermostat, NoseHooverSpec):
        return nose_hoover(energy_and_force_fn, shift_fn, dt, tau, thermostat.chain_length,
                           thermostat.chain_steps, thermostat.suzuki_yoshida_order, n_f)
    raise TypeError(f"unknown thermostat {thermostat!r}")
