"""An E(3)-equivariant message-passing network in the NequIP family, built with e3x.

Each atom carries features of every degree ℓ ≤ ``max_degree`` (scalars,
vectors, rank-2 tensors, ...; parity is tracked as well). An edge is
described by spherical harmonics of its direction times a radial basis of
its length with a smooth cutoff (zero, with all derivatives, at the
cutoff). A message is the tensor product of the neighbor's features with a
learned combination of that edge basis. After summing messages, each atom
applies an equivariant atom-wise network (linear layers per degree and a
gated SiLU). The last block keeps only scalars, which an atom-wise network
maps to one number per atom. Rotating the input rotates every feature of
degree ℓ by its Wigner matrix, so the energy is invariant and the forces
rotate with the atoms.

Why e3x: it is the project's chosen library for equivariant layers. It
supplies the pieces this model needs as tested Flax ``linen`` modules:
spherical harmonics, Clebsch–Gordan tensor products, equivariant dense
layers and gated nonlinearities. Its feature arrays have one fixed layout,
``[N, parity, (L+1)², F]``, so the model stays a few lines long. Being
linen, it shares one parameter format with SchNet.

Message passing receives zero from a masked edge (its radial basis is zero
and its weight is zero), so an atom without neighbors keeps exactly the
features the atom-wise layers make from its embedding; the energy head
subtracts that isolated-atom output.
"""

from __future__ import annotations

import functools
from typing import Literal

import e3x
import flax.linen as nn
from pydantic import BaseModel, ConfigDict, Field

from mdengine.learned.graph import Edges


class EquivariantSpec(BaseModel):
    """Hyper-parameters of the equivariant network."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    architecture: Literal["equivariant"]
    features: int = Field(32, gt=0, description="Channels per degree.")
    max_degree: int = Field(2, ge=0, le=4, description="Highest spherical-harmonic degree ℓ.")
    interactions: int = Field(3, gt=0, description="Number of message-passing blocks.")
    radial_functions: int = Field(16, gt=1, description="Radial basis functions per edge.")
    cutoff_A: float = Field(5.0, gt=0, description="Interaction cutoff (Å).")


class Equivariant(nn.Module):
    """Equivariant network mapping a graph to one raw output per atom.

    ``__call__(species [N] int32, edges) -> [N]`` (dimensionless; scaled to
    eV by the energy head).
    """

    spec: EquivariantSpec
    num_species: int

    @nn.compact
    def __call__(self, species, edges: Edges):
        spec = self.spec
        n_atoms = species.shape[0]
        basis = e3x.nn.basis(
            edges.vectors, max_degree=spec.max_degree, num=spec.radial_functions,
            radial_fn=functools.partial(e3x.nn.sinc, limit=spec.cutoff_A),
            cutoff_fn=functools.partial(e3x.nn.smooth_cutoff, cutoff=spec.cutoff_A))
        weights = edges.mask.astype(basis.dtype)[:, None, None, None]
        x = e3x.nn.Embed(self.num_species, spec.features, name="embedding")(species)
        x = x.astype(basis.dtype)   # e3x adds only features of one dtype
        for block in range(spec.interactions):
            last = block == spec.interactions - 1
            degree = 0 if last else spec.max_degree
            y = e3x.nn.MessagePass(max_degree=degree, include_pseudotensors=False,
                                   name=f"message_{block}")(
                x, basis, weights, dst_idx=edges.dst, src_idx=edges.src, num_segments=n_atoms)
            x = e3x.nn.add(e3x.nn.change_max_degree_or_type(x, max_degree=degree,
                                                            include_pseudotensors=False), y)
            z = e3x.nn.Dense(spec.features, name=f"atomwise_{block}_in")(x)
            z = e3x.nn.Dense(spec.features, name=f"atomwise_{block}_out")(e3x.nn.silu(z))
            x = e3x.nn.add(x, z)
        scalars = x[:, 0, 0, :]
        out = nn.Dense(spec.features, name="readout_hidden")(scalars)
        out = nn.Dense(1, name="readout")(nn.silu(out))
        return out[:, 0]
