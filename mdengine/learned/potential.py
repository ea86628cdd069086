"""A learned model as an engine :class:`~mdengine.potentials.base.Potential`."""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
from jax_md import partition

from mdengine.config import InputError, LearnedPotential
from mdengine.learned.model_io import load_model
from mdengine.learned.schnet import SchNet
from mdengine.potentials.base import Potential


def species_indices(model_species: list[str], system, model_path: Path) -> jnp.ndarray:
    """``[N]`` int32 index of each atom's element in the model's species list.

    Raises:
      InputError: the model does not know some of the system's elements.
    """
    missing = [e for e in system.species_names if e not in model_species]
    if missing:
        raise InputError(
            f"potential.model: {model_path} was trained for {', '.join(model_species)} and "
            f"has no {', '.join(missing)}, which {system.source} contains; use a model trained "
            "on these elements")
    lookup = {name: i for i, name in enumerate(model_species)}
    return jnp.asarray([lookup[e] for e in system.elements], jnp.int32)


def build_learned_potential(spec: LearnedPotential, system, displacement_fn, base_dir: Path,
                            dtype) -> Potential:
    """Build the potential of a model directory for ``system``.

    Args:
      spec: the validated ``potential`` section (``kind: learned``).
      system: the :class:`~mdengine.system.System` it acts on.
      displacement_fn: jax-md displacement function returning Cartesian Å.
      base_dir: folder of the input file; ``spec.model`` resolves from it.
      dtype: floating-point type of the run; parameters are cast to it.

    Raises:
      InputError: an invalid model directory, or elements the model lacks.
    """
    path = (Path(base_dir) / spec.model).resolve()
    model = load_model(path)
    species = species_indices(model.species, system, path)
    # SchNet sums its messages along the rows of a dense list; the equivariant
    # network's e3x layers take sparse edges.
    dense = isinstance(model.module, SchNet)
    atomic_energy_fn = model.atomic_energy_fn(displacement_fn, dtype,
                                              tabulate_filters=True,
                                              dense=dense)

    def energy_fn(positions, neighbor):
        return jnp.sum(atomic_energy_fn(species, positions, neighbor.idx))

    arch = model.description.model.architecture
    return Potential(energy_fn=energy_fn, cutoff_A=model.cutoff_A,
                     neighbor_format=partition.Dense if dense else partition.Sparse,
                     description=f"learned {arch} {path.name} ({', '.join(model.species)}; "
                                 f"cutoff {model.cutoff_A:g} Å)")
