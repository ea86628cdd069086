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

By default the atom-wise layers of the interaction update have no bias,
and ssp(0) = 0, so an atom without neighbors keeps its embedding unchanged.

The optional settings of :class:`SchNetSpec` (``filters``, ``update_bias``,
``activation``, ``readout_hidden``, ``readout_activation``, the explicit
Gaussian centres and widths and ``isolated_atom_reference``) describe
SchNet as schnetpack 2.x builds it, so that ``mdengine import`` can
reproduce a schnetpack model. Their defaults are the original mdengine
network, so models saved without them load and compute as before.
"""

from __future__ import annotations

import math
from typing import Literal

import flax.linen as nn
import jax.numpy as jnp
from pydantic import BaseModel, ConfigDict, Field, model_validator

from mdengine.learned.filter_table import (DEFAULT_SPACING_A, FilterTable, dense, interpolate,
                                           tabulate)
from mdengine.learned.graph import Edges, cosine_cutoff, gather_sum
from mdengine.learned.row_messages import row_messages


class SchNetSpec(BaseModel):
    """Hyper-parameters of SchNet."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    architecture: Literal["schnet"]
    features: int = Field(64, gt=0, description="Width of atom features and filters.")
    interactions: int = Field(3, gt=0, description="Number of interaction blocks.")
    radial_functions: int = Field(32, gt=1, description="Gaussians in the distance expansion.")
    cutoff_A: float = Field(5.0, gt=0, description="Interaction cutoff (Å).")
    filters: int | None = Field(
        None, gt=0, description="Width of the filters; None: the same as features.")
    update_bias: bool = Field(
        False, description="Give the two dense layers of the interaction update a bias "
                           "(schnetpack's f2out has one).")
    activation: Literal["shifted_softplus", "silu"] = Field(
        "shifted_softplus", description="Activation in the filter network and the interaction update.")
    readout_hidden: tuple[int, ...] | None = Field(
        None, description="Widths of the hidden layers of the per-atom output network; "
                          "None: one layer of features // 2 (at least 1).")
    readout_activation: Literal["shifted_softplus", "silu"] = Field(
        "shifted_softplus", description="Activation between the layers of the output network.")
    radial_centres_A: tuple[float, ...] | None = Field(
        None, description="Explicit Gaussian centres (Å), one per radial function; None: "
                          "evenly spaced on [0, cutoff_A].")
    radial_widths_A: tuple[float, ...] | None = Field(
        None, description="Explicit Gaussian widths σ_k (Å) in exp(−(r − μ_k)² / 2σ_k²); "
                          "required with radial_centres_A.")
    isolated_atom_reference: bool = Field(
        True, description="Subtract the network's output for an isolated atom in the energy head, "
                          "so that a lone atom has energy shift_s. False: E_i = shift_s + "
                          "scale_s · o_i, as schnetpack computes it.")

    @model_validator(mode="after")
    def _radial_lists(self):
        centres, widths = self.radial_centres_A, self.radial_widths_A
        if (centres is None) != (widths is None):
            raise ValueError("radial_centres_A and radial_widths_A must be given together")
        if centres is not None:
            for key, values in (("radial_centres_A", centres), ("radial_widths_A", widths)):
                if len(values) != self.radial_functions:
                    raise ValueError(f"{key} has {len(values)} entries, expected "
                                     f"radial_functions = {self.radial_functions}")
            if min(widths) <= 0:
                raise ValueError(f"radial_widths_A must be positive (got {min(widths)})")
        if self.readout_hidden is not None and any(width < 1 for width in self.readout_hidden):
            raise ValueError(f"readout_hidden widths must be positive (got {list(self.readout_hidden)})")
        return self


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


def explicit_gaussian_expansion(distances, centres_A, widths_A):
    """``[E, K]`` Gaussians exp(−(r − μ_k)² / (2 σ_k²)) with given centres μ_k and widths σ_k (Å)."""
    centres = jnp.asarray(centres_A, distances.dtype)
    coefficients = -0.5 / jnp.asarray(widths_A, distances.dtype) ** 2
    return jnp.exp(coefficients[None, :] * (distances[:, None] - centres[None, :]) ** 2)


ACTIVATIONS = {"shifted_softplus": shifted_softplus, "silu": nn.silu}


class Interaction(nn.Module):
    """One continuous-filter convolution block with a residual update.

    ``filters`` is the filter width (``features`` when None), ``update_bias``
    gives the update's dense layers a bias and ``activation`` names the
    activation of the filter network and the update.
    """

    features: int
    cutoff_A: float
    filters: int | None = None
    update_bias: bool = False
    activation: str = "shifted_softplus"

    @nn.compact
    def __call__(self, h, expansion, edges: Edges, table: FilterTable | None = None):
        width = self.filters or self.features
        activation = ACTIVATIONS[self.activation]
        if table is None:
            filters = nn.Dense(width, name="filter_in")(expansion)
            filters = nn.Dense(width, name="filter_out")(activation(filters))
        elif not edges.rows:
            filters = interpolate(table, edges.distances)
        x = nn.Dense(width, use_bias=False, name="atomwise")(h)
        if table is not None and edges.rows:
            shape = (h.shape[0], edges.rows)
            messages = row_messages(x, edges.distances.reshape(shape), edges.src.reshape(shape),
                                    table, self.cutoff_A)
        else:
            weight = cosine_cutoff(edges.distances, self.cutoff_A) * edges.mask
            # Masked edges carry a zero weight, so their messages are exact zeros.
            messages = gather_sum(x[edges.src] * (filters * weight[:, None]), edges.dst, h.shape[0],
                                  edges.rows)
        v = nn.Dense(self.features, use_bias=self.update_bias, name="update_in")(messages)
        v = nn.Dense(self.features, use_bias=self.update_bias, name="update_out")(activation(v))
        return h + v


class SchNet(nn.Module):
    """SchNet mapping a graph to one raw output per atom.

    ``__call__(species [N] int32, edges, tables=None) -> [N]`` (dimensionless;
    scaled to eV by the energy head). ``tables`` (one :class:`FilterTable`
    per interaction, from :func:`filter_tables`) replaces the filter networks
    by their tabulated splines.
    """

    spec: SchNetSpec
    num_species: int

    @nn.compact
    def __call__(self, species, edges: Edges, tables=None):
        spec = self.spec
        h = nn.Embed(self.num_species, spec.features, name="embedding")(species)
        expansion = None if tables is not None else radial_expansion(edges.distances, spec)
        for block in range(spec.interactions):
            h = Interaction(spec.features, spec.cutoff_A, filters=spec.filters,
                            update_bias=spec.update_bias, activation=spec.activation,
                            name=f"interaction_{block}")(
                h, expansion, edges, None if tables is None else tables[block])
        return readout(h, spec)


def radial_expansion(distances, spec: SchNetSpec):
    """``[E, radial_functions]`` Gaussian expansion of edge lengths (Å)."""
    if spec.radial_centres_A is None:
        return gaussian_expansion(distances, spec.radial_functions, spec.cutoff_A)
    return explicit_gaussian_expansion(distances, spec.radial_centres_A, spec.radial_widths_A)


def filter_tables(params: dict, spec: SchNetSpec, dtype,
                  spacing_A: float = DEFAULT_SPACING_A) -> tuple[FilterTable, ...]:
    """Tabulate every interaction's filter network from the model's parameters."""
    activation = ACTIVATIONS[spec.activation]
    tables = []
    for block in range(spec.interactions):
        layers = params[f"interaction_{block}"]

        def network(r, layers=layers):
            hidden = activation(dense(layers["filter_in"], radial_expansion(r, spec)))
            return dense(layers["filter_out"], hidden)

        tables.append(tabulate(network, spec.cutoff_A, dtype, spacing_A))
    return tuple(tables)


def readout_widths(spec: SchNetSpec) -> tuple[int, ...]:
    """Widths of the output network's hidden layers."""
    if spec.readout_hidden is None:
        return (max(spec.features // 2, 1),)
    return tuple(spec.readout_hidden)


def readout(h, spec: SchNetSpec):
    """Map ``h [N, features]`` to ``[N]`` raw outputs through the output network.

    Hidden layers are named ``readout_hidden``, ``readout_hidden_1``, … and the
    last one ``readout``, so the default network keeps its original names.
    """
    activation = ACTIVATIONS[spec.readout_activation]
    out = h
    for layer, width in enumerate(readout_widths(spec)):
        name = "readout_hidden" if layer == 0 else f"readout_hidden_{layer}"
        out = activation(nn.Dense(width, name=name)(out))
    out = nn.Dense(1, name="readout")(out)
    return out[:, 0]
