"""The architecture registry and the energy head every architecture shares.

A network returns one raw number per atom, ``o_i``. The energy of atom i
of species s is

    E_i = shift_s + scale_s · (o_i − o_s⁰)  (eV)

where ``o_s⁰`` is the network's output for an isolated atom of species s
(evaluated on a graph with no edges). A SchNet model with
``isolated_atom_reference: false`` (schnetpack's convention, used by
imported models) omits ``o_s⁰``, so there E_i = shift_s + scale_s · o_i. An isolated atom therefore has
exactly the energy ``shift_s`` and, with no edges, zero force. The shifts
come from a least-squares fit of the training energies on species counts
and the scales from the per-species force RMS (:mod:`mdengine.learned.data`).
"""

from __future__ import annotations

from typing import Annotated, Union

import jax
import jax.numpy as jnp
from pydantic import Field

from mdengine.learned.equivariant import Equivariant, EquivariantSpec
from mdengine.learned.graph import make_edges
from mdengine.learned.schnet import SchNet, SchNetSpec

ModelSpec = Annotated[Union[SchNetSpec, EquivariantSpec], Field(discriminator="architecture")]

MODULES = {"schnet": SchNet, "equivariant": Equivariant}
ARCHITECTURES = tuple(MODULES)


def build_module(spec, num_species: int):
    """Build the linen module for a validated ``spec`` (SchNetSpec or EquivariantSpec)."""
    return MODULES[spec.architecture](spec=spec, num_species=num_species)


def isolated_edges(num_atoms: int, cutoff_A: float, dtype):
    """Build edges for ``num_atoms`` isolated atoms: a single masked edge."""
    zero = jnp.zeros((1,), jnp.int32)
    return make_edges(jnp.zeros((1, 3), dtype), zero, zero, jnp.zeros((1,), bool),
                      num_atoms, cutoff_A)


def init_params(module, num_species: int, seed: int, dtype=jnp.float32):
    """Initialise random (seeded) parameters for ``module``, cast to ``dtype``."""
    species = jnp.arange(num_species, dtype=jnp.int32)
    edges = isolated_edges(num_species, module.spec.cutoff_A, jnp.float32)
    params = module.init(jax.random.PRNGKey(seed), species, edges)["params"]
    return cast_params(params, dtype)


def cast_params(params, dtype):
    """Cast every floating-point leaf of ``params`` to ``dtype``."""
    return jax.tree_util.tree_map(lambda leaf: jnp.asarray(leaf, dtype), params)


def atomic_energies(module, params, shift, scale, species, edges, **options):
    """Compute ``[N]`` per-atom energies (eV).

    Args:
      module: a network from :func:`build_module`.
      params: its parameters.
      shift, scale: ``[S]`` per-species energy shift and scale (eV).
      species: ``[N]`` int32 indices into the model's species list.
      edges: :class:`~mdengine.learned.graph.Edges` of the graph (Å).
      options: passed to the network (SchNet: ``tables``).
    """
    raw = module.apply({"params": params}, species, edges, **options)
    if not getattr(module.spec, "isolated_atom_reference", True):
        return shift[species] + scale[species] * raw
    num_species = shift.shape[0]
    reference_edges = isolated_edges(num_species, module.spec.cutoff_A, edges.vectors.dtype)
    reference = module.apply({"params": params}, jnp.arange(num_species, dtype=jnp.int32),
                             reference_edges, **options)
    return shift[species] + scale[species] * (raw - reference[species])
