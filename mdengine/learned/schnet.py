"""SchNet (Schütt et al., J. Chem. Phys. 148, 241722 (2018)).

Atoms start from a learned embedding of their species. Each interaction
block applies a continuous-filter convolution. The filter for an edge is a
small network of a Gaussian expansion of its length, multiplied by a cosine
cutoff. The message from a neighbor is its atom-wise projected features
times that filter. Messages are summed per atom and passed through an
atom-wise network with shifted-softplus activations, then added to the
features (a residual update). A final atom-wise network gives one number
per atom, which :mod:`mdengine.learned.architectures` turns into an energy.

The networks are Flax ``linen`` modules: e3x, used by the equivariant
model, is built on linen, so both architectures share one parameter format
(a plain nested dict), one ``init``/``apply`` convention and one orbax
layout.

The atom-wise layers of the interaction update have no bias, and
ssp(0) = 0, so an atom without neighbors keeps its embedding unchanged.
"""

from __future__ import annotations

import math
from typing import Literal

import flax.linen as nn
import jax.numpy as jnp
from pydantic import BaseModel, ConfigDict, Field

from mdengine.learned.graph import Edges, cosine_cutoff, gather_sum


class SchNetSpec(BaseModel):
    """Hyper-parameters of SchNet."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    architecture: Literal["schnet"]
    features: int = Field(64, gt=0, description="Width of atom features and filters.")
    interactions: int = Field(3, gt=0, description="Number of interaction blocks.")
    radial_functions: int = Field(32, gt=1, description="Gaussians in the distance expansion.")
    cutoff_A: float = Field(5.0, gt=0, description="Interaction cutoff (Å).")


def shifted_softplus(x):
    """ssp(x) = ln(½ eˣ + ½), zero at x = 0."""
    return nn.softplus(x) - math.log(2.0)


def gaussian_expansion(distances, count: int, cutoff_A: float):
    """``[E, count]`` Gaussians exp(−γ (r − μ_k)²), μ_k evenly spaced on [0, r_c],
    γ = 1 / (2 Δμ²) with Δμ the spacing (Å)."""
    centres = jnp.linspace(0.0, cutoff_A, count, dtype=distances.dtype)
    spacing = cutoff_A / (count - 1)
    gamma = 0.5 / spacing**2
    return jnp.exp(-gamma * (distances[:, None] - centres[None, :]) ** 2)


class Interaction(nn.Module):
    """One continuous-filter convolution block with a residual update."""

    features: int
    cutoff_A: float

    @nn.compact
    def __call__(self, h, expansion, edges: Edges):
        filters = nn.Dense(self.features, name="filter_in")(expansion)
        filters = nn.Dense(self.features, name="filter_out")(shifted_softplus(filters))
        weight = cosine_cutoff(edges.distances, self.cutoff_A) * edges.mask
        filters = filters * weight[:, None]
        x = nn.Dense(self.features, use_bias=False, name="atomwise")(h)
        messages = gather_sum(x[edges.src] * filters, edges.dst, h.shape[0])
        v = nn.Dense(self.features, use_bias=False, name="update_in")(messages)
        v = nn.Dense(self.features, use_bias=False, name="update_out")(shifted_softplus(v))
        return h + v


class SchNet(nn.Module):
    """SchNet mapping a graph to one raw output per atom.

    ``__call__(species [N] int32, edges) -> [N]`` (dimensionless; scaled to
    eV by the energy head).
    """

    spec: SchNetSpec
    num_species: int

    @nn.compact
    def __call__(self, species, edges: Edges):
        spec = self.spec
        h = nn.Embed(self.num_species, spec.features, name="embedding")(species)
        expansion = gaussian_expansion(edges.distances, spec.radial_functions, spec.cutoff_A)
        for block in range(spec.interactions):
            h = Interaction(spec.features, spec.cutoff_A, name=f"interaction_{block}")(h, expansion, edges)
        out = nn.Dense(max(spec.features // 2, 1), name="readout_hidden")(h)
        out = nn.Dense(1, name="readout")(shifted_softplus(out))
        return out[:, 0]
