"""User plug-in potentials named in the input as ``package.module:function``.

Contract: the named function is a factory

    factory(displacement_fn, species, **parameters) -> energy_fn

where ``displacement_fn(Ra, Rb)`` returns the Cartesian displacement (Å)
between two positions in the engine's coordinates, ``species`` is an
``[N]`` int32 array indexing ``system.species_names``, and ``parameters``
are the input's ``potential.parameters``, plus ``cutoff_A`` (Å) from
``potential.cutoff_A`` when the factory has a parameter of that name. The returned
``energy_fn(positions, neighbor)`` must be a pure JAX function returning the
potential energy (eV) as a scalar; ``neighbor`` is a jax-md neighbor list in
the format the input names, built with radius ``cutoff_A`` + skin. Forces
are taken as the negative gradient, so the function must be differentiable.

Importing the module runs its code: this is the only way an input file can
run code, and it happens only for a ``custom`` potential.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path

from jax_md import partition

from mdengine.config import CustomPotential, InputError
from mdengine.potentials.base import Potential

_FORMATS = {"sparse": partition.Sparse, "ordered_sparse": partition.OrderedSparse,
            "dense": partition.Dense}


def load_factory(spec: CustomPotential, base_dir: Path):
    """Import the factory function named by ``spec.function``."""
    module_name, function_name = spec.function.split(":")
    for folder in reversed(spec.search_path):
        path = str((base_dir / folder).resolve())
        if path not in sys.path:
            sys.path.insert(0, path)
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise InputError(f"potential.function: cannot import module {module_name!r}: {err}; "
                         "install it or list its folder in potential.search_path") from None
    factory = getattr(module, function_name, None)
    if not callable(factory):
        raise InputError(f"potential.function: module {module_name!r} has no function {function_name!r}")
    return factory


def build_custom_potential(spec: CustomPotential, system, displacement_fn, base_dir: Path) -> Potential:
    """Build a plug-in potential from its factory (see the module docstring)."""
    factory = load_factory(spec, base_dir)
    parameters = dict(spec.parameters)
    if "cutoff_A" in parameters and parameters["cutoff_A"] != spec.cutoff_A:
        raise InputError(f"potential.parameters.cutoff_A ({parameters['cutoff_A']}) differs from "
                         f"potential.cutoff_A ({spec.cutoff_A}); give it once, as potential.cutoff_A")
    if "cutoff_A" in inspect.signature(factory).parameters:
        parameters["cutoff_A"] = spec.cutoff_A
    try:
        energy_fn = factory(displacement_fn, system.species, **parameters)
    except (TypeError, ValueError) as err:
        raise InputError(f"potential.parameters: {spec.function} rejected the parameters "
                         f"{sorted(spec.parameters)}: {err}") from None
    if not callable(energy_fn):
        raise InputError(f"potential.function: {spec.function} must return an energy function, "
                         f"got {type(energy_fn).__name__}")
    return Potential(energy_fn=energy_fn, cutoff_A=spec.cutoff_A,
                     neighbor_format=_FORMATS[spec.neighbor_format],
                     description=f"custom {spec.function} (cutoff {spec.cutoff_A:g} Å)")
