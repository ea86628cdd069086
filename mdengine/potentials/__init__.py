"""Potentials: every kind is built into one :class:`Potential` contract.

The engine only ever calls ``potential.energy_fn(positions, neighbor)``.
Positions are the engine's coordinates (fractional in a periodic cell,
Cartesian Å in free space); every geometric quantity is computed through
the displacement function, which returns Cartesian Å.
"""

from __future__ import annotations

from pathlib import Path

from mdengine.config import CustomPotential, FilePotential, LearnedPotential
from mdengine.potentials.base import Potential
from mdengine.potentials.manybody import build_file_potential
from mdengine.potentials.pair import build_pair_potential
from mdengine.potentials.plugin import build_custom_potential

__all__ = ["Potential", "build_potential"]


def build_potential(spec, system, displacement_fn, base_dir: Path, dtype) -> Potential:
    """Build the potential an input's ``potential`` section describes.

    Args:
      spec: the validated ``potential`` section.
      system: the :class:`~mdengine.system.System` it acts on (species, box).
      displacement_fn: jax-md displacement function returning Cartesian Å.
      base_dir: folder of the input file; relative file names resolve from it.
      dtype: floating-point type of the run, for tabulated potentials.
    """
    if isinstance(spec, FilePotential):
        return build_file_potential(spec, system, displacement_fn, base_dir, dtype)
    if isinstance(spec, CustomPotential):
        return build_custom_potential(spec, system, displacement_fn, base_dir)
    if isinstance(spec, LearnedPotential):
        # Imported here so classical runs do not load flax.
        from mdengine.learned.potential import build_learned_potential
        return build_learned_potential(spec, system, displacement_fn, base_dir, dtype)
    return build_pair_potential(spec, system, displacement_fn)
