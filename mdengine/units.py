"""Unit constants and conversions.

Internal units: length Å, energy eV, mass amu, temperature as kT in eV.
The time unit that follows is sqrt(amu·Å²/eV). Input keys carry their own
unit in their name (``timestep_fs``, ``temperature_K``); conversion happens
once, when the input is turned into a simulation.
"""

import math

# CODATA 2018 exact or recommended values.
BOLTZMANN_EV_PER_K = 8.617333262e-5
AMU_KG = 1.66053906660e-27
EV_J = 1.602176634e-19
ANGSTROM_M = 1e-10

# sqrt(amu Å² / eV) in fs: about 10.1805 fs.
TIME_UNIT_FS = math.sqrt(AMU_KG / EV_J) * ANGSTROM_M * 1e15

NM_PER_ANGSTROM = 0.1


def fs_to_internal(time_fs: float) -> float:
    """Convert a time in fs to the internal time unit sqrt(amu·Å²/eV)."""
    return time_fs / TIME_UNIT_FS


def internal_to_fs(time_internal: float) -> float:
    """Convert a time in the internal unit sqrt(amu·Å²/eV) to fs."""
    return time_internal * TIME_UNIT_FS


def kelvin_to_kT(temperature_K: float) -> float:
    """Convert a temperature in K to kT in eV."""
    return temperature_K * BOLTZMANN_EV_PER_K


def kT_to_kelvin(kT_eV):
    """Convert kT in eV to a temperature in K (works on arrays too)."""
    return kT_eV / BOLTZMANN_EV_PER_K
