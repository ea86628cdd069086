"""The potential contract shared by classical, learned and plug-in potentials."""

from __future__ import annotations

import dataclasses
from typing import Callable

from jax_md import partition


@dataclasses.dataclass(frozen=True)
class Potential:
    """An energy function with what the neighbor list needs to serve it.

    Attributes:
      energy_fn: ``energy_fn(positions, neighbor) -> scalar`` potential energy
        (eV); ``positions`` is ``[N, 3]`` in the engine's coordinates and
        ``neighbor`` a jax-md ``NeighborList`` in ``neighbor_format``.
      cutoff_A: interaction cutoff (Å); the list radius adds the skin to it.
      neighbor_format: jax-md neighbor-list format the function reads.
      description: one line for logs and summaries.
      energy_and_force_fn: optional ``(positions, neighbor) -> (energy eV,
        [N, 3] forces eV/Å)`` computed directly; without it the engine
        differentiates ``energy_fn``.
      slot_major: the function reads a ``Dense`` list stored as ``[K, N]``
        (``idx[k, i]`` is the k-th partner of atom i) instead of ``[N, K]``.
    """

    energy_fn: Callable
    cutoff_A: float
    neighbor_format: partition.NeighborListFormat
    description: str
    energy_and_force_fn: Callable | None = None
    slot_major: bool = False
